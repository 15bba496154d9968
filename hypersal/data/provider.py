"""Data providers: the batches a training stage consumes (the original train-api's names).

Every batch is a pure function of (seed, step): which task, which images, which flips. So a
provider has no hidden position to save: resuming at step k gives exactly the batches an
uninterrupted run would have seen, a prefetching thread cannot disturb the order, and
distributed ranks take disjoint slices of the same global batch. What a batch is made of, and
how its rows reach (reused, pinned) memory: hypersal/data/batch.py.

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

from hypersal.data.batch import Batch, Buffers, augment, crop_, to_batch, to_device  # noqa: F401 (augment: for callers)
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


@dataclass(frozen=True)
class Augment:
    hflip: float = 0.0                  # probability of a horizontal flip
    crop_scale: tuple = (1.0, 1.0)      # random crop area fraction, resized back

    @property
    def active(self) -> bool:
        return self.hflip > 0 or tuple(self.crop_scale) != (1.0, 1.0)


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

    def batch(self, step: int, out: Buffers | None = None, defer_flips: bool = False) -> Batch:
        """The batch of a step, gathered into `out` (fresh memory when None) and augmented there.
        With defer_flips, a batch without crops leaves its flips to to_device (a GPU does them
        after the copy); one with crops is flipped first, on the host, as ever."""
        array_task, indices = self.plan(step)
        mine = slice(self.rank, None, self.world_size)      # this process's share
        flips, boxes = None, []
        if self.aug.active:
            h, w = self.arrays.images.shape[1:3]
            choices = draw_augmentation(self.aug, len(indices), h, w, np.random.default_rng([self.seed, step, 2]))
            flips = np.array([flip for flip, _ in choices[mine]], dtype=bool)
            boxes = [box for _, box in choices[mine]]
        cropping = any(box is not None for box in boxes)
        defer = defer_flips and not cropping and flips is not None and flips.any()
        batch = to_batch(self.arrays, array_task, indices[mine], self.tasks[array_task], out,
                         None if defer else flips)
        if cropping:
            crop_(batch.images, batch.maps, boxes)
        batch.flips = np.flatnonzero(flips) if defer else None
        batch.step = step
        return batch


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
    """Builds the batches of steps [start, stop) in a background thread, `depth` ahead. The
    order is fixed by the steps, so nothing depends on timing.

    The contract: a batch from next() stays valid until the following next() (or close());
    whoever keeps one longer keeps a copy. On the host, batches are gathered into a ring of
    depth + 2 reused buffers: depth wait in the queue, the consumer holds one and the worker
    fills one more, so it never writes one in use. With a GPU (device cuda), batches are
    gathered into pinned buffers and copied to the GPU on a stream of their own, their flips
    done there; the consumer gets GPU tensors of its own, and the worker waits for a copy to
    land before it reuses that pinned buffer (so two suffice)."""

    def __init__(self, provider, start: int, stop: int, depth: int = 3, device: torch.device | str | None = None):
        self.device = torch.device(device or "cpu")
        self.cuda = self.device.type == "cuda"
        self.buffers = [Buffers(pin=self.cuda) for _ in range(2 if self.cuda else depth + 2)]
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(provider, start, stop), daemon=True)
        self.thread.start()

    def _work(self, provider, start: int, stop: int) -> None:
        try:
            stream = torch.cuda.Stream(self.device) if self.cuda else None
            landed = [None] * len(self.buffers)       # per buffer: its last copy's event
            for n, step in enumerate(range(start, stop)):
                if self.stop_flag.is_set():
                    return
                slot = n % len(self.buffers)
                if landed[slot] is not None:
                    landed[slot].synchronize()
                b, copied = self._build(provider, step, self.buffers[slot]), None
                if stream is not None and isinstance(b, Batch):
                    with torch.cuda.stream(stream):
                        b, copied = to_device(b, self.device), torch.cuda.Event()
                        copied.record(stream)
                    landed[slot] = copied
                self.queue.put((b, copied))
        except BaseException as e:  # handed to the consumer, raised there
            self.queue.put(e)

    def _build(self, provider, step: int, buffers: Buffers):
        if isinstance(provider, MultitaskBatchProvider):    # gathers into reused memory
            return provider.batch(step, buffers, defer_flips=self.cuda)
        return provider.batch(step)                         # other providers make their own

    def next(self) -> Batch:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        batch, copied = item
        if copied is not None:   # this stream waits for the copy; the allocator knows who uses it
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            batch.images.record_stream(current)
            batch.maps.record_stream(current)
        return batch

    def close(self) -> None:
        self.stop_flag.set()
        while self.thread.is_alive():
            try:
                self.queue.get_nowait()
            except queue.Empty:
                self.thread.join(timeout=0.05)
