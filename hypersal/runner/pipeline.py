"""Running a config's stage list, marking each finished stage, so a restarted job (requeued,
preempted, rerun by hand) skips what is done and starts from the model the last finished
stage saved."""
from __future__ import annotations

import os
import socket
import time

from hypersal.log import say
from hypersal.runfolder import now
from hypersal.stages import STAGES
from hypersal.config.stagelist import check
from hypersal.train import signals
from hypersal.train.distributed import barrier


def start_state(folder) -> dict:
    """state.json at the start of an attempt: counts restarts and requeues."""
    old = folder.state()
    state = {
        "state": "running", "stage": None, "stages_done": old.get("stages_done", []),
        "results": old.get("results", {}),
        "restarts": old.get("restarts", -1) + 1 if old else 0,
        "requeues": int(os.environ.get("SLURM_RESTART_COUNT", old.get("requeues", 0)) or 0),
        "job_id": os.environ.get("SLURM_JOB_ID"), "host": socket.gethostname(), "pid": os.getpid(),
        "worker": os.environ.get("HYPERSAL_WORKER"),     # the worker running it (status shows it), or None
        "started": old.get("started", now()), "updated": now(), "error": None, "progress": None,
    }
    folder.write_state(state)
    return state


def run(job, skip: list[str] = ()) -> dict:
    cfg, folder = job.cfg, job.folder
    check(list(cfg.pipeline), list(skip))
    if job.is_main:
        state = start_state(folder)
    else:  # the other ranks follow rank 0's record of what is done, and never write it
        old = folder.state()
        state = {"stages_done": list(old.get("stages_done", [])), "results": dict(old.get("results", {}))}
    last_model = state["stages_done"] and _last_model_stage(state["stages_done"])
    if last_model:
        job.load_model(f"after_{last_model}")
        say(f"resuming after stage {state['stages_done'][-1]} (model saved after {last_model})")
    total = len(cfg.pipeline)
    for number, name in enumerate(cfg.pipeline, 1):
        if name in skip:
            say(f"skipping stage {name} (--skip)")
            continue
        if name in state["stages_done"]:
            say(f"stage {name} is done already")
            continue
        signals.check()
        stage = STAGES.get(name)
        state.update(stage=name, updated=now(), progress=f"stage {number}/{total}")
        _write(job, state, keep_progress=False)
        if not stage.changes_model and not job.is_main:
            barrier(job.world)   # test, run, export: rank 0's work (the weights are the same everywhere)
            state["stages_done"].append(name)
            continue
        say(f"stage {name}")
        t0 = time.perf_counter()
        job.collective = stage.changes_model
        results = stage.run(job) or {}
        job.collective = False
        results["seconds"] = round(time.perf_counter() - t0, 2)
        if stage.changes_model:
            job.save_model(f"after_{name}")
        state["results"][name] = results
        state["stages_done"].append(name)
        if not stage.changes_model:
            barrier(job.world)
        state.update(updated=now())
        _write(job, state)
        if job.is_main:
            folder.write_results(state["results"])
    state.update(state="done", stage=None, updated=now(), progress=f"stages {total}/{total}")
    _write(job, state, keep_progress=False)
    return state["results"]


def _last_model_stage(done: list[str]) -> str | None:
    for name in reversed(done):
        if name in STAGES and STAGES.get(name).changes_model:
            return name
    return None


def _write(job, state: dict, keep_progress: bool = True) -> None:
    if job.is_main:
        if keep_progress:  # the trainer writes progress between our writes: keep its latest
            state["progress"] = job.folder.state().get("progress", state.get("progress"))
        job.folder.write_state(state)
