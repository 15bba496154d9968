"""A sweep as its run folders say it is: one `Run` per run (state, sampled values, figures,
trial), the headline metric, and the short column names. Read by `collect`, `status`
and `report`; nothing here writes.

The headline metric (what tables sort by and the report colours by) is, unless `--metric`
names another column: the search metric of an adaptive sweep, else the test split's mean CC
(`test.mean.cc`), else the training stage's best validation loss (`train.best_val_loss`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from hypersal import urls
from hypersal.errors import UserError, shorten
from hypersal.experiment.folder import load_summary
from hypersal.log import warn
from hypersal.runfolder import Damaged, RunFolder

# Lower is better for these; every other metric is higher-is-better.
LOWER_IS_BETTER = ("loss", "kld", "mae", "seconds")
# The figures a compact table shows after the headline, when a run has them.
HEADLINE_FAMILY = ("test.mean.cc", "test.mean.kld", "test.mean.sim", "test.mean.nss", "train.best_val_loss")
TAIL_BYTES = 65536


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


@dataclass
class Run:
    name: str
    folder: RunFolder
    state: dict
    sampled: dict
    figures: dict
    trial: int | None = None
    comet_url: str | None = None
    extra: dict = field(default_factory=dict)   # the search metric's value, by its name
    results: dict = field(default_factory=dict)  # results.json as it is
    damaged: dict = field(default_factory=dict)  # {file name: what is wrong with it}

    @property
    def damage(self) -> str | None:
        """The run's damaged files in words ("state.json: not JSON ..."), None if none."""
        return "; ".join(f"{name}: {what}" for name, what in self.damaged.items()) or None

    @property
    def damaged_files(self) -> str:
        return ", ".join(self.damaged)

    @property
    def state_word(self) -> str:
        if self.damaged:
            return "damaged"
        word = self.state.get("state") or "-"
        return f"pruned@{self.state.get('pruned_epoch')}" if word == "pruned" else word

    def value(self, metric: str):
        return self.extra.get(metric, self.figures.get(metric))


@dataclass
class Sweep:
    exp_dir: Path
    summary: dict
    runs: list[Run]
    best: str | None = None     # an adaptive sweep's best trial so far, in words (None: a plain sweep)

    @property
    def search(self) -> dict | None:
        return self.summary.get("search")

    def sampled_keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for run in self.runs:
            seen.update(dict.fromkeys(run.sampled))
        return list(seen)

    def metric_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for run in self.runs:
            seen.update(dict.fromkeys(run.extra))
            seen.update(dict.fromkeys(run.figures))
        return list(seen)

    def headline(self, requested: str | None = None) -> tuple[str, str]:
        """(metric, "minimize" | "maximize")."""
        search = self.search
        if requested:
            if requested not in self.metric_names():
                raise UserError(f"no run has the metric {shorten(requested)}", file=self.exp_dir, key="--metric",
                                fix="one of: " + ", ".join(self.metric_names() or ["(no run has figures yet)"]))
            if search and requested == search["metric"]:
                return requested, search["direction"]
            return requested, direction(requested)
        if search:
            return search["metric"], search["direction"]
        names = self.metric_names()
        metric = "test.mean.cc" if "test.mean.cc" in names else "train.best_val_loss"
        return metric, direction(metric)

    def ranked(self, metric: str, how: str) -> list[Run]:
        """Best first; runs without the metric last, in folder order."""
        sign = 1 if how == "minimize" else -1

        def key(run: Run):
            v = run.value(metric)
            return (not isinstance(v, (int, float)), sign * v if isinstance(v, (int, float)) else 0)
        return sorted(self.runs, key=key)


def direction(metric: str) -> str:
    return "minimize" if any(word in metric.split(".")[-1] for word in LOWER_IS_BETTER) else "maximize"


def load(exp_dir: Path) -> Sweep:
    exp_dir = Path(exp_dir)
    summary = load_summary(exp_dir)
    study = search_results(exp_dir, summary)
    runs = []
    for entry in summary["runs"]:
        folder = RunFolder(exp_dir / entry["dir"])
        damaged: dict[str, str] = {}
        info = _read(folder.run_info, folder.run_yaml, damaged)
        results = _read(folder.results, folder.results_file, damaged)
        run = Run(name=entry["dir"], folder=folder, state=_read(folder.state, folder.state_file, damaged),
                  # an adaptive sweep's values are drawn when its job starts: run.yaml has them
                  sampled=info.get("sampled") or entry.get("sampled") or {},
                  figures=figures(results), trial=info.get("trial"), comet_url=comet_url(folder),
                  results=results, damaged=damaged)
        if study is not None and run.trial is not None:
            if run.trial in study.values:
                run.extra[summary["search"]["metric"]] = study.values[run.trial]
            elif run.trial not in study.numbers:
                warn(f"{run.name} ran trial {run.trial}, which the study ({study.path}) does not hold: "
                     "its journal has lost entries")
        runs.append(run)
    return Sweep(exp_dir, summary, runs, study.best if study else None)


def _read(read, path: Path, damaged: dict) -> dict:
    """read(), or {} with a warning (and the file noted as damaged) when the file is damaged."""
    try:
        return read()
    except Damaged as e:
        warn(f"{path}: damaged: {e.what}; the run is shown as damaged (restore the file from a backup, or move "
             "it aside)")
        damaged[path.name] = e.what
        return {}


def comet_url(folder: RunFolder) -> str | None:
    """comet_url.txt's URL, when it is a web address (the page links it: never a javascript: one)."""
    path = folder.path / "comet_url.txt"
    if not path.is_file():
        return None
    url = path.read_bytes().decode("utf-8", errors="replace").strip()
    return url if urls.is_web(url) else None


@dataclass
class StudyResults:
    path: Path
    values: dict[int, float]     # trial number: its value (finished) or last reported value (pruned)
    numbers: set[int]            # every trial the study holds
    best: str                    # the best trial so far, in words


def search_results(exp_dir: Path, summary: dict) -> StudyResults | None:
    """An adaptive sweep's study, read once and never written; None for a plain sweep."""
    if "search" not in summary:
        return None
    from hypersal import search as search_mod
    study = search_mod.view(exp_dir)
    values, numbers = {}, set()
    for trial in study.get_trials(deepcopy=False):
        numbers.add(trial.number)
        if trial.value is not None:
            values[trial.number] = float(trial.value)
        elif trial.intermediate_values:
            values[trial.number] = float(trial.intermediate_values[max(trial.intermediate_values)])
    out = StudyResults(search_mod.journal_path(exp_dir), values, numbers, "none yet (no trial has finished)")
    try:
        best = study.best_trial
    except (ValueError, KeyError):     # no trial finished yet
        return out
    out.best = f"trial {best.number}, {summary['search']['metric']} {best.value:.6g}"
    return out


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares:
    trainer.train.optim.lr -> lr, unless another key also ends in .lr."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            short = ".".join(parts[-n:])
            if not any(k != key and (k == short or k.endswith("." + short)) for k in keys):
                break
        out[key] = short
    return out


def number(value) -> bool:
    """A figure a table or a curve can use (metrics.jsonl is read as it is: a line may hold anything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_records(folder: RunFolder, whole: bool = True, live: bool = False) -> list[dict]:
    """metrics.jsonl as records (mappings); `whole=False` reads only its last 64 KB (status,
    many times). A line that is not a JSON mapping is skipped with one warning per file: a torn
    last line (a job killed mid-write) too, unless the run is `live` (that line may be being
    written now)."""
    path = folder.metrics
    try:
        with open(path, "rb") as f:
            start = 0 if whole else max(0, f.seek(0, 2) - TAIL_BYTES)
            f.seek(start)
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        return []
    lines = data.split(b"\n")
    torn = lines.pop()
    if start:
        lines = lines[1:]     # the tail's first line, cut by the seek
    records, bad = [], []
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif raw.strip():
            bad.append(number)
    if bad or (torn.strip() and not live):
        where = f"line {bad[0]}" if bad and whole else "near its end" if bad else "its last line"
        count = len(bad) + (1 if torn.strip() and not live else 0)
        warn(f"{path}: skipping {count} torn or damaged line{'s' * (count > 1)} ({where}: not a JSON mapping)")
    return records
