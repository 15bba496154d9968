"""Training steps: one optimizer step on one batch.

| step                 | batch                        | loss                                  |
|----------------------|------------------------------|---------------------------------------|
| MultitaskTrainStep   | images and maps of one task  | the configured saliency loss          |
| WeightsTrainStep     | a task and its target weights| MSE of the generated parameters       |
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch

from hypersal.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def images_to_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float on the device (ImageNet statistics, as the encoder's
    pretrained weights expect)."""
    x = images.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def maps_to_target(maps: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float in [0, 1]."""
    return maps.to(device, non_blocking=True).float().div_(255)


@dataclass
class Precision:
    """Mixed precision: bf16 autocast (GPU or CPU) or fp16 (GPU, with a gradient scaler)."""
    name: str = "fp32"

    def __post_init__(self):
        if self.name not in ("fp32", "bf16", "fp16"):
            raise UserError(f"unknown precision '{self.name}'", key="train.precision", fix="use fp32, bf16 or fp16")

    def autocast(self, device: torch.device):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)
        if dtype is torch.float16 and device.type != "cuda":
            raise UserError("precision fp16 needs a GPU", key="train.precision", fix="use bf16 on a CPU")
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


class MultitaskTrainStep:
    """Forward a batch of one task, the loss, backward (in `accumulate` micro-batches: the
    theoretical batch from smaller device batches), clip, optimizer and scheduler step."""

    def __init__(self, loss_fn: Callable, accumulate: int = 1, precision: Precision = Precision(),
                 clip_grad: float = 0.0, channels_last: bool = False, skip_nonfinite: bool = False):
        self.loss_fn, self.accumulate, self.precision = loss_fn, accumulate, precision
        self.clip_grad, self.channels_last = clip_grad, channels_last
        self.skip_nonfinite = skip_nonfinite   # costs a host sync per step
        self.scaler = torch.amp.GradScaler(enabled=precision.name == "fp16")

    def __call__(self, trainer, batch) -> torch.Tensor:
        model, opt, device = trainer.forward_model, trainer.optimizer, trainer.device
        x = images_to_input(batch.images, device, self.channels_last)
        y = maps_to_target(batch.maps, device)
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        n = x.shape[0]
        chunks = list(zip(x.chunk(self.accumulate), y.chunk(self.accumulate)))
        for i, (xs, ys) in enumerate(chunks):
            # Under DDP only the last micro-batch all-reduces the accumulated gradients.
            quiet = model.no_sync() if i < len(chunks) - 1 and hasattr(model, "no_sync") else nullcontext()
            with quiet:
                with self.precision.autocast(device):
                    logits = model(xs, task=batch.task)
                loss = self.loss_fn(logits, ys) * (xs.shape[0] / n)
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if self.skip_nonfinite and not torch.isfinite(total).item():
            opt.zero_grad(set_to_none=True)      # drop this batch's update; the schedule goes on
        else:
            self.scaler.unscale_(opt)
            if self.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.clip_grad)
            self.scaler.step(opt)
            self.scaler.update()
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        return total


@dataclass
class WeightsBatch:
    task: int
    targets: dict           # mnet parameter name -> target tensor


class WeightsTrainStep:
    """pretrain_weights: pull the hypernetwork's output for a task towards given mnet weights."""

    def __call__(self, trainer, batch: WeightsBatch) -> torch.Tensor:
        model, opt = trainer.model, trainer.optimizer
        opt.zero_grad(set_to_none=True)
        generated = model.generated_params(batch.task)
        total = sum(t.numel() for t in batch.targets.values())
        loss = sum(torch.nn.functional.mse_loss(generated[name], target.to(trainer.device), reduction="sum")
                   for name, target in batch.targets.items()) / total
        loss.backward()
        opt.step()
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        return loss.detach()
