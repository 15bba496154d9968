"""`experiment.py status|cancel DIR`: what each run of a sweep is doing, from squeue and from
what train.py wrote into the run folder (state.json), never from sacct."""
from __future__ import annotations

from pathlib import Path

from hypersal.experiment.executors import QueueEntry
from hypersal.experiment.submit import load_summary, read_jobs
from hypersal.experiment.table import format_table
from hypersal.runfolder import RunFolder


def run_status(job: str | None, queued: QueueEntry | None, state: dict) -> str:
    """One word (and a detail) for a run: not submitted, pending, running, done, failed, ..."""
    requeues = state.get("requeues", 0)
    again = f" (requeued {requeues}x)" if requeues else ""
    if job is None:
        return "not submitted"
    if queued is not None:
        word = queued.state.lower()
        if word == "pending" and queued.reason and queued.reason not in ("None", "(null)"):
            word += f" ({queued.reason})"
        return word + again
    saved = state.get("state")
    if saved == "requeued":
        return "requeued (waiting to be queued again)" if job != "local" else "stopped"
    if saved == "running":
        # Neither queued nor finished: killed hard, node lost, or (local) interrupted.
        return "lost (ended while running; see its log)" + again
    if saved:
        return saved + again
    return "ended before train.py started (see its log)" if job != "local" else "not run"


def rows(exp_dir: Path, executor) -> list[dict]:
    summary = load_summary(exp_dir)
    jobs = read_jobs(exp_dir)
    queue = executor.queue() if any(j != "local" for j in jobs.values()) else {}
    out = []
    for run in summary["runs"]:
        folder = RunFolder(Path(exp_dir) / run["dir"])
        state = folder.state()
        job = jobs.get(run["dir"])
        out.append({
            "run": run["dir"], "job": job or "-",
            "status": run_status(job, queue.get(job), state),
            "stage": state.get("stage") or "-",
            "progress": state.get("progress") or "-",
            **{k: v for k, v in run.get("sampled", {}).items()},
        })
    return out


def status(exp_dir: Path, executor) -> str:
    table = rows(exp_dir, executor)
    counts: dict[str, int] = {}
    for row in table:
        word = row["status"].split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    total = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    return format_table(table) + f"\n{len(table)} run{'s' * (len(table) != 1)}: {total}\n"


def cancel(exp_dir: Path, executor) -> list[str]:
    """scancel every job of the sweep that Slurm still knows."""
    jobs = read_jobs(exp_dir)
    queue = executor.queue()
    live = sorted({j for j in jobs.values() if j in queue})
    executor.cancel(live)
    return live
