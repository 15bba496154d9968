"""The loader as of commit d008416 (hypersal/data/provider.py), copied verbatim: the reference
that tests/test_loader.py compares today's loader with, bit for bit, and that
bench/loader_speed.py times as "old". Do not edit the copied code: it is what a run's batches
were, and reproducing a run means reproducing them.

Copied: InfiniteSampler, Batch, Augment, to_batch, draw_augmentation, augment, and
MultitaskBatchProvider (as ReferenceProvider, without its batch-size check, which raised a
UserError and drew nothing). Its batches: images (B, 3, H, W) uint8 in channels-last memory,
maps (B, 1, H, W) uint8 contiguous; a batch the draws leave untouched is returned as gathered.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from hypersal.data.cache import SplitArrays


class InfiniteSampler:
    """An endless stream of indices into N items, reshuffled every epoch (an idea from the trainers we learned from),
    readable at any position: take(start, count)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n < 1:
            raise ValueError("InfiniteSampler needs at least one item")
        self.n, self.seed, self.shuffle = n, seed, shuffle

    @lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, start: int, count: int) -> np.ndarray:
        out, pos = [], start
        while count > 0:
            epoch, offset = divmod(pos, self.n)
            k = min(count, self.n - offset)
            out.append(self.permutation(epoch)[offset:offset + k])
            pos, count = pos + k, count - k
        return np.concatenate(out) if out else np.zeros(0, np.int64)


@dataclass
class Batch:
    task: int               # the task's index in the model
    images: torch.Tensor    # (B, 3, H, W) uint8, channels-last memory
    maps: torch.Tensor      # (B, 1, H, W) uint8
    indices: np.ndarray     # rows of the split, for the record
    step: int = -1


@dataclass(frozen=True)
class Augment:
    hflip: float = 0.0                  # probability of a horizontal flip
    crop_scale: tuple = (1.0, 1.0)      # random crop area fraction, resized back

    @property
    def active(self) -> bool:
        return self.hflip > 0 or tuple(self.crop_scale) != (1.0, 1.0)


def to_batch(arrays: SplitArrays, array_task: int | None, indices: np.ndarray, task: int) -> Batch:
    """Rows of the split as tensors: images (B, 3, H, W) and maps (B, 1, H, W), both uint8."""
    order = np.argsort(indices)            # sorted reads are kinder to a memory map
    rows = np.asarray(indices)[order]
    images = torch.from_numpy(np.ascontiguousarray(arrays.images[rows]))       # (B, H, W, 3)
    inverse = torch.from_numpy(np.argsort(order))
    images = images[inverse].permute(0, 3, 1, 2)                                # (B, 3, H, W) NHWC memory
    if array_task is None or arrays.maps is None:
        maps = torch.zeros(0, dtype=torch.uint8)
    else:
        where = arrays.map_positions(array_task, rows)   # the task's own rows (data.task_images: own)
        maps = torch.from_numpy(np.ascontiguousarray(arrays.maps[array_task][where]))[inverse]
        maps = maps.unsqueeze(1)                                                # (B, 1, H, W)
    return Batch(task=task, images=images, maps=maps, indices=np.asarray(indices))


def draw_augmentation(aug: Augment, n: int, h: int, w: int, rng: np.random.Generator) -> list[tuple]:
    """The random choices for n samples: (flip, crop box or None) each. Drawn for the global
    batch, so every rank (and one process alone) makes the same choices for the same image."""
    choices = []
    lo, hi = aug.crop_scale
    for _ in range(n):
        flip = bool(rng.random() < aug.hflip)
        box = None
        if (lo, hi) != (1.0, 1.0):
            scale = rng.uniform(lo, hi)
            ch, cw = max(1, int(round(h * scale ** 0.5))), max(1, int(round(w * scale ** 0.5)))
            box = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
        choices.append((flip, box))
    return choices


def augment(batch: Batch, choices: list[tuple]) -> Batch:
    """The same flip / crop for an image and its map (torchvision.transforms.v2)."""
    if not any(flip or box for flip, box in choices):
        return batch
    images, maps = batch.images.clone(), batch.maps.clone()
    h, w = images.shape[-2:]
    for i, (flip, box) in enumerate(choices):
        img, m = images[i], maps[i]
        if flip:
            img, m = TF.horizontal_flip(img), TF.horizontal_flip(m)
        if box is not None:
            img = TF.resized_crop(img, *box, [h, w], antialias=True)
            m = TF.resized_crop(m, *box, [h, w], antialias=True)
        images[i], maps[i] = img, m
    return Batch(batch.task, images.contiguous(memory_format=torch.channels_last), maps, batch.indices, batch.step)


class ReferenceProvider:
    """`tasks` maps each task of the arrays (by position) to the model's task index."""

    def __init__(self, arrays: SplitArrays, tasks: list[int], batch_size: int, batches_per_task: int = 1,
                 seed: int = 0, aug: Augment = Augment(), rank: int = 0, world_size: int = 1):
        self.arrays, self.tasks, self.batch_size = arrays, list(tasks), batch_size
        self.batches_per_task, self.seed, self.aug = batches_per_task, seed, aug
        self.rank, self.world_size = rank, world_size
        # Each task draws from its own images (all of them, unless data.task_images is own).
        self.samplers = [InfiniteSampler(len(arrays.task_rows(t)), seed * 1000 + t) for t in range(len(self.tasks))]

    def plan(self, step: int) -> tuple[int, np.ndarray]:
        """(position of the task in the arrays, global batch indices) for a step."""
        per_round = len(self.tasks) * self.batches_per_task
        round_, within = divmod(step, per_round)
        slot, k = divmod(within, self.batches_per_task)
        order = np.random.default_rng([self.seed, round_, 1]).permutation(len(self.tasks))
        array_task = int(order[slot])
        nth = round_ * self.batches_per_task + k           # batches of this task so far
        drawn = self.samplers[array_task].take(nth * self.batch_size, self.batch_size)
        return array_task, self.arrays.image_rows(array_task, drawn)

    def batch(self, step: int) -> Batch:
        array_task, indices = self.plan(step)
        mine = slice(self.rank, None, self.world_size)      # this process's share
        out = to_batch(self.arrays, array_task, indices[mine], self.tasks[array_task])
        if self.aug.active:
            h, w = out.images.shape[-2:]
            choices = draw_augmentation(self.aug, len(indices), h, w, np.random.default_rng([self.seed, step, 2]))
            out = augment(out, choices[mine])
        out.step = step
        return out


def reference_batch(arrays: SplitArrays, step: int, tasks=(0, 1), batch_size: int = 6, batches_per_task: int = 1,
                    seed: int = 0, hflip: float = 0.0, crop_scale=(1.0, 1.0), rank: int = 0,
                    world_size: int = 1) -> Batch:
    """The batch the loader as of commit d008416 gave for this step."""
    return ReferenceProvider(arrays, list(tasks), batch_size, batches_per_task, seed,
                             Augment(hflip, tuple(crop_scale)), rank, world_size).batch(step)


def reference_sequential(arrays: SplitArrays, array_task: int | None, task: int, batch_size: int,
                         limit: int | None = None):
    """sequential() as of commit d008416 (validation, test, run batches)."""
    rows = np.arange(len(arrays)) if array_task is None else arrays.task_rows(array_task)
    rows = rows[:limit] if limit is not None else rows
    for start in range(0, len(rows), batch_size):
        yield to_batch(arrays, array_task, rows[start:start + batch_size], task)
