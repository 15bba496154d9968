"""The stage registry. A stage is a function of the Job that returns its final figures; stages
that change the model save it when they end (the seed's export after every such stage), so
later stages, and a restarted job, start from it.

Importing this package registers every stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hypersal.registry import Registry
from hypersal.config.stagelist import NEEDS


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable          # run(job) -> dict of figures
    changes_model: bool


STAGES: Registry[Stage] = Registry("stage")


def stage(name: str, changes_model: bool = False):
    """Register a stage; its name must be one of hypersal.config.stagelist.NEEDS (what it needs set)."""
    assert name in NEEDS, f"add '{name}' to hypersal.config.stagelist.NEEDS"

    def add(fn: Callable) -> Callable:
        STAGES.register(name)(Stage(name, fn, changes_model))
        return fn
    return add


from hypersal.stages import adapt, evaluate, export, run, study, training  # noqa: E402,F401  (registration)
