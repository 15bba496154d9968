"""Searches (adaptive sweeps) on workers, as processes on this machine (no Slurm): eight workers
on one search take every run folder once, and the study ends with exactly `trials` trials,
numbered 0..trials-1, a trial left behind by a run killed mid-ask adopted rather than asked
again. The same on the real local Slurm cluster, with ASHA pruning: tests/test_search.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from hypersal import config as config_mod
from hypersal.errors import UserError
from hypersal.runfolder import RunFolder

from helpers.cli import PYTHON, ROOT, TINY_TRAINER, experiment

TRAINER = {**TINY_TRAINER, "deterministic": True, "pipeline": ["train"], "comet": {"mode": "disabled"},
           "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 2}}
SEARCH = {"sampler": "random", "pruner": "none", "metric": "train_loss", "trials": 10}
LR = {"train": {"optim": {"lr": {"sample": "loguniform", "from": [1.0e-4, 1.0e-2]}}}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny generated dataset, made once here, so that workers racing do not each make it."""
    from hypersal.runner.job import Job
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(TRAINER))
    Job(cfg=config_mod.load(path), folder=RunFolder(path.parent), tracker=None, device=torch.device("cpu"))._synth()


def start(exp: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([PYTHON, str(ROOT / "train.py"), "--worker", str(exp)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "HYPERSAL_CPUS": "1"})


def record(exp: Path, proc: subprocess.Popen) -> dict:
    return json.loads((exp / "workers" / f"{socket.gethostname()}-{proc.pid}.json").read_text())


@pytest.mark.slow
def test_eight_workers_on_one_search_run_each_trial_once_and_never_more_than_trials(tmp_path, dataset):
    import optuna
    from hypersal import search
    from hypersal.runner import trial
    exp_file = tmp_path / "s.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "s", "base_dir": str(tmp_path), "config": TRAINER, "seed": 0, "workers": 8,
                       "search": SEARCH},
        "sbatch": {"cpus": 1, "mem": "1G"}, "runs": [{"trainer": LR}]}))
    experiment(f"--experiment={exp_file}", "--dry-run", check_rc=0)
    exp = tmp_path / "s"
    assert "--worker" in (exp / "workers.sh").read_text() and not (exp / "array.sh").exists()
    # A run killed between asking the study and writing its run.yaml left trial 0 behind.
    found = search.space(yaml.safe_load((exp / "search" / "space.yaml").read_text()),
                         search.Search(**{**search.DEFAULTS, **SEARCH}))
    assert search.load(exp).ask(search.distributions(found)).number == 0
    procs = [start(exp, tmp_path / f"w{i}.log") for i in range(8)]
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=300) == 0, (tmp_path / f"w{i}.log").read_text()
    ran = sorted(r["run"] for p in procs for r in record(exp, p)["runs"])
    assert ran == [f"run_{i:03d}" for i in range(10)]                              # none twice, none lost
    numbers, adopted = [], []
    for i in range(10):
        run = exp / f"run_{i:03d}"
        assert json.loads((run / "state.json").read_text())["state"] == "done"
        (log,) = run.glob("worker-*.out")
        text = log.read_text()
        assert text.count("hypersal: worker ") == 1 and text.count("hypersal: done") == 1
        number = yaml.safe_load((run / "run.yaml").read_text())["trial"]
        numbers.append(number)
        if f"trial {number} (run {i}) (asked by a run that ended before writing run.yaml: adopted)" in text:
            adopted.append(number)
    assert sorted(numbers) == list(range(10)) and adopted == [0]                  # each trial once, 0 adopted
    study = search.load(exp)
    assert len(study.trials) == 10 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Never beyond `trials`: with every trial taken, a run asking for one more is refused.
    summary = yaml.safe_load((exp / "summary.yaml").read_text())
    with pytest.raises(UserError, match="the study holds 10 trials already, experiment.search.trials is 10"):
        trial._new_trial(exp, summary, study, search.Search(**summary["search"]), found)
    again = start(exp, tmp_path / "again.log")                                     # nothing left to start
    assert again.wait(timeout=120) == 0 and record(exp, again)["runs"] == []


@pytest.mark.slow
def test_a_search_run_taken_over_from_a_killed_worker_resumes_as_the_same_trial(tmp_path, dataset):
    """The worker is SIGKILLed (its node lost) mid-trial: the next worker takes the run over and
    it resumes as the same trial from its checkpoint, each epoch reported to the study once."""
    import optuna
    from hypersal import search
    from hypersal.experiment import lease as L
    from hypersal.train.checkpoint import load
    from helpers.slurm import wait_until
    long = {**TRAINER, "train": {**TRAINER["train"], "epochs": 3, "steps_per_epoch": 10, "checkpoint": {"every_steps": 2}}}
    exp_file = tmp_path / "k.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "k", "base_dir": str(tmp_path), "config": long, "seed": 0,
                       "search": {**SEARCH, "trials": 1}},
        "sbatch": {"cpus": 1, "mem": "1G"}, "runs": [{"trainer": LR}]}))
    experiment(f"--experiment={exp_file}", "--dry-run", check_rc=0)
    exp, run = tmp_path / "k", tmp_path / "k" / "run_000"

    def step() -> int:
        try:
            return load(run / "checkpoints" / "train" / "last.pt")["step"]
        except Exception:   # not there yet, or caught mid-rename
            return -1
    first = start(exp, tmp_path / "a.log")
    wait_until(lambda: step() >= 12, 120, "a checkpoint of run_000 in its second epoch")
    first.kill()
    first.wait()
    number = yaml.safe_load((run / "run.yaml").read_text())["trial"]
    reported = dict(search.load(exp).trials[number].intermediate_values)
    assert 1 in reported and 3 not in reported                             # killed mid-trial
    second = start(exp, tmp_path / "b.log")
    assert second.wait(timeout=120) == 0, (tmp_path / "b.log").read_text()
    assert f"taking over run_000 from worker {socket.gethostname()}-{first.pid}" in (tmp_path / "b.log").read_text()
    text = (run / f"worker-{socket.gethostname()}-{second.pid}.out").read_text()
    assert f"trial {number} again (run 0): resuming it" in text and "train: resumed from last.pt at step" in text
    (trial,) = search.load(exp).trials                                     # the same trial, no second one
    assert trial.state == optuna.trial.TrialState.COMPLETE and sorted(trial.intermediate_values) == [1, 2, 3]
    assert all(trial.intermediate_values[e] == v for e, v in reported.items())   # none reported again
    assert json.loads((run / "state.json").read_text())["state"] == "done" and not (run / L.LEASE).exists()
    # metrics.jsonl: every epoch, the same figures. A kill between an epoch's line and its epoch-end
    # checkpoint (the report to the study sits between) writes that epoch's line again on resume,
    # recomputed from the step checkpoint before it: the train stage's, not the worker's (NOTES.md).
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    figures = {}
    for m in (m for m in lines if "epoch" in m):
        assert figures.setdefault(m["epoch"], {k: v for k, v in m.items() if k != "time"}) == \
            {k: v for k, v in m.items() if k != "time"}
    assert sorted(figures) == [1, 2, 3]
