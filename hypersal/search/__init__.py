"""Adaptive sweeps: an Optuna study in a journal file proposes each run's values from the results
so far and stops weak runs early. Shared by experiment.py (checks the section, creates the
study) and train.py (asks, reports every epoch, tells); optuna is imported only when a search is.

    experiment:
      search:
        sampler: tpe          # random | tpe | grid  (how new values are proposed)
        pruner: asha          # none | asha | hyperband | median  (which runs stop early)
        metric: val_loss      # a figure the train stage logs every epoch: val_loss, val_loss/<task>, train_loss
        direction: minimize   # minimize | maximize
        trials: 32            # runs in all
        parallelism: 4        # at most this many running at once
        min_epochs: 1         # the pruners' smallest budget (the resource is the train stage's epoch)
        reduction_factor: 3   # asha / hyperband: keep the best 1/N at each rung

The search space is the sample specs of the one run entry (a search takes exactly one entry,
without `repeat`): uniform, loguniform, randint, range and list for random and tpe; grid (and
list, range) for grid, which runs every combination in order (at most `trials` of them). Values are drawn when each job starts, not at submission. A trial's value is
the best its train stage reported (the weights train keeps with restore_best).

Where the study lives: <experiment>/search/study.journal, Optuna's JournalStorage in a file
(no database server; appends under a file lock, checked here with 8 processes at once). Shared
file systems that do not honour those locks (some NFS setups) are not supported. Every open
checks the journal and every append repairs a torn end first (hypersal/search/journal.py); status,
collect and report read it through `view`, which never writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypersal import tree as T
from hypersal.search import journal
from hypersal.config import schema
from hypersal.errors import UserError, name_of, shorten, unknown_name
from hypersal import sampling

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("asha", "hyperband", "median", "none")
DIRECTIONS = ("maximize", "minimize")
DEFAULTS = {"sampler": "tpe", "pruner": "asha", "metric": "val_loss", "direction": "minimize", "trials": 16,
            "parallelism": None, "min_epochs": 1, "reduction_factor": 3}
# what each sampler can draw from
SERVES = {"random": ("uniform", "loguniform", "randint", "range", "list"),
          "tpe": ("uniform", "loguniform", "randint", "range", "list"),
          "grid": ("grid", "list", "range")}
FOLDER = "search"
JOURNAL = "study.journal"
SPACE = "space.yaml"
ENTRY = "entry.yaml"      # the run entry's sbatch values and Comet note and tags
STUDY_NAME = "hypersal"


@dataclass(frozen=True)
class Search:
    sampler: str
    pruner: str
    metric: str
    direction: str
    trials: int
    parallelism: int | None
    min_epochs: int
    reduction_factor: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_section(value: Any, **where) -> Search:
    """experiment.search, every value checked (the file, key and line come in `where`)."""
    base = where.pop("key")
    if not isinstance(value, dict):
        raise UserError(f"expects a mapping (keys {', '.join(DEFAULTS)}), got {shorten(value)}", key=base, **where,
                        fix="indent the search settings below `search:`")
    schema.check(value, DEFAULTS, file=where.get("file"), prefix=tuple(base.split(".")))
    s = {**DEFAULTS, **value}

    def at(key: str) -> dict:
        return dict(where, key=f"{base}.{key}")
    for key, valid, kind in (("sampler", SAMPLERS, "sampler"), ("pruner", PRUNERS, "pruner"),
                             ("direction", DIRECTIONS, "direction")):
        if s[key] not in valid:
            raise unknown_name(kind, s[key], valid, **at(key))
    for key in ("trials", "min_epochs", "reduction_factor", "parallelism"):
        if s[key] is None and key == "parallelism":
            continue
        if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < (2 if key == "reduction_factor" else 1):
            least = 2 if key == "reduction_factor" else 1
            raise UserError(f"expects a whole number >= {least}, got {shorten(s[key])}", fix=f"write e.g. {least + 1}", **at(key))
    metric = s["metric"]
    if not isinstance(metric, str) or not (metric in ("val_loss", "train_loss") or metric.startswith("val_loss/")):
        raise UserError(f"the train stage never logs '{name_of(metric)}' per epoch", **at("metric"),
                        fix="use val_loss, val_loss/<task> or train_loss")
    return Search(**s)


def space(tree: dict, search: Search, file=None, prefix: tuple = ()) -> dict[str, dict]:
    """The sample specs of a layered trainer tree: {"train.optim.lr": spec}; each must be one the
    sampler can draw from."""
    found = {T.fmt(path): spec for path, spec in sampling.specs(tree)}
    if not found:
        raise UserError("a search needs at least one sampled value in its run entry", file=file,
                        key="experiment.search", fix="sample a key, e.g. train.optim.lr: {sample: loguniform, "
                                                    "from: [1.0e-4, 1.0e-2]}")
    for key, spec in found.items():
        if spec["sample"] not in SERVES[search.sampler]:
            raise UserError(f"the {search.sampler} sampler cannot draw `sample: {spec['sample']}`", file=file,
                            key=T.fmt(prefix + tuple(key.split("."))),
                            fix=f"with sampler {search.sampler} use one of: {', '.join(SERVES[search.sampler])}")
    return found


def distributions(found: dict[str, dict]) -> dict:
    """Optuna distributions for the specs (names are the key paths)."""
    import optuna.distributions as D
    out = {}
    for key, spec in found.items():
        kind, args = spec["sample"], spec["from"]
        if kind in ("uniform", "loguniform"):
            out[key] = D.FloatDistribution(float(args[0]), float(args[1]), log=kind == "loguniform")
        elif kind == "randint":
            out[key] = D.IntDistribution(args[0], args[1])
        else:   # range, list, grid: the candidates, in order
            values = sampling.range_values(args) if kind == "range" else list(args)
            out[key] = D.CategoricalDistribution(values)
    return out


def journal_path(exp_dir: Path) -> Path:
    return Path(exp_dir) / FOLDER / JOURNAL


MISSING_FIX = ("restore it from a backup: hypersal never makes it again, since a new, empty study would forget "
               "every trial (each run folder's run.yaml still names its trial and values)")


def storage(exp_dir: Path, must_exist: bool = False):
    """The study's storage, for writing (hypersal.search.journal): every line checked first, a torn end
    repaired under the journal's lock. A missing journal is created (as Optuna does) unless
    `must_exist`: only experiment.py, writing the sweep, makes it."""
    from optuna.storages.journal import JournalStorage
    path = journal_path(exp_dir)
    if not must_exist and not path.exists():
        return JournalStorage(journal.writer(path))
    found = journal.check(path, missing_fix=MISSING_FIX, reading=False)
    backend = journal.writer(path)
    if found.tail:
        with journal.locked(backend.lock):
            journal.repair_tail(path)
    return journal.replay(found, lambda: JournalStorage(backend))


def sampler(search: Search, seed: int, index: int):
    """A sampler for the job of run `index`: seeded by (seed, index), so runs started at once
    do not propose the same values, and a rerun of the same sweep proposes the same."""
    import optuna
    rng_seed = (seed * 1_000_003 + index) % 2**32
    if search.sampler in ("random", "grid"):   # grid: every combination is enqueued (grid_points)
        return optuna.samplers.RandomSampler(seed=rng_seed)
    return optuna.samplers.TPESampler(seed=rng_seed, n_startup_trials=min(10, max(2, search.trials // 4)))


def pruner(search: Search, epochs: int):
    import optuna
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=search.min_epochs - 1)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.min_epochs, max_resource=epochs,
                                              reduction_factor=search.reduction_factor)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.min_epochs,
                                                  reduction_factor=search.reduction_factor)


def study(exp_dir: Path, search: Search, found: dict, seed: int, index: int, epochs: int, create: bool = False):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs = dict(study_name=STUDY_NAME, storage=storage(exp_dir, must_exist=not create),
                  sampler=sampler(search, seed, index),
                  pruner=pruner(search, epochs))
    if create:
        created = optuna.create_study(direction=search.direction, **kwargs)
        if search.sampler == "grid":   # each job's ask takes the next one, atomically
            for point in grid_points(found)[:search.trials]:
                created.enqueue_trial(point)
        return created
    return _load(exp_dir, **kwargs)


def grid_points(found: dict[str, dict]) -> list[dict]:
    """Every combination of the candidates, in order (keys sorted): the grid sampler's trials.
    Enqueued when the study is created rather than drawn by Optuna's GridSampler, whose choice
    does not hold when each job builds its own sampler and asks with fixed distributions."""
    import itertools
    keys = sorted(found)
    values = [sampling.range_values(found[k]["from"]) if found[k]["sample"] == "range" else list(found[k]["from"])
              for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def load(exp_dir: Path):
    """The study of an experiment folder, to read and write (a script's, a test's)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _load(exp_dir, study_name=STUDY_NAME, storage=storage(exp_dir, must_exist=True))


def view(exp_dir: Path):
    """The study, read once and never written (status, collect, report): nothing in the folder
    changes, not even a torn last line (it is skipped, with a warning)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = journal.check(journal_path(exp_dir), missing_fix=MISSING_FIX)
    return _load(exp_dir, study_name=STUDY_NAME, storage=journal.read_only(found))


def _load(exp_dir: Path, **kwargs):
    import optuna
    try:
        return optuna.load_study(**kwargs)
    except KeyError:   # Optuna's "Record does not exist."
        raise UserError(f"the journal holds no study named {STUDY_NAME!r}", file=journal_path(exp_dir),
                        fix=MISSING_FIX) from None


def tell(study, number: int, value: float | None = None, pruned: bool = False) -> None:
    import optuna
    if pruned:
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(number, value)
