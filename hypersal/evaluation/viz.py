"""Pictures people look at: colour maps, overlays, and labelled grids (RGB uint8 arrays)."""
from __future__ import annotations

import functools
import threading
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


@functools.lru_cache(maxsize=8)
def _blend_tables(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """By map value: the image's weight 1 - w in 1/32768, and the BGR colour times w in 1/256, as
    one 3-channel table (w = alpha * value / 255, the float32 weights of before)."""
    w = (np.arange(256, dtype=np.float32) / 255.0 * alpha).astype(np.float64)
    colour = INFERNO_RGB.reshape(256, 3)[:, ::-1]
    return (np.round((1 - w) * 32768).astype(np.uint16).reshape(256, 1),
            np.round(colour * w[:, None] * 256).astype(np.uint16).reshape(256, 1, 3))


_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """This thread's scratch array of that shape and type, reused from call to call: the run
    stage's writers blend one full-size overlay after another, and fresh arrays each time cost
    their page faults and cache misses again."""
    buf = getattr(_scratch, name, None)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        buf = np.empty(shape, dtype)
        setattr(_scratch, name, buf)
    return buf


def blend_bgr(image: np.ndarray, u8: np.ndarray, alpha: float = 0.55, bgr: bool = False) -> np.ndarray:
    """The colour map of a uint8 map over the RGB image (BGR with `bgr`) of its size, weight `alpha` * map / 255,
    in BGR (what a JPEG encoder takes). In 16-bit fixed point, every step one OpenCV pass on
    one type: image * (1 - w) to 1/256 (the weight to 1/32768), plus colour * w to 1/256, then
    rounded: within 2/256 of the float formula before rounding, so within 1 grey level of the
    numpy formula of before, which truncated (tests/test_run_overlay.py tries every pair of
    map value and pixel value). The map's three channels are looked up at once, into this
    thread's scratch arrays; only the result is new."""
    image_weight, colour = _blend_tables(float(alpha))
    shape = (*u8.shape, 3)
    m3 = cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR, dst=_buffer("map", shape, np.uint8))
    scaled = _buffer("scaled", shape, np.uint16)
    np.copyto(scaled, image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=_buffer("bgr", shape, np.uint8)))
    cv2.multiply(scaled, cv2.LUT(m3, image_weight, dst=_buffer("weight", shape, np.uint16)), dst=scaled, scale=1 / 128)
    cv2.add(scaled, cv2.LUT(m3, colour, dst=_buffer("colour", shape, np.uint16)), dst=scaled)
    return cv2.convertScaleAbs(scaled, alpha=1 / 256)


def blend(image: np.ndarray, u8: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """blend_bgr in RGB."""
    return cv2.cvtColor(blend_bgr(image, u8, alpha), cv2.COLOR_BGR2RGB)


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
