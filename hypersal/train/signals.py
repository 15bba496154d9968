"""Stopping cleanly: a signal only sets a flag; the training loop looks at it between steps,
saves a checkpoint and raises Stopped, so no step, file or log line is cut in half.

SIGTERM (scancel, preemption, a draining node) and SIGUSR2 (the template's warning before the
time limit, `--signal=B:USR2@120`; not SIGUSR1, which NCCL uses) both stop the job.
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Stopped(BaseException):
    """The job was told to stop; its state is saved and it can resume."""


class Pruned(BaseException):
    """A search's pruner stopped this trial (hypersal/runner/trial.py); its checkpoint is kept."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned at epoch {epoch}")
        self.epoch = epoch


_requested = threading.Event()
_reason: list[str] = []


def _handler(signum, frame) -> None:
    _reason[:] = [signal.Signals(signum).name]
    _requested.set()


def install() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handler)


def requested() -> str | None:
    """The name of the signal that asked us to stop, or None."""
    return _reason[0] if _requested.is_set() else None


def check() -> None:
    """Raise Stopped if a stop was asked for (call between units of work)."""
    if _requested.is_set():
        raise Stopped(f"stopped by signal {_reason[0]}")


def reset() -> None:
    _requested.clear()
    _reason.clear()
