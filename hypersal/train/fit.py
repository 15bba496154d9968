"""Building a Trainer from a training stage's config section, and multitask validation."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from hypersal import tree as T
from hypersal.config import Config
from hypersal.data.provider import sequential
from hypersal.errors import UserError
from hypersal.train import actions as A
from hypersal.train.api import Trainer
from hypersal.train.checkpoint import Checkpointer
from hypersal.train.losses import weighted
from hypersal.train.optim import make_optimizer, make_schedule
from hypersal.train.steps import MultitaskTrainStep, Precision, images_to_input, maps_to_target


def accumulation(cfg, key: str) -> int:
    """How many device batches make the theoretical batch
    (a divisor of it: hypersal.config.options' rule, checked before any stage starts)"""
    if cfg.device_batch_size in (None, cfg.batch_size):
        return 1
    return cfg.batch_size // cfg.device_batch_size


def validation(job, tasks: list[str], cfg, loss_fn):
    """val_loss per task (and the mean) on the first `val_batches` batches of the val split."""
    if cfg.val_batches <= 0:
        return None
    arrays = job.arrays("val", tasks)

    def validate(trainer) -> dict:
        out, device = {}, trainer.device
        for array_task, name in enumerate(tasks):
            task = trainer.model.task_index(name)
            total, count = 0.0, 0
            for batch in sequential(arrays, array_task, task, cfg.val_batch_size,
                                    limit=cfg.val_batches * cfg.val_batch_size):
                logits = trainer.model(images_to_input(batch.images, device), task=task)
                total += loss_fn(logits, maps_to_target(batch.maps, device)).item() * len(batch.indices)
                count += len(batch.indices)
            out[f"val_loss/{name}"] = total / max(1, count)
        out["val_loss"] = sum(out.values()) / len(tasks)
        return out
    return validate


@dataclass
class Fit:
    """What a training stage trains, besides its config section: the model, its batches and the
    parameters the optimizer moves. The section (already resolved: it holds train's values it
    does not set itself) says how."""
    model: Any
    provider: Any
    params: list
    val_tasks: Sequence[str] = ()      # validated every epoch (none: no validation)
    actions: Sequence = ()             # the stage's own actions, before the configured ones
    step: Any = None                   # replaces the usual MultitaskTrainStep
    validate: Callable | None = None   # replaces the usual per-task val_loss
    prefetch: bool = True              # build the next batch while this one trains


def make_trainer(job, name: str, cfg, fit: Fit) -> Trainer:
    """A Trainer for stage `name` with the options of its config section `cfg`."""
    loss_fn = weighted(cfg.loss, key=f"{name}.loss")
    validate = fit.validate
    if validate is None and fit.val_tasks:
        validate = validation(job, list(fit.val_tasks), cfg, loss_fn)
    optim_cfg = dict(cfg.optim, lr=scaled_lr(job.cfg.distributed, cfg, cfg.optim.lr))
    optimizer = make_optimizer(fit.params, optim_cfg, key=f"{name}.optim")
    scheduler = make_schedule(optimizer, cfg.schedule, cfg.epochs * cfg.steps_per_epoch, key=f"{name}.schedule")
    precision = Precision(cfg.precision)
    step = fit.step or MultitaskTrainStep(loss_fn, accumulation(cfg, name), precision, cfg.clip_grad,
                                          cfg.channels_last, skip_nonfinite=cfg.on_nan == "skip")
    ck = cfg.checkpoint
    checkpointer = Checkpointer(job.folder.checkpoints / name, ck.every_steps, ck.every_minutes,
                                restore_best=ck.restore_best and validate is not None, write=job.is_main)
    model = fit.model
    target = getattr(model, "model", model)        # adapt's wrapper holds the model
    if cfg.channels_last:
        target.to(memory_format=torch.channels_last)
    if cfg.compile and target._run == target._run_mnet:
        target.compile()
    forward_model = model
    if job.world.active:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # Actions may freeze parameters for a while: their gradients are then missing, which DDP
        # must expect. BatchNorm buffers are per task and kept equal by the global statistics.
        forward_model = DDP(model, device_ids=[job.device.index] if job.device.type == "cuda" else None,
                            broadcast_buffers=False, find_unused_parameters=True)
    return Trainer(name=name, model=model, train_step=step, provider=fit.provider, optimizer=optimizer,
                   scheduler=scheduler, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
                   validate=validate, actions=list(fit.actions) + A.build(cfg.actions, f"{name}.actions"),
                   checkpointer=checkpointer, tracker=job.tracker, device=job.device, log_every=cfg.log_every,
                   config=job.cfg.to_dict(), prefetch=fit.prefetch, on_nan=cfg.on_nan,
                   forward_model=forward_model, world=job.world, job=job)


def section_with(cfg, **changes):
    """A copy of a stage's config section with some values changed (adapt's fine-tuning, the
    few-shot methods): nested mappings merge, so `optim={"lr": x}` keeps the optimizer's name."""
    return Config(T.merge(cfg.to_dict(), changes))


def scaled_lr(dist_cfg, cfg, lr: float) -> float:
    """The learning rate for the global batch: as configured, or scaled from the batch size it
    was chosen for (distributed.lr_scaling: linear or sqrt)."""
    rule = dist_cfg.lr_scaling
    if rule not in ("none", "linear", "sqrt"):
        raise UserError(f"unknown value '{rule}'", key="distributed.lr_scaling", fix="use none, linear or sqrt")
    ratio = cfg.batch_size / dist_cfg.reference_batch
    return lr if rule == "none" else lr * (ratio if rule == "linear" else math.sqrt(ratio))


def summary(trainer: Trainer) -> dict:
    """The figures a stage reports (results.json, `experiment.py collect`)."""
    out = {"steps": trainer.step, "epochs": trainer.epoch}
    for key in ("train_loss", "val_loss"):
        values = [h[key] for h in trainer.history if key in h and not math.isnan(h[key])]
        if values:
            out[f"final_{key}"] = values[-1]
            if key == "val_loss":
                out["best_val_loss"] = min(values)
    if trainer.stop_reason:
        out["stopped"] = trainer.stop_reason
    return out
