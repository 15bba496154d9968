"""The stages' names and the config keys each needs set, and the check of a stage list. No
torch here: experiment.py checks every run's pipeline on the login node with it, and train.py
checks again before anything runs. `hypersal.stages` registers each stage under a name from
NEEDS (tests/test_registries.py keeps the two equal).
"""
from __future__ import annotations

from typing import Any

from hypersal import tree as T
from hypersal.errors import UserError, unknown_name

NEEDS: dict[str, tuple[str, ...]] = {
    "pretrain_one_task": (), "pretrain_weights": (), "train": (), "train_catchup": (),
    "adapt": ("adapt.task",),
    "fewshot_study": ("study.family",), "test": (), "run": (), "export": (),
}
# The stages that train with train's options: each inherits every key of `train` it does not
# set itself (schema.inherit), after all layers are merged.
TRAINING_STAGES = ("pretrain_weights", "pretrain_one_task", "train_catchup", "adapt")


def check(pipeline: list, skip: list[str] = (), cfg: Any = None, prefix: str = "", file=None) -> None:
    """Every stage name known, none twice, and (given the config) what each stage needs set,
    before anything runs: a mistake found after hours of training costs those hours. `prefix`
    is the config's key path in the file (experiment.py: runs[i].trainer.)."""
    where = {"file": file}
    if not pipeline:
        raise UserError("the pipeline is empty", key=f"{prefix}pipeline",
                        fix="list the stages to run, e.g. [train, test]", **where)
    seen = set()
    for i, name in enumerate(pipeline):
        if name not in NEEDS:
            raise unknown_name("stage", name, NEEDS, key=f"{prefix}pipeline[{i}]", **where)
        if name in seen:
            raise UserError(f"stage '{name}' appears twice", key=f"{prefix}pipeline",
                            fix="list each stage once (use a second run for a second pass)", **where)
        seen.add(name)
    for name in skip:
        if name not in NEEDS:
            raise unknown_name("stage", name, NEEDS, key="--skip")
    if cfg is None:
        return
    for name in (n for n in pipeline if n not in skip):
        for key in NEEDS[name]:
            if T.get(cfg, key.split(".")) is None:
                raise UserError(f"stage '{name}' needs {key}, which is not set", key=f"{prefix}{key}",
                                fix="set it (the new task's name: one of the dataset's tasks)", **where)


def held_out_task(cfg: Any) -> str | None:
    """The task training leaves out: adapt.task, when a stage that adapts to it is in the
    pipeline (adapt: the stage that needs it); otherwise none."""
    if any("adapt.task" in NEEDS.get(name, ()) for name in cfg["pipeline"]):
        return cfg["adapt"]["task"]
    return None
