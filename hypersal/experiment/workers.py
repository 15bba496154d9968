"""A sweep on workers (experiment.workers: N), seen from the login node: submitting its N worker
jobs (or starting N workers here), which runs are left for workers, what each worker is doing,
and their seconds in summary.yaml. The workers themselves are hypersal/runner/worker.py.

jobs.tsv records the k-th worker job submitted as `worker_K<TAB>job id` (`local` for a worker
started here, once it ended), so `submit` after a refusal submits only the workers still owed,
and `cancel` finds them as it finds runs' jobs. Torch-free.
"""
from __future__ import annotations

import json
import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment import lease as L
from hypersal.experiment.executors import LocalExecutor, SubmitError
from hypersal.experiment.folder import WORKER_KEY, load_summary, read_jobs
from hypersal.experiment.plan import WORKER_LOGS, WORKERS_SH
from hypersal.experiment.repro import CODE_ROOT
from hypersal.experiment.write import JOBS, SUMMARY
from hypersal.log import say, warn
from hypersal.runfolder import Damaged, RunFolder, now, running_here

SECONDS = ("job_seconds", "run_seconds", "startup_seconds", "idle_seconds")
LIVE = ("pending", "starting", "running", "idle")      # a worker's states that will still take runs


def on_workers(exp_dir: Path, summary: dict) -> bool:
    """Submitted as worker jobs, or run by workers started by hand (their records are there)."""
    return bool(summary.get("workers")) or any((Path(exp_dir) / L.WORKERS).glob("*.json"))


def submitted(jobs: dict) -> list[str]:
    """The worker jobs of jobs.tsv, in the order they were submitted."""
    keys = sorted((k for k in jobs if WORKER_KEY.fullmatch(k)), key=lambda k: int(k.split("_")[1]))
    return [jobs[k] for k in keys]


def records(exp_dir: Path) -> dict[str, dict]:
    """{worker id: its record, EXP_DIR/workers/<id>.json}. A record is written whole: one that
    cannot be read was damaged from outside, and is passed over with a warning."""
    out = {}
    for path in sorted((Path(exp_dir) / L.WORKERS).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            warn(f"{path}: damaged ({e.__class__.__name__}); that worker is not shown")
            continue
        if isinstance(rec, dict):
            out[path.stem] = rec
    return out


# --- which runs are left ----------------------------------------------------------------------
class SafeJudge(L.Judge):
    """The login node's judge: its own file for the clock may be refused (a read-only folder);
    then only the other rules judge (they come first)."""

    def stale(self, lease: dict, mtime: float) -> str | None:
        try:
            return super().stale(lease, mtime)
        except OSError:
            return None


def judge(exp_dir: Path, queue: dict | None) -> SafeJudge:
    """A judge that is no worker and no job (`queue`: squeue's jobs, None where there is no Slurm)."""
    return SafeJudge(exp_dir, L.me(env={}), (lambda: queue) if queue is not None else None)


def runs_left(exp_dir: Path, summary: dict, queue: dict | None) -> list[str]:
    """Runs a new worker would take: neither done nor pruned nor failed, and held by no live
    worker (a stale lease counts as left, as it does for the workers)."""
    exp_dir, out = Path(exp_dir), []
    j = judge(exp_dir, queue)
    for entry in summary["runs"]:
        run = exp_dir / entry["dir"]
        state = L.run_state(run)
        if state.get("state") in L.FINISHED or state.get("state") == "damaged" or running_here(state):
            continue
        lease, mtime = L.read(run)
        if lease is None or j.stale(lease, mtime):
            out.append(entry["dir"])
    return out


def reopen_failed(exp_dir: Path, summary: dict) -> list[str]:
    """`resume`: failed runs (workers never take one again by themselves, so that an out-of-memory
    run does not loop) are offered again, as `resume` offers a plain sweep's failed runs: their
    state becomes `stopped`, their stages done stay done. Under the claims lock: no worker is
    choosing meanwhile."""
    exp_dir, opened = Path(exp_dir), []
    with L.claims(exp_dir):
        for entry in summary["runs"]:
            folder = RunFolder(exp_dir / entry["dir"])
            try:
                state = folder.state()
            except Damaged:
                continue
            if state.get("state") == "failed" and not (folder.path / L.LEASE).exists():
                state.update(state="stopped", updated=now(), reopened=now())
                folder.write_state(state)
                opened.append(entry["dir"])
    return opened


# --- submitting -------------------------------------------------------------------------------
def submit(exp_dir: Path, summary: dict, executor, again: bool = False) -> list[tuple[str, str]]:
    """Submit the sweep's worker jobs: [(worker_K, job id)]. `submit`: the N workers not submitted
    yet (fewer when fewer runs are left). `resume` (`again`): the failed runs reopened, then as many
    workers as runs are left, up to N, less the sweep's workers still queued or running."""
    exp_dir = Path(exp_dir)
    n, jobs = summary["workers"], read_jobs(exp_dir)
    mine = submitted(jobs)
    local = isinstance(executor, LocalExecutor)
    queue = None if local else executor.queue()
    if again:
        opened = reopen_failed(exp_dir, summary)
        if opened:
            say(f"{len(opened)} failed run(s) offered to the workers again: {_names(opened)}")
    left = runs_left(exp_dir, summary, queue)
    live = [] if local else [job for job in mine if job in queue]
    want = min(n, len(left)) - len(live) if again else min(n - len(mine), len(left))
    if want <= 0:
        say(_nothing(exp_dir, n, mine, left, live, again))
        return []
    first = len(mine)
    if local:
        return _run_here(exp_dir, summary, executor, want, first, left)
    if summary["mode"] == "array":
        return _submit_arrays(exp_dir, summary, executor, want, first)
    return _submit_jobs(exp_dir, summary, executor, want, first)


def owed(exp_dir: Path, summary: dict) -> int:
    """Worker jobs `submit` still owes (for `submit --follow`'s words)."""
    return max(0, summary["workers"] - len(submitted(read_jobs(exp_dir))))


def _nothing(exp_dir: Path, n: int, mine: list, left: list, live: list, again: bool) -> str:
    if not left:
        return f"every run of {exp_dir} is done, failed or held by a live worker: no worker to submit"
    if again:
        return (f"{len(left)} run(s) left and {len(live)} worker job(s) of the sweep still queued or running "
                f"({' '.join(live)}): they take them; no worker to submit")
    return f"the {n} worker(s) of {exp_dir} are submitted already (see {JOBS}); `resume` submits more"


def _submit_arrays(exp_dir: Path, summary: dict, executor, want: int, first: int):
    """One job array of `want` tasks, several where MaxArraySize is smaller (task ids below it)."""
    size, done = executor.max_array_size(), []
    while len(done) < want:
        count = min(want - len(done), size)
        spec = f"--array=0-{count - 1}"
        try:
            job = executor.submit(exp_dir / WORKERS_SH, cwd=exp_dir, extra=[spec])
        except SubmitError as e:
            raise _failure(exp_dir, f"a job array of {count} worker(s)", str(e), want, done) from None
        lines = [(f"worker_{first + len(done) + i}", f"{job}_{i}") for i in range(count)]
        _record(exp_dir, lines)
        done += lines
        say(f"{count} worker(s) submitted as job array {job} ({spec}; {_each(summary)})")
    return done


def _submit_jobs(exp_dir: Path, summary: dict, executor, want: int, first: int):
    done, room = [], executor.job_room()
    for i in range(want):
        what = f"worker {i + 1} of {want}"
        if i == room:
            reason = f"the cluster holds as many jobs as its MaxJobCount allows ({executor.limits()['MaxJobCount']})"
            raise _failure(exp_dir, what, reason, want, done)
        try:
            job = executor.submit(exp_dir / WORKERS_SH, cwd=exp_dir)
        except SubmitError as e:
            raise _failure(exp_dir, what, str(e), want, done) from None
        line = (f"worker_{first + i}", job)
        _record(exp_dir, [line])
        done.append(line)
        say(f"worker {i + 1} of {want} submitted as job {job} ({_each(summary)})")
    return done


def _run_here(exp_dir: Path, summary: dict, executor: LocalExecutor, want: int, first: int, left: list):
    """`want` workers on this machine at once, each workers.sh with its own log; experiment.py
    waits for them, as it waits for runs it runs here. Recorded once ended."""
    lock, codes = threading.Lock(), {}

    def one(k: int) -> None:
        log = exp_dir / WORKER_LOGS / f"local-{k}.out"
        with lock:
            say(f"worker {k - first + 1} of {want} running here ({_each(summary)}; log: {log})")
        code = executor.run(exp_dir / WORKERS_SH, cwd=exp_dir, log=log)
        with lock:
            _record(exp_dir, [(f"worker_{k}", "local")])
            codes[k] = code

    pool = ThreadPoolExecutor(max_workers=want)
    try:
        for future in [pool.submit(one, k) for k in range(first, first + want)]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    from hypersal.experiment.submit import SweepSubmitError
    bad = {k: c for k, c in codes.items() if c != 0}
    failed = [r for r in left if L.run_state(exp_dir / r).get("state") == "failed"]
    if bad or failed:
        words = [f"worker(s) {', '.join(f'{k} (exit {c})' for k, c in bad.items())} failed: see "
                 f"{exp_dir / WORKER_LOGS}/local-K.out"] if bad else []
        words += [f"{len(failed)} of {len(left)} runs failed here: {_names(failed)} (their logs are worker-*.out "
                  "in each run folder)"] if failed else []
        raise SweepSubmitError("; ".join(words))
    return [(f"worker_{k}", "local") for k in range(first, first + want)]


def _failure(exp_dir: Path, what: str, reason: str, want: int, done: list):
    from hypersal.experiment.submit import SweepSubmitError, limit_of
    listed = ", ".join(job for _, job in done) or "none"
    limit = limit_of(reason)
    me = f"{shlex.quote(sys.executable)} {shlex.quote(str(CODE_ROOT / 'experiment.py'))} submit {shlex.quote(str(exp_dir))}"
    if limit:
        text = (f"could not submit {what}: {reason}. That is {limit}. Worker jobs submitted, and staying so: {listed}. "
                f"Submit the rest as jobs end with: {me} --follow")
    else:
        text = (f"sbatch failed for {what}: {reason}. Worker jobs submitted: {listed}. Fix the cause, then submit "
                f"the rest with: {me}")
    return SweepSubmitError(text, limit)


def _record(exp_dir: Path, lines: list[tuple[str, str]]) -> None:
    from hypersal.experiment.submit import _record as record
    record(exp_dir, lines)


def _each(summary: dict) -> str:
    p = summary.get("runs_per_worker") or 1
    return f"each runs {p} run{'s' * (p > 1)} at once"


def _names(runs: list[str]) -> str:
    return ", ".join(runs[:5]) + (f" ... ({len(runs)} in all)" if len(runs) > 5 else "")


# --- summary.yaml -----------------------------------------------------------------------------
def seconds(exp_dir: Path) -> dict:
    """Per worker, for summary.yaml: its job, host, state, runs ended, and job, run, start-up and
    idle seconds (docs/workers.md says what each counts)."""
    out = {}
    for wid, rec in records(exp_dir).items():
        out[wid] = {"job": rec.get("job"), "host": rec.get("host"), "state": rec.get("state"),
                    "runs": len(rec.get("runs") or []), **{k: rec.get(k) for k in SECONDS}}
    return out


def write_summary(exp_dir: Path, update=None) -> None:
    """summary.yaml again, with `update(summary)` applied and every worker's seconds, under the
    claims lock: the submitter (job ids) and the workers (at their end) rewrite it, and each
    reads it afresh there, so neither loses the other's change."""
    exp_dir = Path(exp_dir)
    with L.claims(exp_dir):
        summary = load_summary(exp_dir)
        if update is not None:
            update(summary)
        found = seconds(exp_dir)
        if found:
            summary["worker_seconds"] = found
        yamlio.dump(summary, exp_dir / SUMMARY)
