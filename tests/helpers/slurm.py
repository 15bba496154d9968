"""Asking the local Slurm cluster about jobs (squeue and scontrol: no accounting needed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

# The cluster of scripts/local-slurm.sh, which keeps it in $HYPERSAL_SLURM_DIR (a second one, with
# its own folder and ports, lets two engineers run the Slurm tests on one machine at once).
LOCAL_SLURM_CONF = os.path.join(os.environ.get("HYPERSAL_SLURM_DIR", "/tmp/hypersal-slurm"), "slurm.conf")


def squeue() -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of every job Slurm still queues, one line per array task."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split("|")[0]: tuple(line.split("|")[1:3]) for line in out.splitlines() if line}


def wait_for(job_ids: list[str], timeout: float = 300) -> None:
    """Until none of the jobs is queued any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not set(job_ids) & set(squeue()):
            return
        time.sleep(0.5)
    raise AssertionError(f"jobs {job_ids} still queued after {timeout} s: {squeue()}")


def job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return next(f.split("=", 1)[1] for f in out.split() if f.startswith(f"{field}="))


def job_state(job_id: str) -> str:
    """From scontrol, which keeps finished jobs for MinJobAge."""
    return job_field(job_id, "JobState")


def jobs_of(exp: Path) -> dict[str, str]:
    """The last job id of each run, from jobs.tsv."""
    jobs: dict[str, str] = {}
    for line in (exp / "jobs.tsv").read_text().splitlines():
        run, job = line.split("\t")
        jobs[run] = job
    return jobs


def wait_until(predicate, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def release_when_requeued(job_id: str, timeout: float = 120) -> None:
    """A requeued job waits ~120 s (BeginTime) before it may run again: start it in 3 s. Not at
    once: slurmd refuses a credential made in the same second as the last attempt's revocation
    ("Killing non-startable batch JobId: Job credential revoked"; seen in CI when started at
    once); a later second is accepted, and 3 s leaves room for the second's boundary."""
    wait_until(lambda: squeue().get(job_id, ("",))[0] == "PENDING", timeout, f"job {job_id} pending again")
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+3seconds"], check=True)


def slurm_ready() -> tuple[bool, str]:
    if not shutil.which("sbatch"):
        return False, "sbatch is not installed"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        return False, f"sinfo failed: {proc.stderr.strip()}"
    if not any(s in proc.stdout for s in ("idle", "mixed", "allocated")):
        return False, f"no usable node (sinfo says {proc.stdout.strip()!r})"
    return True, ""


def queue_is_free() -> tuple[bool, str]:
    """Jobs already queued (a sweep of someone's) would hold every test job back for hours:
    say so at once rather than time out test after test."""
    proc = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=20)
    jobs = proc.stdout.split("\n")[:-1] if proc.returncode == 0 else []
    if jobs:
        return False, (f"its queue holds {len(jobs)} job(s) that are not the tests' (first: {jobs[0]}); "
                       "wait for them, scancel them, or start an empty cluster with: "
                       "scripts/local-slurm.sh start --fresh")
    return True, ""
