"""Which tasks a fold of the study trains on, tunes its budgets on, and tests on (no torch:
experiment.py derives a run's training tasks on the login node from it).

Leave one family out: the held-out family (`study.family`) is never trained on; its members
`test_members` are the new tasks. Of every other family, members `train_members` are trained
on, member `select_member` chooses each arm's learning rate and steps (its few-shot scores
on val images, never a test image), and member `seen_member` is reported apart as "a new
member of a seen family".
"""
from __future__ import annotations

from hypersal.config import options
from hypersal.config.choices import FAMILY_SIZES
from hypersal.errors import unknown_name


def members(family: str, which) -> list[str]:
    return [f"{family}-{m}" for m in which]


def check(cfg) -> None:
    """The study section's family and members: the login node's rule (options.study_members_exist)."""
    if cfg.family not in FAMILY_SIZES:
        raise unknown_name("family", cfg.family, FAMILY_SIZES, key="study.family")
    study = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    options.enforce({"pipeline": ["fewshot_study"], "study": study}, options.study_members_exist)


def training_tasks(cfg) -> list[str]:
    check(cfg)
    return [t for fam in FAMILY_SIZES if fam != cfg.family for t in members(fam, cfg.train_members)]


def selection_tasks(cfg) -> list[str]:
    check(cfg)
    return [t for fam in FAMILY_SIZES if fam != cfg.family for t in members(fam, [cfg.select_member])]


def seen_tasks(cfg) -> list[str]:
    check(cfg)
    return [t for fam in FAMILY_SIZES if fam != cfg.family for t in members(fam, [cfg.seen_member])]


def test_tasks(cfg) -> list[str]:
    check(cfg)
    return members(cfg.family, cfg.test_members)


def score_key(task: str, k: int, draw: int, arm: str) -> str:
    """study.json's key of one score: "<task>/k<k>/d<draw>/<arm>"."""
    return f"{task}/k{k}/d{draw}/{arm}"


def parse_key(key: str) -> tuple[str, int, int, str]:
    """(task, k, draw, arm) of a score's key."""
    task, k, draw, arm = key.split("/")
    return task, int(k[1:]), int(draw[1:]), arm


def budget_key(arm: str, k: int) -> str:
    """study.json's key of the budget one arm got at one k: "<arm>/k<k>"."""
    return f"{arm}/k{k}"


def tried_key(lr: float, steps: int, pull: float | None = None) -> str:
    """A budget's key among those tried: "<lr>/<steps>", or "<lr>/<steps>/<pull>" when the
    pull is part of the grid (study.pulls)."""
    return f"{lr}/{steps}" if pull is None else f"{lr}/{steps}/{pull}"


def parse_tried(key: str) -> tuple[float, int, float | None]:
    """(lr, steps, pull or None) of a tried budget's key."""
    lr, steps, *pull = key.split("/")
    return float(lr), int(steps), float(pull[0]) if pull else None
