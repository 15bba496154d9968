"""The loader: every batch bit-identical to the loader as of commit d008416, whose verbatim
copy is tests/helpers/reference_loader.py (reference_batch). Same seed, same step: the same
images, maps, flips and crops, for one process and for each rank of two, for tasks sharing
their images (data.task_images: all) and tasks with their own (own), memory-mapped or not.

Memory format, as then: images (B, 3, H, W) uint8 in channels-last memory, maps (B, 1, H, W)
uint8 contiguous. Then the new loader's own promises: rows gathered straight into reused
buffers, a held batch never overwritten, and the GPU path's code (flips after the copy) run
on the CPU, and on a GPU where there is one."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hypersal.data.batch import Batch, Buffers, to_batch, to_device
from hypersal.data.cache import SplitArrays
from hypersal.data.provider import (Augment, BatchAndTaskProvider, BatchProvider, MultitaskBatchProvider,
                                    Prefetcher, sequential)

from helpers.reference_loader import reference_batch, reference_sequential

H, W = 24, 20          # not square: a swapped height and width shows
AUGMENTS = {"none": dict(), "hflip": dict(hflip=0.5), "every_flip": dict(hflip=1.0),
            "crop": dict(crop_scale=(0.3, 0.9)), "hflip_crop": dict(hflip=0.5, crop_scale=(0.5, 1.0))}
WORLDS = [(0, 1), (0, 2), (1, 2)]      # (rank, world_size)


def make_arrays(folder: Path, own: bool, memmap: bool = True, n: int = 13) -> SplitArrays:
    """A split of n noise images (the most sensitive to any rounding) and two tasks' maps, saved
    as .npy and memory-mapped as the cache does. With `own`, task 0 has 7 images, task 1 has 9,
    some shared."""
    rng = np.random.default_rng(12345)
    images = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    rows = [np.array([0, 2, 3, 5, 8, 9, 12]), np.array([1, 2, 4, 5, 6, 7, 10, 11, 12])] if own else None
    maps = [rng.integers(0, 256, (n if rows is None else len(rows[t]), H, W), dtype=np.uint8) for t in (0, 1)]
    if memmap:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", images)
        images = np.load(folder / "images.npy", mmap_mode="r")
        for t in (0, 1):
            np.save(folder / f"maps{t}.npy", maps[t])
        maps = [np.load(folder / f"maps{t}.npy", mmap_mode="r") for t in (0, 1)]
    stems = [f"img_{i:03d}" for i in range(n)]
    return SplitArrays(images, maps, ["a", "b"], stems, [(H, W)] * n, [f"/x/{s}.jpg" for s in stems], rows=rows)


@pytest.fixture(scope="module", params=["all", "own"])
def arrays(request, tmp_path_factory) -> SplitArrays:
    return make_arrays(tmp_path_factory.mktemp(request.param), own=request.param == "own")


def assert_same(new, old) -> None:
    """Bit for bit, with the same shapes, types and memory format."""
    assert (new.task, new.step) == (old.task, old.step)
    assert np.array_equal(new.indices, old.indices)
    for name in ("images", "maps"):
        a, b = getattr(new, name), getattr(old, name)
        assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape, name
        assert torch.equal(a, b), f"{name} differ at {int((a != b).sum())} of {a.numel()} values"
    assert new.images.is_contiguous(memory_format=torch.channels_last)
    assert new.maps.is_contiguous()


def digest(batches) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(b.images.contiguous().numpy().tobytes())
        h.update(b.maps.numpy().tobytes())
        h.update(np.asarray(b.indices, np.int64).tobytes())
    return h.hexdigest()[:16]


def test_the_reference_is_still_the_loader_of_d008416(tmp_path):
    """Digests of its batches, taken with the loader of d008416 itself: an edit of the copy (or a
    torchvision whose resize rounds otherwise) shows here first."""
    expected = {"all": "c0b3521e9d465c84", "own": "eb4f584a0332d330"}
    for layout, want in expected.items():
        a = make_arrays(tmp_path / layout, own=layout == "own")
        kw = dict(seed=7, hflip=0.5, crop_scale=(0.5, 1.0), batches_per_task=2)
        assert digest(reference_batch(a, step, **kw) for step in range(4)) == want, layout


@pytest.mark.parametrize("rank,world", WORLDS)
@pytest.mark.parametrize("aug", list(AUGMENTS))
def test_batches_equal_the_reference_bit_for_bit(arrays, aug, rank, world):
    for seed in (0, 7):
        p = MultitaskBatchProvider(arrays, [0, 1], 6, 2, seed=seed, aug=Augment(**AUGMENTS[aug]),
                                   rank=rank, world_size=world)
        for step in range(6):
            old = reference_batch(arrays, step, batch_size=6, batches_per_task=2, seed=seed, rank=rank,
                                  world_size=world, **AUGMENTS[aug])
            assert_same(p.batch(step), old)


def test_a_batch_larger_than_its_task_repeats_rows_as_before(arrays):
    """16 draws from 7 images: rows repeat within a batch (and across an epoch boundary)."""
    aug = AUGMENTS["hflip_crop"]
    p = MultitaskBatchProvider(arrays, [3, 5], 16, seed=1, aug=Augment(**aug))
    for step in range(4):
        new, old = p.batch(step), reference_batch(arrays, step, tasks=(3, 5), batch_size=16, seed=1, **aug)
        assert_same(new, old)
        assert len(set(new.indices.tolist())) < 16 or arrays.rows is None


def test_single_task_providers_equal_the_reference(arrays):
    aug = AUGMENTS["hflip_crop"]
    sub = SplitArrays(arrays.images, [arrays.maps[1]], [arrays.tasks[1]], arrays.stems, arrays.sizes,
                      arrays.paths, rows=None if arrays.rows is None else [arrays.rows[1]])
    one = BatchAndTaskProvider(arrays, 4, 4, array_task=1, seed=3, aug=Augment(**aug))
    plain = BatchProvider(sub, 4, seed=3, aug=Augment(**aug))
    for step in range(5):
        old = reference_batch(sub, step, tasks=(4,), batch_size=4, seed=3, **aug)
        assert_same(one.batch(step), old)
        old.task = 0
        assert_same(plain.batch(step), old)


def test_sequential_batches_equal_the_reference(arrays, tmp_path):
    for array_task in (0, 1):
        for limit in (None, 5):
            pairs = zip(sequential(arrays, array_task, 9, 4, limit), reference_sequential(arrays, array_task, 9, 4, limit),
                        strict=True)
            for new, old in pairs:
                assert_same(new, old)
    mapless = SplitArrays(arrays.images, None, [], arrays.stems, arrays.sizes, arrays.paths)   # the run split
    for new, old in zip(sequential(mapless, None, 0, 5), reference_sequential(mapless, None, 0, 5), strict=True):
        assert new.maps.shape == old.maps.shape == (0,)
        assert torch.equal(new.images, old.images) and new.images.is_contiguous(memory_format=torch.channels_last)


def test_arrays_in_memory_give_the_same_batches(tmp_path):
    a = make_arrays(tmp_path, own=True, memmap=False)
    aug = AUGMENTS["hflip_crop"]
    p = MultitaskBatchProvider(a, [0, 1], 6, seed=2, aug=Augment(**aug))
    for step in range(4):
        assert_same(p.batch(step), reference_batch(a, step, seed=2, **aug))


def test_prefetched_batches_equal_the_reference(arrays):
    aug = AUGMENTS["hflip_crop"]
    p = MultitaskBatchProvider(arrays, [0, 1], 6, seed=4, aug=Augment(**aug), rank=1, world_size=2)
    pre = Prefetcher(p, 2, 12, depth=2)
    try:
        for step in range(2, 12):
            assert_same(pre.next(), reference_batch(arrays, step, seed=4, rank=1, world_size=2, **aug))
    finally:
        pre.close()


# --- the new loader's memory and its device path ------------------------------------------------------

def test_rows_are_gathered_straight_into_the_reused_buffers(arrays):
    p = MultitaskBatchProvider(arrays, [0, 1], 6, seed=0, aug=Augment(hflip=0.5))
    buffers = Buffers()
    first = p.batch(0, buffers)
    images, maps = first.images.data_ptr(), first.maps.data_ptr()
    assert (images, maps) == (buffers.images.data_ptr(), buffers.maps.data_ptr())    # no copy after the gather
    second = p.batch(1, buffers)
    assert (second.images.data_ptr(), second.maps.data_ptr()) == (images, maps)       # the same memory again
    assert_same(second, reference_batch(arrays, 1, hflip=0.5))
    assert torch.equal(first.images, second.images)        # the contract: the first is gone with the second


def test_rows_out_of_the_split_are_an_index_error_not_clipped(arrays):
    with pytest.raises(IndexError, match="rows 0..13 of a split of 13"):
        to_batch(arrays, None, np.array([0, 13]), 0)
    with pytest.raises(IndexError, match="rows -1..2 of a split of 13"):
        to_batch(arrays, None, np.array([2, -1]), 0)


def test_a_held_batch_is_not_overwritten_while_the_ring_fills(arrays):
    """The consumer holds a batch while the worker fills every other buffer of the ring (and
    waits on a full queue): the held batch is still the reference's, and every batch handed out
    lives in the ring (depth + 2 buffers)."""
    aug = AUGMENTS["hflip_crop"]
    p = MultitaskBatchProvider(arrays, [0, 1], 6, seed=5, aug=Augment(**aug))
    depth = 2
    pre = Prefetcher(p, 0, 9, depth=depth)
    try:
        ring = set()
        for step in range(9):
            held = pre.next()
            ring.add(held.images.data_ptr())
            deadline = time.monotonic() + 5
            while not pre.queue.full() and step + depth < 9 and time.monotonic() < deadline:
                time.sleep(0.005)                  # the worker has filled what it may
            assert_same(held, reference_batch(arrays, step, seed=5, **aug))
        assert len(pre.buffers) == depth + 2 and ring == {b.images.data_ptr() for b in pre.buffers}
    finally:
        pre.close()


@pytest.mark.parametrize("aug", ["hflip", "every_flip", "hflip_crop"])
def test_flips_left_to_the_device_give_the_same_batches_on_the_cpu(arrays, aug):
    """The GPU path's code on the CPU: flips deferred past the gather, then done by to_device as
    one indexed flip; a batch with crops is flipped on the host before its crops, as ever."""
    p = MultitaskBatchProvider(arrays, [0, 1], 6, seed=0, aug=Augment(**AUGMENTS[aug]), rank=1, world_size=2)
    deferred = 0
    for step in range(6):
        b = p.batch(step, Buffers(), defer_flips=True)
        deferred += b.flips is not None
        assert b.flips is None or "crop" not in aug
        assert_same(to_device(b, torch.device("cpu")), reference_batch(arrays, step, rank=1, world_size=2,
                                                                       **AUGMENTS[aug]))
    assert deferred > 0 if "crop" not in aug else deferred == 0


def test_the_prefetcher_hands_other_providers_batches_through():
    class Weights:          # pretrain_weights' kind: batches that are not images
        def batch(self, step):
            return {"step": step}
    pre = Prefetcher(Weights(), 2, 5, device="cpu")
    try:
        assert [pre.next()["step"] for _ in range(3)] == [2, 3, 4]
    finally:
        pre.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (the CPU path is tested above)")
def test_on_a_gpu_prefetched_batches_equal_the_reference(arrays):
    """Pinned gathering, the copy on a side stream, flips on the GPU (crops on the host)."""
    assert Buffers(pin=True).take(2, H, W, True)[0].is_pinned()
    for aug in ("hflip", "hflip_crop"):
        p = MultitaskBatchProvider(arrays, [0, 1], 6, seed=4, aug=Augment(**AUGMENTS[aug]))
        pre = Prefetcher(p, 0, 8, depth=2, device="cuda")
        try:
            for step in range(8):
                b = pre.next()
                assert b.images.device.type == "cuda"
                host = Batch(b.task, b.images.cpu(), b.maps.cpu(), b.indices, b.step)
                assert_same(host, reference_batch(arrays, step, seed=4, **AUGMENTS[aug]))
        finally:
            pre.close()
