"""Data providers: the batches a training stage consumes (the original train-api's names).

Every batch is a pure function of (seed, step): which task, which images, which flips. So a
provider has no hidden position to save: resuming at step k gives exactly the batches an
uninterrupted run would have seen, a prefetching thread cannot disturb the order, and
distributed ranks take disjoint slices of the same global batch.

| provider                | batches                                                        |
|-------------------------|----------------------------------------------------------------|
| MultitaskBatchProvider  | one task per batch, `batches_per_task` in a row, tasks in turn |
| BatchAndTaskProvider    | one given task, always                                         |
| BatchProvider           | a single-task dataset, task index 0 (plain models)             |
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from hypersal.data.cache import SplitArrays
from hypersal.errors import UserError


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


class MultitaskBatchProvider:
    """`tasks` maps each task of the arrays (by position) to the model's task index."""

    def __init__(self, arrays: SplitArrays, tasks: list[int], batch_size: int, batches_per_task: int = 1,
                 seed: int = 0, aug: Augment = Augment(), rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise UserError(f"the batch size {batch_size} does not split over {world_size} processes",
                            key="train.batch_size", fix=f"use a multiple of {world_size} (it is the global batch)")
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


def BatchAndTaskProvider(arrays: SplitArrays, task: int, batch_size: int, array_task: int = 0, **kw):
    """Batches of one task of the arrays, labelled with the model's task index `task`."""
    sub = SplitArrays(arrays.images, [arrays.maps[array_task]], [arrays.tasks[array_task]],
                      arrays.stems, arrays.sizes, arrays.paths,
                      rows=None if arrays.rows is None else [arrays.rows[array_task]])
    return MultitaskBatchProvider(sub, [task], batch_size, 1, **kw)


def BatchProvider(arrays: SplitArrays, batch_size: int, **kw):
    """A single-task dataset for a plain model: task index 0."""
    return BatchAndTaskProvider(arrays, 0, batch_size, **kw)


def sequential(arrays: SplitArrays, array_task: int | None, task: int, batch_size: int,
               limit: int | None = None) -> Iterator[Batch]:
    """Every item of the split once (every item the task has), in order (validation, test, run)."""
    rows = np.arange(len(arrays)) if array_task is None else arrays.task_rows(array_task)
    rows = rows[:limit] if limit is not None else rows
    for start in range(0, len(rows), batch_size):
        yield to_batch(arrays, array_task, rows[start:start + batch_size], task)


class Prefetcher:
    """Builds the batches of steps [start, stop) in a background thread, `depth` ahead, pinned
    when a GPU will take them. The order is fixed by the steps, so nothing depends on timing."""

    def __init__(self, provider, start: int, stop: int, depth: int = 3, pin: bool = False):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(provider, start, stop, pin), daemon=True)
        self.thread.start()

    def _work(self, provider, start: int, stop: int, pin: bool) -> None:
        try:
            for step in range(start, stop):
                if self.stop_flag.is_set():
                    return
                b = provider.batch(step)
                if pin:
                    b.images, b.maps = b.images.pin_memory(), b.maps.pin_memory()
                self.queue.put(b)
        except BaseException as e:  # handed to the consumer, raised there
            self.queue.put(e)

    def next(self) -> Batch:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop_flag.set()
        while self.thread.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                self.thread.join(timeout=0.05)
