"""Decoded datasets at training size, as uint8 arrays memory-mapped from .npy files.

Decoding JPEGs in the training loop feeds a GPU a fifth of what it can train on (DESIGN.md);
a uint8 cache at training size feeds it in full. The cache of a split is built once (in
parallel), reused by every run that asks for the same files at the same size, and rebuilt when
a source file changes (the key hashes paths, sizes and modification times).

    <cache_dir>/<key>/images.npy   (N, H, W, 3) uint8
                      maps.npy     (T, N, H, W) uint8, tasks in the order asked
                      meta.json    stems, tasks, original image sizes
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hypersal.data.layout import DatasetIndex
from hypersal.errors import UserError
from hypersal.progress import Progress

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYPERSAL_CACHE", Path.home() / ".cache" / "hypersal"))


@dataclass
class SplitArrays:
    images: np.ndarray          # (N, H, W, 3) uint8
    maps: np.ndarray | None     # (T, N, H, W) uint8, or None for a split without maps (run)
    tasks: list[str]
    stems: list[str]
    sizes: list[tuple[int, int]]  # original (H, W) of each image
    paths: list[str]

    def __len__(self) -> int:
        return len(self.stems)


def read_image(path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3); an unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise UserError(f"cannot read the image ({e.__class__.__name__}: {e})", file=path,
                        fix="replace or remove the file") from None


def read_map(path: Path | str, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A saliency map as uint8 (H, W); 16-bit and RGB maps are converted."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "F"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr / max(float(arr.max()), 1e-12) * 255).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("L"))
    except Exception as e:
        raise UserError(f"cannot read the map ({e.__class__.__name__}: {e})", file=path,
                        fix="replace or remove the file") from None
    if expected_hw is not None and arr.shape != tuple(expected_hw):
        raise UserError(f"the map is {arr.shape[1]}x{arr.shape[0]} but its image is "
                        f"{expected_hw[1]}x{expected_hw[0]} (width x height)", file=path,
                        fix="maps must have the size of their image")
    return arr


def resize(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if arr.shape[:2] == (h, w):
        return arr
    shrink = arr.shape[0] >= h and arr.shape[1] >= w
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _key(files: list[Path], tasks: list[str], hw: tuple[int, int]) -> str:
    h = hashlib.sha1(json.dumps([CACHE_VERSION, list(hw), tasks]).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _fill(job: tuple) -> tuple[int, tuple[int, int]]:
    """Worker: decode image i (and its maps) into the memory-mapped arrays."""
    folder, i, image, maps, hw = job
    img = read_image(image)
    images = np.load(folder / "images.npy", mmap_mode="r+")
    images[i] = resize(img, hw)
    if maps:
        out = np.load(folder / "maps.npy", mmap_mode="r+")
        for t, path in enumerate(maps):
            out[t, i] = resize(read_map(path, img.shape[:2]), hw)
        out.flush()
    images.flush()
    return i, img.shape[:2]


def load_split(index: DatasetIndex, split: str, tasks: list[str] | None, hw: tuple[int, int],
               cache_dir: Path | str | None = None, workers: int = 1, quiet: bool = False) -> SplitArrays:
    """The split's images (and maps of `tasks`; None for none) at size hw, from the cache."""
    images = index.split(split)
    tasks = list(tasks or [])
    maps = [index.map_files(split, t) for t in tasks]
    files = images + [p for per_task in maps for p in per_task]
    folder = Path(cache_dir or default_cache_dir()) / _key(files, tasks, hw)
    if not (folder / "meta.json").is_file():
        _build(folder, images, maps, hw, workers, quiet, f"caching {split} ({len(images)} images)")
    meta = json.loads((folder / "meta.json").read_text())
    return SplitArrays(images=np.load(folder / "images.npy", mmap_mode="r"),
                       maps=np.load(folder / "maps.npy", mmap_mode="r") if tasks else None,
                       tasks=tasks, stems=meta["stems"], sizes=[tuple(s) for s in meta["sizes"]],
                       paths=[str(p) for p in images])


def _build(folder: Path, images: list[Path], maps: list[list[Path]], hw, workers: int, quiet: bool,
           desc: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        n, (h, w) = len(images), hw
        np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, h, w, 3)).flush()
        if maps:
            np.lib.format.open_memmap(tmp / "maps.npy", "w+", np.uint8, (len(maps), n, h, w)).flush()
        jobs = [(tmp, i, images[i], [m[i] for m in maps], hw) for i in range(n)]
        sizes: list = [None] * n
        progress = None if quiet else Progress(n, desc, unit="img")
        workers = max(1, min(workers, n))
        if workers == 1:
            results = map(_fill, jobs)
        else:
            pool = get_context("fork").Pool(workers)
            results = pool.imap_unordered(_fill, jobs, chunksize=max(1, n // (workers * 8)))
        try:
            for i, size in results:
                sizes[i] = list(size)
                if progress:
                    progress.update()
        finally:
            if workers > 1:
                pool.terminate()
        meta = {"stems": [p.stem for p in images], "sizes": sizes, "paths": [str(p) for p in images]}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built the same cache meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
