"""Benchmark: `hypersal.data.synth` making a 6-task dataset of 200 generated images at 240x320,
timed end to end (start of the worker processes included), then how much the tasks overlap:
the mean CC between every two tasks' maps over the dataset (1 = the same task).

    python bench/synth_speed.py [--n 200] [--size 240x320] [--workers N]

Prints one JSON line for the timing and one per pair of tasks.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hypersal.evaluation import metrics
from hypersal.data import synth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=synth.parse_size, default=(240, 320))
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    tasks = list(synth.DEFAULT_TASKS)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = synth.make(Path(d) / "data", n=args.n, size=args.size, tasks=tasks, workers=args.workers, quiet=True)
        seconds = time.perf_counter() - t0
        print(json.dumps({"bench": "synth", "images": args.n, "size": list(args.size), "tasks": len(tasks),
                          "workers": args.workers or synth.cpu_count(), "seconds": round(seconds, 2),
                          "images_per_second": round(args.n / seconds, 1), "cpus": os.cpu_count(),
                          "python": platform.python_version()}))
        stems = sorted(p.stem for p in (out / "maps" / tasks[0]).glob("*.png"))
        maps = {t: np.stack([np.asarray(Image.open(out / "maps" / t / f"{s}.png"), np.float64) for s in stems])
                for t in tasks}
        for a, b in itertools.combinations(tasks, 2):
            cc = float(np.mean(metrics.cc(maps[a], maps[b]).numpy()))
            print(json.dumps({"bench": "task_overlap", "a": a, "b": b, "mean_cc": round(cc, 3)}))


if __name__ == "__main__":
    main()
