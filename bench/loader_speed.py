"""What one training batch costs the loader, next to a bare gather of the same rows, in one
process (issue 24: at most 1.5x; the loader of d008416 took 15.9x):

    python bench/loader_speed.py            # the host: 256 images at 256x256, one thread
    python bench/loader_speed.py --gpu      # also the GPU path: batches equal, and their rate

The rows come from random uint8 arrays in memory-mapped .npy files on disk, as the cache keeps
them (read once before timing, so the page cache holds them, as in training). Each variant is
timed on the same rows, the variants taking turns, and the medians are reported in wall time
and in the thread's CPU time (steadier on a shared machine):

| variant  | what one batch is                                                                   |
|----------|-------------------------------------------------------------------------------------|
| bare     | np.take of the images' and the maps' rows into reused arrays (mode "clip")          |
| bare_raise | the same in np.take's default mode "raise", which gathers into a temporary first  |
| old      | the loader of d008416 (tests/helpers/reference_loader.py): gather, reorder, clone,  |
|          | per-sample flips, then pin_memory where a GPU is                                    |
| new      | the loader: rows gathered into reused (pinned where a GPU is) buffers, flipped      |
|          | while copied (hflip 0.5)                                                            |
| new_host | the host's share on a GPU: the same gather, the flips left to the GPU               |

One JSON line per variant, then a readable summary line.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]   # this checkout's hypersal, and the loader of d008416

from helpers.reference_loader import Augment as OldAugment, ReferenceProvider  # noqa: E402
from hypersal.data.batch import Batch, Buffers  # noqa: E402
from hypersal.data.cache import SplitArrays  # noqa: E402
from hypersal.data.provider import Augment, MultitaskBatchProvider, Prefetcher  # noqa: E402


def cached_arrays(folder: Path, n: int, size: int) -> SplitArrays:
    """n random images and one task's maps, memory-mapped from .npy files like the cache's."""
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, size, size, 3))
    maps = np.lib.format.open_memmap(folder / "maps.npy", "w+", np.uint8, (n, size, size))
    for i in range(0, n, 64):
        images[i:i + 64] = rng.integers(0, 256, images[i:i + 64].shape, dtype=np.uint8)
        maps[i:i + 64] = rng.integers(0, 256, maps[i:i + 64].shape, dtype=np.uint8)
    images.flush(), maps.flush()
    del images, maps
    images, maps = np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "maps.npy", mmap_mode="r")
    images.sum(dtype=np.int64), maps.sum(dtype=np.int64)          # into the page cache
    stems = [f"img_{i:05d}" for i in range(n)]
    return SplitArrays(images, [maps], ["task"], stems, [(size, size)] * n, stems)


def variants(arrays: SplitArrays, batch: int, pin: bool) -> tuple[dict, MultitaskBatchProvider]:
    """Each variant as fn(step) -> None, on the rows the loader draws for that step."""
    new = MultitaskBatchProvider(arrays, [0], batch, seed=0, aug=Augment(hflip=0.5))
    old = ReferenceProvider(arrays, [0], batch, seed=0, aug=OldAugment(hflip=0.5))
    images, maps = np.asarray(arrays.images), np.asarray(arrays.maps[0])
    bare_images = np.empty((batch, *images.shape[1:]), np.uint8)
    bare_maps = np.empty((batch, *maps.shape[1:]), np.uint8)
    buffers, host_buffers = Buffers(pin=pin), Buffers(pin=pin)

    def bare(step, mode="clip"):
        rows = new.plan(step)[1]
        np.take(images, rows, axis=0, out=bare_images, mode=mode)
        np.take(maps, rows, axis=0, out=bare_maps, mode=mode)

    def old_batch(step):
        b = old.batch(step)
        if pin:    # the old prefetcher pinned after the batch was made
            b.images, b.maps = b.images.pin_memory(), b.maps.pin_memory()

    return {"bare": bare, "bare_raise": lambda step: bare(step, "raise"), "old": old_batch, "new": lambda step: new.batch(step, buffers),
            "new_host": lambda step: new.batch(step, host_buffers, defer_flips=True)}, new


def time_cpu(arrays: SplitArrays, batch: int, rounds: int, pin: bool) -> dict:
    """Median (wall ms, CPU ms) per variant. Two phases, each with its own bare gather: the old
    loader allocates ~200 MB a batch, which slows whatever runs next, so it runs apart."""
    fns, _ = variants(arrays, batch, pin)
    out = {}
    for phase, names in ((1, ["bare", "new", "new_host", "bare_raise"]), (2, ["bare", "old"])):
        wall, cpu = {k: [] for k in names}, {k: [] for k in names}
        for r in range(rounds + 2):
            for name in names:                # in turns: a slow moment of the machine hits all alike
                t0, c0 = time.perf_counter(), time.thread_time()
                fns[name](r)
                if r >= 2:                    # two warm-up rounds
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.thread_time() - c0)
        for name in names:
            out[name if phase == 1 or name != "bare" else "bare_with_old"] = (
                1000 * float(np.median(wall[name])), 1000 * float(np.median(cpu[name])), phase)
    return out


def check_gpu(arrays: SplitArrays, batch: int, steps: int) -> list[dict]:
    """On a GPU: the device path's batches against the reference (flips on the GPU; crops on
    the host), whether torchvision's crop on the GPU would round as the host's does, and the
    rate at which batches arrive on the GPU, old against new."""
    lines = []
    for aug in (dict(hflip=0.5), dict(hflip=0.5, crop_scale=(0.5, 1.0))):
        ref = ReferenceProvider(arrays, [0], batch, seed=0, aug=OldAugment(**aug))
        pre = Prefetcher(MultitaskBatchProvider(arrays, [0], batch, seed=0, aug=Augment(**aug)), 0, steps,
                         device="cuda")
        same = all(_equal(pre.next(), ref.batch(s)) for s in range(steps))
        pre.close()
        lines.append({"check": "gpu_batches_equal_the_reference", "aug": aug, "steps": steps, "identical": same})
    from torchvision.transforms.v2 import functional as TF
    img = torch.from_numpy(np.asarray(arrays.images[0])).permute(2, 0, 1)
    box = (13, 29, 190, 201)
    host = TF.resized_crop(img, *box, list(img.shape[-2:]), antialias=True)
    gpu = TF.resized_crop(img.cuda(), *box, list(img.shape[-2:]), antialias=True).cpu()
    lines.append({"check": "gpu_crop_rounds_as_the_host", "identical": bool(torch.equal(host, gpu)),
                  "max_diff": int((host.int() - gpu.int()).abs().max())})
    for name in ("old", "new"):
        lines.append({"variant": f"{name}_to_gpu", **_rate_to_gpu(arrays, batch, steps, name)})
    return lines


def _equal(b: Batch, ref) -> bool:
    return bool(torch.equal(b.images.cpu(), ref.images) and torch.equal(b.maps.cpu(), ref.maps))


class _PinnedOld:
    """The old loader as its prefetcher ran it on a GPU machine: pinned after, in the thread."""

    def __init__(self, provider):
        self.provider = provider

    def batch(self, step: int):
        b = self.provider.batch(step)
        b.images, b.maps = b.images.pin_memory(), b.maps.pin_memory()
        return b


def _rate_to_gpu(arrays: SplitArrays, batch: int, steps: int, which: str) -> dict:
    """Batches per second arriving on the GPU, the consumer doing nothing else (the old loader's
    batches copied by the consumer, as its training step did)."""
    aug = dict(hflip=0.5)
    if which == "new":
        source = Prefetcher(MultitaskBatchProvider(arrays, [0], batch, seed=0, aug=Augment(**aug)), 0, steps + 2,
                            device="cuda")
        get = source.next
    else:
        source = Prefetcher(_PinnedOld(ReferenceProvider(arrays, [0], batch, seed=0, aug=OldAugment(**aug))),
                            0, steps + 2)

        def get():
            b = source.next()
            return b.images.cuda(non_blocking=True), b.maps.cuda(non_blocking=True)
    get(), get()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        get()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    source.close()
    return {"batch": batch, "ms_per_batch": round(1000 * seconds / steps, 2),
            "img_per_s": round(batch * steps / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=1024, help="rows in the memory-mapped arrays")
    p.add_argument("--rounds", type=int, default=15, help="timed batches per variant")
    p.add_argument("--gpu", action="store_true", help="also the GPU path (needs a GPU)")
    args = p.parse_args()
    torch.set_num_threads(1)        # one core each, so the ratios compare like with like
    cv2.setNumThreads(1)
    pin = torch.cuda.is_available()
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "pinned": pin}
    with tempfile.TemporaryDirectory() as d:
        arrays = cached_arrays(Path(d), args.images, args.size)
        ms = time_cpu(arrays, args.batch, args.rounds, pin)
        bare = {1: ms["bare"][:2], 2: ms["bare_with_old"][:2]}      # each variant against its own phase's
        for name, (wall, cpu, phase) in ms.items():
            print(json.dumps({"variant": name, "batch": args.batch, "size": [args.size] * 2, "hflip": 0.5,
                              "ms_wall": round(wall, 2), "ms_cpu": round(cpu, 2), "phase": phase,
                              "ratio_to_bare_wall": round(wall / bare[phase][0], 2),
                              "ratio_to_bare_cpu": round(cpu / bare[phase][1], 2), **machine}), flush=True)
        ratio = {name: cpu / bare[phase][1] for name, (_, cpu, phase) in ms.items()}
        print(f"# batch {args.batch} at {args.size}x{args.size}, hflip 0.5, one thread, CPU ms (median of "
              f"{args.rounds}): bare {ms['bare'][1]:.1f}; new {ms['new'][1]:.1f} = {ratio['new']:.2f}x bare "
              f"(target <= 1.5x); the GPU path's host share {ms['new_host'][1]:.1f} = {ratio['new_host']:.2f}x; "
              f"old {ms['old'][1]:.1f} = {ratio['old']:.1f}x ({ms['old'][1] / ms['bare_raise'][1]:.1f}x "
              f"np.take's default mode, {ms['bare_raise'][1]:.1f})", flush=True)
        if args.gpu:
            for line in check_gpu(arrays, args.batch, steps=12):
                print(json.dumps({**line, **machine, "device": torch.cuda.get_device_name()}), flush=True)


if __name__ == "__main__":
    main()
