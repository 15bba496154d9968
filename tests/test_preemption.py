"""Preemption on the real local Slurm cluster: the time-limit warning, a requeue by Slurm, a hard
kill. One sweep of four identical runs (same config, same seed, one CPU thread each) serves the
three: run_000 runs through, runs 1, 2 and 3 are interrupted, one way each, and must end with
run_000's weights, bit for bit. Runs 2 and 3 are held in the queue until their test releases
them, so that each is interrupted mid-training whatever the order the tests run in."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml


from helpers.runs import checkpoint_step, same_weights
from helpers.cli import TINY_TRAINER, experiment
from helpers.slurm import job_state, jobs_of, release_when_requeued, wait_for, wait_until

pytestmark = pytest.mark.slurm

TRAINER = {**TINY_TRAINER, "deterministic": True, "comet": {"mode": "offline", "workspace": "w"},
           "data": {**TINY_TRAINER["data"], "size": [48, 48]},
           "train": {**TINY_TRAINER["train"], "epochs": 4, "steps_per_epoch": 15, "batch_size": 8,
                     "checkpoint": {"every_steps": 3}}}


@pytest.fixture(scope="module")
def sweep(slurm, tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("pre")
    exp_file = base / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "pre", "base_dir": str(base), "config": TRAINER, "seed": 0},
        "sbatch": {"cpus": 1, "mem": "2G"}, "runs": [{"repeat": 4}]}))
    experiment(f"--experiment={exp_file}", "--mode=jobs", check_rc=0)
    exp = base / "pre"
    jobs = jobs_of(exp)
    # The node's 2 CPUs run runs 0 and 1 at once; 2 and 3 are pending, and wait for their test.
    subprocess.run(["scontrol", "hold", jobs["run_002"], jobs["run_003"]], check=True)
    yield exp, jobs
    subprocess.run(["scancel", *jobs_of(exp).values()], check=False)


def release(job: str) -> None:
    subprocess.run(["scontrol", "release", job], check=True)



def logs(run: Path) -> str:
    """What a failure message needs to be diagnosed after the fact: the job logs and state."""
    parts = [f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
             for p in sorted(run.glob("slurm-*.out")) + [run / "state.json"] if p.exists()]
    return "\n".join(parts)


def wait_mid_training(run: Path) -> None:
    try:
        wait_until(lambda: checkpoint_step(run) >= 6, 180, f"a checkpoint of {run.name} at step 6")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{logs(run)}") from None



def finish(exp: Path, run: str, jobs: list[str]) -> None:
    """Until run_000 (the reference) and `run` have ended, both done."""
    wait_for(jobs, timeout=300)
    for name in ("run_000", run):
        assert json.loads((exp / name / "state.json").read_text())["state"] == "done", logs(exp / name)


def test_time_limit_warning_checkpoints_requeues_and_resumes(sweep):
    exp, jobs = sweep
    run, job = exp / "run_001", jobs["run_001"]
    wait_mid_training(run)
    # What Slurm does --signal=B:USR2@120 before the time limit: signal the batch shell.
    subprocess.run(["scancel", "-b", "--signal=USR2", job], check=True)
    release_when_requeued(job)
    finish(exp, "run_001", [jobs["run_000"], job])
    state = json.loads((run / "state.json").read_text())
    assert state["requeues"] == 1 and state["restarts"] == 1
    log = next(run.glob("slurm-*.out")).read_text()          # --open-mode=append kept both attempts
    assert "restart 0" in log and "restart 1" in log
    assert f"job {job} requeued: it resumes from its checkpoint" in log
    code = next((exp.parent / ".code").iterdir())                 # both attempts ran the submitted code
    assert log.count(f"code: {code}\n") == 2, log
    assert "train: resumed from last.pt at step" in log
    assert same_weights(exp / "run_000", run)
    assert job_state(job) == "COMPLETED"
    status = experiment("status", str(exp), check_rc=0).stdout
    assert any(line.startswith("run_001") and "done (requeued 1x)" in line for line in status.splitlines()), status


def test_a_requeue_by_slurm_stops_cleanly_and_resumes(sweep):
    exp, jobs = sweep
    run, job = exp / "run_002", jobs["run_002"]
    release(job)
    wait_mid_training(run)
    # Preemption or an admin: Slurm sends SIGTERM and puts the job back in the queue.
    subprocess.run(["scontrol", "requeue", job], check=True)
    release_when_requeued(job)
    finish(exp, "run_002", [jobs["run_000"], job])
    log = next(run.glob("slurm-*.out")).read_text()
    assert "stopped by signal SIGTERM: the run can resume from its last checkpoint" in log
    assert "train: resumed from last.pt at step" in log
    assert json.loads((run / "state.json").read_text())["requeues"] == 1
    assert same_weights(exp / "run_000", run)


def test_a_hard_kill_resumes_from_the_last_periodic_checkpoint(sweep):
    exp, jobs = sweep
    run, job = exp / "run_003", jobs["run_003"]
    release(job)
    wait_mid_training(run)
    pid = json.loads((run / "state.json").read_text())["pid"]
    saved = checkpoint_step(run)
    os.kill(pid, signal.SIGKILL)                                # the node is gone: no chance to save
    wait_for([job])
    assert job_state(job) == "FAILED"
    status = experiment("status", str(exp), check_rc=0).stdout
    assert any(line.startswith("run_003") and "lost (ended while running; see its log)" in line
               for line in status.splitlines()), status
    proc = experiment("resume", str(exp), check_rc=0)
    assert "run_003 submitted as job" in proc.stderr
    assert re.findall(r"run_\d+ submitted", proc.stderr) == ["run_003 submitted"]   # not the others
    new_job = jobs_of(exp)["run_003"]
    assert new_job != job
    finish(exp, "run_003", [new_job, jobs["run_000"]])
    log = next(p for p in run.glob("slurm-*.out") if new_job in p.name).read_text()
    # last.pt, or next.pt when the kill fell between writing a checkpoint and rotating it in
    resumed_at = int(re.search(r"train: resumed from (?:last|next)\.pt at step (\d+)", log).group(1))
    assert resumed_at >= saved and resumed_at % 3 == 0            # a periodic checkpoint
    assert same_weights(exp / "run_000", run)
