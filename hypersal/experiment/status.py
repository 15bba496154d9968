"""`experiment.py status|cancel DIR`: what each run of a sweep is doing, from squeue and from
what train.py wrote into the run folder (state.json), never from sacct."""
from __future__ import annotations

from pathlib import Path

from hypersal.experiment.collect import trial_values
from hypersal.experiment.executors import QueueEntry, SubmitError
from hypersal.experiment.submit import load_summary, read_jobs
from hypersal.experiment.table import format_table
from hypersal.log import say
from hypersal.runfolder import RunFolder


def run_status(job: str | None, queued: QueueEntry | None, state: dict, queue_known: bool = True) -> str:
    """One word (and a detail) for a run: not submitted, pending, running, done, failed, ...
    Without the queue (squeue failed) only what the run folder says is certain."""
    requeues = state.get("requeues", 0)
    again = f" (requeued {requeues}x)" if requeues else ""
    if job is None:
        return "not submitted"
    if not queue_known and state.get("state") in (None, "running", "requeued"):
        return f"unknown (squeue failed; its folder says {state.get('state') or 'nothing yet'})"
    if queued is not None:
        word = queued.state.lower()
        if word == "pending" and queued.reason and queued.reason not in ("None", "(null)"):
            word += f" ({queued.reason})"
        return word + again
    saved = state.get("state")
    if saved == "pruned":
        return f"pruned at epoch {state.get('pruned_epoch', '?')}" + again
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
    queue, queue_known = {}, True
    if any(j != "local" for j in jobs.values()):
        try:
            queue = executor.queue()
        except SubmitError as e:   # a controller down: the folders still say what finished
            say(f"warning: {e}; showing what the run folders say")
            queue_known = False
    out = []
    values = trial_values(exp_dir, summary)   # an adaptive sweep's trials: their values
    for run in summary["runs"]:
        folder = RunFolder(Path(exp_dir) / run["dir"])
        state = folder.state()
        job = jobs.get(run["dir"])
        info = folder.run_info() if folder.run_yaml.is_file() else {}
        out.append({
            "run": run["dir"], "job": job or "-",
            **({"trial": info.get("trial", "-"), summary["search"]["metric"]: values.get(info.get("trial"), "-")}
               if "search" in summary else {}),
            "status": run_status(job, queue.get(job), state, queue_known),
            "stage": state.get("stage") or "-",
            "progress": state.get("progress") or "-",
            # an adaptive sweep's values are drawn when its job starts: run.yaml has them
            **{k: v for k, v in (info.get("sampled") or run.get("sampled", {})).items()},
        })
    return out


def status(exp_dir: Path, executor) -> str:
    table = rows(exp_dir, executor)
    counts: dict[str, int] = {}
    for row in table:
        word = row["status"].split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    total = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    text = format_table(table) + f"\n{len(table)} run{'s' * (len(table) != 1)}: {total}\n"
    best = search_best(exp_dir)
    return text + (f"best so far: {best}\n" if best else "")


def search_best(exp_dir: Path) -> str | None:
    """An adaptive sweep's best trial so far, from its study (None for a plain sweep)."""
    summary = load_summary(exp_dir)
    if "search" not in summary:
        return None
    from hypersal import search as search_mod
    try:
        study = search_mod.load(exp_dir)
        best = study.best_trial
    except (ValueError, KeyError):     # no trial finished yet
        return "none yet (no trial has finished)"
    return f"trial {best.number}, {summary['search']['metric']} {best.value:.6g}"


def cancel(exp_dir: Path, executor) -> list[str]:
    """scancel every job of the sweep that Slurm still knows."""
    jobs = read_jobs(exp_dir)
    queue = executor.queue()
    live = sorted({j for j in jobs.values() if j in queue})
    executor.cancel(live)
    return live
