"""Training losses on logits (B, 1, H, W) against target maps (B, 1, H, W) in [0, 1].

`loss: "bce + 0.5 * cc"` in the config is the weighted sum of the named losses.

| name  | loss                                                                        |
|-------|-----------------------------------------------------------------------------|
| bce   | binary cross-entropy of sigmoid(logits) and the map, per pixel              |
| kld   | KL(target || prediction), both normalised to sum 1 (eps 2.2204e-16)          |
| cc    | 1 - Pearson correlation of sigmoid(logits) and the map, per image           |
| nss   | - mean z-scored prediction weighted by the target map (a soft NSS)          |
| l1    | mean absolute error of sigmoid(logits) (QUICKSAL's MAE)                     |
| mse   | mean squared error of sigmoid(logits)                                       |
| huber | Huber (smooth L1, delta 0.1) of sigmoid(logits)                             |
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from hypersal.config import choices

LOSSES = choices.LOSSES   # the names and where each lives: hypersal/config/choices.py
EPS = 2.2204e-16


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)                                   # (B, H*W)


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def kld(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = _flat(torch.sigmoid(logits))
    p = p / (p.sum(1, keepdim=True) + EPS)
    q = _flat(target)
    q = q / (q.sum(1, keepdim=True) + EPS)
    return (q * torch.log(EPS + q / (p + EPS))).sum(1).mean()


def cc(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = _flat(torch.sigmoid(logits))
    q = _flat(target)
    p = p - p.mean(1, keepdim=True)
    q = q - q.mean(1, keepdim=True)
    r = (p * q).sum(1) / (p.norm(dim=1) * q.norm(dim=1) + EPS)
    return (1 - r).mean()


def nss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = _flat(logits)
    z = (p - p.mean(1, keepdim=True)) / (p.std(1, keepdim=True) + EPS)
    w = _flat(target)
    return -((z * w).sum(1) / (w.sum(1) + EPS)).mean()


def l1(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(torch.sigmoid(logits), target)


def mse(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(torch.sigmoid(logits), target)


def huber(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(torch.sigmoid(logits), target, delta=0.1)


def parse(expression: str, key: str = "train.loss") -> list[tuple[str, float]]:
    """"bce + 0.5 * cc" -> [("bce", 1.0), ("cc", 0.5)]; unknown names are errors (the login
    node's check, hypersal.config.choices, reads the same expressions without torch)."""
    return choices.parse_loss(expression, key=key)


def weighted(expression: str, key: str = "train.loss") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function of an expression like "bce + 0.5 * cc"."""
    terms = [(LOSSES.get(name), w) for name, w in parse(expression, key)]

    def total(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return sum(w * fn(logits, target) for fn, w in terms)
    return total
