"""run: saliency maps for a folder of images, one PNG per image and task, at the image's size.

    <out_dir>/<task>/<stem>.png              the map, stretched to 0..255 per image
    <out_dir>/<task>/overlays/<stem>.jpg     the map in colour over the image (run.overlay)

Images are decoded and maps written by a pool of threads while the model works on the next
batch; the speed (images/s, every task counted once per image) is reported and kept in the
results.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from hypersal.evaluation import viz
from hypersal.data.cache import read_image, resize
from hypersal.data.layout import list_images
from hypersal.errors import UserError
from hypersal.progress import Progress
from hypersal.stages import stage
from hypersal.stages.evaluate import trained_model
from hypersal.train import signals
from hypersal.train.cpus import worker_count
from hypersal.train.steps import Precision, images_to_input

PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]      # fast; PNG stays lossless
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]


def load(path: Path, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image at the training size, the original image)."""
    image = read_image(path)
    return resize(image, hw), image


def write(prob: np.ndarray, image: np.ndarray, stem: str, task_dir: Path, overlay: bool) -> None:
    h, w = image.shape[:2]
    m = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(task_dir / f"{stem}.png"), viz.to_uint8(m), PNG)
    if overlay:
        cv2.imwrite(str(task_dir / "overlays" / f"{stem}.jpg"), viz.overlay(image, m)[..., ::-1], JPEG)


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
    progress = Progress(len(files), f"run {len(tasks)} task(s)", unit="img") if job.is_main else None
    started = time.perf_counter()
    with ThreadPoolExecutor(worker_count(cfg.workers)) as pool:
        pending = []
        batches = [files[i:i + cfg.batch_size] for i in range(0, len(files), cfg.batch_size)]
        loaded = pool.map(lambda batch: [load(p, hw) for p in batch], batches)   # decoded ahead
        for batch, items in zip(batches, loaded):
            signals.check()
            small = torch.from_numpy(np.stack([s for s, _ in items])).permute(0, 3, 1, 2)   # (B, 3, h, w)
            x = images_to_input(small, job.device)
            with torch.no_grad():
                for task, index in zip(tasks, indices):
                    with precision.autocast(job.device):
                        probs = torch.sigmoid(model(x, task=index).float())[:, 0].cpu().numpy()
                    pending += [pool.submit(write, probs[i], items[i][1], p.stem, out / task, cfg.overlay)
                                for i, p in enumerate(batch)]
            if progress:
                progress.update(len(batch))
        for future in pending:
            future.result()
    seconds = time.perf_counter() - started
    rate = len(files) / seconds
    job.tracker.log_metrics({"images_per_second": rate}, step=0, stage="run")
    return {"images": len(files), "images_dir": str(folder), "tasks": tasks, "out_dir": str(out),
            "seconds": round(seconds, 3),
            "images_per_second": round(rate, 2)}
