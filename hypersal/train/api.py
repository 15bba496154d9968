"""The train-api (as the original hnet framework named it): a Trainer runs a TrainingStep over a DataProvider, calls Actions at
fixed points, validates every epoch and lets a Checkpointer save and restore everything.

What actions, trackers and the checkpointer may use of the trainer (the seed's ATrainer):
    name, model, optimizer, scheduler, provider, tracker, device, config
    job (the run: folder, dataset and arrays, tracker; None outside train.py)
    step (optimizer steps done), epoch (epochs done), epochs, steps_per_epoch, total_steps
    metrics (last epoch's figures), history (every epoch's), stop_requested / stop(reason)
Hooks, in order: on_start, then per epoch on_epoch_start, on_batch_end (every step),
on_epoch_end (after validation), and on_end. A stateful action saves and restores its state
with the checkpoint (state_dict / load_state_dict).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import math

import torch

from hypersal.data.provider import Batch, Prefetcher
from hypersal.train import signals
from hypersal.train.distributed import World, agree_to_stop
from hypersal.errors import RunFailure


class NonFiniteLoss(RunFailure):
    """The loss became nan or inf; the message names the step and the last good checkpoint."""


class Action:
    """A callback; override the hooks you need. Actions act through the trainer's surface."""
    name = "action"

    def on_start(self, trainer: "Trainer") -> None: ...
    def on_epoch_start(self, trainer: "Trainer") -> None: ...
    def on_batch_end(self, trainer: "Trainer", batch: Batch, loss: torch.Tensor) -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def on_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class TrainingStep(Protocol):
    """One optimizer step on one batch; returns the loss as a tensor (no host sync)."""
    def __call__(self, trainer: "Trainer", batch: Any) -> torch.Tensor: ...


class DataProvider(Protocol):
    """Batches by step number: batch(step) is the same whenever it is asked (exact resume)."""
    def batch(self, step: int) -> Any: ...


class Trainer:
    def __init__(self, *, name: str, model: torch.nn.Module, train_step: TrainingStep,
                 provider: DataProvider, optimizer: torch.optim.Optimizer, scheduler=None,
                 epochs: int, steps_per_epoch: int, validate: Callable[["Trainer"], dict] | None = None,
                 actions: list[Action] = (), checkpointer=None, tracker=None, device=torch.device("cpu"),
                 log_every: int = 10, config: dict | None = None, prefetch: bool = True,
                 on_nan: str = "stop", forward_model: torch.nn.Module | None = None, world: World = World(),
                 job=None):
        self.name, self.model, self.train_step, self.provider = name, model, train_step, provider
        self.optimizer, self.scheduler, self.validate = optimizer, scheduler, validate
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.actions, self.checkpointer, self.tracker = list(actions), checkpointer, tracker
        self.device, self.log_every, self.config, self.prefetch = device, max(1, log_every), config or {}, prefetch
        self.step = self.epoch = 0
        self.metrics: dict = {}
        self.history: list[dict] = []
        self.stop_requested, self.stop_reason = False, ""
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0   # the epoch so far (resumed with it)
        self.resumed = False
        self.reported: set[int] = set()     # epochs the run's log holds already (a resumed trainer)
        self.on_nan = on_nan                   # "stop", or "skip" (the step drops such batches)
        self.skipped_batches = 0
        self.forward_model = forward_model or model   # DDP's wrapper in a run over several processes
        self.world = world
        self.job = job                         # the run (its folder, data, tracker), for actions

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def stop(self, reason: str) -> None:
        """Ask the loop to end after this step (early stopping, preemption)."""
        self.stop_requested, self.stop_reason = True, reason

    def log(self, metrics: dict, epoch: int | None = None, step: int | None = None) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=self.step if step is None else step, stage=self.name, epoch=epoch)

    def fit(self) -> dict:
        if self.checkpointer is not None:
            self.resumed = self.checkpointer.restore(self)
        if self.resumed and self.tracker is not None:
            self._report_once()
        for action in self.actions:
            action.on_start(self)
        self.model.train()
        source = self._batches()
        pending: list[torch.Tensor] = []
        try:
            while self.step < self.total_steps and not self.stop_requested:
                if self.step % self.steps_per_epoch == 0:
                    for action in self.actions:
                        action.on_epoch_start(self)
                batch = source.next()
                loss = self.train_step(self, batch)
                self.step += 1
                pending.append(loss.detach())
                for action in self.actions:
                    action.on_batch_end(self, batch, loss)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                save_now = self.checkpointer is not None and self.checkpointer.due(self)
                stop = agree_to_stop(self.world, signals.requested() is not None)
                if self.step % self.log_every == 0 or end_of_epoch or save_now or stop:
                    # One host sync per log_every steps, not per step; and never a checkpoint
                    # of weights a non-finite loss may have poisoned.
                    self._flush_losses(pending)
                    pending = []
                if end_of_epoch:
                    self._end_epoch()                      # validates and saves
                elif save_now or (stop and self.checkpointer is not None):
                    self.checkpointer.save(self)           # once per step: prev.pt stays a step behind
                if stop:   # raises Stopped (on every rank, at this same step): the stage resumes here
                    signals.check()
                    raise signals.Stopped("stopped with the other ranks")
        finally:
            source.close()
        self._flush_losses(pending)
        for action in self.actions:
            action.on_end(self)
        if self.checkpointer is not None:
            self.checkpointer.finish(self)
        return self.metrics

    def _batches(self):
        if self.prefetch:
            return Prefetcher(self.provider, self.step, self.total_steps, device=self.device)
        return _Direct(self.provider, self.step)

    def _flush_losses(self, pending: list[torch.Tensor]) -> None:
        if not pending:
            return
        losses = torch.stack(pending).float()
        if self.world.active:   # the global batch's loss, as one process would log it
            torch.distributed.all_reduce(losses)
            losses /= self.world.size
        values = losses.cpu().tolist()
        finite = [v for v in values if math.isfinite(v)]
        if len(finite) < len(values):
            if self.on_nan != "skip":
                first = next(i for i, v in enumerate(values) if not math.isfinite(v))
                step = self.step - len(values) + first + 1
                where = self.checkpointer.describe_last() if self.checkpointer is not None else "no checkpoints are kept"
                raise NonFiniteLoss(f"{self.name}: the loss became {values[first]} at step {step}; {where}. "
                                    "Lower the learning rate, clip gradients (clip_grad), or set on_nan: skip")
            self.skipped_batches += len(values) - len(finite)
        self.epoch_loss_sum += sum(finite)
        self.epoch_loss_count += len(finite)
        if finite:
            self.log({"loss": finite[-1]})

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.metrics = {"train_loss": self.epoch_loss_sum / max(1, self.epoch_loss_count),
                        "lr": self.optimizer.param_groups[0]["lr"]}
        if self.skipped_batches:
            self.metrics["skipped_batches"] = self.skipped_batches
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        if self.validate is not None:
            self.model.eval()
            with torch.no_grad():
                self.metrics.update(self.validate(self))
            self.model.train()
        self.history.append({"epoch": self.epoch, "step": self.step, **self.metrics})
        if self.job is not None:
            self.job.progress(f"{self.name} epoch {self.epoch}/{self.epochs}")
        for action in self.actions:
            action.on_epoch_end(self)
        if self.checkpointer is not None:
            self.checkpointer.on_epoch_end(self)
        # The epoch's line after its checkpoint: a job killed between the two resumes from this
        # checkpoint and writes the line then (_report_once), so a line in metrics.jsonl always
        # has its epoch saved, and no start runs again an epoch it has reported.
        if self.epoch not in self.reported:
            self.log(self.metrics, epoch=self.epoch)

    def _report_once(self) -> None:
        """On resume: write the lines of the restored epochs that metrics.jsonl lacks (a kill
        between an epoch's checkpoint and its line), and note those it holds, not to write them
        again (an epoch run again from an older checkpoint, when the newest was damaged)."""
        self.reported = self.tracker.logged_epochs(self.name)
        for record in self.history:
            if record["epoch"] not in self.reported:
                figures = {k: v for k, v in record.items() if k not in ("epoch", "step")}
                self.log(figures, epoch=record["epoch"], step=record["step"])
                self.reported.add(record["epoch"])


class _Direct:
    """Batches built in the training thread (no prefetching)."""

    def __init__(self, provider, start: int):
        self.provider, self.step = provider, start

    def next(self):
        batch = self.provider.batch(self.step)
        self.step += 1
        return batch

    def close(self) -> None: ...
