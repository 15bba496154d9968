"""Decoded datasets at training size, as uint8 arrays memory-mapped from .npy files.

Decoding JPEGs in the training loop feeds a GPU a fifth of what it can train on (measured
on a 16-core H100 node: ~1,000 img/s decoded with 15 workers, vs ~4,700 img/s trained);
a uint8 cache at training size feeds it in full. A split's images are cached once per size,
and each task's maps once, so stages asking for other task combinations reuse them; every
entry is built in parallel threads, reused by every run asking for the same files at the same
size, and rebuilt when a source file changes (the key hashes paths, sizes and modification
times).

    <cache_dir>/images-<key>/images.npy   (N, H, W, 3) uint8    meta.json: stems, original sizes
    <cache_dir>/maps-<key>/maps.npy       (N, H, W) uint8       one task's maps of that split
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hypersal.data.layout import DatasetIndex
from hypersal.errors import UserError
from hypersal.files import exclusive, lock_beside
from hypersal.log import say
from hypersal.progress import Progress

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    return Path(os.environ.get("HYPERSAL_CACHE", Path.home() / ".cache" / "hypersal"))


@dataclass
class SplitArrays:
    images: np.ndarray          # (N, H, W, 3) uint8
    maps: list[np.ndarray] | None   # per task (N, H, W) uint8; None for a split without maps
    tasks: list[str]
    stems: list[str]
    sizes: list[tuple[int, int]]  # original (H, W) of each image
    paths: list[str]
    # Per task, the image rows it has maps for (ascending), its maps array holding those rows
    # only; None: every task has every image (data.task_images: all).
    rows: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.stems)

    def task_rows(self, array_task: int) -> np.ndarray:
        """The image rows of one task of the arrays."""
        return np.arange(len(self)) if self.rows is None else self.rows[array_task]

    def image_rows(self, array_task: int, positions: np.ndarray) -> np.ndarray:
        """The image rows at these positions of the task's own list (its maps array's rows)."""
        return positions if self.rows is None else self.rows[array_task][positions]

    def map_positions(self, array_task: int, image_rows: np.ndarray) -> np.ndarray:
        """Where the maps of these image rows sit in the task's maps array."""
        rows = np.asarray(image_rows)
        return rows if self.rows is None else np.searchsorted(self.rows[array_task], rows)


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


def resize(arr: np.ndarray, hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """arr at (h, w): INTER_AREA to shrink, INTER_LINEAR otherwise; into `out` where given (an
    array of the result's shape and type, contiguous), which is then returned."""
    h, w = hw
    same = arr.shape[:2] == (h, w)
    interpolation = cv2.INTER_AREA if arr.shape[0] >= h and arr.shape[1] >= w else cv2.INTER_LINEAR
    if out is None:
        return arr if same else cv2.resize(arr, (w, h), interpolation=interpolation)
    if out.shape != (h, w, *arr.shape[2:]) or out.dtype != arr.dtype or not out.flags.c_contiguous:
        raise ValueError(f"resize: out is {out.dtype} {out.shape}, not {arr.dtype} {(h, w, *arr.shape[2:])} contiguous")
    if same:
        out[...] = arr
    else:
        cv2.resize(arr, (w, h), dst=out, interpolation=interpolation)
    return out


def _key(kind: str, files: list[Path], hw: tuple[int, int]) -> str:
    h = hashlib.sha1(json.dumps([CACHE_VERSION, kind, list(hw)]).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"{kind}-{h.hexdigest()[:20]}"


def load_split(index: DatasetIndex, split: str, tasks: list[str] | None, hw: tuple[int, int],
               cache_dir: Path | str | None = None, workers: int = 1, quiet: bool = False,
               skip_bad: bool = False) -> SplitArrays:
    """The split's images (and the maps of `tasks`) at size hw, from the cache.

    An unreadable image is an error naming it; with `skip_bad` it is left out, with a warning
    that counts and names them, and the index forgets it (so no map is asked for it).
    With data.task_images `own`, the images are those the tasks have maps for, and `rows`
    says which are whose."""
    images = index.images_for(split, tasks)
    root = Path(cache_dir or default_cache_dir())
    folder = root / _key("images", images, hw)
    if not (folder / "meta.json").is_file():
        _build(folder, "images.npy", images, (len(images), *hw, 3), _image_filler(images, hw, skip_bad),
               workers, quiet, f"caching {split} images ({len(images)})", meta=True)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("skipped"):
        if not skip_bad:  # built by a run that skipped them; this one wants them
            raise UserError(f"{len(meta['skipped'])} image(s) are unreadable, e.g. {meta['skipped'][0]}",
                            key="data.skip_bad_images", fix="replace them, or set data.skip_bad_images: true")
        skipped = set(meta["skipped"])
        index.images[split] = [p for p in index.images[split] if str(p) not in skipped]
        images = [p for p in images if str(p) not in skipped]
        say(f"{split}: left out {len(meta['skipped'])} unreadable image(s): "
            f"{', '.join(Path(p).name for p in meta['skipped'][:3])}{' ...' if len(meta['skipped']) > 3 else ''}")
    maps, rows = [], []
    position = {str(p): i for i, p in enumerate(images)}
    for task in tasks or []:
        files = index.map_files(split, task)
        mine = [p for p in index.task_images_of(split, task) if str(p) in position]
        rows.append(np.array([position[str(p)] for p in mine], dtype=np.int64))
        sizes = [tuple(meta["sizes"][i]) for i in rows[-1]]
        task_folder = root / _key("maps", mine + files, hw)
        if not (task_folder / "maps.npy").is_file():
            _build(task_folder, "maps.npy", files, (len(files), *hw), _map_filler(files, sizes, hw),
                   workers, quiet, f"caching {split} {task} maps")
        maps.append(np.load(task_folder / "maps.npy", mmap_mode="r"))
    own = index.task_images == "own" and bool(tasks)
    return SplitArrays(images=np.load(folder / "images.npy", mmap_mode="r"), maps=maps or None,
                       tasks=list(tasks or []), stems=meta["stems"],
                       sizes=[tuple(s) for s in meta["sizes"]], paths=[str(p) for p in images],
                       rows=rows if own else None)


def _image_filler(files: list[Path], hw, skip_bad: bool):
    def fill(out: np.ndarray, i: int) -> list[int] | None:
        try:
            img = read_image(files[i])
        except UserError:
            if skip_bad:
                return None
            raise
        out[i] = resize(img, hw)
        return list(img.shape[:2])
    return fill


def _map_filler(files: list[Path], sizes: list[tuple], hw):
    def fill(out: np.ndarray, i: int) -> None:
        out[i] = resize(read_map(files[i], sizes[i]), hw)
    return fill


def _fill_all(out: np.ndarray, fill, n: int, workers: int, progress) -> list:
    """fill(out, i) for i < n. Threads, not processes: decoding and resizing release the GIL,
    and forking a process that runs torch or OpenCV thread pools deadlocks its children."""
    results = []
    with ThreadPoolExecutor(max(1, min(workers, n))) as pool:
        for result in pool.map(lambda i: fill(out, i), range(n)):
            results.append(result)
            if progress:
                progress.update()
    return results


def _build(folder: Path, name: str, files: list[Path], shape: tuple, fill, workers: int, quiet: bool,
           desc: str, meta: bool = False) -> None:
    """Write `folder/name` (fill(array, i) for every i) through a temporary folder renamed at
    the end: a half-built cache is never seen. The jobs of a sweep that start together want the
    same entries: one builds each while the others wait for it (a lock file in .locks beside it), then
    they read it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_beside(folder), required=False):
        if not (folder / name).is_file():
            _write(folder, name, files, shape, fill, workers, quiet, desc, meta)


def _write(folder: Path, name: str, files: list[Path], shape: tuple, fill, workers: int, quiet: bool,
           desc: str, meta: bool) -> None:
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        out = np.lib.format.open_memmap(tmp / name, "w+", np.uint8, shape)
        results = _fill_all(out, fill, len(files), workers, None if quiet else Progress(len(files), desc, unit="img"))
        if meta:  # images: keep the readable rows only, with their stems and original sizes
            rows = [i for i, r in enumerate(results) if r is not None]
            if len(rows) < len(files):
                kept = np.lib.format.open_memmap(tmp / "kept.npy", "w+", np.uint8, (len(rows), *shape[1:]))
                for j, i in enumerate(rows):
                    kept[j] = out[i]
                kept.flush()
                del kept
                os.replace(tmp / "kept.npy", tmp / name)
            (tmp / "meta.json").write_text(json.dumps({
                "stems": [files[i].stem for i in rows], "sizes": [results[i] for i in rows],
                "paths": [str(files[i]) for i in rows],
                "skipped": [str(files[i]) for i in range(len(files)) if results[i] is None]}))
        out.flush()
        del out
        try:
            os.replace(tmp, folder)
        except OSError:  # another process built the same entry meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
