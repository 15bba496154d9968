"""Leases: which worker holds which run of a sweep (`train.py --worker`, hypersal/runner/worker.py).

A run held by a worker has RUN_DIR/lease.json {worker, job, host, pid, start, restart, attempt,
taken, timeout}, written whole and rewritten (renewed) every few seconds while the run trains;
releasing it removes the file. Every claim, renewal and release of a sweep happens under one
lock, EXP_DIR/claims.lock (fcntl.flock), held only while a lease is chosen and written: so two
workers never take one run, and a holder never renews a lease another has taken over.

A lease is stale (its run is left to start again, from its checkpoint) when, in this order:
- its holder's job restarted (the judge is that job, requeued: a higher SLURM_RESTART_COUNT);
- its holder's Slurm job is no longer in squeue, or is pending again (requeued);
- its holder ran on this host and its process is gone (a zombie counts as gone; a pid taken by
  a new process is told by the process's start time and the host's boot id);
- its file is older, by more than its holder's `timeout`, than a file the judge writes itself in
  the experiment folder: both times come from the clock of the file system that holds them, so
  no two nodes' clocks are compared.
Torch-free: status on the login node reads leases too.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hypersal.files import exclusive, write_atomic
from hypersal.runfolder import now, running_here

LEASE = "lease.json"
LOCK = "claims.lock"
WORKERS = "workers"      # EXP_DIR/workers/<worker id>.json: each worker's own record
TIMEOUT_S = 120.0        # how long a holder may go without renewing before its lease is stale
FINISHED = ("done", "failed", "pruned")   # states a run never leaves by itself: never claimed


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) leases: a worker process."""
    worker: str
    job: str | None
    host: str
    pid: int
    start: str | None        # "<boot id>:<start time in ticks>": tells a reused pid
    restart: int = 0         # the job's SLURM_RESTART_COUNT
    timeout: float = TIMEOUT_S


def this_job(env=os.environ) -> str | None:
    """The Slurm job this process runs in, as squeue names it (ARRAYID_TASK for an array task)."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def me(timeout: float = TIMEOUT_S, env=os.environ) -> Holder:
    """This process as a holder. Its worker id is its Slurm job (array task) where there is one,
    else host-pid."""
    job, host, pid = this_job(env), socket.gethostname(), os.getpid()
    return Holder(worker=job or f"{host}-{pid}", job=job, host=host, pid=pid, start=process_start(pid),
                  restart=int(env.get("SLURM_RESTART_COUNT") or 0), timeout=timeout)


def process_start(pid: int) -> str | None:
    """The host's boot id and the process's start time since boot: unique to one process on one
    host (a pid alone is reused). None where /proc cannot say (not Linux, the process gone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        state, ticks = _stat(pid)
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{ticks}"


def _stat(pid: int) -> tuple[str, str]:
    """(state letter, start time in ticks) from /proc/PID/stat; the name in parentheses may
    itself hold spaces and parentheses, so the fields are read after its last ')'."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def process_gone(pid: int, start: str | None) -> bool:
    """The process `pid` of this host has ended (a zombie has), or the pid is another process now."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # someone else's process: alive, but maybe not ours; the start says
        pass
    except (ValueError, OverflowError):
        return True
    try:
        state, _ = _stat(pid)
    except (OSError, ValueError, IndexError):   # ended meanwhile; without /proc the pid alone says
        return Path("/proc").is_dir()
    if state in ("Z", "X"):
        return True
    return start is not None and process_start(pid) != start


def read(run_dir: Path) -> tuple[dict | None, float | None]:
    """(the lease, its file's mtime); (None, None) when there is none. A lease that cannot be read
    (damaged from outside: it is written whole) is {} with its mtime: judged by its age alone."""
    path = Path(run_dir) / LEASE
    try:
        mtime = path.stat().st_mtime
        lease = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return {}, mtime
    return (lease if isinstance(lease, dict) else {}), mtime


def write(run_dir: Path, lease: dict) -> None:
    write_atomic(Path(run_dir) / LEASE, lambda f: f.write((json.dumps(lease) + "\n").encode()))


def file_clock(exp_dir: Path) -> float:
    """The file system's time now: the mtime of a file just written in the experiment folder
    (on NFS the server sets it). Leases are aged against this, never against time.time()."""
    fd, tmp = tempfile.mkstemp(dir=exp_dir, prefix=".clock-")
    try:
        os.write(fd, b"t")
        os.fsync(fd)
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(tmp)


def whole(value) -> int:
    """A lease's count, 0 where it holds none (or something else: a lease damaged from outside)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


Queue = Callable[[], dict]    # job id -> an entry with a .state (executors.SlurmExecutor.queue)


class Judge:
    """Judges leases for one holder at one moment: squeue is asked at most once (and only when a
    lease names another job), the file system's clock read once."""

    def __init__(self, exp_dir: Path, holder: Holder, queue: Queue | None = None):
        self.exp_dir, self.holder, self._queue = Path(exp_dir), holder, queue
        self._jobs: dict | None = None
        self._clock: float | None = None

    def jobs(self) -> dict | None:
        """squeue's jobs, or None when it cannot say (no Slurm, squeue failing): then that rule
        is left to the others."""
        if self._jobs is None and self._queue is not None:
            try:
                self._jobs = self._queue()
            except Exception:     # squeue down or missing: not a reason to call anyone gone
                self._queue = None
        return self._jobs

    def clock(self) -> float:
        if self._clock is None:
            self._clock = file_clock(self.exp_dir)
        return self._clock

    def stale(self, lease: dict, mtime: float) -> str | None:
        """Why this lease is stale, in words; None while its holder may be alive."""
        me, job = self.holder, lease.get("job")
        if job and job == me.job and whole(lease.get("restart")) < me.restart:
            return f"its job {job} was restarted (restart {me.restart})"
        if job and job != me.job:
            jobs = self.jobs()
            if jobs is not None:
                entry = jobs.get(job)
                if entry is None:
                    return f"its job {job} is no longer in squeue"
                if getattr(entry, "state", "") == "PENDING":
                    return f"its job {job} is pending again (requeued)"
        pid = lease.get("pid")
        if lease.get("host") == me.host and isinstance(pid, int) and pid != me.pid:
            if process_gone(pid, lease.get("start")):
                return f"its process {pid} on {me.host} is gone"
        timeout = lease.get("timeout") if isinstance(lease.get("timeout"), (int, float)) else TIMEOUT_S
        age = self.clock() - mtime
        if age > timeout:
            return f"it was last renewed {age:.0f} s ago (its holder promised every {timeout:.0f} s)"
        return None


def claims(exp_dir: Path):
    """The sweep's claims lock, held for the body only (a few file reads and one write)."""
    return exclusive(Path(exp_dir) / LOCK)


@dataclass
class Claim:
    run_dir: Path
    lease: dict
    took_over: str | None = None   # the stale lease's holder and why it was stale, in words


def run_state(run_dir: Path) -> dict:
    """state.json ({} before the run first started); {"state": "damaged"} when it cannot be read
    (such a run is not claimed: train.py would stop at once on it)."""
    try:
        state = json.loads((Path(run_dir) / "state.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"state": "damaged"}
    return state if isinstance(state, dict) else {"state": "damaged"}


class Leases:
    """One holder's claims on one sweep's runs (given in index order)."""

    def __init__(self, exp_dir: Path, runs: list[Path], holder: Holder, queue: Queue | None = None):
        self.exp_dir, self.runs, self.holder, self.queue = Path(exp_dir), list(runs), holder, queue
        self.finished: set[Path] = set()    # never read again: a finished run stays finished

    def mine(self, lease: dict | None) -> bool:
        h = self.holder
        return bool(lease) and lease.get("worker") == h.worker and lease.get("pid") == h.pid \
            and lease.get("host") == h.host

    def claim(self) -> Claim | None:
        """The first run that is neither finished nor held, now leased to this holder; None when
        nothing is left to start."""
        with claims(self.exp_dir):
            judge = Judge(self.exp_dir, self.holder, self.queue)
            for run_dir in self.runs:
                if run_dir in self.finished:
                    continue
                claim = self._consider(run_dir, judge)
                if claim is not None:
                    return claim
        return None

    def _consider(self, run_dir: Path, judge: Judge) -> Claim | None:
        lease, mtime = read(run_dir)
        state = run_state(run_dir)
        if state.get("state") in FINISHED or state.get("state") == "damaged":
            self.finished.add(run_dir)
            if lease is not None and judge.stale(lease, mtime):   # left by a worker killed at the end
                (run_dir / LEASE).unlink(missing_ok=True)
            return None
        took_over = None
        if lease is not None:
            why = judge.stale(lease, mtime)
            if why is None:
                return None
            took_over = f"worker {lease.get('worker', '?')} (attempt {lease.get('attempt', '?')}): {why}"
        if running_here(state):   # its trainer outlived its holder (or never had one): not twice
            return None
        attempt = whole(lease.get("attempt")) + 1 if lease else 1
        fresh = {**asdict(self.holder), "attempt": attempt, "taken": now()}
        write(run_dir, fresh)
        return Claim(run_dir, fresh, took_over)

    def renew(self, claim: Claim) -> bool:
        """Rewrite the lease (its mtime is the renewal); False when it is no longer ours (judged
        stale and taken over): the caller must stop that run at once."""
        with claims(self.exp_dir):
            lease, _ = read(claim.run_dir)
            if not self.mine(lease) or lease.get("attempt") != claim.lease["attempt"]:
                return False
            write(claim.run_dir, claim.lease)
            return True

    def release(self, claim: Claim) -> None:
        """Remove the lease if it is still ours."""
        with claims(self.exp_dir):
            lease, _ = read(claim.run_dir)
            if self.mine(lease) and lease.get("attempt") == claim.lease["attempt"]:
                (claim.run_dir / LEASE).unlink(missing_ok=True)
