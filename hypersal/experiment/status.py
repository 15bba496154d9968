"""`experiment.py status|cancel DIR`: what each run of a sweep is doing, from squeue and from
what train.py wrote into the run folder (state.json, the tail of metrics.jsonl), never from
sacct; for a sweep on workers, which worker holds or ran each run (lease.json, state.json) and
the workers themselves (workers/<id>.json: hypersal/experiment/workers.py). `status --watch`
redraws the table until every run has ended."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment import runs as runs_mod, worker_view, workers as workers_mod
from hypersal.errors import UserError
from hypersal.experiment.runs import Sweep, metric_records, number, short_names
from hypersal.progress import fmt_duration
from hypersal.experiment.executors import LocalExecutor, QueueEntry, SubmitError
from hypersal.experiment.folder import read_jobs
from hypersal.experiment.table import format_table
from hypersal.log import say
from hypersal.runfolder import RunFolder, running_here


def run_status(job: str | None, queued: QueueEntry | None, state: dict, queue_known: bool = True) -> str:
    """One word (and a detail) for a run: not submitted, pending, running, done, failed, ...
    Without the queue (squeue failed) only what the run folder says is certain."""
    requeues = state.get("requeues", 0)
    again = f" (requeued {requeues}x)" if requeues else ""
    if job is None:
        # The local executor records a run once it has ended: one running now is not yet recorded.
        return "running" if state.get("state") == "running" and running_here(state) else "not submitted"
    if not queue_known and state.get("state") in (None, "running", "requeued"):
        return f"unknown (squeue failed; its folder says {state.get('state') or 'nothing yet'})"
    if queued is not None:
        word = queued.state.lower()
        if word == "pending" and queued.reason and queued.reason not in ("None", "(null)"):
            word += f" ({queued.reason})"
        return word + again
    saved = state.get("state")
    if saved == "running" and job == "local" and running_here(state):   # rerun by `submit`, here
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


def _queue(jobs: dict, executor, on_workers: bool = False) -> tuple[dict, bool]:
    """squeue's jobs when the sweep has any on Slurm (a worker started by hand may run in a job of
    its own), and whether squeue answered."""
    if not on_workers and not any(j != "local" for j in jobs.values()):
        return {}, True
    try:
        return executor.queue(), True
    except SubmitError as e:   # a controller down: the folders still say what finished
        say(f"warning: {e}; showing what the run folders say")
        return {}, False


def rows(sweep: Sweep, executor, workers: list[dict] | None = None) -> list[dict]:
    """One row per run; `workers`, when given, gets one row per worker of a sweep on workers."""
    jobs = read_jobs(sweep.exp_dir)
    on_workers = workers_mod.on_workers(sweep.exp_dir, sweep.summary)
    queue, queue_known = _queue(jobs, executor, on_workers)
    if on_workers:
        table = worker_view.workers_rows(sweep.exp_dir, jobs, queue, queue_known)
        live = any(w["state"].startswith(workers_mod.LIVE) for w in table)
        slurm = queue_known and not isinstance(executor, LocalExecutor)   # else squeue cannot judge a lease
        judge = workers_mod.judge(sweep.exp_dir, queue if slurm else None)
        if workers is not None:
            workers[:] = table
    metric = sweep.search["metric"] if sweep.search else None
    out = []
    for run in sweep.runs:
        job = jobs.get(run.name)
        if on_workers and job is None and not run.damaged:   # a worker's run (submitted or started by hand)
            worker, word = worker_view.run_view(run.folder.path, run.state, judge, live, bool(table),
                                                bool(sweep.summary.get("workers")))
        else:
            worker = None
            word = f"damaged ({run.damaged_files})" if run.damaged else run_status(job, queue.get(job), run.state,
                                                                                   queue_known)
        out.append({
            "run": run.name, **({"worker": worker or "-"} if on_workers else {"job": job or "-"}),
            # an adaptive sweep's trials: their numbers and values
            **({"trial": "-" if run.trial is None else run.trial, metric: run.extra.get(metric, "-")} if metric else {}),
            # which file, in the table; what is wrong with it, in the warning above it
            "status": word,
            "stage": run.state.get("stage") or "-",
            "progress": run.state.get("progress") or "-",
            **latest(run.folder, run.state),
            **run.sampled,
        })
    names = short_names(sweep.sampled_keys())   # trainer.train.optim.lr -> lr where no other key ends so
    return [{names.get(k, k): v for k, v in row.items()} for row in out]


def latest(folder: RunFolder, state: dict) -> dict:
    """The latest training loss and the running stage's ETA, from the tail of metrics.jsonl:
    the rate between its first and last loss records of that stage, against the stage's
    epochs x steps_per_epoch in config.yaml. A figure that is not a number is passed over."""
    records = [r for r in metric_records(folder, whole=False, live=state.get("state") == "running")
               if number(r.get("loss")) and number(r.get("step")) and number(r.get("time"))]
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
    except (UserError, AttributeError, KeyError, TypeError, ValueError):   # the ETA is a courtesy
        return out
    if last["step"] > first["step"] and last["time"] > first["time"]:
        rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
        out["eta"] = fmt_duration((total - last["step"]) / rate)
    return out


LIVE = ("pending", "running", "configuring", "completing", "requeued", "suspended", "unknown", "resizing",
        "starting", "waiting")


def status(exp_dir: Path, executor) -> str:
    sweep = runs_mod.load(exp_dir)
    workers: list[dict] = []
    table = rows(sweep, executor, workers)
    return render(table, sweep.best) + render_workers(workers)


def live(table: list[dict]) -> int:
    """How many runs have not ended (queued, running, waiting to be requeued)."""
    return sum(row["status"].startswith(LIVE) for row in table)


def watch(exp_dir: Path, executor, every_s: float, stream=None) -> None:
    """Redraw the status every `every_s` seconds, in place on a terminal (one table after
    another in a file), until no run is queued or running."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    while True:
        sweep = runs_mod.load(exp_dir)
        workers: list[dict] = []
        table = rows(sweep, executor, workers)
        text = render(table, sweep.best) + render_workers(workers)
        left = live(table)
        stamp = time.strftime("%H:%M:%S")
        footer = (f"{stamp}: {left} run{'s' * (left != 1)} still queued or running; refreshing every "
                  f"{every_s:g} s (Ctrl-C stops watching, not the runs)" if left else f"{stamp}: every run has ended")
        stream.write(("\033[H\033[J" if tty else "") + text + footer + "\n" + ("" if tty else "\n"))
        stream.flush()
        if not left:
            return
        time.sleep(every_s)


def render(table: list[dict], best: str | None) -> str:
    """The table, the count of runs by status, and an adaptive sweep's best trial so far."""
    text = format_table(table) + f"\n{count(table, 'status', 'run')}\n"
    return text + (f"best so far: {best}\n" if best else "")


def render_workers(workers: list[dict]) -> str:
    """The workers of a sweep on workers, and their count by state ("" for any other sweep)."""
    if not workers:
        return ""
    return f"\n{format_table(workers)}\n{count(workers, 'state', 'worker')}\n"


def count(rows: list[dict], column: str, noun: str) -> str:
    """"12 runs: 4 done, 8 failed": the rows by the first word(s) of `column`, before any "(...)"."""
    counts: dict[str, int] = {}
    for row in rows:
        word = row[column].split(" (")[0]
        counts[word] = counts.get(word, 0) + 1
    total = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    return f"{len(rows)} {noun}{'s' * (len(rows) != 1)}: {total}"


def cancel(exp_dir: Path, executor) -> list[str]:
    """scancel every job of the sweep that Slurm still knows."""
    jobs = read_jobs(exp_dir)
    queue = executor.queue()
    live = sorted({j for j in jobs.values() if j in queue})
    executor.cancel(live)
    return live
