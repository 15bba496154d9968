"""Checkpoints that resume a stage exactly, written atomically.

A checkpoint holds the model, optimizer, scheduler, step, epoch, the epoch's running loss,
history, best metric, every RNG state, the actions' states and the config: the data position
is the step (providers are functions of it). Files, per stage folder:
    last.pt   the newest checkpoint        prev.pt   the one before (fallback if last is damaged)
    best.pt   the model with the best monitored metric (restored at the end when asked)
"""
from __future__ import annotations

import io
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from hypersal.files import write_atomic
from hypersal.log import say
from hypersal.train.distributed import barrier
from hypersal.errors import RunFailure


class CheckpointError(RunFailure):
    """A checkpoint could not be written or read; the message says what is still intact."""


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj, path: Path) -> None:
    """torch.save, whole or not at all (hypersal.files.write_atomic). Serialised in memory first,
    then written: torch's zip writer, writing a file itself, reports a disk that fills mid-write
    now as a RuntimeError with the OSError behind it, now as "unexpected pos N vs M" with none
    (seen on a full disk in CI); a plain write always raises the OSError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, lambda f: f.write(buffer.getbuffer()))


def os_error(e: BaseException | None) -> OSError | None:
    """The OSError behind an exception: torch.save reports a full disk as a RuntimeError
    whose context is the OSError."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def load(path: Path):
    # Our own files: they hold numpy RNG states and plain Python, hence weights_only=False.
    return torch.load(path, map_location="cpu", weights_only=False)


class Checkpointer:
    def __init__(self, folder: Path, every_steps: int = 0, every_minutes: float = 0.0,
                 monitor: str = "val_loss", mode: str = "min", restore_best: bool = True,
                 log=say, write: bool = True):
        self.folder = Path(folder)
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.monitor, self.mode, self.restore_best = monitor, mode, restore_best
        self.best: float | None = None
        self.last_save = time.monotonic()
        self.last_step: int | None = None       # the step of the newest checkpoint written or read
        self.log = log
        self.write = write          # False on every rank but 0: they read, never write

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def prev(self) -> Path:
        return self.folder / "prev.pt"

    @property
    def next(self) -> Path:
        """A new checkpoint, written in full here before it is rotated in as last.pt."""
        return self.folder / "next.pt"

    @property
    def best_file(self) -> Path:
        return self.folder / "best.pt"

    def state(self, trainer) -> dict:
        return {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
            "step": trainer.step, "epoch": trainer.epoch, "history": trainer.history,
            "metrics": trainer.metrics, "epoch_loss": (trainer.epoch_loss_sum, trainer.epoch_loss_count),
            "best": self.best, "rng": rng_state(),
            "actions": [a.state_dict() for a in trainer.actions],
            "config": trainer.config, "stage": trainer.name,
        }

    def save(self, trainer) -> Path:
        """Write the new checkpoint in full before rotating: if writing fails (disk full, an
        unwritable folder), last.pt and prev.pt stay as they were, and the error says so."""
        if not self.write:
            self.last_save, self.last_step = time.monotonic(), trainer.step
            return self.last
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self.state(trainer)
        self._write(state, self.next, trainer)
        if self.last.exists():
            os.replace(self.last, self.prev)
        os.replace(self.next, self.last)
        self.last_save, self.last_step = time.monotonic(), trainer.step
        return self.last

    def _write(self, obj, path: Path, trainer) -> None:
        """save_atomic, a full disk or an unwritable folder said as a CheckpointError: the file
        being replaced (and last.pt, prev.pt) stays as it was."""
        try:
            save_atomic(obj, path)
        except (OSError, RuntimeError) as e:
            cause = os_error(e)
            if cause is None:
                raise
            raise CheckpointError(f"{trainer.name}: cannot write a checkpoint in {self.folder} "
                                  f"({cause.strerror or cause}); {self._intact()}") from None

    def _intact(self) -> str:
        kept = [p.name for p in (self.last, self.prev) if p.exists()]
        if not kept:
            return "no earlier checkpoint exists"
        return f"the earlier checkpoint {kept[0]} is intact" if len(kept) == 1 else \
            f"the earlier checkpoints {' and '.join(kept)} are intact"

    def restore(self, trainer) -> bool:
        """Load the newest readable checkpoint into the trainer; False when there is none.
        A damaged newest one is reported and the previous one used; when every checkpoint is
        damaged the stage does not silently start over: that is an error."""
        damaged = []
        # next.pt exists only once written in full (atomically): a job killed between writing it
        # and rotating it in (or between the two renames) leaves it the newest of the three.
        for path in (self.next, self.last, self.prev):
            if not path.exists():
                continue
            try:
                state = load(path)
            except Exception as e:  # truncated or corrupt: say so and fall back to the older one
                self.log(f"checkpoint {path} is unreadable ({e.__class__.__name__}); trying the previous one")
                damaged.append(path)
                continue
            self._apply(trainer, state)
            self.last_step = trainer.step
            self.log(f"{trainer.name}: resumed from {path.name} at step {trainer.step} "
                     f"(epoch {trainer.epoch})")
            return True
        if damaged:
            raise CheckpointError(f"{trainer.name}: every checkpoint is damaged ({', '.join(p.name for p in damaged)} "
                                  f"in {self.folder}); delete them to start the stage over")
        return False

    def _apply(self, trainer, state: dict) -> None:
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scheduler is not None and state["scheduler"] is not None:
            trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.step, trainer.epoch = state["step"], state["epoch"]
        trainer.history, trainer.metrics = state["history"], state["metrics"]
        trainer.epoch_loss_sum, trainer.epoch_loss_count = state["epoch_loss"]
        self.best = state["best"]
        for action, saved in zip(trainer.actions, state["actions"]):
            action.load_state_dict(saved)
        set_rng_state(state["rng"])

    def due(self, trainer) -> bool:
        by_steps = self.every_steps > 0 and trainer.step % self.every_steps == 0
        by_time = self.every_minutes > 0 and time.monotonic() - self.last_save >= 60 * self.every_minutes
        return by_steps or by_time

    def describe_last(self) -> str:
        if self.last_step is None or not self.last.exists():
            return "there is no checkpoint of this stage yet"
        return f"the last good checkpoint is {self.last} (step {self.last_step})"

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, trainer) -> None:
        value = trainer.metrics.get(self.monitor)
        if value is not None and self.improved(value):
            self.best = value
            if self.write:
                self.folder.mkdir(parents=True, exist_ok=True)
                # best.pt too: a disk that fills here is said as for last.pt (seen in CI)
                self._write({"model": trainer.model.state_dict(), "epoch": trainer.epoch,
                             "step": trainer.step, self.monitor: value}, self.best_file, trainer)
        self.save(trainer)
        barrier(trainer.world)      # every rank sees best.pt and last.pt before it may need them

    def finish(self, trainer) -> None:
        """End of the stage: put the best model back when asked (the seed's Checkpointer did)."""
        if self.restore_best and self.best_file.exists():
            best = load(self.best_file)
            trainer.model.load_state_dict(best["model"])
            self.log(f"{trainer.name}: restored the best model (epoch {best['epoch']}, "
                     f"{self.monitor} {best[self.monitor]:.4g})")
