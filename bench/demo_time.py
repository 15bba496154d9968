"""The demo sweep end to end, as a newcomer runs it: seconds from `experiment.py` to the last run
done, and what each run learned (mean test CC over its tasks, and per task).

    python bench/demo_time.py [--executor auto|slurm|local] [--fresh-cache]

Prints one JSON line. `--fresh-cache` generates the dataset again (a first run on a new
machine); with Slurm it waits by `experiment.py status --watch`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--executor", default="auto", choices=("auto", "slurm", "local"))
    p.add_argument("--fresh-cache", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, **({"HYPERSAL_CACHE": str(Path(d) / "cache")} if args.fresh_cache else {})}
        cmd = [sys.executable, str(ROOT / "experiment.py"), f"--experiment={ROOT / 'shared/experiment/demo.yaml'}",
               "--base-dir", d, f"--executor={args.executor}"]
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        exp = Path(d) / "demo"
        subprocess.run([sys.executable, str(ROOT / "experiment.py"), "status", str(exp), "--watch", "1"],
                       env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        runs = {}
        for f in sorted(exp.glob("run_*/results.json")):
            test = json.loads(f.read_text())["test"]
            runs[f.parent.name] = {k: round(v["cc"], 3) for k, v in test.items() if isinstance(v, dict)}
        print(json.dumps({"bench": "demo", "executor": args.executor, "fresh_cache": args.fresh_cache,
                          "seconds": round(seconds, 1), "cpus": os.cpu_count(), "test_cc": runs}))


if __name__ == "__main__":
    main()
