"""What the converter (hypersal.data.convert) checks in a benchmark before it links or reads a
file, so that a bad input is one UserError naming the file (exit status 2), never a traceback
or a dataset that fails later in training:

- every image and map is decoded in full (a header can be whole while the data is cut short),
  and a map has the size of its image;
- every file taken from a source lies inside it: a link out of it is refused, naming it;
- fixations have the size of their image: SALICON's `resolution`, MIT1003's `_fixPts.jpg`,
  CAT2000's `fixLocs`;
- fixation arrays are what the format says: N x 2 real numbers, finite; binary matrices of
  finite numbers >= 0; at least one fixation per image;
- no two images of a source share a stem (the layout names image, map and fixations by it);
- `--out` can be made: it does not exist and no folder above it is a file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from hypersal.errors import UserError


def decoded_size(path: Path, what: str, source: str) -> tuple[int, int]:
    """(H, W) of an image or map, after decoding all of it."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.format == "JPEG":   # 1/8 scale: still reads every byte, at half the cost
                im.draft(im.mode, (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Exception as e:
        raise UserError(f"cannot decode the {what} ({e.__class__.__name__}: {e})", file=path,
                        fix=f"replace it with the file from {source}, or remove it (with its map and "
                            "fixations)") from None
    return h, w


def _size(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]} (width x height)"


def same_size(hw: tuple[int, int], image_hw: tuple[int, int], path: Path, what: str, image: Path,
              key: str | None = None) -> None:
    if tuple(hw) != tuple(image_hw):
        raise UserError(f"the {what} is {_size(hw)} but its image {image.name} is {_size(image_hw)}",
                        file=path, key=key, fix=f"use the {what} that belongs to {image.name}: it has its size")


def inside(path: Path, source: Path) -> None:
    """Refuse a file whose real place is outside the source folder (a link, or a linked folder)."""
    real = path.resolve()
    if not real.is_relative_to(source.resolve()):
        raise UserError(f"it leads out of the source folder {source}, to {real}", file=path,
                        fix="copy the file into the source folder, or convert the folder that holds it")


def dangling(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise UserError(f"a link to {os.readlink(path)}, which does not exist", file=path,
                        fix="restore the file it points to, or remove the link")


def _numbers(arr: np.ndarray) -> bool:
    """Real numbers (not text, complex numbers, structs or cells)."""
    return np.issubdtype(arr.dtype, np.number) and not np.issubdtype(arr.dtype, np.complexfloating)


def _shown(arr: np.ndarray) -> str:
    shown = str(arr.ravel()[:4].tolist())
    if len(shown) > 60:                     # cells of arrays, long text
        shown = shown[:56] + " ..."
    elif arr.size > 4:
        shown = shown[:-1] + ", ...]"
    return f"{shown} ({arr.dtype})"


def resolution(value, image_hw: tuple[int, int], path: Path, image: Path) -> None:
    """SALICON's `resolution`: [height, width], positive whole numbers, the image's size."""
    arr = np.asarray(value)
    fix = "use the fixation file of this image from the SALICON archive: `resolution` is [height, width]"
    if not _numbers(arr) or arr.size != 2:
        raise UserError(f"is {_shown(arr)}, not [height, width]", file=path, key="resolution", fix=fix)
    hw = arr.ravel().astype(float)
    if not (np.isfinite(hw).all() and (hw == np.round(hw)).all() and (hw > 0).all()):
        raise UserError(f"is {_shown(arr)}: not two positive whole numbers", file=path,
                        key="resolution", fix=fix)
    same_size((int(hw[0]), int(hw[1])), image_hw, path, "fixation file", image, key="resolution")


def points(value, path: Path, key: str) -> np.ndarray:
    """One observer's fixations: N x 2 finite real numbers ([x, y]); none is (0, 2)."""
    arr = np.asarray(value)
    fix = "use the fixation file from the SALICON archive: each observer's `fixations` is N x 2, [x, y]"
    if arr.size == 0:            # an observer with no fixation: SALICON has some
        return np.zeros((0, 2))
    if not _numbers(arr):
        raise UserError(f"holds {_shown(arr)}, not numbers", file=path, key=key, fix=fix)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise UserError(f"is {' x '.join(map(str, arr.shape))}, not N x 2 ([x, y] per fixation)", file=path,
                        key=key, fix=fix)
    if not np.isfinite(arr).all():
        row = int(np.flatnonzero(~np.isfinite(arr).all(1))[0])
        raise UserError(f"fixation {row + 1} is {arr[row].tolist()}, not a point", file=path, key=key, fix=fix)
    return arr.astype(float)


def points_mask(every: np.ndarray, hw: tuple[int, int], path: Path) -> tuple[np.ndarray, int]:
    """The 1-based [x, y] points as a binary (H, W) map, and how many lay outside the image.

    A few points just off the image are real (SALICON 2017 has x = 641 on 640-pixel images;
    pysaliency's author advises dropping them): they are dropped and counted. A file with no
    point, or most of its points off the image, is not this image's fixations: refused."""
    h, w = hw
    if not len(every):
        raise UserError("it holds no fixation", file=path, key="gaze",
                        fix="use the fixation file of this image from the SALICON archive, or remove the image")
    xs, ys = np.round(every[:, 0]).astype(np.int64) - 1, np.round(every[:, 1]).astype(np.int64) - 1
    keep = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    outside = int((~keep).sum())
    if 2 * outside > len(every):
        first = every[np.flatnonzero(~keep)[0]].tolist()
        raise UserError(f"{outside} of its {len(every)} fixations lie outside its {_size(hw)} image "
                        f"(first: [x, y] = {first})", file=path, key="gaze",
                        fix="SALICON's fixations are [x, y] pixels of the image, counted from 1: use the "
                            "fixation file of this image from the SALICON archive")
    out = np.zeros(hw, bool)
    out[ys[keep], xs[keep]] = True
    return out, outside


def binary(value, hw: tuple[int, int], path: Path, image: Path, key: str | None, source: str) -> np.ndarray:
    """A binary fixation matrix (values >= 0, finite; non-zero: a fixation) at the image's size."""
    arr = np.asarray(value)
    fix = f"use the file of this image from {source}"
    if not (_numbers(arr) or arr.dtype == bool) or arr.ndim != 2:
        raise UserError(f"the fixations are {_shown(arr)}, {arr.ndim}-D: not a binary H x W matrix", file=path,
                        key=key, fix=fix)
    same_size(arr.shape, hw, path, "fixation map", image, key=key)
    if arr.dtype != bool and not (np.isfinite(arr).all() and (arr >= 0).all()):
        bad = arr[~(np.isfinite(arr) & (arr >= 0))][0]
        raise UserError(f"the fixations hold {bad}: a binary matrix holds 0 and 1", file=path, key=key, fix=fix)
    mask = arr > 0
    if not mask.any():
        raise UserError("it holds no fixation", file=path, key=key, fix=f"{fix}, or remove the image")
    return mask


def unique_stems(items) -> None:
    """Two images of one stem would share one map and one fixation file in the layout."""
    seen: dict[str, Path] = {}
    for item in items:
        other = seen.setdefault(item.stem, item.image)
        if other != item.image:
            raise UserError(f"this image and {other} have one name, '{item.stem}'", file=item.image,
                            fix="remove or rename one of them: hypersal names an image, its map and its "
                                "fixations by the name without the suffix")


def out_folder(out: Path) -> None:
    if os.path.lexists(out):
        raise UserError("the output folder exists already", file=out, key="--out",
                        fix="remove it, or choose a new --out (a conversion never mixes into an old folder)")
    above = next(p for p in out.parents if os.path.lexists(p))
    if not above.is_dir():
        raise UserError(f"it is not a folder, so --out {out} cannot be made under it", file=above, key="--out",
                        fix="choose an --out whose parent is a folder (or can be made one)")


def make_parents(folder: Path, made: list[Path]) -> None:
    """Make the missing folders down to `folder`, adding each to `made` (removed on failure)."""
    for p in [*reversed(folder.parents), folder]:
        if not os.path.lexists(p):
            p.mkdir()
            made.append(p)
