"""Submitting an experiment folder, from what is written in it alone.

Every submission is appended to jobs.tsv the moment sbatch answers, so a sweep stopped half
way (sbatch refusing run k, a lost connection) can be finished by `experiment.py submit DIR`
without submitting any run twice.
"""
from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment import workers as workers_mod
from hypersal.experiment.executors import LocalExecutor, SlurmExecutor, SubmitError
from hypersal.experiment.folder import load_summary, read_jobs   # noqa: F401 (read from here by others)
from hypersal.experiment.lock import submitting
from hypersal.experiment.plan import array_spec
from hypersal.experiment.repro import CODE_ROOT
from hypersal.experiment.write import JOBS, SUMMARY
from hypersal.log import warn
from hypersal.runfolder import Damaged, RunFolder, running_here


class SweepSubmitError(Exception):
    """A submission failed part way; the message names the run and what was submitted. `limit`
    names the cluster limit sbatch hit, when its words say which (`submit --follow` waits on it)."""

    def __init__(self, message: str, limit: str | None = None):
        super().__init__(message)
        self.limit = limit


# sbatch's words for a limit -> what the limit is, in a user's words
LIMITS = (
    (("QOSMaxSubmitJob", "AssocMaxSubmitJob", "MaxSubmitJobs", "job submit limit"),
     "your per-user submit limit (MaxSubmitJobs of your QOS or association)"),
    (("Invalid job array specification",), "the cluster's MaxArraySize"),
    (("MaxJobCount", "temporarily unable to accept job"), "the cluster's MaxJobCount (jobs Slurm holds at once)"),
)
FOLLOW_POLL_S = 30.0


def limit_of(reason: str) -> str | None:
    return next((what for words, what in LIMITS if any(w in reason for w in words)), None)


def _record(exp_dir: Path, lines: list[tuple[str, str]]) -> None:
    with open(exp_dir / JOBS, "a", encoding="utf-8") as f:
        f.write("".join(f"{run}\t{job}\n" for run, job in lines))
        f.flush()


def pending_runs(exp_dir: Path, summary: dict) -> list[dict]:
    done = read_jobs(exp_dir)
    return [r for r in summary["runs"] if r["dir"] not in done and not _started(exp_dir, r)]


def unfinished_runs(exp_dir: Path, summary: dict, executor) -> list[dict]:
    """Runs submitted before that are neither done nor known to Slurm any more: killed hard, on
    a lost node, stopped, failed. Runs never submitted are `submit`'s."""
    jobs = read_jobs(exp_dir)
    queue = executor.queue()
    return [r for r in summary["runs"] if r["dir"] in jobs and jobs[r["dir"]] not in queue
            and not _started(exp_dir, r, unless="done")]


def _started(exp_dir: Path, run: dict, unless: str | None = None) -> bool:
    """Whether the run must not be started now: its train.py runs on this machine (started by
    a submitter that was killed, or by hand), or its state.json is damaged (done or not cannot
    be told); with `unless`, also when its state is that."""
    folder = RunFolder(exp_dir / run["dir"])
    try:
        state = folder.state()
    except Damaged as e:
        warn(f"{run['dir']} is not started: {e}")
        return True
    if running_here(state):
        warn(f"{run['dir']} is not started: it is running already (pid {state['pid']} on this machine)")
        return True
    return unless is not None and state.get("state") == unless


def follow(exp_dir: Path, executor, poll_s: float | None = None) -> list[tuple[str, str]]:
    """`submit --follow`: submit what the cluster takes; when sbatch refuses for a limit, wait for
    jobs to end and submit more, until every run is submitted (each once: jobs.tsv says which)."""
    poll_s = float(os.environ.get("HYPERSAL_FOLLOW_POLL_S", FOLLOW_POLL_S)) if poll_s is None else poll_s
    done = []
    while True:
        try:
            return done + submit(exp_dir, executor)
        except SweepSubmitError as e:
            if e.limit is None:
                raise
            summary = load_summary(exp_dir)
            left = (f"{workers_mod.owed(exp_dir, summary)} worker job(s)" if summary.get("workers")
                    else f"{len(pending_runs(exp_dir, summary))} run(s)")
            print(f"hypersal: {left} to go, held back by {e.limit}; {len(executor.queue())} of your "
                  f"jobs are queued: trying again in {poll_s:g} s (Ctrl-C stops; nothing is lost)",
                  file=sys.stderr, flush=True)
            time.sleep(poll_s)


def submit(exp_dir: Path, executor, again: bool = False) -> list[tuple[str, str]]:
    """Submit every run of the folder not yet submitted: [(run folder, job id)]. With `again`
    (experiment.py resume), the unfinished runs instead: each resumes from its checkpoint."""
    exp_dir = Path(exp_dir)
    summary = load_summary(exp_dir)
    with submitting(exp_dir):   # decided and started by one submitter at a time
        read_jobs(exp_dir, strict=True)   # a damaged line: which run it records cannot be told
        if summary.get("workers"):
            try:
                return workers_mod.submit(exp_dir, summary, executor, again)
            finally:
                _summary_job_ids(exp_dir, summary)
        todo = unfinished_runs(exp_dir, summary, executor) if again else pending_runs(exp_dir, summary)
        if not todo:
            what = "done or still queued" if again else f"submitted already (see {JOBS})"
            print(f"hypersal: every run of {exp_dir} is {what}", file=sys.stderr)
            return []
        try:
            if isinstance(executor, LocalExecutor):
                return _run_locally(exp_dir, todo, executor, summary)
            if summary["mode"] == "array":
                return _submit_array(exp_dir, summary, todo, executor)
            return _submit_jobs(exp_dir, summary, todo, executor)
        finally:
            _summary_job_ids(exp_dir, summary)


def _summary_job_ids(exp_dir: Path, summary: dict) -> None:
    """Copy the job ids of jobs.tsv (the crash-safe log) into summary.yaml, once per submission
    (on workers: the worker jobs', and summary.yaml read afresh, since workers rewrite it too)."""
    jobs = read_jobs(exp_dir)
    if summary.get("workers"):
        workers_mod.write_summary(exp_dir, lambda s: s.update(worker_jobs=workers_mod.submitted(jobs)))
        return
    for run in summary["runs"]:
        run["job_id"] = jobs.get(run["dir"])
    yamlio.dump(summary, Path(exp_dir) / SUMMARY)


def _submit_jobs(exp_dir: Path, summary: dict, todo: list[dict], executor: SlurmExecutor):
    done = []
    room = executor.job_room()
    for k, run in enumerate(todo):
        if k == room:   # sbatch would hang, retrying, until jobs end: stop here and say why
            reason = f"the cluster holds as many jobs as its MaxJobCount allows ({executor.limits()['MaxJobCount']})"
            raise SweepSubmitError(_failure(exp_dir, summary, run, reason, done), limit_of(reason))
        try:
            job = executor.submit(exp_dir / run["dir"] / "exp.sh", cwd=exp_dir / run["dir"])
        except SubmitError as e:
            raise SweepSubmitError(_failure(exp_dir, summary, run, str(e), done), limit_of(str(e))) from None
        _record(exp_dir, [(run["dir"], job)])
        done.append((run["dir"], job))
        print(f"hypersal: {run['dir']} submitted as job {job}", file=sys.stderr)
    return done


def array_chunks(indices: list[int], max_array_size: int, width: int) -> list[tuple[int, list[int], str | None]]:
    """Split run indices into job arrays Slurm accepts: array task ids must be below the
    cluster's MaxArraySize. Each chunk is (offset, run indices, run folder pattern): its task id
    is the run index minus the offset. Chunks are aligned to a power of ten, 10**k <= MaxArraySize,
    so the folder pattern is a fixed prefix and %ka (run_1%3a: run_1000 ... run_1999), and every
    task's Slurm log still lands in its own run folder. None: the array script's own pattern."""
    indices = sorted(indices)
    if not indices or indices[-1] < max_array_size:
        return [(0, indices, None)]
    k = max(0, min(width, len(str(max_array_size)) - 1))   # 10**k <= max_array_size
    chunks: dict[int, list[int]] = {}
    for index in indices:
        chunks.setdefault(index // 10**k, []).append(index)
    out = []
    for block, members in sorted(chunks.items()):
        prefix = f"run_{block:0{width - k}d}" if width > k else "run_"
        out.append((block * 10**k, members, prefix + (f"%{k}a" if k else "")))
    return out


def _submit_array(exp_dir: Path, summary: dict, todo: list[dict], executor: SlurmExecutor):
    """One job array, or several where the sweep is larger than the cluster's MaxArraySize.
    With `parallelism`, each array waits for the one before (afterany), so at most that many run
    at once over the whole sweep."""
    by_index = {r["index"]: r for r in todo}
    width = max(3, len(str(len(summary["runs"]) - 1)))
    max_size = executor.max_array_size()
    chunks = array_chunks(list(by_index), max_size, width)
    if len(chunks) > 1:
        print(f"hypersal: the cluster's MaxArraySize is {max_size}: {len(todo)} runs go as {len(chunks)} "
              "job arrays", file=sys.stderr)
    done, previous = [], None
    for offset, indices, folder in chunks:
        ids = [i - offset for i in indices]
        extra = [f"--array={array_spec(ids, summary.get('parallelism'))}"]
        if offset:
            extra += [f"--export=ALL,HYPERSAL_ARRAY_OFFSET={offset}",
                      f"--output={exp_dir / folder / 'slurm-%A_%a.out'}"]
        if previous and summary.get("parallelism"):
            extra.append(f"--dependency=afterany:{previous}")
        try:
            job = executor.submit(exp_dir / "array.sh", cwd=exp_dir, extra=extra)
        except SubmitError as e:
            raise SweepSubmitError(_failure(exp_dir, summary, None, str(e), done, len(indices)),
                                   limit_of(str(e))) from None
        lines = [(by_index[i]["dir"], f"{job}_{i - offset}") for i in indices]
        _record(exp_dir, lines)
        done += lines
        previous = job
        print(f"hypersal: {len(indices)} runs submitted as job array {job} ({extra[0]}"
              f"{f', runs from {offset}' if offset else ''})", file=sys.stderr)
    return done


def _run_locally(exp_dir: Path, todo: list[dict], executor: LocalExecutor, summary: dict):
    """Each run's exp.sh on this machine, `parallelism` of them at once (one when unset). An
    adaptive sweep's run folders stay empty until their job starts: each of its runs is the
    sweep's array.sh, given the run's index as Slurm gives an array task its id."""
    parallelism = summary.get("parallelism")
    lock = threading.Lock()
    codes: dict[str, int] = {}

    def one(k: int, run: dict) -> None:
        run_dir = exp_dir / run["dir"]
        with lock:
            print(f"hypersal: [{k}/{len(todo)}] running {run['dir']} here (log: {run_dir / 'local.out'})",
                  file=sys.stderr, flush=True)
        if "search" in summary:
            code = executor.run(exp_dir / "array.sh", cwd=run_dir,
                                env={"SLURM_ARRAY_TASK_ID": str(run["index"]), "HYPERSAL_ARRAY_OFFSET": "0"})
        else:
            code = executor.run(run_dir / "exp.sh", cwd=run_dir)
        with lock:
            # Recorded once it ended: a sweep interrupted here reruns this run on `submit`
            # (train.py resumes from its checkpoint).
            _record(exp_dir, [(run["dir"], "local")])
            codes[run["dir"]] = code
            if code != 0:
                print(f"hypersal: {run['dir']} failed with exit status {code}; see {run_dir / 'local.out'}",
                      file=sys.stderr)

    pool = ThreadPoolExecutor(max_workers=parallelism or 1)   # threads: each waits on its bash
    try:
        for future in [pool.submit(one, k, run) for k, run in enumerate(todo, 1)]:
            future.result()
    finally:   # Ctrl-C (or an error) starts no further run; the running ones got the SIGINT too
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [run["dir"] for run in todo if codes[run["dir"]] != 0]
    if failed:
        raise SweepSubmitError(f"{len(failed)} of {len(todo)} runs failed here: {', '.join(failed)}. "
                               f"Their logs are local.out in each run folder.")
    return [(run["dir"], "local") for run in todo]


def _failure(exp_dir: Path, summary: dict, run: dict | None, reason: str, done: list, array_runs: int = 0) -> str:
    total = len(summary["runs"])
    what = f"{run['dir']} ({run['index'] + 1} of {total})" if run else f"a job array ({array_runs} of {total} runs)"
    before = read_jobs(exp_dir)
    if len(before) > 4:
        names = sorted(before)
        listed = f"{len(before)} runs ({names[0]} ... {names[-1]}, job ids in {JOBS})"
    else:
        listed = ", ".join(f"{r} (job {j})" for r, j in before.items()) or "none"
    limit = limit_of(reason)
    me = f"{shlex.quote(sys.executable)} {shlex.quote(str(CODE_ROOT / 'experiment.py'))}"
    if limit:
        return (f"could not submit {what}: {reason}. That is {limit}. Already submitted, and staying so: "
                f"{listed}. Submit the rest as jobs end with: {me} submit {shlex.quote(str(exp_dir))} --follow")
    return (f"sbatch failed for {what}: {reason}. Already submitted: {listed}. Fix the cause, then "
            f"submit the rest with: {me} submit {shlex.quote(str(exp_dir))}")
