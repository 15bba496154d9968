"""`experiment.py report DIR`: one self-contained HTML page for a sweep, from its run folders
(also while it runs): parallel coordinates of the sampled values and the headline metric, the
learning curves of every run, the sortable table of runs, and the best runs' test pictures and
per-task metrics. plotly.js and the pictures are inlined: the page opens from a file, offline.

What each part reads:
    parallel coordinates   run.yaml / summary.yaml (sampled values), results.json (the metric)
    learning curves        metrics.jsonl: `loss` (every log_every steps) and `val_loss` (each
                           epoch) of the `train` stage (else the first stage that logged a loss)
    table                  state.json, results.json, comet_url.txt; an adaptive sweep's journal
    best runs              results.json's `test` figures and test/<task>.png
"""
from __future__ import annotations

import base64
import math
import time
from pathlib import Path

import jinja2
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from hypersal import yamlio
from hypersal.experiment import runs as runs_mod

TEMPLATE = Path(__file__).with_name("report.html")
SMOOTH = 5        # the training loss is drawn as the mean of the last 5 logged values
PALETTE = qualitative.Plotly + qualitative.D3
CONFIG = {"displaylogo": False, "responsive": True}


def write(exp_dir: Path, out: Path | None = None, metric: str | None = None, best: int = 3) -> Path:
    exp_dir = Path(exp_dir)
    sweep = runs_mod.load(exp_dir)
    page = render(sweep, *sweep.headline(metric), best=best)
    out = Path(out) if out else exp_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    yamlio.write_text_atomic(out, page)
    return out.absolute()


def render(sweep: runs_mod.Sweep, metric: str, how: str, best: int = 3) -> str:
    ranked = sweep.ranked(metric, how)
    top = [r for r in ranked if _number(r.value(metric))][:best]
    names = runs_mod.short_names(sweep.sampled_keys())
    family = [m for m in runs_mod.HEADLINE_FAMILY if m != metric and any(m in r.figures for r in sweep.runs)]
    counts: dict[str, int] = {}
    for run in sweep.runs:
        word = "damaged" if run.damaged else run.state.get("state") or "not started"
        counts[word] = counts.get(word, 0) + 1
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    return env.from_string(TEMPLATE.read_text()).render(
        plotlyjs=get_plotlyjs(), sweep=sweep, summary=sweep.summary, metric=metric,
        better="lower" if how == "minimize" else "higher", counts=counts, generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        search_best=sweep.best,
        parcoords=_html(parcoords(sweep, metric, how, names), "parcoords"),
        with_metric=sum(_number(r.value(metric)) for r in sweep.runs),
        curves=_html(curves(sweep, top), "curves"),
        columns=[(k, names[k]) for k in sweep.sampled_keys()], family=family, runs=ranked, top=top,
        best_cards=[card(run) for run in top], top_names={r.name for r in top})


def _html(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=CONFIG)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(v) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def dimension(label: str, values: list) -> dict:
    """One parallel-coordinates axis: numbers as they are (log10 where they span a decade or
    more), anything else as categories."""
    if all(_number(v) for v in values):
        lo, hi = min(values), max(values)
        if lo > 0 and hi / lo >= 10:
            ticks = [m * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                     for m in (1, 2, 5) if lo <= m * 10 ** e <= hi] or [lo, hi]
            return dict(label=f"{label} (log)", values=[math.log10(v) for v in values],
                        tickvals=[math.log10(t) for t in ticks], ticktext=[f"{t:g}" for t in ticks])
        return dict(label=label, values=values)
    cats = list(dict.fromkeys(str(v) for v in values))
    return dict(label=label, values=[cats.index(str(v)) for v in values], tickvals=list(range(len(cats))),
                ticktext=cats)


def parcoords(sweep: runs_mod.Sweep, metric: str, how: str, names: dict) -> go.Figure:
    """One line per run that has the metric, coloured by it (brighter is better)."""
    runs = [r for r in sweep.runs if _number(r.value(metric))]
    values = [r.value(metric) for r in runs]
    dims = [dimension(names[k], [r.sampled.get(k, "-") for r in runs]) for k in sweep.sampled_keys()]
    dims.append(dict(label=metric, values=values))
    line = dict(color=values, colorscale="Viridis", reversescale=how == "minimize", showscale=True,
                colorbar=dict(title=dict(text=metric, side="right")))
    fig = go.Figure(go.Parcoords(line=line, dimensions=dims, meta={"runs": [r.name for r in runs]}))
    fig.update_layout(height=420, margin=dict(l=70, r=70, t=60, b=30))
    return fig


def loss_curves(run: runs_mod.Run) -> tuple[str | None, list[dict], list[dict]]:
    """(stage, its `loss` records, its `val_loss` records) from metrics.jsonl."""
    records = [r for r in runs_mod.metric_records(run.folder, live=run.state.get("state") == "running")
               if runs_mod.number(r.get("step"))]
    stages = list(dict.fromkeys(r.get("stage") for r in records if "loss" in r))
    stage = "train" if "train" in stages else (stages[0] if stages else None)
    mine = [r for r in records if r.get("stage") == stage]
    return (stage, [r for r in mine if runs_mod.number(r.get("loss"))],
            [r for r in mine if runs_mod.number(r.get("val_loss"))])


def trailing_mean(values: list[float], n: int = SMOOTH) -> list[float]:
    """Each value averaged with up to n - 1 before it: a logged loss is one batch of one task,
    and tasks take turns, so the raw values zigzag between tasks."""
    return [sum(values[max(0, i - n + 1):i + 1]) / len(values[max(0, i - n + 1):i + 1]) for i in range(len(values))]


def curves(sweep: runs_mod.Sweep, top: list[runs_mod.Run]) -> go.Figure:
    """Training loss (solid, smoothed) and validation loss (dashed, dots) of every run against steps; the
    best runs drawn bold, the others faint. A run stopped early ends early."""
    fig = go.Figure()
    best = {r.name: i for i, r in enumerate(top)}
    for i, run in enumerate(sweep.runs):
        stage, train, val = loss_curves(run)
        color = PALETTE[i % len(PALETTE)]
        bold = run.name in best
        style = dict(width=3 if bold else 1.2, color=color)
        label = run.name + (f" (best {best[run.name] + 1})" if bold else "")
        common = dict(legendgroup=run.name, opacity=1.0 if bold else 0.45, mode="lines")
        fig.add_trace(go.Scatter(x=[r["step"] for r in train], y=trailing_mean([r["loss"] for r in train]), name=label,
                                 line=style, meta={"run": run.name, "kind": "train", "stage": stage},
                                 hovertemplate=f"{run.name} train loss %{{y:.4g}} at step %{{x}}<extra></extra>",
                                 **common))
        fig.add_trace(go.Scatter(x=[r["step"] for r in val], y=[r["val_loss"] for r in val], name=f"{run.name} val",
                                 line={**style, "dash": "dash"}, showlegend=False,
                                 meta={"run": run.name, "kind": "val", "stage": stage},
                                 hovertemplate=f"{run.name} val loss %{{y:.4g}} at step %{{x}}<extra></extra>",
                                 **{**common, "mode": "lines+markers"}))
    fig.update_layout(height=460, margin=dict(l=60, r=20, t=30, b=50), xaxis_title="step",
                      yaxis_title="loss (solid: training, dashed: validation)", legend=dict(font=dict(size=11)))
    return fig


def card(run: runs_mod.Run) -> dict:
    """A best run: its per-task test metrics and its test pictures (inlined PNGs)."""
    test = run.results.get("test")
    test = test if isinstance(test, dict) else {}
    tasks = {k: v for k, v in test.items() if isinstance(v, dict)}
    metrics = list(dict.fromkeys(m for v in tasks.values() for m in v))
    pictures = []
    for png in sorted((run.folder.path / "test").glob("*.png")):
        pictures.append((png.stem, base64.b64encode(png.read_bytes()).decode("ascii")))
    return dict(run=run, tasks=tasks, metrics=metrics, pictures=pictures)
