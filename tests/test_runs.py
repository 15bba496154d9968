"""Whole sweeps, run for real: on this machine (local executor) and on the local Slurm cluster."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import comet as cometread
from helpers.slurm import job_state, jobs_of, wait_for
from helpers.cli import ROOT, TINY_TRAINER, experiment

DEMO = ROOT / "shared" / "experiment" / "demo.yaml"


def check_run_folder(run: Path, index: int) -> dict:
    """A finished run folder: its files, its state, its metrics and its Comet archive."""
    for name in ("config.yaml", f"exp_{index}.yaml", "exp.sh", "hash.txt", "comet_url.txt", "run.yaml",
                 "env.yaml", "state.json", "metrics.jsonl", "results.json"):
        assert (run / name).is_file(), f"{run / name} is missing"
    state = yaml.safe_load((run / "state.json").read_text())
    assert state["state"] == "done", state
    info = yaml.safe_load((run / "run.yaml").read_text())
    key = info["comet_key"]
    assert (run / "comet_url.txt").read_text().strip().endswith(f"/{key}")
    archive = run / "comet" / f"{key}.zip"
    assert archive.is_file(), sorted(p.name for p in (run / "comet").iterdir())
    assert cometread.experiment_info(archive)["offline_id"] == key
    params = cometread.parameters(archive)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert params["train|optim|lr"] == cfg["train"]["optim"]["lr"]
    assert params["train|batch_size"] == cfg["train"]["batch_size"]
    names = {name for name, _, _ in cometread.metrics(archive)}
    assert {"train/train_loss", "train/val_loss", "train/loss"} <= names, names
    local = [yaml.safe_load(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in m for m in local)
    return yaml.safe_load((run / "results.json").read_text())


def test_without_sbatch_on_the_path_the_demo_runs_here(tmp_path):
    """A machine without Slurm: the demo command needs no flag, it says so and runs the sweep
    here, two runs at once (--executor=local says the same where sbatch is found: the other
    tests of this file). Shortened (the full demo runs on Slurm in test_report.py): 20 steps a run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "git", "hostname", "date"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    proc = experiment(f"--experiment={DEMO}", "--parallelism=2", "--base-dir", str(tmp_path),
                      "trainer.train.epochs=2", "trainer.train.steps_per_epoch=10", env={"PATH": str(bin_dir)},
                      timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "sbatch is not on PATH: running the jobs on this machine" in proc.stderr
    assert "[4/4] running run_003 here" in proc.stderr
    exp = tmp_path / "demo"
    first, second = (json.loads((exp / f"run_00{i}" / "state.json").read_text()) for i in (0, 1))
    assert second["started"] < first["updated"]                         # run_001 began before run_000 ended
    for i in range(4):
        results = check_run_folder(exp / f"run_00{i}", i)
        assert results["train"]["steps"] == 20
    status = experiment("status", str(exp), env={"PATH": str(bin_dir)}, check_rc=0).stdout
    assert "4 runs: 4 done" in status
    assert status.splitlines()[1].split()[:6] == ["run_000", "local", "done", "-", "stages", "3/3"]
    table = experiment("collect", str(exp), "--all", check_rc=0)
    csv = (exp / "collect.csv").read_text().splitlines()
    assert csv[0].startswith("run,state,trainer.train.batch_size,trainer.train.optim.lr,train.")
    assert len(csv) == 5 and all(",done," in row for row in csv[1:])
    assert "train.final_val_loss" in table.stdout
    # upload hands every archive to comet_ml's uploader, each run's first one first.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "comet").write_text(f"#!/bin/bash\nprintf '%s\\n' \"$@\" > {tmp_path / 'comet_args.txt'}\n")
    (fake / "comet").chmod(0o755)
    key0 = yaml.safe_load((exp / "run_000" / "run.yaml").read_text())["comet_key"]
    continuation = exp / "run_000" / "comet" / f"{key0}-abcdef.zip"
    continuation.write_bytes((exp / "run_000" / "comet" / f"{key0}.zip").read_bytes())
    up = experiment("upload", str(exp), env={"PATH": f"{fake}:{os.environ['PATH']}"}, check_rc=0)
    assert "uploaded 5 offline Comet archive(s)" in up.stderr
    args = (tmp_path / "comet_args.txt").read_text().splitlines()
    assert args[0] == "upload" and len(args) == 6
    assert args[1:3] == [str(exp / "run_000" / "comet" / f"{key0}.zip"), str(continuation)]
    # Every run resumes by itself: started again, it finds everything done.
    again = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(exp / "run_000" / "config.yaml")],
                           capture_output=True, text=True)
    assert again.returncode == 0 and "stage train is done already" in again.stderr


def test_a_failed_local_run_is_named_and_its_sibling_still_finishes(tmp_path):
    """--parallelism 2 on this machine: one run diverges, the other ends; both recorded."""
    tiny = {**TINY_TRAINER, "pipeline": ["train"], "comet": {"mode": "disabled"}}
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "two", "base_dir": str(tmp_path), "seed": 0, "config": tiny}, "sbatch": {"cpus": 1},
        "runs": [{}, {"trainer": {"train": {"optim": {"name": "sgd", "momentum": 0.0, "lr": 1.0e+30}}}}]}))
    proc = experiment(f"--experiment={exp_file}", "--executor=local", "--parallelism=2", check_rc=1)
    assert "hypersal: run_001 failed with exit status" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hypersal: error: 1 of 2 runs failed here: run_001.")
    exp = tmp_path / "two"
    assert sorted((exp / "jobs.tsv").read_text().splitlines()) == ["run_000\tlocal", "run_001\tlocal"]
    status = experiment("status", str(exp), check_rc=0).stdout
    assert "2 runs: 1 done, 1 failed" in status


def test_ctrl_c_stops_a_local_sweep_without_starting_the_next_run(tmp_path):
    """The sweep's runs wait in a thread pool: an interrupt must not let the queued ones start."""
    import signal
    import time
    tiny = {**TINY_TRAINER, "pipeline": ["train"], "comet": {"mode": "disabled"},
            "train": {**TINY_TRAINER["train"], "epochs": 1000}}
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "stop", "base_dir": str(tmp_path), "seed": 0, "config": tiny}, "sbatch": {"cpus": 1},
        "runs": [{"repeat": 2}]}))
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiment.py"), f"--experiment={exp_file}",
                             "--executor=local"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,   # a terminal's Ctrl-C: SIGINT to the whole group
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = tmp_path / "stop" / "run_000" / "state.json"
    try:
        deadline = time.monotonic() + 120
        while not (state.is_file() and (tmp_path / "stop" / "run_000" / "metrics.jsonl").is_file()):
            assert time.monotonic() < deadline and proc.poll() is None, "run_000 did not start training"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "hypersal: interrupted" in out, out
    assert "running run_001" not in out and not (tmp_path / "stop" / "run_001" / "local.out").exists()


# --- on the local Slurm cluster ---------------------------------------------------------------

@pytest.mark.slurm
def test_demo_sweep_on_slurm(demo, tmp_path):
    # The full demo, submitted once for the session (conftest.demo), one job per run. Job arrays
    # are shown on the same cluster by test_limits.py (12 runs as 2 arrays) and test_search.py.
    exp = demo[0]
    jobs = jobs_of(exp)
    assert sorted(jobs) == [f"run_00{i}" for i in range(4)]
    assert len(set(jobs.values())) == 4
    summary = yaml.safe_load((exp / "summary.yaml").read_text())
    assert {r["dir"]: r["job_id"] for r in summary["runs"]} == jobs
    wait_for(list(jobs.values()))
    for i, (run, job) in enumerate(sorted(jobs.items())):
        check_run_folder(exp / run, i)
        assert "hypersal: done" in next((exp / run).glob(f"slurm-{job}.out")).read_text()
    assert "4 runs: 4 done" in experiment("status", str(exp), check_rc=0).stdout
    controller_down(exp, tmp_path)


def controller_down(exp: Path, tmp_path: Path) -> None:
    """With slurmctld unreachable, status still shows what the run folders say and cancel
    fails in one line. (squeue stands in for a controller we must not stop under other tests;
    it records how it was called.)"""
    bin_dir = tmp_path / "down"
    bin_dir.mkdir()
    calls = tmp_path / "squeue-calls"
    fake = bin_dir / "squeue"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                    'echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2\n'
                    'exit 1\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = experiment("status", str(exp), env=env, check_rc=0)
    assert "warning: squeue failed: slurm_load_jobs error: Unable to contact slurm controller" in proc.stderr
    assert "4 runs: 4 done" in proc.stdout and "Traceback" not in proc.stderr
    proc = experiment("cancel", str(exp), env=env, check_rc=1)
    assert proc.stderr.startswith("hypersal: error: squeue failed") and "Traceback" not in proc.stderr
    assert calls.read_text().splitlines()[0].startswith("--noheader --array --user=")


@pytest.mark.slurm
def test_a_failed_submission_names_the_run_and_resumes_without_duplicates(slurm, tmp_path):
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "fail", "base_dir": str(tmp_path), "config": TINY_TRAINER},
        "sbatch": {"cpus": 1, "mem": "1G"},
        "runs": [{"repeat": 2}, {"sbatch": {"partition": "no-such-partition"}}, {}],
    }))
    proc = experiment(f"--experiment={exp_file}", "--mode=jobs")
    assert proc.returncode == 1
    exp = tmp_path / "fail"
    first = jobs_of(exp)
    assert sorted(first) == ["run_000", "run_001"]
    message = proc.stderr.splitlines()[-1]
    assert message.startswith("hypersal: error: sbatch failed for run_002 (3 of 4): ")
    assert "invalid partition" in message.lower()
    assert f"Already submitted: run_000 (job {first['run_000']}), run_001 (job {first['run_001']})" in message
    assert f"submit {exp}" in message
    # The user fixes the script and finishes the sweep: only the rest is submitted.
    script = exp / "run_002" / "exp.sh"
    script.write_text(script.read_text().replace("#SBATCH --partition=no-such-partition\n", ""))
    again = experiment("submit", str(exp), check_rc=0)
    jobs = jobs_of(exp)
    assert sorted(jobs) == ["run_000", "run_001", "run_002", "run_003"]
    assert {k: jobs[k] for k in first} == first and len(set(jobs.values())) == 4
    assert "run_000" not in again.stderr
    assert "every run" in experiment("submit", str(exp), check_rc=0).stderr   # nothing twice
    cancelled = experiment("cancel", str(exp), check_rc=0)
    assert "cancelled" in cancelled.stderr
    wait_for(list(jobs.values()))


@pytest.mark.slurm
def test_paths_with_spaces_and_quotes_on_slurm(slurm, tmp_path):
    base = tmp_path / "my runs 'quoted' $(x)"
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({
        "experiment": {"name": "odd", "base_dir": str(base), "config": TINY_TRAINER},
        "sbatch": {"cpus": 1, "mem": "1G"}, "runs": [{}]}))
    experiment(f"--experiment={exp_file}", check_rc=0)
    jobs = jobs_of(base / "odd")
    wait_for(list(jobs.values()))
    assert job_state(jobs["run_000"]) == "COMPLETED"
    check_run_folder(base / "odd" / "run_000", 0)
    assert next((base / "odd" / "run_000").glob("slurm-*.out")).is_file()
