"""A batch's memory: the rows of a split gathered straight into reused host buffers, in the
order asked, and its flips and crops done in place, on whatever device the batch is on.

Images (B, 3, H, W) uint8 in channels-last memory (a view of the (B, H, W, 3) buffer), maps
(B, 1, H, W) uint8 contiguous. The pixels are those of the loader before these buffers (commit
d008416, tests/test_loader.py): flips are exact anywhere, and crops go through torchvision's
antialiased resize on the host, because its uint8 kernel there rounds in fixed point while a
GPU's resize rounds in float.

What one batch costs (256 images at 256x256, one core): BENCHMARKS.md, bench/loader_speed.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from hypersal.data.cache import SplitArrays


@dataclass
class Batch:
    task: int               # the task's index in the model
    images: torch.Tensor    # (B, 3, H, W) uint8, channels-last memory
    maps: torch.Tensor      # (B, 1, H, W) uint8
    indices: np.ndarray     # rows of the split, for the record
    step: int = -1
    flips: np.ndarray | None = None   # positions still to mirror, where the batch goes (to_device)


class Buffers:
    """Host memory for one batch, reused from batch to batch (grown when a batch is larger),
    pinned when a GPU takes it: rows are gathered into pinned memory, never copied there after."""

    def __init__(self, pin: bool = False):
        self.pin = pin and torch.cuda.is_available()
        self.images: torch.Tensor | None = None     # (capacity, H, W, 3)
        self.maps: torch.Tensor | None = None       # (capacity, H, W)

    def take(self, n: int, h: int, w: int, with_maps: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.images = self._fit(self.images, (n, h, w, 3))
        if with_maps:
            self.maps = self._fit(self.maps, (n, h, w))
        return self.images[:n], self.maps[:n] if with_maps else None

    def _fit(self, t: torch.Tensor | None, shape: tuple) -> torch.Tensor:
        if t is None or t.shape[0] < shape[0] or tuple(t.shape[1:]) != shape[1:]:
            t = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        return t


def to_batch(arrays: SplitArrays, array_task: int | None, indices: np.ndarray, task: int,
             out: Buffers | None = None, flips: np.ndarray | None = None) -> Batch:
    """Rows of the split, in the order asked, in `out` (fresh memory when None); the rows where
    `flips` is true mirrored while they are copied. No map rows when array_task is None or the
    split has no maps (then maps is an empty tensor)."""
    rows = np.asarray(indices)
    images = np.asarray(arrays.images)     # a memory map as a plain array: no per-row memmap overhead
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise IndexError(f"rows {rows.min()}..{rows.max()} of a split of {len(images)}")
    with_maps = array_task is not None and arrays.maps is not None
    img, mp = (out or Buffers()).take(len(rows), *images.shape[1:3], with_maps)
    copy_rows(images, rows, img.numpy(), flips)
    maps = torch.zeros(0, dtype=torch.uint8)
    if with_maps:   # the task's own rows (data.task_images: own) sit elsewhere in its maps array
        copy_rows(np.asarray(arrays.maps[array_task]), arrays.map_positions(array_task, rows), mp.numpy(), flips)
        maps = mp.unsqueeze(1)
    return Batch(task=task, images=img.permute(0, 3, 1, 2), maps=maps, indices=rows)


def copy_rows(src: np.ndarray, rows: np.ndarray, dst: np.ndarray, flips: np.ndarray | None) -> None:
    """dst[j] = src[rows[j]], mirrored where flips[j]. In-range rows only (checked by the caller)."""
    if flips is None or not flips.any():
        # mode "clip": the default "raise" first gathers into a temporary, then copies it (2.7x slower)
        np.take(src, rows, axis=0, out=dst, mode="clip")
        return
    for j, (row, flip) in enumerate(zip(rows.tolist(), flips.tolist())):
        dst[j] = src[row]
        if flip:   # in place, while the row is still in the cache
            cv2.flip(dst[j], 1, dst=dst[j])


def flip_(images: torch.Tensor, maps: torch.Tensor, positions) -> None:
    """Mirror the samples at `positions`, image and map, in place: one indexed flip per tensor,
    on the batch's device. One kernel on a GPU; on a CPU, ~80 ms for 128 images of 256x256 (uint8
    index_select and index_copy_ are slow there), so the host flips rows as it copies them."""
    idx = torch.as_tensor(np.asarray(positions, np.int64), device=images.device)
    images[idx] = images[idx].flip(-1)
    if maps.numel():
        maps[idx] = maps[idx].flip(-1)


def crop_(images: torch.Tensor, maps: torch.Tensor, boxes: list) -> None:
    """Crop each sample with a box (top, left, height, width) and resize it back, in place, image
    and map alike; samples without a box are not touched."""
    h, w = images.shape[-2:]
    for i, box in enumerate(boxes):
        if box is not None:
            images[i] = TF.resized_crop(images[i], *box, [h, w], antialias=True)
            if maps.numel():
                maps[i] = TF.resized_crop(maps[i], *box, [h, w], antialias=True)


def augment(batch: Batch, choices: list[tuple]) -> Batch:
    """A flipped and cropped copy of the batch ((flip, box) per sample), the batch untouched."""
    if not any(flip or box for flip, box in choices):
        return batch
    images, maps = batch.images.clone(memory_format=torch.channels_last), batch.maps.clone()
    flips = [i for i, (flip, _) in enumerate(choices) if flip]
    if flips:
        flip_(images, maps, flips)
    crop_(images, maps, [box for _, box in choices])
    return Batch(batch.task, images, maps, batch.indices, batch.step)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on `device` (asynchronous from pinned memory), its deferred flips done there.
    On the CPU nothing is copied: the flips are done in the batch's own memory."""
    images = batch.images.to(device, non_blocking=True)
    maps = batch.maps.to(device, non_blocking=True)
    if batch.flips is not None and len(batch.flips):
        flip_(images, maps, batch.flips)
    return Batch(batch.task, images, maps, batch.indices, batch.step)
