"""A job of an adaptive sweep (hypersal/search/__init__.py): `train.py --trial EXP_DIR` in its job array.

When the job starts it asks the study for its values and writes its run folder (run.yaml with
the trial number first, then config.yaml, exp_i.yaml, comet_url.txt, hash.txt, env.yaml), before
any training. A job started again (requeued, or `experiment.py resume`) finds the trial number
in run.yaml and re-attaches to the same trial: `study.ask` would make a new one.

A new trial is asked under the sweep's ask lock (EXP_DIR/search/ask.lock, fcntl.flock), which is
held until its number is in run.yaml: so a trial in the study that no run.yaml names and that has
not finished, seen under that lock, was asked by a run that died before writing run.yaml (killed
mid-ask). Such a trial is adopted, not asked again; and no trial is asked once the study holds
`trials` of them. Workers (runner/worker.py) run many trials at once: the study never holds more
than `trials`, numbered 0..trials-1.

The train stage reports the metric after every epoch (an epoch the trial has already is not reported twice);
when the pruner says so, the stage checkpoints and stops, the run ends as `pruned` (exit 0) and
the study is told. Otherwise the study is told the best value the train stage reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypersal import search as search_mod, tree as T, yamlio
from hypersal.config import schema
from hypersal.errors import UserError
from hypersal.files import exclusive
from hypersal.experiment.write import comet_url_for, rerun_file
from hypersal.yamlio import write_text_atomic
from hypersal.log import say
from hypersal.runfolder import RunFolder
from hypersal.train.api import Action
from hypersal.train.signals import Pruned


@dataclass
class TrialRun:
    exp_dir: Path
    index: int
    study: object
    number: int
    search: search_mod.Search

    @property
    def trial(self):
        import optuna
        frozen = self.frozen()
        return optuna.trial.Trial(self.study, frozen._trial_id)   # re-attach: no public API for it

    def frozen(self):
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == self.number)

    def finished(self) -> bool:
        return self.frozen().state.is_finished()

    def tell(self, value: float | None = None, pruned: bool = False) -> None:
        if not self.finished():
            search_mod.tell(self.study, self.number, value, pruned)

    def reporter(self) -> "Reporter":
        return Reporter(self)


class Reporter(Action):
    """The train stage's metric to the study after every epoch; the pruner's verdict back."""
    name = "search_reporter"

    def __init__(self, run: TrialRun):
        self.run, self.pruned_at = run, None

    def on_epoch_end(self, trainer) -> None:
        metric = self.run.search.metric
        if metric not in trainer.metrics:
            raise UserError(f"the train stage logged no '{metric}' (it logged {', '.join(sorted(trainer.metrics))})",
                            key="experiment.search.metric", fix="search on a figure the train stage logs")
        frozen = self.run.frozen()
        if trainer.epoch in frozen.intermediate_values or frozen.state.is_finished():
            return                                    # resumed: this epoch was reported before
        trial = self.run.trial
        trial.report(float(trainer.metrics[metric]), trainer.epoch)
        if trainer.epoch < trainer.epochs and trial.should_prune():
            self.pruned_at = trainer.epoch
            trainer.stop(f"pruned at epoch {trainer.epoch}")

    def on_end(self, trainer) -> None:
        if self.pruned_at is not None:
            raise Pruned(self.pruned_at)
        values = list(self.run.frozen().intermediate_values.values())
        if values:
            best = min(values) if self.run.search.direction == "minimize" else max(values)
            self.run.tell(best)
            say(f"trial {self.run.number}: {self.run.search.metric} {best:.6g} told to the study")


def prepare(exp_dir: Path, index: int) -> tuple[Path, TrialRun]:
    """The run folder of run `index`'s trial, written now if the trial is new: (config.yaml, trial)."""
    exp_dir = Path(exp_dir).absolute()
    summary = yamlio.load(exp_dir / "summary.yaml")
    search = search_mod.Search(**summary["search"])
    entry = next((r for r in summary["runs"] if r["index"] == index), None)
    if entry is None:
        raise UserError(f"the search has no run {index}", file=exp_dir, fix="check the array's task ids")
    folder = RunFolder(exp_dir / entry["dir"])
    space = yamlio.load(exp_dir / search_mod.FOLDER / search_mod.SPACE)
    found = search_mod.space(space, search)
    study = search_mod.study(exp_dir, search, found, summary["seed"], index, space["train"]["epochs"])
    info = folder.run_info() if folder.run_yaml.is_file() else {}
    entry_values = yamlio.load(exp_dir / search_mod.FOLDER / search_mod.ENTRY)   # sbatch, comet
    if "trial" in info:
        run = TrialRun(exp_dir, index, study, info["trial"], search)
        say(f"trial {run.number} again (run {index}): resuming it")
    else:
        with asking(exp_dir):
            number, params, how = _new_trial(exp_dir, summary, study, search, found)
            run = TrialRun(exp_dir, index, study, number, search)
            sampled = {key: params[key] for key in sorted(found)}
            info = {"experiment": summary["name"], "index": index, "trial": number, "comet_key": entry["comet_key"],
                    "comet": entry_values["comet"], "sampled": sampled, "seed": summary["seed"]}
            write_text_atomic(folder.run_yaml, yamlio.dumps(info))      # first: a restart re-attaches
        say(f"trial {number} (run {index}){how}: {', '.join(f'{k}={v}' for k, v in sampled.items())}")
    if not folder.config.is_file():
        _write_run_folder(exp_dir, folder, space, info, summary, entry_values)
    return folder.config, run


ASK_LOCK = "ask.lock"


def asking(exp_dir: Path):
    """The sweep's ask lock, held from choosing a trial until run.yaml names it (a few journal
    reads and one append)."""
    return exclusive(Path(exp_dir) / search_mod.FOLDER / ASK_LOCK)


def named_trials(exp_dir: Path, summary: dict) -> set[int]:
    """The trial numbers the sweep's run.yaml files name (a damaged one names none)."""
    out = set()
    for entry in summary["runs"]:
        path = Path(exp_dir) / entry["dir"] / "run.yaml"
        if not path.is_file():
            continue
        try:
            number = yamlio.load(path).get("trial")
        except (UserError, OSError, AttributeError):
            continue
        if isinstance(number, int):
            out.add(number)
    return out


def _new_trial(exp_dir: Path, summary: dict, study, search, found: dict) -> tuple[int, dict, str]:
    """(number, params, words) of this run's trial, under the ask lock: one a run that died
    mid-ask left behind, else a new one, never beyond `trials`."""
    import optuna
    # a grid's trials wait, enqueued, from the start (params not drawn yet): each ask takes the next
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING]
    named = named_trials(exp_dir, summary)
    left = [t for t in trials if t.number not in named and not t.state.is_finished() and set(found) <= set(t.params)]
    if left:
        return left[0].number, left[0].params, " (asked by a run that ended before writing run.yaml: adopted)"
    if len(trials) >= search.trials:
        raise UserError(f"the study holds {len(trials)} trials already, experiment.search.trials is {search.trials}: "
                        "no trial is left for this run", file=search_mod.journal_path(exp_dir),
                        fix="raise trials in a new sweep; this sweep's runs have every trial")
    trial = study.ask(search_mod.distributions(found))
    return trial.number, trial.params, ""


def _write_run_folder(exp_dir: Path, folder: RunFolder, space: dict, info: dict, summary: dict, entry: dict) -> None:
    values = {tuple(k.split(".")): v for k, v in info["sampled"].items()}
    trainer = schema.inherit(T.map_leaves(space, lambda p, v: values.get(p, v) if T.is_leaf_mapping(v) else v))
    config_text = yamlio.dumps(trainer)
    exp_file = rerun_file(name=summary["name"], base_dir=exp_dir.parent, seed=summary["seed"], rerun_of=folder.path,
                          code_snapshot=summary["code"]["folder"] if summary["code"]["snapshot"] else None,
                          sbatch=entry["sbatch"], comet=entry["comet"], trainer=trainer)
    shared = exp_dir / search_mod.FOLDER / "shared"
    files = {f"exp_{info['index']}.yaml": yamlio.dumps(exp_file),
             "comet_url.txt": comet_url_for(trainer.get("comet", {}), info["comet_key"]),
             **{p.name: p.read_text(encoding="utf-8") for p in shared.iterdir()}}
    for name, text in files.items():
        write_text_atomic(folder.path / name, text)
    write_text_atomic(folder.config, config_text)                   # last: its presence means done


