"""Image files decoded fast, with the pixels of cache.read_image (PIL).

A plain JPEG goes to cv2.imdecode: the same libjpeg-turbo decode as PIL's (islow IDCT, fancy
upsampling), without PIL's two copies, and with the GIL released, so a pool of threads decodes
image by image in parallel. Whatever might decode otherwise in the two libraries goes PIL's way:
CMYK / YCCK, 12-bit, arithmetic-coded, bytes after the end marker or a file cut short (which
PIL refuses, with today's error), PNG and every other format. cv2 is told to ignore EXIF
orientation, as PIL does.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hypersal.data.cache import read_image

SOF_PLAIN = {0xC0, 0xC1, 0xC2}            # baseline, extended and progressive Huffman frames
SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
START_OF_SCAN = 0xDA
FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
FLAGS_BGR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def plain_jpeg(data: bytes) -> bool:
    """A whole 8-bit Huffman JPEG of 1 (grey) or 3 components: its frame header says so."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return False
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:                      # a fill byte before the marker
            i += 1
            continue
        if marker in SOF_PLAIN:                 # FF Cn, length (2), precision, height (2), width (2), components
            return data[i + 4] == 8 and data[i + 9] in (1, 3)
        if marker in SOF_OTHER or marker == START_OF_SCAN:
            return False
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False


def read_rgb(path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3), equal to cache.read_image(path); an unreadable file is its UserError."""
    return _read(path, bgr=False)


def read_bgr(path: Path | str) -> np.ndarray:
    """read_rgb's pixels in BGR order (what OpenCV's encoders take): a plain JPEG decoded so at
    once (libjpeg-turbo writes either order at the same cost), the rest converted."""
    return _read(path, bgr=True)


def _read(path: Path | str, bgr: bool) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError:
        image = read_image(path)                # says which file and why, as it always has
    else:
        if plain_jpeg(data):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), FLAGS_BGR if bgr else FLAGS)
            if image is not None:
                return image
        image = read_image(path)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if bgr else image
