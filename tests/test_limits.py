"""Sweeps that fit the cluster's limits: several job arrays past MaxArraySize (on the real local
Slurm, restarted with a small one), and `submit --follow` past a per-user submit limit."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from hypersal.experiment.submit import array_chunks, limit_of

from helpers.cli import ROOT, TINY_TRAINER, experiment, write
from helpers.slurm import LOCAL_SLURM_CONF as LOCAL_CONF, jobs_of, wait_for



def test_array_chunks_fit_max_array_size_and_keep_logs_in_run_folders():
    assert array_chunks(list(range(1000)), 1001, 3) == [(0, list(range(1000)), None)]   # fits: one array
    chunks = array_chunks(list(range(1200)), 1001, 4)
    assert [(o, len(i), f) for o, i, f in chunks] == [(0, 1000, "run_0%3a"), (1000, 200, "run_1%3a")]
    # A resubmission of some runs: task ids are run index - offset, each below MaxArraySize.
    chunks = array_chunks([3, 12, 15, 27], 10, 3)
    assert chunks == [(0, [3], "run_00%1a"), (10, [12, 15], "run_01%1a"), (20, [27], "run_02%1a")]
    assert all(i - o < 10 for o, ids, _ in chunks for i in ids)
    assert array_chunks([0, 5, 6], 4, 3) == [(0, [0], "run_000"), (5, [5], "run_005"), (6, [6], "run_006")]


def test_sbatch_words_name_the_limit():
    assert "per-user submit limit" in limit_of("Batch job submission failed: Job violates accounting/QOS policy "
                                               "(job submit limit, user's size and/or time limits)")
    assert "per-user submit limit" in limit_of("error: QOSMaxSubmitJobPerUserLimit")
    assert "MaxArraySize" in limit_of("Batch job submission failed: Invalid job array specification")
    assert limit_of("Batch job submission failed: Invalid partition name specified") is None


def tiny_sweep(folder: Path, runs: int, mode: str, parallelism: int | None = None) -> Path:
    trainer = {**TINY_TRAINER, "comet": {"mode": "disabled"}, "data": {**TINY_TRAINER["data"], "synth": {"n": 12, "size": [32, 32]}},
               "train": {**TINY_TRAINER["train"], "epochs": 1, "steps_per_epoch": 1, "val_batches": 0}}
    doc = {"experiment": {"name": "big", "base_dir": "out", "seed": 0, "mode": mode, "config": trainer,
                          **({"parallelism": parallelism} if parallelism else {})},
           "sbatch": {"cpus": 1, "mem": "1G"}, "runs": [{"repeat": runs}]}
    return write(folder / "exp.yaml", yaml.safe_dump(doc))


def restart_cluster(max_array_size: int | None) -> None:
    env = {**os.environ}
    if max_array_size:
        env["HYPERSAL_SLURM_MAX_ARRAY_SIZE"] = str(max_array_size)
    subprocess.run([str(ROOT / "scripts" / "local-slurm.sh"), "restart"], env=env, check=True,
                   capture_output=True, timeout=120)


def test_a_sweep_larger_than_max_array_size_goes_as_several_arrays(slurm, tmp_path):
    if os.environ.get("SLURM_CONF") != LOCAL_CONF:
        pytest.skip("needs the local cluster of scripts/local-slurm.sh (it is restarted with a small MaxArraySize)")
    restart_cluster(10)
    try:
        exp = tiny_sweep(tmp_path, 12, "array", parallelism=1)
        proc = experiment(f"--experiment={exp}", cwd=tmp_path, check_rc=0)
        assert "the cluster's MaxArraySize is 10: 12 runs go as 2 job arrays" in proc.stderr
        assert "10 runs submitted as job array" in proc.stderr and "(--array=0-1%1, runs from 10)" in proc.stderr
        out = tmp_path / "out" / "big"
        jobs = jobs_of(out)
        first, second = sorted({j.split("_")[0] for j in jobs.values()}, key=int)
        assert jobs == {f"run_{i:03d}": f"{first}_{i}" if i < 10 else f"{second}_{i - 10}" for i in range(12)}
        # Runs 0, 9, 10 and 11 (the first and last task of each array) are enough to show that
        # each log lands in its own run folder; the other 8 are cancelled to save the suite their
        # ~40 s. Each array runs one task at a time (%1), so they are all still pending here (with
        # 2 CPUs and no throttle, task 1 started beside task 0 now and then: seen in CI).
        subprocess.run(["scancel", f"{first}_[1-8]"], check=True)
        wait_for(list(jobs.values()), timeout=400)
    finally:
        restart_cluster(None)
    # Restarted from inside the suite (OMP_NUM_THREADS=1), the node still has every CPU: the
    # Slurm tests after this one run their jobs side by side.
    node = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True, check=True).stdout
    assert f"CPUTot={len(os.sched_getaffinity(0))} " in node, node
    ran = [0, 9, 10, 11]
    for i in ran:
        run_dir = out / f"run_{i:03d}"
        state = json.loads((run_dir / "state.json").read_text())
        log = next(run_dir.glob("slurm-*.out")).read_text()              # each log in its own run folder
        assert state["state"] == "done", (run_dir, log)
        assert f"run {run_dir} on cpu" in log
    assert sorted(p.parent.name for p in out.glob("run_*/slurm-*.out")) == [f"run_{i:03d}" for i in ran]
    status = experiment("status", str(out), check_rc=0).stdout
    assert "12 runs: 4 done, 8 ended before train.py started" in status, status


FAKE_SBATCH = """#!/bin/bash
# A recording stand-in for sbatch with a per-user submit limit of 2 queued jobs: the local
# cluster has no accounting database, so it cannot enforce one.
n=$(cat "$FAKE_DIR/queued" 2>/dev/null || echo 0)
if [ "$n" -ge "${FAKE_SUBMIT_LIMIT:-2}" ]; then
    echo "refused $*" >> "$FAKE_DIR/calls"
    echo "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)" >&2
    exit 1
fi
id=$(( $(cat "$FAKE_DIR/next" 2>/dev/null || echo 100) + 1 ))
echo "$id" > "$FAKE_DIR/next"
echo $((n + 1)) > "$FAKE_DIR/queued"
echo "accepted $*" >> "$FAKE_DIR/calls"
echo "$id"
"""
FAKE_SCONTROL = """#!/bin/bash
# `scontrol show config`: the limits the test gives the fake cluster.
echo "MaxArraySize            = 1001"
echo "MaxJobCount             = ${FAKE_MAX_JOB_COUNT:-10000}"
"""
FAKE_SQUEUE = """#!/bin/bash
# Lists the queued jobs, then lets one of them end (as time passes on a real cluster).
n=$(cat "$FAKE_DIR/queued" 2>/dev/null || echo 0)
for i in $(seq 1 "$n"); do echo "9$i|PENDING|Priority"; done
if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$FAKE_DIR/queued"; fi
"""


def fake_cluster(tmp_path: Path, **limits: str) -> tuple[Path, Path, dict]:
    """A dry-run sweep of 5 runs, and a PATH whose sbatch, squeue and scontrol are the fakes."""
    exp = tiny_sweep(tmp_path, 5, "jobs")
    experiment(f"--experiment={exp}", "--dry-run", cwd=tmp_path, check_rc=0)
    fake = tmp_path / "fake"
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("scontrol", FAKE_SCONTROL)):
        write(fake / "bin" / name, text).chmod(0o755)
    env = {"PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE_DIR": str(fake), "HYPERSAL_FOLLOW_POLL_S": "0.05",
           **limits}
    return tmp_path / "out" / "big", fake, env


def test_submit_follow_feeds_the_queue_past_a_submit_limit_never_twice(tmp_path):
    out, fake, env = fake_cluster(tmp_path)
    first = experiment("submit", str(out), "--executor=slurm", env=env, cwd=tmp_path)
    assert first.returncode == 1
    assert ("could not submit run_002 (3 of 5): sbatch: error: Batch job submission failed: Job violates "
            "accounting/QOS policy") in first.stderr
    assert "That is your per-user submit limit (MaxSubmitJobs of your QOS or association)" in first.stderr
    assert "Already submitted, and staying so: run_000 (job 101), run_001 (job 102)" in first.stderr
    assert f"submit {out} --follow" in first.stderr
    assert len(jobs_of(out)) == 2
    follow = experiment("submit", str(out), "--executor=slurm", "--follow", env=env, cwd=tmp_path, check_rc=0)
    assert "held back by your per-user submit limit" in follow.stderr
    jobs = jobs_of(out)
    assert sorted(jobs) == [f"run_00{i}" for i in range(5)]
    accepted = [line.split()[-1] for line in (fake / "calls").read_text().splitlines() if line.startswith("accepted")]
    assert sorted(accepted) == [str(out / f"run_00{i}" / "exp.sh") for i in range(5)]   # each run once
    again = experiment("submit", str(out), "--executor=slurm", "--follow", env=env, cwd=tmp_path, check_rc=0)
    assert "is submitted already" in again.stderr


def test_a_full_cluster_is_said_at_once_instead_of_sbatch_hanging(tmp_path):
    """Past MaxJobCount sbatch does not fail: it sleeps and retries. hypersal submits what fits."""
    out, fake, env = fake_cluster(tmp_path, FAKE_MAX_JOB_COUNT="3", FAKE_SUBMIT_LIMIT="100")
    first = experiment("submit", str(out), "--executor=slurm", env=env, cwd=tmp_path)
    assert first.returncode == 1
    assert ("could not submit run_003 (4 of 5): the cluster holds as many jobs as its MaxJobCount allows (3). "
            "That is the cluster's MaxJobCount") in first.stderr
    assert len(jobs_of(out)) == 3
    experiment("submit", str(out), "--executor=slurm", "--follow", env=env, cwd=tmp_path, check_rc=0)
    assert sorted(jobs_of(out)) == [f"run_00{i}" for i in range(5)]
    accepted = [line for line in (fake / "calls").read_text().splitlines() if line.startswith("accepted")]
    assert len(accepted) == 5
