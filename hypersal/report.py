"""The study's tables and plot from its experiment folders:

    python -m hypersal.report runs/study [more folders] --out results/

Each run's role is read from its own config.yaml: a plain network on one task
(`model.hypernet.generate: none`, no fewshot stage) is a per-task baseline; a run with the
fewshot stage trained one hypernetwork on every task but `adapt.task`, then compared the
few-shot methods on it. Its variant (default or an ablation) is what its model settings say.
Writes results.md (the tables), cc_vs_k.png (CC against k, one line per method, the mean over
held-out tasks) and cc_vs_k_per_task.png (the same, one panel per held-out task).
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from hypersal import yamlio
from hypersal.stagelist import held_out_task
from hypersal.runfolder import RunFolder

METHOD_NAMES = {"hnet": "hnet: new task embedding", "finetune": "(b) plain, fine-tuned from multi-task encoder",
                "scratch": "(c) plain, from scratch", "baseline": "(a) per-task baseline, all its data"}


def variant(cfg: dict) -> str:
    h, d = cfg["model"]["hypernet"], cfg["model"]["decoder"]
    parts = []
    if h["generate"] != "decoder":
        parts.append(f"generate {h['generate']}")
    if not h["per_task_bn"]:
        parts.append("shared BN statistics")
    if d["name"] != "light":
        parts.append(f"{d['name']} decoder")
    return ", ".join(parts) or "default"


def steps(cfg: dict) -> int:
    return cfg["train"]["epochs"] * cfg["train"]["steps_per_epoch"]


def gather(folders: list[Path]) -> tuple[dict, dict, list]:
    """(baselines[steps][task] -> [test figures per seed], multitask[variant] -> [run records],
    [records of multi-task runs without a fewshot stage: short ablations])."""
    baselines: dict = defaultdict(lambda: defaultdict(list))
    multitask: dict = defaultdict(list)
    short: list = []
    for folder in folders:
        for cfg_path in sorted(Path(folder).glob("run_*/config.yaml")):
            run = RunFolder(cfg_path.parent)
            results = run.results()
            if run.state().get("state") != "done" or "test" not in results:
                continue
            cfg = yamlio.load(cfg_path)
            if "fewshot" in cfg["pipeline"] and "fewshot" in results:
                multitask[variant(cfg)].append({"held_out": held_out_task(cfg), "seed": cfg["seed"],
                                                "test": results["test"], "fewshot": results["fewshot"],
                                                "steps": steps(cfg)})
            elif cfg["model"]["hypernet"]["generate"] == "none" and len(cfg["tasks"]) == 1:
                baselines[steps(cfg)][cfg["tasks"][0]].append(results["test"][cfg["tasks"][0]])
            elif cfg["model"]["hypernet"]["generate"] != "none" and "mean" in results["test"]:
                short.append({"variant": variant(cfg), "steps": steps(cfg), "held_out": held_out_task(cfg),
                              "seed": cfg["seed"], "cc": results["test"]["mean"]["cc"],
                              "seconds": results.get("train", {}).get("seconds")})
    return baselines, multitask, short


def short_table(short: list) -> str:
    """Multi-task runs without the few-shot part (ablations cut to what a CPU affords)."""
    lines = ["| variant | multi-task steps | held-out task | seed | multi-task mean CC | training time |",
             "|---|---|---|---|---|---|"]
    for r in sorted(short, key=lambda r: (r["steps"], r["held_out"] or "", r["variant"] != "default", r["variant"])):
        took = f"{r['seconds']:.0f} s" if r["seconds"] else "–"
        lines.append(f"| {r['variant']} | {r['steps']} | {r['held_out'] or 'none'} | {r['seed']} | {r['cc']:.3f} | {took} |")
    return "\n".join(lines)


def same_steps_per_task(baselines: dict, runs: list[dict]) -> int:
    """The baselines' step count that gives each task what the multi-task model gives it
    (its steps over its tasks); the closest one there is."""
    n_tasks = len({t for t, v in runs[0]["test"].items() if isinstance(v, dict) and t != "mean"})
    per_task = runs[0]["steps"] / max(1, n_tasks)
    return min(baselines, key=lambda s: abs(s - per_task))


def longer_table(baselines: dict, chosen: int, runs: list[dict]) -> str:
    """Baselines with other step counts (the control: as many updates as the multi-task model)."""
    counts = sorted(baselines)
    lines = ["| task | " + " | ".join(f"baseline CC, {n} steps" for n in counts) + " | multi-task CC |",
             "|---" * (len(counts) + 2) + "|"]
    means = defaultdict(list)
    for task in sorted(baselines[chosen]):
        cells = []
        for n in counts:
            cc = [x["cc"] for x in baselines[n].get(task, [])]
            cells.append(fmt(cc))
            means[n].append(np.mean(cc) if cc else np.nan)
        mt = [x["cc"] for x in trained_on(runs, task)]
        means["mt"].append(np.mean(mt) if mt else np.nan)
        lines.append(f"| {task} | {' | '.join(cells)} | {fmt(mt)} |")
    lines.append("| **mean** | " + " | ".join(f"{np.nanmean(means[n]):.3f}" for n in counts) +
                 f" | {np.nanmean(means['mt']):.3f} |")
    return "\n".join(lines)


def trained_on(runs: list[dict], task: str) -> list[dict]:
    """The test figures on `task` of every multi-task run that trained on it."""
    return [r["test"][task] for r in runs if task in r["test"] and r["held_out"] != task]


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def multitask_table(baselines: dict, runs: list[dict]) -> tuple[str, dict]:
    """Per task: the baseline's CC/KLD/SIM next to the multi-task model's (every run that
    trained on the task, over seeds and held-out choices)."""
    tasks = sorted(baselines)
    lines = ["| task | baseline CC | multi-task CC | ΔCC | baseline KLD | multi-task KLD | baseline SIM | multi-task SIM |",
             "|---|---|---|---|---|---|---|---|"]
    deltas, means = [], {"baseline": [], "multitask": []}
    for task in tasks:
        base = baselines[task]
        mt = trained_on(runs, task)
        b_cc, m_cc = [x["cc"] for x in base], [x["cc"] for x in mt]
        delta = np.mean(m_cc) - np.mean(b_cc) if b_cc and m_cc else float("nan")
        deltas.append(delta)
        means["baseline"].append(np.mean(b_cc) if b_cc else np.nan)
        means["multitask"].append(np.mean(m_cc) if m_cc else np.nan)
        lines.append(f"| {task} | {fmt(b_cc)} | {fmt(m_cc)} | {delta:+.3f} | {fmt([x['kld'] for x in base])} | "
                     f"{fmt([x['kld'] for x in mt])} | {fmt([x['sim'] for x in base])} | {fmt([x['sim'] for x in mt])} |")
    lines.append(f"| **mean** | {np.nanmean(means['baseline']):.3f} | {np.nanmean(means['multitask']):.3f} | "
                 f"{np.nanmean(deltas):+.3f} | | | | |")
    return "\n".join(lines), {"baseline_cc": float(np.nanmean(means["baseline"])),
                              "multitask_cc": float(np.nanmean(means["multitask"]))}


def fewshot_table(baselines: dict, runs: list[dict]) -> tuple[str, dict]:
    """Per held-out task and k: each method's CC (mean ± spread over seeds), the baseline's."""
    ks = sorted({int(k[1:]) for r in runs for k in r["fewshot"] if k.startswith("k")})
    methods = ["hnet", "finetune", "scratch"]
    curves: dict = {m: defaultdict(list) for m in methods}
    per_task: dict = {}   # task -> {method: {k: (mean, spread)}, "baseline": cc}
    lines = ["| held-out task | k | hnet CC | (b) finetune CC | (c) scratch CC | (a) baseline CC | hnet / baseline |",
             "|---|---|---|---|---|---|---|"]
    for task in sorted({r["held_out"] for r in runs}):
        mine = [r for r in runs if r["held_out"] == task]
        base = np.mean([x["cc"] for x in baselines.get(task, [])]) if baselines.get(task) else float("nan")
        per_task[task] = {"baseline": float(base), **{m: {} for m in methods}}
        for k in ks:
            cells, cc = [], {}
            for m in methods:
                cc[m] = values = [r["fewshot"][f"k{k}"][m]["cc"] for r in mine if m in r["fewshot"].get(f"k{k}", {})]
                curves[m][k].append(np.mean(values) if values else np.nan)
                if values:
                    per_task[task][m][k] = (float(np.mean(values)), float(np.std(values)))
                cells.append(fmt(values))
            hnet = cc["hnet"]
            ratio = np.mean(hnet) / base if hnet and base == base and base > 0 else float("nan")
            lines.append(f"| {task} | {k} | {' | '.join(cells)} | {base:.3f} | {ratio:.0%} |")
    summary = {m: {k: float(np.nanmean(v)) for k, v in curves[m].items()} for m in methods}
    summary["baseline"] = float(np.nanmean([np.mean([x["cc"] for x in v]) for v in baselines.values()])) \
        if baselines else float("nan")
    summary["per_task"] = per_task
    lines.append("")
    lines.append("| mean over held-out tasks | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---" * (len(ks) + 1) + "|")
    for m in methods:
        lines.append(f"| {METHOD_NAMES[m]} | " + " | ".join(f"{summary[m][k]:.3f}" for k in ks) + " |")
    return "\n".join(lines), summary


def ablation_table(multitask: dict) -> str:
    """Each variant next to the default on the same held-out tasks and seeds (a fair pair:
    the ablations hold out only some tasks, and tasks differ a lot in difficulty)."""
    def figures(runs: list[dict]) -> tuple[str, str]:
        mt = [r["test"]["mean"]["cc"] for r in runs if "mean" in r["test"]]
        k10 = [r["fewshot"]["k10"]["hnet"]["cc"] for r in runs if "hnet" in r["fewshot"].get("k10", {})]
        return fmt(mt), fmt(k10)

    lines = ["| variant | runs | multi-task mean CC | hnet k=10 CC (held-out task) | default, same held-out tasks "
             "and seeds: multi-task CC | hnet k=10 CC |", "|---|---|---|---|---|---|"]
    default = multitask.get("default", [])
    for name, runs in sorted(multitask.items(), key=lambda kv: kv[0] != "default"):
        pairs = {(r["held_out"], r["seed"]) for r in runs}
        same = [r for r in default if (r["held_out"], r["seed"]) in pairs] if name != "default" else []
        paired = " | ".join(figures(same)) if same else "– | –"
        lines.append(f"| {name} | {len(runs)} | {' | '.join(figures(runs))} | {paired} |")
    return "\n".join(lines)


STYLES = (("hnet", "o-"), ("finetune", "s--"), ("scratch", "^:"))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _axes(ax, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("k (image-map pairs of the new task)")
    ax.set_ylabel("CC on the held-out task's test maps")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot(summary: dict, path: Path) -> Path:
    """CC against k, one line per method: the mean over held-out tasks."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for m, style in STYLES:
        ks = sorted(summary[m])
        ax.plot(ks, [summary[m][k] for k in ks], style, label=METHOD_NAMES[m])
    if summary["baseline"] == summary["baseline"]:
        ax.axhline(summary["baseline"], color="gray", lw=1, label=METHOD_NAMES["baseline"])
    _axes(ax, "A new saliency task from k examples (mean over held-out tasks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_per_task(per_task: dict, path: Path) -> Path:
    """The same, one panel per held-out task, with the spread over seeds as error bars."""
    plt = _pyplot()
    tasks = sorted(per_task)
    cols = min(4, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), dpi=100, squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for m, style in STYLES:
            ks = sorted(per_task[task][m])
            ax.errorbar(ks, [per_task[task][m][k][0] for k in ks], yerr=[per_task[task][m][k][1] for k in ks],
                        fmt=style, capsize=2, ms=4, label=METHOD_NAMES[m])
        if per_task[task]["baseline"] == per_task[task]["baseline"]:
            ax.axhline(per_task[task]["baseline"], color="gray", lw=1, label=METHOD_NAMES["baseline"])
        _axes(ax, f"held out: {task}")
        ax.title.set_fontsize(9)
        ax.xaxis.label.set_fontsize(7)
        ax.yaxis.label.set_fontsize(7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypersal.report", description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", type=Path, help="experiment folders of the study")
    p.add_argument("--out", type=Path, default=Path("."), help="where results.md and cc_vs_k.png go")
    args = p.parse_args(argv)
    baselines, multitask, short = gather(args.folders)
    if "default" not in multitask:
        print("hypersal: error: no finished multi-task run with a fewshot stage in these folders", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    runs = multitask["default"]
    chosen = same_steps_per_task(baselines, runs) if baselines else None
    base = baselines[chosen] if baselines else {}
    mt_text, mt = multitask_table(base, runs)
    fs_text, fs = fewshot_table(base, runs)
    text = (f"## Multi-task hypernetwork against per-task baselines (CC, KLD, SIM on the test split)\n\n"
            f"Baselines: a plain network per task, {chosen} steps (the multi-task model's steps per task).\n\n"
            f"{mt_text}\n\n")
    if len(baselines) > 1:
        text += f"## Baselines with more steps\n\n{longer_table(baselines, chosen, runs)}\n\n"
    text += (f"## A new task from k pairs (CC on the held-out task's test maps)\n\n{fs_text}\n\n"
             f"## Ablations\n\n{ablation_table(multitask)}\n")
    if short:
        text += f"\n## Short ablations (multi-task test only)\n\n{short_table(short)}\n"
    (args.out / "results.md").write_text(text)
    plot(fs, args.out / "cc_vs_k.png")
    plot_per_task(fs["per_task"], args.out / "cc_vs_k_per_task.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
