"""`experiment.py collect|upload DIR`: the sweep's results as one table, and its offline Comet
archives sent to Comet."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hypersal import yamlio
from hypersal.experiment.submit import load_summary
from hypersal.experiment.table import format_table, to_csv
from hypersal.runfolder import RunFolder

COLLECT_CSV = "collect.csv"


def figures(tree: dict, prefix: str = "") -> dict:
    """The numbers of a results tree, flattened to "stage.key": paths, names and lists are left
    to results.json."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(figures(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def collect(exp_dir: Path) -> tuple[str, Path]:
    """A row per run: its sampled values and the figures of every stage (results.json).
    Printed as a table and written to <exp_dir>/collect.csv."""
    exp_dir = Path(exp_dir)
    summary = load_summary(exp_dir)
    rows = []
    values = trial_values(exp_dir, summary)
    for run in summary["runs"]:
        folder = RunFolder(exp_dir / run["dir"])
        info = folder.run_info() if folder.run_yaml.is_file() else {}
        state = folder.state()
        row = {"run": run["dir"], "state": state.get("state", "-")}
        if "search" in summary:   # the trial, its value, and the values drawn when its job started
            row["state"] = f"pruned@{state.get('pruned_epoch')}" if row["state"] == "pruned" else row["state"]
            row.update(trial=info.get("trial", "-"), **{summary["search"]["metric"]: values.get(info.get("trial"), "-")})
        rows.append({**row, **(info.get("sampled") or run.get("sampled", {})), **figures(folder.results())})
    if "search" in summary:   # best first; runs without a value last
        sign = 1 if summary["search"]["direction"] == "minimize" else -1
        metric = summary["search"]["metric"]
        rows.sort(key=lambda r: (not isinstance(r[metric], float), sign * r[metric] if isinstance(r[metric], float) else 0))
    csv_path = exp_dir / COLLECT_CSV
    yamlio.write_text_atomic(csv_path, to_csv(rows))
    return format_table(rows), csv_path


def trial_values(exp_dir: Path, summary: dict) -> dict[int, float]:
    """{trial number: its value (finished) or last reported value (pruned)} of an adaptive sweep."""
    if "search" not in summary:
        return {}
    from hypersal import search as search_mod
    out = {}
    for trial in search_mod.load(exp_dir).get_trials(deepcopy=False):
        if trial.value is not None:
            out[trial.number] = float(trial.value)
        elif trial.intermediate_values:
            out[trial.number] = float(trial.intermediate_values[max(trial.intermediate_values)])
    return out


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
