"""The demo sweep end to end, as a newcomer runs it: seconds from `experiment.py` to the last run
done, the job-seconds its allocations held, and what each run learned (mean test CC over its
tasks, and per task).

    python bench/demo_time.py [--executor auto|slurm|local] [--fresh-cache] [--workers W --runs-per-worker P]

Prints one JSON line. `--fresh-cache` generates the dataset again (a first run on a new
machine); with Slurm it waits by `experiment.py status --watch`. `--workers W --runs-per-worker P`
runs the 4 runs on W worker jobs of P runs at once each (each worker asks for P times a run's
CPUs, so each run still trains on one run's CPUs) instead of one job per run. Job-seconds: one job
per run, from its script's first line to train.py's last state.json write; a worker, its
record's job_seconds (its process's age at its end).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "shared/experiment/demo.yaml"


def job_seconds(exp: Path) -> float | None:
    records = [json.loads(p.read_text()) for p in (exp / "workers").glob("*.json")]
    if records:
        return sum(r["job_seconds"] for r in records)
    total = 0.0
    for run in sorted(exp.glob("run_*")):
        logs = sorted(run.glob("slurm-*.out"))
        if not logs:            # the local executor: no job script log to time
            return None
        start = logs[0].read_text().split(" at ", 1)[1].split(",", 1)[0]
        end = json.loads((run / "state.json").read_text())["updated"]
        total += (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--executor", default="auto", choices=("auto", "slurm", "local"))
    p.add_argument("--fresh-cache", action="store_true")
    p.add_argument("--workers", type=int, default=0, help="run the demo on W worker jobs")
    p.add_argument("--runs-per-worker", type=int, default=1)
    args = p.parse_args()
    on_workers = []
    if args.workers:
        cpus = yaml.safe_load(DEMO.read_text())["sbatch"]["cpus"]
        on_workers = ["--workers", str(args.workers), f"experiment.runs_per_worker={args.runs_per_worker}",
                      f"sbatch.cpus={cpus * args.runs_per_worker}"]
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, **({"HYPERSAL_CACHE": str(Path(d) / "cache")} if args.fresh_cache else {})}
        cmd = [sys.executable, str(ROOT / "experiment.py"), f"--experiment={DEMO}",
               "--base-dir", d, f"--executor={args.executor}", *on_workers]
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        exp = Path(d) / "demo"
        subprocess.run([sys.executable, str(ROOT / "experiment.py"), "status", str(exp), "--watch", "1"],
                       env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        deadline = time.monotonic() + 60          # the runs are done: the workers write their last record
        while args.workers and time.monotonic() < deadline and not all(
                json.loads(f.read_text()).get("state") == "ended" for f in (exp / "workers").glob("*.json")):
            time.sleep(0.5)
        held = job_seconds(exp)
        runs = {}
        for f in sorted(exp.glob("run_*/results.json")):
            test = json.loads(f.read_text())["test"]
            runs[f.parent.name] = {k: round(v["cc"], 3) for k, v in test.items() if isinstance(v, dict)}
        print(json.dumps({"bench": "demo", "executor": args.executor, "fresh_cache": args.fresh_cache,
                          "workers": args.workers or None, "runs_per_worker": args.runs_per_worker if args.workers else None,
                          "seconds": round(seconds, 1), "job_seconds": held and round(held, 1), "cpus": os.cpu_count(),
                          "date": time.strftime("%Y-%m-%d %H:%M"), "test_cc": runs}))


if __name__ == "__main__":
    main()
