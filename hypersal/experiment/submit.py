"""Submitting an experiment folder, from what is written in it alone.

Every submission is appended to jobs.tsv the moment sbatch answers, so a sweep stopped half
way (sbatch refusing run k, a lost connection) can be finished by `experiment.py submit DIR`
without submitting any run twice.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from hypersal import yamlio
from hypersal.errors import UserError
from hypersal.experiment.executors import LocalExecutor, SlurmExecutor, SubmitError
from hypersal.experiment.plan import array_spec
from hypersal.experiment.repro import CODE_ROOT
from hypersal.experiment.write import JOBS, SUMMARY
from hypersal.runfolder import RunFolder


class SweepSubmitError(Exception):
    """A submission failed part way; the message names the run and what was submitted."""


def load_summary(exp_dir: Path) -> dict:
    path = Path(exp_dir) / SUMMARY
    if not path.is_file():
        raise UserError("not an experiment folder (no summary.yaml)", file=exp_dir,
                        fix="pass the folder experiment.py printed, <base_dir>/<name>")
    return yamlio.load(path)


def read_jobs(exp_dir: Path) -> dict[str, str]:
    """{run folder name: job id} of every submission so far (the last one wins)."""
    jobs = {}
    path = Path(exp_dir) / JOBS
    if path.is_file():
        for line in path.read_text().splitlines():
            if "\t" in line:
                run, job = line.split("\t", 1)
                jobs[run] = job
    return jobs


def _record(exp_dir: Path, lines: list[tuple[str, str]]) -> None:
    with open(exp_dir / JOBS, "a", encoding="utf-8") as f:
        f.write("".join(f"{run}\t{job}\n" for run, job in lines))
        f.flush()


def pending_runs(exp_dir: Path, summary: dict) -> list[dict]:
    done = read_jobs(exp_dir)
    return [r for r in summary["runs"] if r["dir"] not in done]


def unfinished_runs(exp_dir: Path, summary: dict, executor) -> list[dict]:
    """Runs submitted before that are neither done nor known to Slurm any more: killed hard, on
    a lost node, stopped, failed. Runs never submitted are `submit`'s."""
    jobs = read_jobs(exp_dir)
    queue = executor.queue()
    return [r for r in summary["runs"] if r["dir"] in jobs and jobs[r["dir"]] not in queue
            and RunFolder(exp_dir / r["dir"]).state().get("state") != "done"]


def submit(exp_dir: Path, executor, again: bool = False) -> list[tuple[str, str]]:
    """Submit every run of the folder not yet submitted: [(run folder, job id)]. With `again`
    (experiment.py resume), the unfinished runs instead: each resumes from its checkpoint."""
    exp_dir = Path(exp_dir)
    summary = load_summary(exp_dir)
    todo = unfinished_runs(exp_dir, summary, executor) if again else pending_runs(exp_dir, summary)
    if not todo:
        what = "done or still queued" if again else f"submitted already (see {JOBS})"
        print(f"hypersal: every run of {exp_dir} is {what}", file=sys.stderr)
        return []
    try:
        if isinstance(executor, LocalExecutor):
            return _run_locally(exp_dir, todo, executor)
        if summary["mode"] == "array":
            return _submit_array(exp_dir, summary, todo, executor)
        return _submit_jobs(exp_dir, summary, todo, executor)
    finally:
        _summary_job_ids(exp_dir, summary)


def _summary_job_ids(exp_dir: Path, summary: dict) -> None:
    """Copy the job ids of jobs.tsv (the crash-safe log) into summary.yaml, once per submission."""
    jobs = read_jobs(exp_dir)
    for run in summary["runs"]:
        run["job_id"] = jobs.get(run["dir"])
    yamlio.dump(summary, Path(exp_dir) / SUMMARY)


def _submit_jobs(exp_dir: Path, summary: dict, todo: list[dict], executor: SlurmExecutor):
    done = []
    for run in todo:
        try:
            job = executor.submit(exp_dir / run["dir"] / "exp.sh", cwd=exp_dir / run["dir"])
        except SubmitError as e:
            raise SweepSubmitError(_failure(exp_dir, summary, run, str(e), done)) from None
        _record(exp_dir, [(run["dir"], job)])
        done.append((run["dir"], job))
        print(f"hypersal: {run['dir']} submitted as job {job}", file=sys.stderr)
    return done


def _submit_array(exp_dir: Path, summary: dict, todo: list[dict], executor: SlurmExecutor):
    indices = [r["index"] for r in todo]
    extra = [f"--array={array_spec(indices, summary.get('parallelism'))}"]
    try:
        job = executor.submit(exp_dir / "array.sh", cwd=exp_dir, extra=extra)
    except SubmitError as e:
        raise SweepSubmitError(_failure(exp_dir, summary, None, str(e), [])) from None
    lines = [(r["dir"], f"{job}_{r['index']}") for r in todo]
    _record(exp_dir, lines)
    print(f"hypersal: {len(todo)} runs submitted as job array {job} ({extra[0]})", file=sys.stderr)
    return lines


def _run_locally(exp_dir: Path, todo: list[dict], executor: LocalExecutor):
    done, failed = [], []
    for k, run in enumerate(todo, 1):
        run_dir = exp_dir / run["dir"]
        print(f"hypersal: [{k}/{len(todo)}] running {run['dir']} here (log: {run_dir / 'local.out'})",
              file=sys.stderr, flush=True)
        code = executor.run(run_dir / "exp.sh", cwd=run_dir)
        # Recorded once it ended: a sweep interrupted here reruns this run on `submit`
        # (train.py resumes from its checkpoint).
        _record(exp_dir, [(run["dir"], "local")])
        done.append((run["dir"], "local"))
        if code != 0:
            failed.append(run["dir"])
            print(f"hypersal: {run['dir']} failed with exit status {code}; see {run_dir / 'local.out'}",
                  file=sys.stderr)
    if failed:
        raise SweepSubmitError(f"{len(failed)} of {len(todo)} runs failed here: {', '.join(failed)}. "
                               f"Their logs are local.out in each run folder.")
    return done


def _failure(exp_dir: Path, summary: dict, run: dict | None, reason: str, done: list) -> str:
    total = len(summary["runs"])
    what = f"{run['dir']} ({run['index'] + 1} of {total})" if run else f"the job array ({total} runs)"
    before = read_jobs(exp_dir)
    listed = ", ".join(f"{r} (job {j})" for r, j in before.items()) or "none"
    return (f"sbatch failed for {what}: {reason}. Already submitted: {listed}. Fix the cause, then "
            f"submit the rest with: {shlex.quote(sys.executable)} {shlex.quote(str(CODE_ROOT / 'experiment.py'))} submit "
            f"{shlex.quote(str(exp_dir))}")
