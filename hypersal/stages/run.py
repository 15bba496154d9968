"""run: saliency maps for a folder of images, one PNG per image and task, at the image's size.

    <out_dir>/<task>/<stem>.png              the map, stretched to 0..255 per image
    <out_dir>/<task>/overlays/<stem>.jpg     the map in colour over the image (run.overlay)

A pool of run.workers threads decodes the images one by one (OpenCV and PIL release the GIL),
at most AHEAD batches ahead of the model, and writes the maps of a batch while the model works
on the next (at most AHEAD batches of writes pending, so memory stays bounded). Each map is
resized to its image and stretched to uint8 once, where the model ran: on a GPU by GPU kernels,
the uint8 maps coming back by a non-blocking copy waited for only when their batch is written.
With run.resize on the device (auto on a GPU), the images are shrunk to the training size there
too (hypersal.data.area: OpenCV's INTER_AREA pixels bit for bit), so the host only decodes,
sends, encodes and writes. The overlay is drawn from that uint8 map. The speed (images/s, every task counted once per image) is reported and kept in
the results.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from hypersal.data.layout import list_images
from hypersal.errors import UserError
from hypersal.progress import Progress
from hypersal.stages import stage
from hypersal.stages.evaluate import trained_model
from hypersal.stages import runio
from hypersal.stages.runio import Inputs, as_array, load, write
from hypersal.train import signals
from hypersal.train.cpus import worker_count
from hypersal.train.steps import Precision

AHEAD = 2          # batches decoded ahead of the model; batches of writes pending behind it


def decoded(pool: ThreadPoolExecutor, files: list[Path], size: int, hw: tuple[int, int], keep: bool, defer: bool):
    """(batch, its uint8 images at the training size (B, h, w, 3), their decode futures, one per
    image), AHEAD batches submitted before they are asked for; each image is resized straight
    into its row, or left whole for the device with `defer` (runio.load); the full-size images
    are kept only if `keep` (overlays)."""
    queue = deque()
    for i in range(0, len(files), size):
        batch = files[i:i + size]
        small = np.empty((len(batch), *hw, 3), np.uint8)
        queue.append((batch, small, [pool.submit(load, p, hw, keep, small[j], defer) for j, p in enumerate(batch)]))
        if len(queue) > AHEAD:
            yield queue.popleft()
    yield from queue


def predict(model, inputs: Inputs, small: np.ndarray, staged: list, sizes: list[tuple[int, int]],
            indices: list[int], precision: Precision, overlay: bool) -> list[tuple[list, list]]:
    """The device's share of a batch: the model's input from the uint8 images (those `staged`
    resized there first, and their overlays blended there), each task's
    forward and sigmoid, each map resized to its image's size and stretched to uint8
    (runio.maps), sent to the host (into pinned memory from a GPU, without waiting). On a GPU the
    host only queues this work; on the CPU it is the model's time (bench/run_speed.py counts it
    so, apart from the stage's host work)."""
    device = inputs.device
    x = inputs(small, staged)
    maps = []
    with torch.no_grad():
        for index in indices:
            with precision.autocast(device):
                p = torch.sigmoid(model(x, task=index).float())[:, 0]
            maps.append(runio.maps(p, sizes, staged if overlay else ()))
    return maps


def infer(model, inputs: Inputs, small: np.ndarray, items: list, indices: list[int], precision: Precision,
          overlay: bool):
    """Each task's uint8 maps of a batch on the way to the host, and the CUDA event that says
    they are there (None on the CPU, where they already are). The images left whole for the
    device are sent first (host work)."""
    staged = inputs.stage([(j, item[3]) for j, item in enumerate(items) if item[3] is not None])
    probs = predict(model, inputs, small, staged, [item[1] for item in items], indices, precision, overlay)
    if inputs.device.type != "cuda":
        return probs, None
    arrived = torch.cuda.Event()
    arrived.record()
    return probs, arrived


def submit_writes(pool, batch: list[Path], items: list, inferred, tasks: list[str], out: Path) -> list:
    maps, arrived = inferred
    if arrived is not None:
        arrived.synchronize()
    return [pool.submit(write, as_array(m[i]), None if o[i] is not None else items[i][2], path.stem, out / task,
                        as_array(o[i]))
            for task, (m, o) in zip(tasks, maps) for i, path in enumerate(batch)]


def image_folder(job) -> Path:
    cfg = job.cfg.run
    folder = Path(cfg.images_dir) if cfg.images_dir else job.dataset().images_dir / "run"
    if not folder.is_dir() or not list_images(folder):
        raise UserError("no images to run on", file=folder, key="run.images_dir",
                        fix="point run.images_dir at a folder of .jpg / .png images")
    return folder


@stage("run")
def run(job) -> dict:
    cfg = job.cfg.run
    model = trained_model(job, "run")
    folder = image_folder(job)
    files = list_images(folder)
    tasks = list(cfg.tasks) or list(model.task_names)
    indices = [model.task_index(t) for t in tasks]
    out = Path(cfg.out_dir) if cfg.out_dir else job.folder.path / "maps"
    for task in tasks:
        (out / task / "overlays" if cfg.overlay else out / task).mkdir(parents=True, exist_ok=True)
    hw = tuple(job.cfg.data.size)
    precision = Precision(job.cfg.train.precision)
    model.eval()
    inputs = Inputs(job.device)
    defer = cfg.resize == "device" or (cfg.resize == "auto" and job.device.type == "cuda")
    progress = Progress(len(files), f"run {len(tasks)} task(s)", unit="img") if job.is_main else None
    started = time.perf_counter()
    pool = ThreadPoolExecutor(worker_count(cfg.workers))
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)     # the pool works on several images at once: OpenCV's own threads only add
    try:                     # their hand-offs (~1 ms more CPU per overlay written, 2 of them on 2 cores)
        previous, written = None, deque()
        for batch, small, futures in decoded(pool, files, cfg.batch_size, hw, cfg.overlay, defer):
            signals.check()
            items = [f.result() for f in futures]
            inferred = infer(model, inputs, small, items, indices, precision, cfg.overlay)
            items = [item[:2] + ((None,) if item[3] is not None else item[2:3]) for item in items]   # sent: let go
            if previous:      # the last batch's maps, while a GPU infers this one
                written.append(submit_writes(pool, *previous, tasks, out))
            previous = batch, items, inferred
            while len(written) > AHEAD:
                for future in written.popleft():
                    future.result()
            if progress:
                progress.update(len(batch))
        written.append(submit_writes(pool, *previous, tasks, out))
        for futures in written:
            for future in futures:
                future.result()
    finally:   # a stop or an error leaves no decode or write queued
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(cv2_threads)
    seconds = time.perf_counter() - started
    rate = len(files) / seconds
    job.tracker.log_metrics({"images_per_second": rate}, step=0, stage="run")
    return {"images": len(files), "images_dir": str(folder), "tasks": tasks, "out_dir": str(out),
            "seconds": round(seconds, 3),
            "images_per_second": round(rate, 2)}
