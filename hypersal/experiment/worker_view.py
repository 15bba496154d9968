"""What `status` shows of a sweep on workers: one line per worker (pending, starting, running,
idle, ended, lost) and, for each run, the worker holding or last running it and its state as
the leases say. The submitting side and summary.yaml are hypersal/experiment/workers.py.
Torch-free."""
from __future__ import annotations

import socket
from pathlib import Path

from hypersal.experiment import lease as L
from hypersal.experiment.workers import SECONDS, records, submitted
from hypersal.runfolder import running_here


def worker_state(rec: dict | None, queued, queue_known: bool, job: str | None) -> str:
    """One word (and a detail) for a worker: pending, starting, running, idle, ended, lost."""
    if queued is not None:
        word = queued.state.lower()
        if word == "pending":
            return "pending (requeued)" if rec else "pending"
        if word != "running":
            return word
        if rec is None or rec.get("state") == "ended":
            return "starting" if rec is None or rec.get("requeued") else "ending"
        return rec.get("state") or "starting"
    if rec is None:
        if job in (None, "local"):
            return "not started"
        return "unknown (squeue failed)" if not queue_known else "ended before it started (see its Slurm log)"
    saved = rec.get("state") or "idle"
    if saved == "ended":
        return f"ended (exit {rec.get('exit')})" if rec.get("exit") not in (0, None) else "ended"
    if rec.get("job"):
        if not queue_known:
            return f"unknown (squeue failed; its record says {saved})"
        return "lost (its job left squeue without ending)"
    if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int) and L.process_gone(rec["pid"], None):
        return "lost (its process is gone)"
    return saved


def workers_rows(exp_dir: Path, jobs: dict, queue: dict, queue_known: bool) -> list[dict]:
    """One row per worker: its jobs.tsv job (pending ones have no record yet) or its record."""
    recs, rows, seen = records(exp_dir), [], set()
    for job in submitted(jobs):
        if job != "local" and job not in seen:
            seen.add(job)
            rows.append(_worker_row(job, recs.get(job), job, queue.get(job), queue_known))
    for wid, rec in recs.items():
        if wid not in seen:
            job = rec.get("job")
            rows.append(_worker_row(wid, rec, job, queue.get(job) if job else None, queue_known))
    return rows


def _worker_row(wid: str, rec: dict | None, job: str | None, queued, queue_known: bool) -> dict:
    rec_ = rec or {}
    restarts = rec_.get("restarts") or 0
    return {"worker": wid, "job": job or "local", "host": rec_.get("host") or "-",
            "state": worker_state(rec, queued, queue_known, job) + (f" (restarted {restarts}x)" if restarts else ""),
            "runs": len(rec_.get("runs") or []),
            **{k.replace("_seconds", "_s"): _secs(rec_.get(k)) for k in SECONDS}}


def _secs(value) -> str:
    return f"{value:.0f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def run_view(run_dir: Path, state: dict, judge_: L.Judge, workers_live: bool, any_worker: bool,
             submitted_: bool = True) -> tuple[str, str]:
    """(the worker holding or last running the run, its status) for a run of a sweep on workers
    (`submitted_`: as worker jobs, which `resume` submits again; else started by hand)."""
    saved = state.get("state")
    lease, mtime = L.read(run_dir)
    worker = (lease or {}).get("worker") or state.get("worker") or "-"
    if saved in ("done", "failed"):
        return worker, saved
    if saved == "pruned":
        return worker, f"pruned at epoch {state.get('pruned_epoch', '?')}"
    if lease is not None:
        if judge_.stale(lease, mtime) is None:
            return worker, "running" if saved == "running" else "starting"
        return worker, "lost (its worker is gone; a worker or `resume` takes it over)"
    if saved == "running":
        if running_here(state):
            return worker, "running"
        return worker, "lost (ended while running; see its log)"
    stopped = " (stopped at a checkpoint)" if saved in ("stopped", "requeued") else ""
    if workers_live:
        return worker, "waiting for a worker" + stopped
    if not any_worker:
        return worker, "stopped" if stopped else "not submitted"
    again = "`resume` submits workers" if submitted_ else "start a worker, or `submit` it"
    return worker, ("stopped" if stopped else "not started") + f" (no worker left: {again})"
