"""Optimizers and learning-rate schedules by name, from torch.optim (seeds 002-004).

optim: {name: adam|adamw|sgd, lr, weight_decay, momentum (sgd)}
schedule (stepped once per optimizer step; every schedule may start with a linear warmup):
| name        | learning rate                                                          |
|-------------|------------------------------------------------------------------------|
| none        | constant                                                               |
| exponential | halves smoothly every `decay_steps` (ExponentialLR)                    |
| staircase   | halves every `decay_steps` (StepLR)                                    |
| cosine      | cosine from lr to `min_lr` over the steps after warmup (CosineAnnealingLR) |
| cyclic      | triangular between `min_lr` and `max_lr`, `cycle_steps` up (CyclicLR)  |
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import lr_scheduler as S

from hypersal.config import choices
from hypersal.errors import UserError

OPTIMIZERS = choices.OPTIMIZERS   # the names and where each lives: hypersal/config/choices.py
SCHEDULES = choices.SCHEDULES   # the names and where each lives: hypersal/config/choices.py


def adam(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def adamw(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def sgd(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                           momentum=cfg["momentum"], nesterov=cfg["momentum"] > 0)


def make_optimizer(params: Iterable, cfg: dict, key: str = "train.optim") -> torch.optim.Optimizer:
    """`params`: tensors or param groups; frozen tensors (requires_grad False) are left out.
    Make it before actions freeze anything, so parameters frozen for a while stay in it."""
    groups = list(params)
    if not groups or not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    params = [g for g in groups if g["params"]]
    if not params:
        raise UserError("nothing to train: every parameter is frozen", key=key,
                        fix="check model.hypernet.generate and the stage's freeze options")
    return OPTIMIZERS.get(cfg["name"], key=f"{key}.name")(params, cfg)


def constant(opt, cfg, steps):
    return S.LambdaLR(opt, lambda _: 1.0)


def exponential(opt, cfg, steps):
    return S.ExponentialLR(opt, gamma=0.5 ** (1.0 / cfg["decay_steps"]))


def staircase(opt, cfg, steps):
    return S.StepLR(opt, step_size=cfg["decay_steps"], gamma=0.5)


def cosine(opt, cfg, steps):
    return S.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=cfg["min_lr"])


def cyclic(opt, cfg, steps):
    # Momentum cycling needs an optimizer with momentum (SGD); Adam has betas instead.
    return S.CyclicLR(opt, base_lr=cfg["min_lr"], max_lr=cfg["max_lr"], step_size_up=cfg["cycle_steps"],
                      cycle_momentum=isinstance(opt, torch.optim.SGD))


def make_schedule(opt: torch.optim.Optimizer, cfg: dict, total_steps: int, key: str = "train.schedule"):
    """The schedule for `total_steps` optimizer steps, after `warmup_steps` of linear warmup (the
    values' ranges and the cyclic bounds are hypersal.config.options', checked before any stage)."""
    build = SCHEDULES.get(cfg["name"], key=f"{key}.name")
    warmup = cfg["warmup_steps"]
    if warmup <= 0:
        return build(opt, cfg, total_steps)
    first = S.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return S.SequentialLR(opt, [first, build(opt, cfg, total_steps - warmup)], milestones=[warmup])
