"""Pictures people look at: colour maps, overlays, and labelled grids (RGB uint8 arrays)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


# The inferno colour map in RGB order: cv2.applyColorMap with it gives RGB at once (no reversed view).
INFERNO_RGB = np.ascontiguousarray(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_INFERNO)[..., ::-1])


def to_uint8(m: np.ndarray, in_place: bool = False) -> np.ndarray:
    """A saliency map (any range) as uint8 (H, W), stretched to 0..255 (a constant map is 0).
    The float32 arithmetic of ((m - lo) / (hi - lo) * 255 + 0.5), step by step in one buffer
    (with `in_place`, a float32 m's own: the caller's scratch map)."""
    m = np.asarray(m, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    if hi <= lo:
        return np.zeros(m.shape, np.uint8)
    t = np.subtract(m, np.float32(lo), out=m if in_place else None)
    t /= np.float32(hi - lo)
    t *= np.float32(255)
    t += np.float32(0.5)
    return t.astype(np.uint8)


def colorize(m: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W, 3) RGB with the inferno colour map."""
    return cv2.applyColorMap(to_uint8(m), INFERNO_RGB)


def blend(image: np.ndarray, u8: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The colour map of a uint8 map over the image of its size, weight `alpha` * map / 255: the
    colour by a table, the per-pixel weights by two 256-entry tables, one cv2.blendLinear, no
    float image. It rounds where the numpy formula of before truncated: within 1 grey level."""
    weight = np.arange(256, dtype=np.float32) / 255.0 * alpha     # the float32 weights of before
    return cv2.blendLinear(np.ascontiguousarray(image), cv2.applyColorMap(u8, INFERNO_RGB),
                           cv2.LUT(u8, (1 - weight).reshape(256, 1)), cv2.LUT(u8, weight.reshape(256, 1)))


def overlay(image: np.ndarray, m: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The colour map over the image, resized to it; weight `alpha` where the map is high."""
    h, w = image.shape[:2]
    return blend(image, to_uint8(cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)),
                 alpha)


def gray(m: np.ndarray) -> np.ndarray:
    return np.repeat(to_uint8(m)[..., None], 3, axis=2)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], 0)


def grid(rows: list[list[np.ndarray]], headers: list[str], tile_hw: tuple[int, int] = (160, 200),
         row_labels: list[str] | None = None) -> np.ndarray:
    """Tiles (RGB uint8, any size) in rows, each resized to tile_hw, with column headers."""
    h, w = tile_hw
    lines = []
    for r, row in enumerate(rows):
        tiles = [cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA) for t in row]
        if row_labels:
            tiles[0] = tiles[0].copy()
            cv2.putText(tiles[0], row_labels[r], (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
        lines.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255)
                                     for t in tiles], 1))
    body = np.concatenate(lines, 0)
    header = np.concatenate([_label(np.full((0, w + 4, 3), 255, np.uint8), text) for text in headers], 1)
    return np.concatenate([header, body], 0)


def save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
