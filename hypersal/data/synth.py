"""Make a saliency dataset in the seed's layout, with no download:

    python -m hypersal.data.synth --out DIR [--images SRC] [--n 200] [--size 240x320]
                                  [--tasks spectral_residual,frequency_tuned,...] [--seed 0]

writes
    DIR/images/{train,val,test,run}/<stem>.jpg   (run/ holds copies of the test images)
    DIR/maps/<task>/<stem>.png                   one 8-bit map per image and task
    DIR/synth.yaml                               the parameters, for the record
Images come from SRC (any folder of images, centre-cropped and resized) and, for the rest of
the n, are generated scenes: gradients, low-frequency noise, clutter, textures and a few
salient objects. Source images sit at seeded positions among the generated ones, so they land
in every split.
Deterministic for a seed; parallel over the CPUs this process may use.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hypersal import yamlio
from hypersal.data.tasks import TASKS, compute
from hypersal.errors import UserError
from hypersal.files import exclusive, lock_beside
from hypersal.progress import Progress

DEFAULT_TASKS = ("spectral_residual", "fine_grained", "frequency_tuned", "image_signature",
                 "center_bias", "dog_contrast", "boolean_map")
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def cpu_count() -> int:
    """CPUs this process may use (what Slurm gave the job), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _colour(rng: np.random.Generator, saturated: bool) -> tuple:
    if saturated:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(180, 256), rng.integers(160, 256)]]])
    else:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(0, 90), rng.integers(60, 200)]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _shape(img: np.ndarray, rng: np.random.Generator, scale: float, colour: tuple) -> None:
    h, w = img.shape[:2]
    cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
    size = max(2, int(scale * min(h, w) * rng.uniform(0.5, 1.0)))
    kind = rng.integers(3)
    if kind == 0:
        cv2.ellipse(img, (cx, cy), (size, max(2, int(size * rng.uniform(0.4, 1.0)))),
                    float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    elif kind == 1:
        cv2.rectangle(img, (cx - size, cy - size // 2), (cx + size, cy + size // 2), colour, -1)
    else:
        pts = np.array([[cx + size * np.cos(a), cy + size * np.sin(a)]
                        for a in rng.uniform(0, 2 * np.pi, 3)], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A procedural RGB uint8 scene (h, w, 3)."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    c1, c2 = np.array(_colour(rng, False), np.float32), np.array(_colour(rng, False), np.float32)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    # Smooth low-frequency shading, mostly in brightness: a background, not a texture.
    shade = rng.normal(0, 12, (max(2, h // 40), max(2, w // 40), 1)) + rng.normal(0, 3, (max(2, h // 40), max(2, w // 40), 3))
    noise = cv2.resize(shade.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(10, 30))):          # clutter: small, dull
        _shape(img, rng, 0.04, _colour(rng, False))
    if rng.random() < 0.5:                               # a textured patch
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        period = int(rng.integers(3, 8))
        patch = img[y0:y0 + h // 3, x0:x0 + w // 3]
        stripes = ((np.arange(patch.shape[1]) // period) % 2).astype(bool)
        patch[:, stripes] = _colour(rng, False)
    for _ in range(int(rng.integers(1, 4))):            # salient objects: large, saturated
        _shape(img, rng, rng.uniform(0.1, 0.25), _colour(rng, True))
    grain = rng.normal(0, 2, img.shape)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def load_source(path: Path, h: int, w: int) -> np.ndarray:
    """An image file, centre-cropped to the aspect h:w and resized to (h, w, 3) uint8 RGB."""
    try:
        img = np.asarray(Image.open(path).convert("RGB"))
    except Exception as e:
        raise UserError(f"cannot read the image ({e})", file=path,
                        fix="remove or replace the file") from None
    ih, iw = img.shape[:2]
    scale = min(ih / h, iw / w)
    ch, cw = int(h * scale), int(w * scale)
    y0, x0 = (ih - ch) // 2, (iw - cw) // 2
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)


def split_of(i: int, n: int) -> str:
    n_train = int(round(SPLITS["train"] * n))
    n_val = int(round(SPLITS["val"] * n))
    return "train" if i < n_train else "val" if i < n_train + n_val else "test"


def _make_one(job: tuple) -> int:
    i, n, out, source, h, w, tasks, seed = job
    img = load_source(source, h, w) if source else scene(np.random.default_rng([seed, i]), h, w)
    stem, split = f"img_{i:05d}", split_of(i, n)
    Image.fromarray(img).save(out / "images" / split / f"{stem}.jpg", quality=95)
    if split == "test":
        Image.fromarray(img).save(out / "images" / "run" / f"{stem}.jpg", quality=95)
    for task in tasks:
        m = (compute(task, img) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(m).save(out / "maps" / task / f"{stem}.png")
    return i


def make(out: Path | str, n: int = 200, size: tuple[int, int] = (240, 320), tasks=DEFAULT_TASKS,
         seed: int = 0, images: Path | str | None = None, workers: int | None = None,
         quiet: bool = False) -> Path:
    """Write the dataset into `out` (made atomically: a temporary folder renamed at the end).
    An existing `out` with the same parameters is reused as it is."""
    out = Path(out)
    tasks = list(tasks)
    for task in tasks:
        TASKS.get(task, key="tasks")
    sources = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
        if images else []
    if images and not sources:
        raise UserError("no images found", file=images, fix=f"use a folder with {', '.join(IMAGE_SUFFIXES)} files")
    record = {"n": n, "size": list(size), "tasks": tasks, "seed": seed,
              "images": str(images) if images else None}
    if _made(out, record):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # The jobs of a sweep that start together would each generate the same dataset and all but
    # one throw theirs away: one generates it while the others wait here, then they use it.
    with exclusive(lock_beside(out), required=False):
        if _made(out, record):
            return out
        return _make(out, record, n, size, tasks, seed, sources, workers, quiet)


def _made(out: Path, record: dict) -> bool:
    return (out / "synth.yaml").is_file() and yamlio.load(out / "synth.yaml") == record


def _make(out: Path, record: dict, n: int, size, tasks: list, seed: int, sources: list, workers, quiet) -> Path:
    if out.exists() and any(out.iterdir()):
        raise UserError("the output folder exists and holds something else", file=out,
                        fix="choose an empty or new folder")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for split in (*SPLITS, "run"):
            (tmp / "images" / split).mkdir(parents=True)
        for task in tasks:
            (tmp / "maps" / task).mkdir(parents=True)
        placed = {int(pos): src for pos, src in zip(np.random.default_rng([seed, 7]).permutation(n), sources)}
        jobs = [(i, n, tmp, placed.get(i), size[0], size[1], tasks, seed) for i in range(n)]
        progress = None if quiet else Progress(n, f"synth {len(tasks)} tasks", unit="img")
        workers = max(1, min(workers or cpu_count(), n))
        # spawn, not fork: the caller (train.py) may run torch and OpenCV thread pools, whose
        # locks a forked child inherits held.
        with get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_make_one, jobs, chunksize=max(1, n // (workers * 8))):
                if progress:
                    progress.update()
        yamlio.dump(record, tmp / "synth.yaml")
        if out.exists() and not any(out.iterdir()):
            out.rmdir()
        try:
            os.replace(tmp, out)
        except OSError:
            # Another job of the sweep made the same dataset meanwhile: use theirs.
            if not ((out / "synth.yaml").is_file() and yamlio.load(out / "synth.yaml") == record):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        assert h > 0 and w > 0
        return h, w
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"expected HxW like 240x320, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypersal.data.synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="the dataset folder to write")
    p.add_argument("--images", type=Path, help="a folder of source images (default: generated scenes)")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--size", type=parse_size, default=(240, 320), help="HxW (default 240x320)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated, from: {', '.join(TASKS.names())}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="processes (default: every CPU this job may use)")
    args = p.parse_args(argv)
    try:
        out = make(args.out, args.n, args.size, [t for t in args.tasks.split(",") if t], args.seed,
                   args.images, args.workers)
    except UserError as e:
        print(f"hypersal: error: {e}", file=sys.stderr)
        return 2
    print(f"hypersal: dataset in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
