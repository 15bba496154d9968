"""Benchmark: what pruning and TPE buy, on the local Slurm cluster (CPU), with real training.

Three adaptive sweeps of the same space (learning rate, weight decay, batch size) and the same
number of trials, each with several seeds: random sampling without pruning, random + ASHA, and
TPE + ASHA. For each: the job-seconds spent (each job's wall time, from its log and state.json), the best
final val_loss, and best-so-far against cumulative job-seconds (a PNG).

    python bench/search_cost.py [--trials 12] [--seeds 0 1 2] [--epochs 9] [--out results/]

Needs a running Slurm (scripts/local-slurm.sh start). Prints one JSON line per sweep and one per
method; the target (issue: adaptive sweeps) is that ASHA reaches the no-pruning best within 2%
with at most 40% of its job-seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"random": ("random", "none"), "random+asha": ("random", "asha"), "tpe+asha": ("tpe", "asha")}


def experiment_file(folder: Path, name: str, sampler: str, pruner: str, seed: int, args) -> Path:
    doc = {
        "experiment": {"name": name, "base_dir": str(folder / "out"), "seed": seed, "search": {
            "sampler": sampler, "pruner": pruner, "metric": "val_loss", "direction": "minimize",
            "trials": args.trials, "parallelism": args.parallelism, "min_epochs": 1, "reduction_factor": 3},
            "config": {
                "comet": {"mode": "disabled"},
                "data": {"size": [48, 48], "workers": 1, "synth": {"n": 60, "size": [64, 64]}},
                "model": {"encoder": {"cutoff": 7}, "hypernet": {"hidden": [16], "chunk_size": 1024}},
                "train": {"epochs": args.epochs, "steps_per_epoch": args.steps, "val_batches": 2,
                          "val_batch_size": 8, "actions": []}}},
        "sbatch": {"cpus": 1, "mem": "2G"},
        "runs": [{"trainer": {"train": {
            "optim": {"lr": {"sample": "loguniform", "from": [1e-4, 3e-1]},
                      "weight_decay": {"sample": "uniform", "from": [0.0, 0.05]}},
            "batch_size": {"sample": "list", "from": [4, 8, 16]}}}}],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def seconds(iso_a: str, iso_b: str) -> float:
    return (datetime.fromisoformat(iso_b) - datetime.fromisoformat(iso_a)).total_seconds()


def measure(exp_dir: Path) -> dict:
    """Each run's job-seconds and the study's values, in the order the runs ended."""
    sys.path.insert(0, str(ROOT))
    from hypersal import search
    study = search.load(exp_dir)
    by_number = {t.number: t for t in study.get_trials()}
    runs = []
    for run in sorted(p for p in exp_dir.glob("run_*") if (p / "run.yaml").is_file()):
        state = json.loads((run / "state.json").read_text())
        trial = by_number[yaml.safe_load((run / "run.yaml").read_text())["trial"]]
        # The job's wall time: from exp.sh's first line ("... at <date -Is>, restart 0"), which
        # precedes Python's start and its imports, to train.py's last word in state.json.
        log = next(run.glob("slurm-*.out")).read_text()
        start = log.split(" at ", 1)[1].split(",", 1)[0]
        runs.append({"end": state["updated"], "seconds": seconds(start, state["updated"]),
                     "value": trial.value, "state": state["state"]})
    runs.sort(key=lambda r: r["end"])
    curve, spent, best = [], 0.0, float("inf")
    for r in runs:
        spent += r["seconds"]
        if r["value"] is not None:
            best = min(best, r["value"])
        curve.append((spent, best))
    return {"job_seconds": spent, "best": best, "pruned": sum(r["state"] == "pruned" for r in runs),
            "curve": curve}


def run_sweep(exp: Path, name: str, folder: Path) -> Path:
    proc = subprocess.run([sys.executable, str(ROOT / "experiment.py"), f"--experiment={exp}"],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    exp_dir = folder / "out" / name
    while True:
        status = subprocess.run([sys.executable, str(ROOT / "experiment.py"), "status", str(exp_dir)],
                                capture_output=True, text=True).stdout
        if not any(w in status for w in ("pending", "running", "requeued", "completing")):
            return exp_dir
        time.sleep(5)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"random": "tab:gray", "random+asha": "tab:blue", "tpe+asha": "tab:orange"}
    for method, sweeps in results.items():
        for i, m in enumerate(sweeps):
            xs, ys = zip(*[(s, b) for s, b in m["curve"] if b != float("inf")])
            ax.step(xs, ys, where="post", color=colours[method], alpha=0.8, label=method if i == 0 else None)
    ax.set_xlabel("cumulative job-seconds")
    ax.set_ylabel("best val_loss so far")
    ax.set_title("search cost: best so far against job-seconds (one line per seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per epoch")
    p.add_argument("--parallelism", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "results")
    args = p.parse_args()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    results: dict[str, list] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for seed in args.seeds:
            for method, (sampler, pruner) in METHODS.items():
                name = f"{method.replace('+', '-')}-s{seed}"
                exp_dir = run_sweep(experiment_file(folder, name, sampler, pruner, seed, args), name, folder)
                m = measure(exp_dir)
                results[method].append(m)
                print(json.dumps({"bench": "search_sweep", "method": method, "seed": seed, "trials": args.trials,
                                  "job_seconds": round(m["job_seconds"], 1), "best_val_loss": round(m["best"], 5),
                                  "pruned": m["pruned"], **machine}), flush=True)
    base = results["random"]
    for method, sweeps in results.items():
        ratio = [s["job_seconds"] / b["job_seconds"] for s, b in zip(sweeps, base)]
        gap = [(s["best"] - b["best"]) / b["best"] for s, b in zip(sweeps, base)]
        print(json.dumps({"bench": "search_method", "method": method,
                          "job_seconds_vs_no_pruning": [round(r, 3) for r in ratio],
                          "best_gap_vs_no_pruning": [round(g, 4) for g in gap],
                          "target_met": [r <= 0.4 and g <= 0.02 for r, g in zip(ratio, gap)] if method != "random" else None,
                          **machine}))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "search_cost.png")
    print(json.dumps({"bench": "plot", "path": str(args.out / "search_cost.png")}))


if __name__ == "__main__":
    main()
