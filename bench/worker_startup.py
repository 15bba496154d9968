"""What a run forked by a worker saves against a fresh `train.py --config`: the same tiny runs
(one CPU thread each, one after another), once as a process each and once in one worker.

    python bench/worker_startup.py [--runs 5]

Prints one JSON line: each fresh run's wall seconds (process start to exit), each worker run's
(fork to exit), the worker's own start-up (process start to its first fork: the interpreter,
torch, torchvision, comet_ml and the stages imported once), the medians and what each run saves.
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
TRAINER = {"data": {"size": [32, 32], "synth": {"n": 20, "size": [48, 64]}, "workers": 1},
           "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "val_batches": 1, "val_batch_size": 4,
                     "actions": []},
           "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}},
           "comet": {"mode": "offline", "workspace": "bench"}, "pipeline": ["train"], "deterministic": True}


def sweep(base: Path, name: str, runs: int, env: dict) -> Path:
    exp_file = base / f"{name}.yaml"
    exp_file.write_text(yaml.safe_dump({"experiment": {"name": name, "base_dir": str(base), "config": TRAINER,
                                                       "seed": 0}, "runs": [{"repeat": runs}]}))
    subprocess.run([sys.executable, str(ROOT / "experiment.py"), f"--experiment={exp_file}", "--dry-run",
                    "--no-snapshot"], env=env, check=True, capture_output=True)
    return base / name


def fresh(run: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(run / "config.yaml")], cwd=run,
                   env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        env = {**os.environ, "HYPERSAL_CACHE": str(base / "cache"), "HYPERSAL_CPUS": "1"}
        warm = sweep(base, "warm", 1, env)
        fresh(warm / "run_000", env)                   # the dataset and its caches, made once, not counted
        alone = sweep(base, "alone", args.runs, env)
        fresh_s = [fresh(run, env) for run in sorted(alone.glob("run_*"))]
        pooled = sweep(base, "pooled", args.runs, env)
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--worker", str(pooled)], env=env, check=True,
                       capture_output=True)
        worker_total = time.perf_counter() - started
        [record] = [json.loads(f.read_text()) for f in (pooled / "workers").glob("*.json")]
    in_worker = [r["seconds"] for r in record["runs"]]
    print(json.dumps({
        "bench": "worker_startup", "runs": args.runs, "cpus": os.cpu_count(), "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"), "fresh_s": [round(s, 2) for s in fresh_s], "in_worker_s": in_worker,
        "fresh_median_s": round(statistics.median(fresh_s), 2),
        "in_worker_median_s": round(statistics.median(in_worker), 2),
        "saved_per_run_s": round(statistics.median(fresh_s) - statistics.median(in_worker), 2),
        "worker_startup_s": record["startup_seconds"], "fresh_total_s": round(sum(fresh_s), 1),
        "worker_total_s": round(worker_total, 1)}))


if __name__ == "__main__":
    main()
