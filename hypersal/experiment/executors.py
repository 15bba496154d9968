"""Where jobs go: Slurm (sbatch / squeue / scancel, always called with argument lists, never
through a shell) or this machine, one run after another."""
from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUBMIT_TIMEOUT_S = 120
DEFAULT_LIMITS = {"MaxArraySize": 1001, "MaxJobCount": 10000}   # Slurm's defaults


class SubmitError(Exception):
    """sbatch refused a script: the message is sbatch's own."""


@dataclass(frozen=True)
class QueueEntry:
    job_id: str      # "123" or "123_4" for an array task
    state: str       # PENDING, RUNNING, ...
    reason: str


class SlurmExecutor:
    name = "slurm"

    def submit(self, script: Path, cwd: Path, extra: list[str] = ()) -> str:
        """sbatch --parsable: the job id. `extra` options go before the script (they override its
        #SBATCH lines, e.g. --array for resubmitting part of an array)."""
        try:
            proc = subprocess.run(["sbatch", "--parsable", *extra, str(script)], cwd=cwd,
                                  capture_output=True, text=True, timeout=SUBMIT_TIMEOUT_S)
        except FileNotFoundError:
            raise SubmitError("sbatch is not on PATH") from None
        except subprocess.TimeoutExpired:
            raise SubmitError(f"sbatch did not answer in {SUBMIT_TIMEOUT_S} s") from None
        if proc.returncode != 0:  # sbatch's own words, on one line
            raise SubmitError(" ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}")
        return proc.stdout.strip().split(";")[0]  # "123;cluster" on multi-cluster setups

    def limits(self) -> dict[str, int]:
        """The cluster's MaxArraySize (array task ids must be below it) and MaxJobCount (jobs
        slurmctld holds at once), from `scontrol show config`; Slurm's defaults where it cannot say."""
        out = dict(DEFAULT_LIMITS)
        try:
            proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return out
        for line in proc.stdout.splitlines():
            key, _, value = (part.strip() for part in line.partition("="))
            if key in out and value.isdigit():
                out[key] = int(value)
        return out

    def max_array_size(self) -> int:
        return self.limits()["MaxArraySize"]

    def job_room(self) -> int:
        """How many more jobs slurmctld takes now: MaxJobCount less the jobs it holds (everyone's;
        a pending array counts once). Past it, sbatch does not fail: it waits and retries."""
        proc = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, timeout=60)
        held = len(proc.stdout.splitlines()) if proc.returncode == 0 else 0
        return max(0, self.limits()["MaxJobCount"] - held)

    def queue(self) -> dict[str, QueueEntry]:
        """This user's jobs that Slurm still knows, one entry per array task (squeue -r).
        Not sacct: clusters without accounting have none."""
        proc = subprocess.run(["squeue", "--noheader", "--array", f"--user={getpass.getuser()}",
                               "--format=%i|%T|%r"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise SubmitError(f"squeue failed: {proc.stderr.strip()}")
        out = {}
        for line in proc.stdout.splitlines():
            job_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
            out[job_id] = QueueEntry(job_id, state, reason)
        return out

    def cancel(self, job_ids: list[str]) -> None:
        if job_ids:
            subprocess.run(["scancel", *job_ids], check=False, timeout=60)


class LocalExecutor:
    """Runs an exp.sh with bash on this machine, output in local.out, with the CPUs its
    `#SBATCH --cpus-per-task` asks for (HYPERSAL_CPUS: train.py sizes its thread pools by it, as
    it does by Slurm's allocation). submit.py runs the sweep's scripts one after another, or
    `parallelism` at once."""
    name = "local"

    def run(self, script: Path, cwd: Path, env: dict | None = None, log: Path | None = None) -> int:
        """bash SCRIPT in `cwd`, its output appended to `log` (default cwd/local.out)."""
        env = {**os.environ, "HYPERSAL_EXECUTOR": "local", **(env or {})}
        cpus = re.search(r"^#SBATCH --cpus-per-task=(\d+)\s*$", Path(script).read_text(), re.M)
        if cpus:
            env["HYPERSAL_CPUS"] = cpus.group(1)
        with open(log or cwd / "local.out", "ab") as out:
            return subprocess.run(["bash", str(script)], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  env=env).returncode

    def queue(self) -> dict[str, QueueEntry]:
        return {}

    def cancel(self, job_ids: list[str]) -> None:
        pass


def choose(name: str) -> SlurmExecutor | LocalExecutor:
    """`auto` is Slurm when sbatch is on PATH, else this machine (said in one line)."""
    if name == "slurm":
        return SlurmExecutor()
    if name == "local":
        return LocalExecutor()
    if shutil.which("sbatch"):
        return SlurmExecutor()
    print("hypersal: sbatch is not on PATH: running the jobs on this machine, one after another "
          "(--executor=local; --parallelism N runs N at once)", file=sys.stderr)
    return LocalExecutor()
