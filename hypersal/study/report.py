"""The few-shot study's report: tables with 95% intervals and CC-against-k plots, from a sweep
of fewshot_study runs (study.json) and their reference runs (a plain network per tested
member: results.json's test CC).

    python -m hypersal.study.report runs/fewshot-study --out results/fewshot

writes <out>/results.md (printed too) and <out>/cc_vs_k.png (a panel per held-out family:
each arm's macro mean with its interval band, the converged reference dashed, k = 0 dotted).
Intervals: hypersal.evaluation.stats' hierarchical bootstrap (families > tasks > seeds > draws); the
differences are paired record by record.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from hypersal import yamlio
from hypersal.evaluation import stats
from hypersal.data.families import family_of
from hypersal.errors import UserError
from hypersal.log import warn
from hypersal.runfolder import RunFolder, read_mapping
from hypersal.study.arms import ARMS, FINETUNE_ARMS, HNET_ARMS
from hypersal.study.protocol import budget_key, parse_key, parse_tried

NAMES = {"k0_start": "k = 0: the start embedding", "k0_best": "k = 0: the best trained embedding",
         "encoder": "hnet: task encoder (no gradient step)", "embedding": "hnet: new embedding",
         "saliency": "hnet: embedding + head/output, 3 starts",
         "encoder_saliency": "hnet: task encoder, then embedding + head/output steps",
         "encoder_finetune": "hnet: task encoder's network, then every weight fine-tuned",
         "finetune_decoder": "fine-tune the exported network: decoder", "finetune_all":
         "fine-tune the exported network: all", "finetune_lora":
         "fine-tune the exported network: generated tensors + LoRA on the encoder", "plain_b": "plain: multi-task encoder, random decoder (old b)",
         "scratch": "plain: from scratch"}
HEADLINE_K = 10


def load(sweeps: list[Path]) -> tuple[list[dict], dict[str, float]]:
    """(every study run's record with its seed, {task: reference CC})."""
    studies, refs = [], {}
    for sweep in sweeps:
        for run in sorted(Path(sweep).glob("run_*")):
            try:
                if (run / "study.json").is_file():
                    record = read_mapping(run / "study.json")
                    if "groups" in record:                   # a finished run
                        record["seed"] = yamlio.load(run / "config.yaml")["seed"]
                        studies.append(record)
                    continue
                test = RunFolder(run).results().get("test", {})
            except (UserError, KeyError, TypeError) as e:   # a damaged file: said, and the run left out
                warn(f"{run}: {e} (left out of the tables)")
                continue
            if isinstance(test, dict):
                for task, row in test.items():
                    if family_of(task) and isinstance(row, dict) and "cc" in row:
                        refs.setdefault(task, []).append(row["cc"])
    if not studies:
        raise UserError("no finished fewshot_study run", file=sweeps[0],
                        fix="wait for the runs to end (experiment.py status) or point at the study's sweep")
    return studies, {t: float(np.mean(v)) for t, v in refs.items()}


def nested(studies: list[dict], group: str, arm: str, k: int) -> dict:
    """{family: {task: {seed: [draws]}}} of one arm at one k."""
    out: dict = {}
    for record in studies:
        for key, value in record["scores"].items():
            task, kk, _, a = parse_key(key)
            if a == arm and kk == k and task in record["groups"][group]:
                out.setdefault(family_of(task), {}).setdefault(task, {}).setdefault(record["seed"], []).append(value)
    return out


def adapt_ms(studies: list[dict], group: str, arm: str, k: int) -> float | None:
    """The median milliseconds the arm took to adapt to one task at k (None: runs older than the
    record of times)."""
    ms = []
    for r in studies:
        for key, value in r.get("adapt_ms", {}).items():
            task, kk, _, a = parse_key(key)
            if a == arm and kk == k and task in r["groups"][group]:
                ms.append(value)
    return float(np.median(ms)) if ms else None


def ms_cell(ms: float | None) -> str:
    return "–" if ms is None else f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def arms_of(studies: list[dict], group: str) -> list[str]:
    present = {arm for r in studies for task, _, _, arm in map(parse_key, r["scores"]) if task in r["groups"][group]}
    return [a for a in ARMS if a in present]


def shots_of(studies: list[dict]) -> list[int]:
    return sorted({parse_key(key)[1] for r in studies for key in r["scores"]})


def ci(t: tuple) -> str:
    return f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"


def short(t: tuple) -> str:
    return f"{t[0]:.3f} [{t[1]:.2f}, {t[2]:.2f}]"


def signed(t: tuple) -> str:
    return f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"


def best(studies, group, candidates, k) -> str | None:
    present = [a for a in candidates if a in arms_of(studies, group) and nested(studies, group, a, k)]
    return max(present, key=lambda a: stats.macro_mean(nested(studies, group, a, k))) if present else None


def reference_of(data: dict, refs: dict) -> tuple[float | None, dict]:
    """The reference's macro mean over the same families and tasks, and per family."""
    per = {}
    for fam, tasks in data.items():
        values = [refs[t] for t in tasks if t in refs]
        per[fam] = float(np.mean(values)) if len(values) == len(tasks) else None
    known = [v for v in per.values() if v is not None]
    return (float(np.mean(known)) if len(known) == len(per) else None), per


def gain_line(arm_data: dict, k0: dict) -> str:
    gain = stats.paired_interval(arm_data, k0)
    return f"{signed(gain)}: " + ("**met**" if gain[0] >= 0.05 else "**missed**")


def headline(studies, refs, k: int) -> tuple[str, list[str]]:
    """The k table (arms x held-out families) and the success criteria's lines."""
    arms = arms_of(studies, "family")
    data = {a: nested(studies, "family", a, k) for a in arms}
    families = sorted(data[arms[0]])
    ref, ref_per = reference_of(data[arms[0]], refs)
    best_ft = best(studies, "family", FINETUNE_ARMS, k)
    best_hn = best(studies, "family", [a for a in HNET_ARMS if a != "k0_start"], k)
    k0 = data.get("k0_start")
    head = ("| arm | " + " | ".join(f"{f} (held out)" for f in families) + " | macro mean | % of reference | gain over k = 0 | "
            f"difference to the best fine-tuning ({best_ft}) | time to adapt (median) |")
    lines = [head, "|" + "---|" * (len(families) + 6)]
    for arm in arms:
        d = data[arm]
        cells = [short(stats.interval(d[f])) if f in d else "–" for f in families]
        mean = stats.interval(d)
        pct = f"{100 * mean[0] / ref:.0f}%" if ref else "–"
        gain = signed(stats.paired_interval(d, k0)) if k0 is not None and arm != "k0_start" else "–"
        diff = signed(stats.paired_interval(d, data[best_ft])) if best_ft and arm != best_ft else "–"
        lines.append(f"| {NAMES[arm]} | " + " | ".join(cells) + f" | {ci(mean)} | {pct} | {gain} | {diff} | "
                     f"{ms_cell(adapt_ms(studies, 'family', arm, k))} |")
    lines.append("| converged reference (one plain network per task) | "
                 + " | ".join(f"{ref_per[f]:.3f}" if ref_per.get(f) is not None else "–" for f in families)
                 + f" | {ref:.3f} | 100% | | | |" if ref else "| converged reference | (missing) | | | | | |")
    criteria = []
    if best_hn and best_ft:
        diff = stats.paired_interval(data[best_hn], data[best_ft])
        hn = stats.macro_mean(data[best_hn])
        need = math.ceil(0.75 * len(families))          # 3 of 4
        wins = sum(stats.macro_mean(data[best_hn][f]) > stats.macro_mean(data[best_ft][f]) for f in families)
        criteria = [
            f"best hypernetwork arm: {best_hn} ({hn:.3f}); best fine-tuning arm: {best_ft} "
            f"({stats.macro_mean(data[best_ft]):.3f})",
            f"beats the best fine-tuning with the paired interval above 0: {signed(diff)}: "
            + ("**met**" if diff[1] > 0 else "**missed**"),
            ">= 90% of the converged reference: " + (f"{100 * hn / ref:.0f}%: " + ("**met**" if hn >= 0.9 * ref
                                                                                    else "**missed**")
                                                       if ref else "no reference: **not shown**"),
            ">= +0.05 CC over k = 0 (the start embedding): " + (gain_line(data[best_hn], k0) if k0 is not None
                                                                 else "no k0_start arm: **not shown**"),
            f"wins on at least {need} of {len(families)} families: {wins} of {len(families)}: "
            + ("**met**" if wins >= need else "**missed**"),
            f"per family, {best_hn} - {best_ft} (paired: with 4 families the macro interval undercovers): "
            + "; ".join(f"{f} {signed(stats.paired_interval(data[best_hn][f], data[best_ft][f]))}"
                        for f in families),
        ]
        if "encoder" in data:
            criteria.append(encoder_criterion(studies, data, best_ft, k))
    return "\n".join(lines), criteria


def encoder_criterion(studies, data: dict, best_ft: str, k: int) -> str:
    """The task encoder alone: at least 90% of the best fine-tuning arm's CC, at least 100x faster."""
    enc, ft = stats.macro_mean(data["encoder"]), stats.macro_mean(data[best_ft])
    t_enc, t_ft = adapt_ms(studies, "family", "encoder", k), adapt_ms(studies, "family", best_ft, k)
    speed = t_ft / t_enc if t_enc and t_ft else None
    met = enc >= 0.9 * ft and speed is not None and speed >= 100
    return (f"the task encoder alone: {100 * enc / ft:.0f}% of {best_ft}'s CC (>= 90%), "
            + (f"{speed:.0f}x faster to adapt ({ms_cell(t_enc)} against {ms_cell(t_ft)}; >= 100x): "
               if speed is not None else "no times recorded: ") + ("**met**" if met else "**missed**"))


def by_k(studies, group: str, refs: dict) -> str:
    """Each arm's CC by k and, where the runs recorded them, the median time it took to adapt."""
    ks = sorted({k for r in studies for task, k, _, _ in map(parse_key, r["scores"]) if task in r["groups"][group]})
    lines = ["| arm | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for arm in arms_of(studies, group):
        cells = []
        for k in ks:
            d = nested(studies, group, arm, k)
            ms = adapt_ms(studies, group, arm, k)
            cells.append((ci(stats.interval(d)) if d else "–") + ("" if ms is None else f" · {ms_cell(ms)}"))
        lines.append(f"| {NAMES[arm]} | " + " | ".join(cells) + " |")
    ref, _ = reference_of(nested(studies, group, arms_of(studies, group)[0], ks[0]), refs)
    if ref is not None:
        lines.append("| converged reference | " + " | ".join(f"{ref:.3f}" for _ in ks) + " |")
    return "\n".join(lines)


def at_edge(budget: dict) -> bool:
    """The chosen lr or steps is the largest (or lr the smallest) of those tried: the best may lie beyond."""
    tried = [parse_tried(key) for key in budget.get("tried", {})]
    lrs, steps = {lr for lr, _, _ in tried}, {st for _, st, _ in tried}
    return bool(tried) and (budget["steps"] == max(steps) or len(lrs) > 1 and budget["lr"] in (min(lrs), max(lrs)))


def budgets(studies) -> str:
    """The learning rate and steps each arm got at each k (the most common over the runs); * when
    a run's choice lay at the edge of the grid."""
    ks = shots_of(studies)
    lines = ["| arm | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for arm in [a for a in ARMS if any(budget_key(a, ks[0]) in r["budgets"] for r in studies)]:
        cells = []
        for k in ks:
            key = budget_key(arm, k)
            chosen = [r["budgets"][key] for r in studies if key in r["budgets"]]
            names = [f"{b['lr']:g} x {b['steps']}" + (f", pull {b['pull']:g}" if "pull" in b else "") for b in chosen]
            values, counts = np.unique(names, return_counts=True)
            edge = "*" if any(at_edge(b) for b in chosen) else ""
            cells.append(f"{values[counts.argmax()]} ({counts.max()}/{len(chosen)}){edge}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n* some runs chose the largest step budget or an extreme learning rate of the grid."


def plot(studies, refs, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = [a for a in arms_of(studies, "family") if a != "k0_start"]
    ks = shots_of(studies)
    families = sorted(nested(studies, "family", arms[0], ks[0]))
    cols = 2 if len(families) == 4 else len(families)              # 4 families: a 2 x 2 grid
    rows = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(8, 4.5 * cols), 3.6 * rows + 0.9), dpi=110, sharey=True,
                             squeeze=False)
    axes = axes.ravel()
    for ax, fam in zip(axes, families):
        for i, arm in enumerate(arms):
            rows = [stats.interval(nested(studies, "family", arm, k)[fam]) for k in ks]
            mean, low, high = (np.array(c) for c in zip(*rows))
            line, = ax.plot(ks, mean, "o-", ms=3, label=NAMES[arm], color=f"C{i}")
            ax.fill_between(ks, low, high, color=line.get_color(), alpha=0.15)
        k0 = nested(studies, "family", "k0_start", ks[0]).get(fam)      # a study without the arm: no line
        if k0:
            ax.axhline(stats.macro_mean(k0), color="black", ls=":", lw=1, label="k = 0 (start embedding)")
        _, ref_per = reference_of(nested(studies, "family", arms[0], ks[0]), refs)
        if ref_per.get(fam) is not None:
            ax.axhline(ref_per[fam], color="black", ls="--", lw=1, label="converged reference")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_title(f"held-out family: {fam}")
        ax.set_xlabel("k pairs")
        ax.grid(alpha=0.3)
    for ax in axes[::cols]:
        ax.set_ylabel("CC on the test maps")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / fig.get_figheight(), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def render(studies, refs, k: int = HEADLINE_K) -> str:
    seeds = sorted({r["seed"] for r in studies})
    folds = sorted({r["family"] for r in studies})
    table, criteria = headline(studies, refs, k)
    out = [f"# The few-shot study: {len(studies)} runs ({len(folds)} held-out families x seeds "
           f"{', '.join(map(str, seeds))})", "",
           f"## k = {k}: the held-out family's members (CC, 95% interval)", "", table, "",
           "Success criteria (macro mean over held-out families):", ""] + [f"- {c}" for c in criteria]
    out += ["", "## By k: the held-out family's members", "", by_k(studies, "family", refs), ""]
    if arms_of(studies, "seen"):
        out += ["## By k: a new member of a seen family", "", by_k(studies, "seen", refs), ""]
    out += ["## Budgets chosen on the selection tasks (lr x steps; runs that chose it)", "", budgets(studies), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypersal.study.report", description=__doc__.split("\n\n")[0])
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep folders of fewshot_study and reference runs")
    p.add_argument("--out", type=Path, required=True, help="folder for results.md and cc_vs_k.png")
    p.add_argument("--k", type=int, default=HEADLINE_K, help=f"the headline table's k (default {HEADLINE_K})")
    args = p.parse_args(argv)
    try:
        studies, refs = load(args.sweeps)
        if args.k not in shots_of(studies):
            raise UserError(f"the runs have no k = {args.k}", key="--k",
                            fix=f"use one of {', '.join(map(str, shots_of(studies)))}")
    except UserError as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    text = render(studies, refs, args.k)
    (args.out / "results.md").write_text(text + "\n")
    plot(studies, refs, args.out / "cc_vs_k.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
