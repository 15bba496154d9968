"""What a run folder says after (or while) it trains: its checkpoint's step, its final weights,
the epochs it reported. Shared by the tests that interrupt runs and compare them with runs that
were never interrupted."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from hypersal.train.checkpoint import load


def checkpoint_step(run: Path, stage: str = "train") -> int:
    """The step of the stage's last checkpoint; -1 while there is none (or it is mid-rename)."""
    try:
        return load(run / "checkpoints" / stage / "last.pt")["step"]
    except Exception:
        return -1


def weights(run: Path) -> dict:
    return load(run / "models" / "after_train.pt")["state"]


def same_weights(a: Path, b: Path) -> bool:
    """The two runs' final weights, bit for bit."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def epochs(run: Path) -> list[int]:
    """The epochs metrics.jsonl reports, in order (an epoch reported twice shows twice)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [m["epoch"] for m in lines if "epoch" in m]
