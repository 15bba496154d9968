"""Benchmark: a 1,000-run sampled sweep expanded, checked (keys, types and every allowed value),
rendered and written with --dry-run, timed from the command line (interpreter start and imports
included; the code snapshot made by the first repetition, shared by the others); the snapshot
alone, made anew; then the same sweep in array mode submitted through a recording `sbatch`, to
count the sbatch calls, and a 1,200-run one on a cluster whose MaxArraySize is 1001.

    python bench/sweep_dry_run.py [--runs 1000] [--repeat 3]

Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

FAKE_SCONTROL = """#!/bin/bash
# `scontrol show config` of a cluster with Slurm's default MaxArraySize.
echo "MaxArraySize            = 1001"
"""
FAKE_SBATCH = """#!/bin/bash
# Records each call (one line of arguments) and answers like `sbatch --parsable`.
echo "$*" >> "{log}"
echo 4242
"""


def experiment_file(folder: Path, runs: int) -> Path:
    assert runs % 4 == 0, "runs must be a multiple of 4 (a 2 x 2 grid times repeat)"
    doc = {
        "experiment": {"name": "bench", "base_dir": str(folder / "out"), "seed": 0},
        "sbatch": {"cpus": 4, "mem": "16G", "gpus": 1, "time": "02:00:00"},
        "runs": [{
            "repeat": runs // 4,
            "comet": {"tags": ["bench"]},
            "trainer": {
                "seed": {"sample": "randint", "from": [0, 100000]},
                "train": {
                    "batch_size": {"sample": "grid", "from": [32, 64]},
                    "optim": {"name": {"sample": "grid", "from": ["adam", "adamw"]},
                              "lr": {"sample": "loguniform", "from": [1e-5, 1e-2]},
                              "weight_decay": {"sample": "uniform", "from": [0.0, 0.1]}},
                    "schedule": {"warmup_steps": {"sample": "range", "from": [0, 1000, 100]}},
                },
                "model": {"hypernet": {"embedding_dim": {"sample": "list", "from": [8, 16, 32]}}},
            },
        }],
    }
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return seconds, proc


def write_floor(sweep: Path, into: Path) -> float:
    """The anchor, timed right after each dry run: only creating the sweep's folders and files
    (their bytes already in memory). This VM's disk speed varies several-fold from minute to
    minute; the anchor says how much of a figure is the disk."""
    contents = {p.relative_to(sweep): p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    for rel, data in contents.items():
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        (into / rel).write_bytes(data)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (the median is reported)")
    args = p.parse_args()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        exp = experiment_file(folder, args.runs)
        cmd = [sys.executable, str(ROOT / "experiment.py"), f"--experiment={exp}", "--dry-run"]
        times, floors = [], []
        for i in range(args.repeat):
            seconds, proc = timed(cmd, dict(os.environ))
            times.append(seconds)
            floors.append(write_floor(folder / "out" / "bench", folder / f"floor_{i}"))
        out = folder / "out" / "bench"
        files = sum(1 for p in out.rglob("*") if p.is_file())
        print(json.dumps({"bench": "dry_run", "runs": args.runs, "seconds_median": round(statistics.median(times), 3),
                          "seconds_all": [round(t, 3) for t in times], "files_per_sweep": files,
                          "anchor_write_files_seconds": [round(t, 3) for t in floors],
                          "reported_by_experiment_py": proc.stderr.splitlines()[0], **machine}))

        sys.path.insert(0, str(ROOT))
        from hypersal.experiment import snapshot
        t0 = time.perf_counter()
        snap = snapshot.collect(ROOT)
        snapshot.materialize(snap, folder / "fresh")
        print(json.dumps({"bench": "code_snapshot", "files": len(snap.files),
                          "bytes": sum((ROOT / f).stat().st_size for f in snap.files),
                          "seconds": round(time.perf_counter() - t0, 3), **machine}))

        bin_dir = folder / "bin"
        bin_dir.mkdir()
        log = folder / "sbatch_calls.txt"
        (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(log=log))
        (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
        for name in ("sbatch", "scontrol"):
            (bin_dir / name).chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        for runs in (args.runs, 1200):
            log.write_text("")
            big = experiment_file(folder, runs)
            seconds, proc = timed([sys.executable, str(ROOT / "experiment.py"), f"--experiment={big}",
                                   "--mode=array", "--parallelism=50", "--executor=slurm", f"experiment.name=arr{runs}"], env)
            calls = log.read_text().splitlines()
            jobs = (folder / "out" / f"arr{runs}" / "jobs.tsv").read_text().splitlines()
            print(json.dumps({"bench": "array_submit", "runs": runs, "max_array_size": 1001, "sbatch_calls": len(calls),
                              "sbatch_args": [c.split()[1:3] for c in calls], "jobs_tsv_lines": len(jobs),
                              "seconds": round(seconds, 3), **machine}))


if __name__ == "__main__":
    main()
