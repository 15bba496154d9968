"""`experiment.py collect|upload DIR`: the sweep's results as one table, and its offline Comet
archives sent to Comet.

By default `collect` prints a table that fits a terminal (run, state, sampled values, the
headline metrics), best run first; `--all` prints every column, `--json` every column as JSON,
and <exp_dir>/collect.csv always holds every column."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment import runs as runs_mod
from hypersal.experiment.submit import load_summary
from hypersal.experiment.table import format_table, to_csv
from hypersal.runfolder import RunFolder

COLLECT_CSV = "collect.csv"
WIDTH = 120


def rows(sweep: runs_mod.Sweep, metric: str, how: str) -> list[dict]:
    """A row per run, best first: its state, trial, sampled values and every figure of every
    stage (results.json)."""
    out = []
    for run in sweep.ranked(metric, how):
        row = {"run": run.name, "state": run.state_word}
        if sweep.search:   # the trial, its value, and the values drawn when its job started
            name = sweep.search["metric"]
            row.update(trial=run.trial if run.trial is not None else "-", **{name: run.extra.get(name, "-")})
        out.append({**row, **run.sampled, **run.figures})
    return out


def compact(sweep: runs_mod.Sweep, full: list[dict], metric: str, width: int = WIDTH) -> tuple[str, list[str], dict]:
    """The table that fits `width` columns: run, state, trial, sampled values (short names), the
    headline metric and its family (test means, best validation loss), dropped from the right
    until it fits. Returns the table, the columns left out and {short name: column} of those
    shown under a short name."""
    sampled = sweep.sampled_keys()
    figures = [metric] + [m for m in runs_mod.HEADLINE_FAMILY if m != metric and any(m in r for r in full)]
    fixed = ["run", "state"] + (["trial"] if sweep.search else [])
    names = runs_mod.short_names(sampled + figures)
    wanted = fixed + sampled + figures
    dropped = []
    while True:
        table = format_table([{names.get(c, c): row.get(c) for c in wanted} for row in full])
        if max(map(len, table.splitlines())) <= width or len(wanted) <= len(fixed) + 1:
            return table, dropped, {names[c]: c for c in wanted if names.get(c, c) != c}
        dropped.insert(0, wanted.pop())


def collect(exp_dir: Path, metric: str | None = None, every_column: bool = False,
            width: int = WIDTH) -> tuple[str, list[dict], Path]:
    """(the table to print, the full rows, collect.csv): the full rows also go to
    <exp_dir>/collect.csv, whatever is printed."""
    exp_dir = Path(exp_dir)
    sweep = runs_mod.load(exp_dir)
    metric, how = sweep.headline(metric)
    full = rows(sweep, metric, how)
    csv_path = exp_dir / COLLECT_CSV
    yamlio.write_text_atomic(csv_path, to_csv(full))
    if every_column or not full:
        return format_table(full), full, csv_path
    table, dropped, shown_as = compact(sweep, full, metric, width)
    better = "lower" if how == "minimize" else "higher"
    legend = ", ".join(f"{short} = {key}" for short, key in shown_as.items())
    notes = [f"sorted by {metric} ({better} is better)" + (f"; {legend}" if legend else "")]
    total = len({k for row in full for k in row})
    notes.append(f"{total} columns in all: --all prints them, --json gives them to scripts"
                 + (f" ({', '.join(dropped)} did not fit)" if dropped else ""))
    return table + "\n" + "\n".join(textwrap.fill(n, width, subsequent_indent="  ") for n in notes), full, csv_path


def archives(exp_dir: Path) -> list[Path]:
    """Every offline archive, each run's first (<key>.zip) before its continuations
    (<key>-xxxx.zip, written by a restarted job), which Comet can only append to an
    experiment that exists."""
    summary = load_summary(exp_dir)
    found = []
    for run in summary["runs"]:
        zips = RunFolder(Path(exp_dir) / run["dir"]).comet_dir.glob("*.zip")
        found += sorted(zips, key=lambda p: (p.name != f"{run['comet_key']}.zip", p.stat().st_mtime, p.name))
    return found


def upload_command() -> list[str]:
    """comet_ml's own uploader: the `comet` command, or the same through this Python."""
    exe = shutil.which("comet")
    return [exe, "upload"] if exe else [sys.executable, "-m", "comet_ml.scripts.comet", "upload"]


def upload(exp_dir: Path) -> list[Path]:
    """Upload every offline archive of the sweep; they keep their keys, so comet_url.txt holds."""
    found = archives(exp_dir)
    if found:
        subprocess.run([*upload_command(), *map(str, found)], check=True)
    return found
