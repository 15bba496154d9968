"""Actions (the original hnet framework's callbacks), built from a stage's `actions:` list, e.g.
    actions: [{name: freeze_encoder, epochs: 1}, {name: weight_watcher, every: 50}]

| name                     | what it does                                                   |
|--------------------------|----------------------------------------------------------------|
| lr_decay                 | multiplies every learning rate by `factor` every `every` epochs |
| freeze_encoder           | freezes the encoder's shared weights for the first `epochs`    |
| freeze_hnet_for_catchup  | freezes everything shared (hypernet and mnet) for `epochs`     |
|                          | (null: the whole stage): only task embeddings learn            |
| log_epoch_losses         | a line per epoch: losses, learning rate, images/s, ETA         |
| batch_logger             | a line every `every` steps with the mean loss since the last   |
| weight_watcher           | logs parameter and gradient norms (hypernet, mnet) every `every` steps |
| early_stopping           | stops when `monitor` has not improved by `min_delta` for `patience` epochs |
| maps_tracker             | (a progress tracker) every `every` epochs, the maps of `images` validation  |
|                          | images for every task, as one picture: <run>/progress/<stage>_epoch_NNN.png |
|                          | and in Comet                                                   |
"""
from __future__ import annotations

import time

import numpy as np

import torch

from hypersal.config import choices
from hypersal.log import say
from hypersal.progress import fmt_duration
from hypersal.train.api import Action

ACTIONS = choices.ACTION_CLASSES   # the names and where each lives: hypersal/config/choices.py


def _set_trainable(params, trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)


class LrDecay(Action):
    def __init__(self, factor: float = 0.5, every: int = 1):
        self.factor, self.every = factor, every

    def on_epoch_end(self, trainer) -> None:
        if trainer.epoch % self.every == 0:
            for group in trainer.optimizer.param_groups:
                group["lr"] *= self.factor
            # A scheduler keeps its own base: scale it too, or its next step would undo this.
            if trainer.scheduler is not None and hasattr(trainer.scheduler, "base_lrs"):
                trainer.scheduler.base_lrs = [lr * self.factor for lr in trainer.scheduler.base_lrs]


class _FreezeFor(Action):
    """Frozen while epoch < epochs (None: the whole stage); a function of the epoch alone, so a
    resumed stage freezes exactly as the uninterrupted one."""

    def __init__(self, epochs: int | None = None):
        self.epochs = epochs

    def params(self, trainer) -> list:
        raise NotImplementedError

    def _apply(self, trainer) -> None:
        frozen = self.epochs is None or trainer.epoch < self.epochs
        _set_trainable(self.params(trainer), not frozen)

    on_start = on_epoch_start = _apply

    def on_end(self, trainer) -> None:
        _set_trainable(self.params(trainer), True)


class FreezeEncoder(_FreezeFor):
    def params(self, trainer) -> list:
        model = trainer.model
        generated = set(getattr(model, "generated", []))
        mnet = getattr(model, "mnet", model)
        return [p for n, p in mnet.encoder.named_parameters(prefix="encoder") if n not in generated]


class FreezeHNETForCatchup(_FreezeFor):
    def params(self, trainer) -> list:
        return trainer.model.shared_parameters()

    def on_end(self, trainer) -> None:
        # The mnet's generated parameters stay frozen: they are replaced at every call.
        _set_trainable(self.params(trainer), True)


class LogEpochLosses(Action):
    def on_start(self, trainer) -> None:
        self.t0, self.step0 = time.perf_counter(), trainer.step

    def on_epoch_end(self, trainer) -> None:
        elapsed = time.perf_counter() - self.t0
        steps = trainer.step - self.step0
        per_step = elapsed / max(1, steps)
        batch = getattr(trainer.provider, "batch_size", 0)
        figures = "  ".join(f"{k} {v:.4g}" for k, v in trainer.metrics.items() if isinstance(v, float))
        say(f"{trainer.name} epoch {trainer.epoch}/{trainer.epochs} step {trainer.step}: {figures}  "
            f"[{batch / per_step:.1f} img/s, ETA {fmt_duration(per_step * (trainer.total_steps - trainer.step))}]")


class BatchLogger(Action):
    def __init__(self, every: int = 10):
        self.every = every
        self.losses: list[torch.Tensor] = []

    def on_batch_end(self, trainer, batch, loss) -> None:
        self.losses.append(loss.detach())
        if trainer.step % self.every == 0:
            mean = torch.stack(self.losses).mean().item()
            self.losses = []
            say(f"{trainer.name} step {trainer.step}/{trainer.total_steps}: loss {mean:.4g}")


class WeightWatcher(Action):
    """Norms of parameters and their gradients, per part of the model, logged as metrics."""

    def __init__(self, every: int = 50):
        self.every = every

    def on_batch_end(self, trainer, batch, loss) -> None:
        if trainer.step % self.every:
            return
        model = trainer.model
        parts = {"mnet": [p for p in getattr(model, "mnet", model).parameters() if p.requires_grad]}
        if getattr(model, "hnet", None) is not None:
            parts["hnet_shared"] = model.hnet.shared_parameters()
            parts["hnet_task"] = model.hnet.task_parameters()
        figures = {}
        for name, params in parts.items():
            if not params:
                continue
            figures[f"weights/{name}_norm"] = torch.linalg.vector_norm(
                torch.stack([p.detach().norm() for p in params])).item()
            grads = [p.grad.detach().norm() for p in params if p.grad is not None]
            if grads:
                figures[f"weights/{name}_grad_norm"] = torch.linalg.vector_norm(torch.stack(grads)).item()
        trainer.log(figures)
        self.last = figures


class EarlyStopping(Action):
    def __init__(self, patience: int = 3, min_delta: float = 0.0, monitor: str = "val_loss"):
        self.patience, self.min_delta, self.monitor = patience, min_delta, monitor
        self.best: float | None = None
        self.bad = 0

    def on_epoch_end(self, trainer) -> None:
        value = trainer.metrics.get(self.monitor)
        if value is None:
            return
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                trainer.stop(f"early stopping: {self.monitor} has not improved for {self.bad} epochs")
                say(f"{trainer.name}: {trainer.stop_reason}")

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = state["best"], state["bad"]


class MapsTracker(Action):
    """The seed's RunProgressTracker: watch the maps change as the model learns."""

    def __init__(self, every: int = 1, images: int = 3):
        self.every, self.images = every, images

    def on_epoch_end(self, trainer) -> None:
        job = trainer.job
        if job is None or trainer.epoch % self.every or not job.is_main:
            return
        from hypersal.evaluation import viz
        from hypersal.train.predict import predict
        model = getattr(trainer.model, "model", trainer.model)
        tasks = [t for t in model.task_names if t in job.dataset().tasks]
        rows, labels = [], []
        for name in tasks:
            arrays = job.arrays("val", [name])
            n = min(self.images, len(arrays))
            preds = predict(model, arrays, 0, model.task_index(name), n, job.device)[:n]
            row = []
            for i in range(n):
                row += [np.asarray(arrays.images[i]), viz.gray(arrays.maps[0][i]), viz.colorize(preds[i])]
            rows.append(row)
            labels.append(name)
        trainer.model.train()
        headers = ["image", "target", "prediction"] * max(1, len(rows[0]) // 3) if rows else []
        picture = viz.grid(rows, headers, tile_hw=(96, 96), row_labels=labels)
        path = viz.save_png(picture, job.folder.path / "progress" / f"{trainer.name}_epoch_{trainer.epoch:03d}.png")
        if job.tracker is not None:
            job.tracker.log_image(path, name=f"{trainer.name}/progress", step=trainer.step)
        self.last = path


def build(specs: list, key: str) -> list[Action]:
    """Actions from a config list of names or {name: ..., option: value}; names and options are
    checked against hypersal.config.choices.ACTIONS (which tests keep equal to this registry and to the
    constructors' signatures), so a typo is an error that lists the valid ones."""
    return [ACTIONS.get(name)(**options) for name, options in choices.action_specs(specs, key=key)]
