"""`experiment.py status|cancel DIR`: what each run of a sweep is doing, from squeue and from
what train.py wrote into the run folder (state.json, the tail of metrics.jsonl), never from
sacct. `status --watch` redraws the table until every run has ended."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment.runs import metric_records, short_names, trial_values
from hypersal.progress import fmt_duration
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
        # The local executor records a run once it has ended: one running now is not yet recorded.
        return "running" if state.get("state") == "running" and _alive_here(state) else "not submitted"
    if not queue_known and state.get("state") in (None, "running", "requeued"):
        return f"unknown (squeue failed; its folder says {state.get('state') or 'nothing yet'})"
    if queued is not None:
        word = queued.state.lower()
        if word == "pending" and queued.reason and queued.reason not in ("None", "(null)"):
            word += f" ({queued.reason})"
        return word + again
    saved = state.get("state")
    if saved == "running" and job == "local" and _alive_here(state):   # rerun by `submit`, here
        return "running"
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
    sampled_keys = []
    values = trial_values(exp_dir, summary)   # an adaptive sweep's trials: their values
    for run in summary["runs"]:
        folder = RunFolder(Path(exp_dir) / run["dir"])
        state = folder.state()
        job = jobs.get(run["dir"])
        info = folder.run_info() if folder.run_yaml.is_file() else {}
        # an adaptive sweep's values are drawn when its job starts: run.yaml has them
        sampled = info.get("sampled") or run.get("sampled", {})
        sampled_keys += [k for k in sampled if k not in sampled_keys]
        out.append({
            "run": run["dir"], "job": job or "-",
            **({"trial": info.get("trial", "-"), summary["search"]["metric"]: values.get(info.get("trial"), "-")}
               if "search" in summary else {}),
            "status": run_status(job, queue.get(job), state, queue_known),
            "stage": state.get("stage") or "-",
            "progress": state.get("progress") or "-",
            **latest(folder, state),
            **sampled,
        })
    names = short_names(sampled_keys)   # trainer.train.optim.lr -> lr where no other key ends so
    return [{names.get(k, k): v for k, v in row.items()} for row in out]


def _alive_here(state: dict) -> bool:
    """A run of the local executor still running: its process lives on this machine."""
    if state.get("host") != socket.gethostname() or not state.get("pid"):
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    return True


def latest(folder: RunFolder, state: dict) -> dict:
    """The latest training loss and the running stage's ETA, from the tail of metrics.jsonl:
    the rate between its first and last loss records of that stage, against the stage's
    epochs x steps_per_epoch in config.yaml."""
    records = [r for r in metric_records(folder, whole=False) if "loss" in r]
    if not records:
        return {"loss": "-", "eta": "-"}
    last = records[-1]
    out = {"loss": f"{last['loss']:.4g}", "eta": "-"}
    stage = state.get("stage")
    if state.get("state") != "running" or stage != last.get("stage"):
        return out
    mine = [r for r in records if r.get("stage") == stage]
    first = mine[0]
    try:
        section = yamlio.load(folder.config).get(stage) or {}
        total = int(section["epochs"]) * int(section["steps_per_epoch"])
    except (OSError, KeyError, TypeError, ValueError):
        return out
    if last["step"] > first["step"] and last["time"] > first["time"]:
        rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
        out["eta"] = fmt_duration((total - last["step"]) / rate)
    return out


LIVE = ("pending", "running", "configuring", "completing", "requeued", "suspended", "unknown", "resizing")


def status(exp_dir: Path, executor) -> str:
    return render(exp_dir, rows(exp_dir, executor))


def live(table: list[dict]) -> int:
    """How many runs have not ended (queued, running, waiting to be requeued)."""
    return sum(row["status"].startswith(LIVE) for row in table)


def watch(exp_dir: Path, executor, every_s: float, stream=None) -> None:
    """Redraw the status every `every_s` seconds, in place on a terminal (one table after
    another in a file), until no run is queued or running."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    while True:
        table = rows(exp_dir, executor)
        text = render(exp_dir, table)
        left = live(table)
        stamp = time.strftime("%H:%M:%S")
        footer = (f"{stamp}: {left} run{'s' * (left != 1)} still queued or running; refreshing every "
                  f"{every_s:g} s (Ctrl-C stops watching, not the runs)" if left else f"{stamp}: every run has ended")
        stream.write(("\033[H\033[J" if tty else "") + text + footer + "\n" + ("" if tty else "\n"))
        stream.flush()
        if not left:
            return
        time.sleep(every_s)


def render(exp_dir: Path, table: list[dict]) -> str:
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
