"""Reading an experiment file: its sections, their schema, paths and the three trainer layers.

    experiment:            # how the sweep is run
      name: demo           # folder <base_dir>/<name>/ (letters, digits, . _ -)
      base_dir: ~/runs     # relative paths are resolved against this file's folder
      exp_desc: ...        # logged to Comet
      seed: 0              # the sampling seed (drawn and recorded when absent)
      defaults: ...        # trainer defaults file (default: shared/trainer/defaults.yaml)
      config: ...          # trainer overrides shared by all runs: a file or a mapping
      repeat: 1            # every run entry is drawn this many times (times its own repeat)
      mode: jobs           # jobs (one sbatch per run) | array (one job array)
      parallelism: null    # at most this many runs at once (an array's %N; the local executor too)
      snapshot_max_mb: 50  # the code snapshot's limit (hypersal.experiment.snapshot)
      workers: null        # N: the sweep runs on N worker jobs, each taking runs until none is left
      runs_per_worker: 1   # P: each worker runs P at once, its CPUs split between them
    sbatch: {...}          # template values for every run (cpus, mem, gpus, time, ...)
    runs:                  # one entry per run (or per grid combination / repetition)
      - trainer: {...}     # trainer overrides, may hold {sample: ..., from: ...}
        sbatch: {...}      # template values for this entry
        comet: {note: ..., tags: [...]}
        repeat: 1

The trainer layers, later ones winning: the defaults file, experiment.config, the run entry's
`trainer`, then the command line's `trainer.KEY=VALUE` overrides; sbatch likewise (experiment
level, run entry, command line). Then every sampled value is drawn, and the training stages
inherit from `train` (schema.inherit). Every layer is checked where it was written, so an error
names its file, line and key ("command line" for an override).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypersal import search as search_mod, tree as T, yamlio
from hypersal.config import overrides as overrides_mod, schema
from hypersal.errors import UserError, name_of, shorten
from hypersal.experiment import omnigan, snapshot
from hypersal import sampling

EXPERIMENT_SCHEMA = {
    "experiment": {"name": "", "base_dir": "", "exp_desc": "", "seed": None, "defaults": None,
                   "config": None, "repeat": 1, "mode": "jobs", "parallelism": None,
                   "rerun_of": None, "code_snapshot": None, "dev_mode": False, "no_comet": False,
                   "search": None, "snapshot_max_mb": float(snapshot.MAX_MB),
                   "workers": None, "runs_per_worker": 1},
    "sbatch": {},
    "runs": [],
}
RUN_SCHEMA = {"trainer": {}, "sbatch": {}, "comet": {"note": "", "tags": []}, "repeat": 1}
MODES = ("jobs", "array")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class RunEntry:
    """One item of `runs:`, its trainer layer validated; not yet sampled."""
    index: int
    trainer: dict
    sbatch: dict
    comet: dict
    repeat: int


@dataclass
class ExperimentSpec:
    file: Path
    name: str
    base_dir: Path
    exp_desc: str
    seed: int | None
    defaults_file: Path
    defaults: dict
    schema: dict           # what a trainer layer may hold (schema.trainer_schema)
    config: dict           # the experiment-level trainer layer (paths resolved)
    repeat: int
    mode: str
    parallelism: int | None
    rerun_of: str | None
    code_snapshot: str | None   # exp_i.yaml: the code folder the run ran on
    dev_mode: bool              # omnigan's: a dry run
    no_comet: bool              # omnigan's: every run's comet.mode is disabled
    search: Any                 # experiment.search (hypersal.search.Search), or None
    snapshot_max_mb: float      # the code snapshot's size limit
    base_dir_where: dict        # where base_dir was set (file, key, line), for errors
    workers: int | None         # N worker jobs instead of one job per run (docs/workers.md)
    runs_per_worker: int        # P runs at once in each worker (train.py --worker --slots P)
    workers_where: dict         # where workers was set, for errors
    sbatch: dict
    runs: list[RunEntry] = field(default_factory=list)
    cli_trainer: dict = field(default_factory=dict)   # the command line's trainer.* overrides
    cli_sbatch: dict = field(default_factory=dict)    # and its sbatch.* ones
    cli_items: list = field(default_factory=list)     # the overrides as typed


def check_name(name: Any, **where) -> str:
    """Names become folder and job names: no path separators, no `..`, no shell specials."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UserError(f"the name {shorten(name)} cannot be used as a folder name",
                        fix="use letters, digits, '.', '_' and '-' only, starting with a letter "
                            "or digit (at most 100 characters)", **where)
    return name


def _positive_int(value: Any, allow_none: bool = False, **where) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"expects a whole number >= 1, got {shorten(value)}", fix="write e.g. 2", **where)
    return value


def _positive_number(value: Any, **where) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise UserError(f"expects a number > 0, got {shorten(value)}", fix="write e.g. 50", **where)
    return float(value)


def _load_layer(value: Any, base: Path, file: Path, key: str, line: int | None) -> tuple[dict, Path, tuple]:
    """`config:` as a mapping (in this file) or a path to a YAML file: (tree, its file, prefix)."""
    if value is None:
        return {}, file, ()
    if isinstance(value, dict):
        return value, file, ("experiment", "config")
    if isinstance(value, str):
        path = Path(T.expand_path(value, base, file=file, key=key, line=line))
        layer = _load_named_file(path, file, key, line)
        if layer is None:
            return {}, path, ()
        if not isinstance(layer, dict):
            raise UserError("a trainer config file must hold a mapping", file=path,
                            fix="write keys like `optim: {lr: 0.001}`")
        return layer, path, ()
    raise UserError(f"expects a file path or a mapping, got {shorten(value)}", file=file, key=key,
                    line=line, fix="write `config: path/to/config.yaml` or an indented mapping")


def _load_named_file(path: Path, file: Path, key: str, line: int | None) -> Any:
    """A YAML file an experiment file names: a missing one is said with the key that named it."""
    if not path.is_file():
        raise UserError(f"the file {path} does not exist", file=file, key=key, line=line,
                        fix=f"correct the path (a relative one is read from {file.parent})")
    return yamlio.load(path)


def load(path: Path | str, overrides: dict | None = None, cli: list[str] = ()) -> ExperimentSpec:
    """Read and validate an experiment file; nothing is written. `overrides` (from the command
    line's flags: name, base_dir, seed, mode, parallelism) replace the file's `experiment` values;
    `cli` holds the command line's SECTION.KEY=VALUE overrides (hypersal.config.overrides)."""
    cli_tree = overrides_mod.parse(cli, sections=("experiment", "trainer", "sbatch"))
    schema.check({k: v for k, v in cli_tree.items() if k == "experiment"}, EXPERIMENT_SCHEMA,
                 file=overrides_mod.PLACE)
    file = Path(path).absolute()
    doc = yamlio.load(file)
    if not isinstance(doc, dict):
        raise UserError("an experiment file must hold a mapping with `experiment:` and `runs:`",
                        file=file, fix="see shared/experiment/demo.yaml for the shape")
    doc = omnigan.translate(doc, file)
    schema.check(doc, EXPERIMENT_SCHEMA, file=file)
    base = file.parent
    exp = {**EXPERIMENT_SCHEMA["experiment"], **doc.get("experiment", {})}
    # Paths typed on the command line are read from where they were typed.
    exp.update({k: str(Path(v).expanduser().absolute()) if k in ("base_dir", "defaults", "config")
                and isinstance(v, str) else v for k, v in cli_tree.get("experiment", {}).items()})
    exp.update({k: v for k, v in (overrides or {}).items() if v is not None})

    def where(key: str) -> dict:
        if key in cli_tree.get("experiment", {}):
            return dict(file=overrides_mod.PLACE, key=f"experiment.{key}", line=None)
        return dict(file=file, key=f"experiment.{key}", line=yamlio.line_of(doc, ("experiment", key)))

    for key in ("name", "base_dir"):
        if not exp[key]:
            raise UserError(f"experiment.{key} is missing", file=file,
                            fix=f"add `{key}: ...` under `experiment:`"
                                + (" (the folder that will hold the experiment's folder)"
                                   if key == "base_dir" else ""))
    name = check_name(exp["name"], **where("name"))
    base_dir = Path(T.expand_path(exp["base_dir"], base, **where("base_dir")))
    if exp["mode"] not in MODES:
        raise UserError(f"unknown mode '{name_of(exp['mode'])}'", fix=f"use one of: {', '.join(MODES)}",
                        **where("mode"))
    if exp["seed"] is not None and (not isinstance(exp["seed"], int) or isinstance(exp["seed"], bool)
                                    or exp["seed"] < 0):
        raise UserError(f"the seed must be a whole number >= 0, got {shorten(exp['seed'])}",
                        fix="write e.g. `seed: 0`", **where("seed"))

    defaults_file = Path(T.expand_path(exp["defaults"], base, **where("defaults"))) \
        if exp["defaults"] else schema.DEFAULTS_FILE
    defaults = _load_named_file(defaults_file, file, "experiment.defaults", where("defaults")["line"]) \
        if exp["defaults"] else yamlio.load(defaults_file)
    if not isinstance(defaults, dict):
        raise UserError("the trainer defaults must be a mapping", file=defaults_file,
                        fix="point experiment.defaults at shared/trainer/defaults.yaml")

    config, config_file, config_prefix = _load_layer(exp["config"], base, file, "experiment.config",
                                                     where("config")["line"])
    trainer_schema = schema.trainer_schema(defaults)
    schema.check_trainer(config, trainer_schema, file=config_file, prefix=config_prefix,
                         check_spec=sampling.check_spec)
    config = T.expand_paths(config, config_file.parent, file=config_file, prefix=config_prefix)

    runs_doc = doc.get("runs")
    if not runs_doc:
        raise UserError("the experiment has no runs", file=file, key="runs",
                        fix="add a `runs:` list with at least one entry (`- trainer: {}` runs the "
                            "config as it is)")
    workers_where = dict(file=overrides_mod.PLACE, key="--workers") if (overrides or {}).get("workers") is not None else where("workers")
    spec = ExperimentSpec(
        file=file, name=name, base_dir=base_dir, exp_desc=str(exp["exp_desc"] or ""),
        seed=exp["seed"], defaults_file=defaults_file, defaults=defaults, schema=trainer_schema, config=config,
        repeat=_positive_int(exp["repeat"], **where("repeat")), mode=exp["mode"],
        parallelism=_positive_int(exp["parallelism"], allow_none=True, **where("parallelism")),
        rerun_of=exp["rerun_of"], code_snapshot=exp["code_snapshot"],
        dev_mode=exp["dev_mode"], no_comet=exp["no_comet"],
        search=search_mod.check_section(exp["search"], **where("search")) if exp["search"] is not None else None,
        snapshot_max_mb=_positive_number(exp["snapshot_max_mb"], **where("snapshot_max_mb")),
        base_dir_where=(
            dict(file=overrides_mod.PLACE, key="--base-dir") if (overrides or {}).get("base_dir") else where("base_dir")),
        sbatch=_sbatch(doc.get("sbatch"), file, ("sbatch",), doc),
        workers=_positive_int(exp["workers"], allow_none=True, **workers_where),
        runs_per_worker=_positive_int(exp["runs_per_worker"], **where("runs_per_worker")),
        workers_where=workers_where)
    _check_workers(spec, where)
    spec.runs = [_load_run(i, entry, spec, doc) for i, entry in enumerate(runs_doc)]
    _load_cli(spec, cli_tree, list(cli))
    return spec


def _check_workers(spec: ExperimentSpec, where) -> None:
    """What workers cannot do yet, or what would be ignored with them, said on the login node."""
    if spec.workers is None:
        if spec.runs_per_worker != 1:
            raise UserError(f"runs_per_worker {spec.runs_per_worker} without experiment.workers: runs go one per "
                            "job, so it would be ignored", fix="set experiment.workers: N (or --workers N) too, "
                            "or remove runs_per_worker", **where("runs_per_worker"))
        return
    if spec.search is not None and spec.search.parallelism is not None:
        raise UserError(f"search parallelism {spec.search.parallelism} with workers: at most workers x "
                        "runs_per_worker trials are running at once, so it would be ignored",
                        fix="remove experiment.search.parallelism, and size experiment.workers instead",
                        **dict(where("search"), key="experiment.search.parallelism"))
    if spec.parallelism is not None:
        raise UserError(f"parallelism {spec.parallelism} with workers: at most workers x runs_per_worker runs "
                        "are running at once, so it would be ignored",
                        fix="remove parallelism (or --parallelism), and size experiment.workers instead",
                        **where("parallelism"))


def _load_cli(spec: ExperimentSpec, cli_tree: dict, items: list[str]) -> None:
    """The command line's trainer.* and sbatch.* overrides, checked as a layer of their own."""
    place = overrides_mod.PLACE
    trainer = cli_tree.get("trainer", {})
    schema.check_trainer(trainer, spec.schema, file=place, prefix=("trainer",), check_spec=sampling.check_spec)
    spec.cli_trainer = T.expand_paths(trainer, Path.cwd(), file=place, prefix=("trainer",))
    spec.cli_sbatch = _sbatch(cli_tree.get("sbatch"), place, ("sbatch",), {})
    spec.cli_items = items


def _sbatch(value: Any, file: Path, prefix: tuple, doc: dict) -> dict:
    """Template values: a flat-or-nested mapping whose sample specs must be well formed."""
    value = value or {}
    if not isinstance(value, dict):
        raise UserError(f"expects a mapping of template values, got {shorten(value)}", file=file,
                        key=T.fmt(prefix), line=yamlio.line_of(doc, prefix),
                        fix="write e.g. `sbatch: {cpus: 4, mem: 16G}`")
    for path, spec in sampling.specs(value):
        sampling.check_spec(spec, file=file, key=T.fmt(prefix + path),
                            line=yamlio.line_of(doc, prefix + path))
    return value


def _load_run(i: int, entry: Any, spec: ExperimentSpec, doc: dict) -> RunEntry:
    file, prefix = spec.file, ("runs", i)
    line = yamlio.line_of(doc, prefix)
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise UserError(f"a run entry must be a mapping, got {shorten(entry)}", file=file,
                        key=T.fmt(prefix), line=line, fix="write `- trainer: {...}`")
    schema.check(entry, RUN_SCHEMA, file=file, prefix=prefix)
    trainer = entry.get("trainer") or {}
    schema.check_trainer(trainer, spec.schema, file=file, prefix=prefix + ("trainer",),
                         check_spec=sampling.check_spec)
    trainer = T.expand_paths(trainer, file.parent, file=file, prefix=prefix + ("trainer",))
    sbatch = _sbatch(entry.get("sbatch"), file, prefix + ("sbatch",), doc)
    comet = {**RUN_SCHEMA["comet"], **(entry.get("comet") or {})}
    if not isinstance(comet["tags"], list) or not all(isinstance(t, str) for t in comet["tags"]):
        raise UserError("comet.tags must be a list of strings", file=file,
                        key=T.fmt(prefix + ("comet", "tags")), fix="write tags: [a, b]",
                        line=yamlio.line_of(doc, prefix + ("comet", "tags")))
    repeat = _positive_int(entry.get("repeat", 1), file=file, key=T.fmt(prefix + ("repeat",)),
                           line=yamlio.line_of(doc, prefix + ("repeat",)))
    return RunEntry(index=i, trainer=trainer, sbatch=sbatch, comet=comet, repeat=repeat)
