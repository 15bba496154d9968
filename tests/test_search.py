"""Adaptive sweeps (experiment.search): the Optuna journal under concurrent jobs, and a TPE + ASHA
sweep end to end on 2 workers on the real local Slurm cluster."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from helpers import browser
from helpers.cli import PYTHON, TINY_TRAINER, experiment, write
from helpers.slurm import jobs_of, wait_for

WORKER = """
import sys
import optuna
from hypersal import search
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name=search.STUDY_NAME, storage=search.storage(sys.argv[1]))
for _ in range(10):
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.report(trial.params["x"], 1)
    study.tell(trial, trial.params["x"])
"""


def test_eight_processes_asking_and_telling_one_journal_lose_nothing(tmp_path):
    import optuna
    (tmp_path / "search").mkdir()
    from hypersal import search
    optuna.create_study(study_name=search.STUDY_NAME, storage=search.storage(tmp_path))
    script = write(tmp_path / "worker.py", WORKER)
    procs = [subprocess.Popen([PYTHON, str(script), str(tmp_path)], stderr=subprocess.PIPE, text=True) for _ in range(8)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    trials = search.load(tmp_path).get_trials()
    assert len(trials) == 80 and sorted(t.number for t in trials) == list(range(80))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.intermediate_values == {1: t.value} for t in trials)


def search_file(folder: Path, trials: int = 6, parallelism: int = 2, **search) -> Path:
    trainer = {**TINY_TRAINER, "comet": {"mode": "disabled"}, "deterministic": True,
               "train": {**TINY_TRAINER["train"], "epochs": 3, "steps_per_epoch": 3}}
    doc = {"experiment": {"name": "srch", "base_dir": "out", "seed": 0, "config": trainer,
                          "search": {"sampler": "tpe", "pruner": "asha", "metric": "val_loss", "trials": trials,
                                     "parallelism": parallelism, "min_epochs": 1, "reduction_factor": 2, **search}},
           "sbatch": {"cpus": 1, "mem": "1G"},
           "runs": [{"trainer": {"train": {"optim": {"lr": {"sample": "loguniform", "from": [1e-6, 0.3]},
                                                      "weight_decay": {"sample": "uniform", "from": [0.0, 0.1]}},
                                             "batch_size": {"sample": "list", "from": [2, 4]}}}}]}
    return write(folder / "exp.yaml", yaml.safe_dump(doc, sort_keys=False))


def test_a_tpe_asha_search_prunes_some_trials_and_finishes_the_others(slurm, tmp_path):
    """On 2 workers (--workers 2, two jobs): each takes the next run folder no one holds and its run
    asks its trial; never more than 2 jobs nor more than 6 trials; a pruned trial frees its slot at
    once. One job per trial is covered by the requeue test below and by test_damaged's local search."""
    from datetime import datetime
    exp = search_file(tmp_path, parallelism=None)
    proc = experiment(f"--experiment={exp}", "--workers", "2", cwd=tmp_path, check_rc=0)
    assert "worker 2 of 2 submitted as job" in proc.stderr and "each runs 1 run at once" in proc.stderr
    out = tmp_path / "out" / "srch"
    jobs = jobs_of(out)
    assert sorted(jobs) == ["worker_0", "worker_1"]
    try:
        wait_for(list(jobs.values()), timeout=600)
    finally:                                  # a failed test must not leave its workers in the queue
        subprocess.run(["scancel", *jobs.values()], check=False)
    assert jobs_of(out) == jobs                                                   # never more than 2 jobs
    states, trial_numbers = {}, set()
    for i in range(6):
        run_dir = out / f"run_00{i}"
        state = json.loads((run_dir / "state.json").read_text())
        info = yaml.safe_load((run_dir / "run.yaml").read_text())
        trial_numbers.add(info["trial"])
        states[run_dir.name] = state["state"]
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["train"]["optim"]["lr"] == info["sampled"]["train.optim.lr"] == cfg["adapt"]["optim"]["lr"]
        assert state["worker"] in jobs.values()
        log = (run_dir / f"worker-{state['worker']}.out").read_text()
        assert f"trial {info['trial']} (run {i}): " in log
        if state["state"] == "pruned":
            assert f"pruned at epoch {state['pruned_epoch']}" in log and state["pruned_epoch"] < 3
            assert (run_dir / "checkpoints" / "train" / "last.pt").is_file()      # kept
        else:
            assert state["state"] == "done", log
    assert trial_numbers == set(range(6))                                         # one trial per run
    assert "pruned" in states.values() and "done" in states.values(), states
    # A pruned trial frees its slot at once: its worker's next run starts as it ends.
    records = {job: json.loads((out / "workers" / f"{job}.json").read_text()) for job in jobs.values()
               if (out / "workers" / f"{job}.json").exists()}
    ran = [r for rec in records.values() for r in rec["runs"]]
    assert sorted(r["run"] for r in ran) == [f"run_00{i}" for i in range(6)]      # each run once
    for rec in records.values():       # after its last run: the worker ends (it never idles, holding its job)
        nexts = [r["started"] for r in rec["runs"][1:]] + [rec["updated"]]
        for this, after in zip(rec["runs"], nexts):
            if states[this["run"]] == "pruned":
                gap = datetime.fromisoformat(after) - datetime.fromisoformat(this["ended"])
                assert gap.total_seconds() <= 2, rec
    status = experiment("status", str(out), check_rc=0).stdout
    assert "pruned at epoch" in status and "best so far: trial" in status
    assert "2 workers: 2 ended" in status
    import optuna
    from hypersal import search
    study = search.load(out)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == list(states.values()).count("pruned")
    collect = experiment("collect", str(out), check_rc=0).stdout.splitlines()
    best_row = dict(zip(collect[0].split(), collect[1].split()))
    assert best_row["trial"] == str(study.best_trial.number)                      # collect sorts by the metric
    assert float(best_row["val_loss"]) == float(f"{study.best_value:.4g}")
    assert sum(line.split()[1].startswith("pruned@") for line in collect[1:7]) == len(pruned)
    # The sweep page: trials, pruned runs, best so far; best first.
    page = Path(experiment("report", str(out), check_rc=0).stdout.strip())
    html = page.read_text()
    assert f"Best so far: trial {study.best_trial.number}, val_loss" in html
    rows = re.findall(r'<td class="text"><a href="(run_\d+)/">', html)
    assert len(rows) == 6 and rows[0] == best_row["run"]
    assert len(re.findall(r">pruned@\d", html)) == len(pruned)
    if browser.missing() is None:
        driver = browser.open_browser()
        try:
            browser.load(driver, page)
            assert browser.errors(driver) == []
            lines = driver.execute_script("return document.getElementById('parcoords').data[0].dimensions"
                                          ".map(d => d.values.length)")
            assert lines == [6, 6, 6, 6]          # lr, weight decay, batch size, val_loss: every trial has a value
        finally:
            driver.quit()
    # Any trial reruns alone, as a plain run, from its exp_i.yaml.
    best_dir = out / best_row["run"]
    rerun = experiment(f"--experiment={next(best_dir.glob('exp_*.yaml'))}", "--dry-run", "--base-dir",
                       str(tmp_path / "re"), cwd=tmp_path, check_rc=0)
    assert "wrote 1 run" in rerun.stderr
    assert (tmp_path / "re" / "srch" / "run_000" / "config.yaml").read_text() == (best_dir / "config.yaml").read_text()


def test_a_stopped_trial_resumes_as_the_same_trial_without_reporting_an_epoch_twice(tmp_path):
    import os
    import signal
    import time

    import optuna
    from hypersal import search
    exp = search_file(tmp_path, trials=2, pruner="none")
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "srch"
    cfg = yaml.safe_load((out / "search" / "space.yaml").read_text())
    cfg["train"].update(epochs=40, steps_per_epoch=2)          # long enough to be stopped mid-way
    (out / "search" / "space.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [PYTHON, str(Path(__file__).resolve().parents[1] / "train.py"), "--trial", str(out), "--index", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        trials = search.load(out).get_trials(deepcopy=False)
        if trials and len(trials[0].intermediate_values) >= 2:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)                            # what Slurm sends on preemption
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    reported = dict(search.load(out).get_trials()[0].intermediate_values)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert again.returncode == 0, again.stderr
    assert "trial 0 again (run 0): resuming it" in again.stderr and "resumed from" in again.stderr
    trials = search.load(out).get_trials()
    assert len(trials) == 1 and trials[0].state == optuna.trial.TrialState.COMPLETE   # the same trial
    values = trials[0].intermediate_values
    assert sorted(values) == list(range(1, 41))                  # every epoch once
    assert all(values[e] == v for e, v in reported.items())      # the first attempt's reports kept


def test_requeued_and_killed_trials_finish_as_the_same_trials(slurm, tmp_path):
    import os
    import signal

    import optuna
    from hypersal import search
    from hypersal.train.checkpoint import load
    from helpers.slurm import release_when_requeued, wait_until
    exp = search_file(tmp_path, trials=2, pruner="none")
    doc = yaml.safe_load(exp.read_text())
    doc["experiment"]["config"]["train"].update(epochs=4, steps_per_epoch=15, batch_size=8,
                                                checkpoint={"every_steps": 3})
    doc["experiment"]["config"]["data"]["size"] = [48, 48]
    doc["runs"][0]["trainer"]["train"].pop("batch_size")
    exp.write_text(yaml.safe_dump(doc))
    experiment(f"--experiment={exp}", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "srch"
    jobs = jobs_of(out)

    def step(run: str) -> int:
        try:
            return load(out / run / "checkpoints" / "train" / "last.pt")["step"]
        except Exception:
            return -1
    # run_000: its node is lost (SIGKILL, no chance to save); run_001: the time-limit warning
    # (Slurm's --signal=B:USR2), then, in its second attempt, a requeue by Slurm (preemption).
    # Each as soon as it has a checkpoint: waiting for both first let run_000 finish (CI).
    wait_until(lambda: step("run_000") >= 6, 240, "a checkpoint of run_000")
    os.kill(json.loads((out / "run_000" / "state.json").read_text())["pid"], signal.SIGKILL)
    wait_until(lambda: step("run_001") >= 6, 240, "a checkpoint of run_001")
    subprocess.run(["scancel", "-b", "--signal=USR2", jobs["run_001"]], check=True)
    numbers = {run: yaml.safe_load((out / run / "run.yaml").read_text())["trial"] for run in ("run_000", "run_001")}
    release_when_requeued(jobs["run_001"])
    wait_until(lambda: json.loads((out / "run_001" / "state.json").read_text()).get("restarts") == 1
               and step("run_001") >= 27, 240, "run_001 training again")
    subprocess.run(["scontrol", "requeue", jobs["run_001"]], check=True)
    release_when_requeued(jobs["run_001"])
    wait_for(list(jobs.values()), timeout=300)
    assert "lost" in experiment("status", str(out), check_rc=0).stdout
    resumed = experiment("resume", str(out), check_rc=0)
    assert "1 runs submitted as job array" in resumed.stderr
    wait_for([jobs_of(out)["run_000"]], timeout=300)
    study = search.load(out)
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for run, number in numbers.items():
        assert yaml.safe_load((out / run / "run.yaml").read_text())["trial"] == number
        logs = "".join(p.read_text() for p in (out / run).glob("slurm-*.out"))
        again = logs.count(f"trial {number} again (run {int(run[-1])}): resuming it")
        assert again == (2 if run == "run_001" else 1) and "resumed from" in logs, logs
        assert sorted(study.trials[number].intermediate_values) == [1, 2, 3, 4]
        assert json.loads((out / run / "state.json").read_text())["state"] == "done"


def test_optuna_dashboard_reads_the_study_journal(tmp_path):
    """`optuna-dashboard <experiment>/search/study.journal` shows the study (served on loopback)."""
    import socket
    import time
    import urllib.request

    import optuna
    from hypersal import search
    exp = search_file(tmp_path, trials=3)
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "srch"
    study = search.load(out)
    for x in (0.3, 0.1, 0.2):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, x)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = Path(PYTHON).parent / "optuna-dashboard"
    proc = subprocess.Popen([str(dashboard), str(out / "search" / "study.journal"), "--host", "127.0.0.1",
                             "--port", str(port), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    answer = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert answer is not None, "optuna-dashboard did not answer in 60 s"
        assert [s["study_name"] for s in answer["study_summaries"]] == ["hypersal"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 3 and detail["best_trials"][0]["values"] == [0.1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def proposals(exp_dir: Path, n: int) -> list[dict]:
    """What n jobs, one after another, are proposed when each trial's value is a fixed function of
    its values (the training replaced by arithmetic: the sampler's side of the loop)."""
    from hypersal import search
    summary = yaml.safe_load((exp_dir / "summary.yaml").read_text())
    section = search.Search(**summary["search"])
    space = yaml.safe_load((exp_dir / "search" / "space.yaml").read_text())
    found = search.space(space, section)
    out = []
    for index in range(n):
        study = search.study(exp_dir, section, found, summary["seed"], index, 3)
        trial = study.ask(search.distributions(found))
        out.append(dict(trial.params))
        study.tell(trial, abs(trial.params["train.optim.lr"] - 0.01) + trial.params["train.optim.weight_decay"])
    return out


def test_same_seed_and_results_give_the_same_proposals_and_tpe_learns(tmp_path):
    first, second, other = (tmp_path / n for n in ("a", "b", "c"))
    for folder, seed in ((first, 0), (second, 0), (other, 1)):
        folder.mkdir()
        exp = search_file(folder, trials=30)
        doc = yaml.safe_load(exp.read_text())
        doc["experiment"]["seed"] = seed
        exp.write_text(yaml.safe_dump(doc))
        experiment(f"--experiment={exp}", "--dry-run", cwd=folder, check_rc=0)
    a, b, c = (proposals(f / "out" / "srch", 30) for f in (first, second, other))
    assert a == b and a != c
    assert len({p["train.optim.lr"] for p in a}) == 30          # seeded per run: no two jobs alike
    # TPE's later proposals are closer to the optimum (lr 0.01, weight decay 0) than its random start.
    score = [abs(p["train.optim.lr"] - 0.01) + p["train.optim.weight_decay"] for p in a]
    assert sum(score[-10:]) < sum(score[:7]) * 10 / 7


def test_a_grid_search_visits_every_combination_once(tmp_path):
    from hypersal import search
    exp = search_file(tmp_path, trials=4, sampler="grid", pruner="none")
    doc = yaml.safe_load(exp.read_text())
    doc["runs"][0]["trainer"]["train"] = {"optim": {"lr": {"sample": "grid", "from": [0.001, 0.01]}},
                                          "batch_size": {"sample": "list", "from": [2, 4]}}
    exp.write_text(yaml.safe_dump(doc))
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    out = tmp_path / "out" / "srch"
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    section = search.Search(**summary["search"])
    space = yaml.safe_load((out / "search" / "space.yaml").read_text())
    found = search.space(space, section)
    seen = set()
    for index in range(4):
        study = search.study(out, section, found, 0, index, 3)
        trial = study.ask(search.distributions(found))
        seen.add((trial.params["train.optim.lr"], trial.params["train.batch_size"]))
        search.tell(study, trial.number, 1.0)          # the last one: the grid is used up
    assert all(t.state.is_finished() for t in search.load(out).get_trials())
    assert seen == {(0.001, 2), (0.001, 4), (0.01, 2), (0.01, 4)}
