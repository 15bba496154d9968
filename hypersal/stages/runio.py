"""The run stage's work per image: decode and resize for the model, its input batch, and the
map (and overlay) resized, stretched, encoded and written. Maps equal the stage's before these
were made cheaper (issue 24) pixel for pixel, overlays within 1 grey level
(tests/test_run_speed_path.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from hypersal.data.cache import resize
from hypersal.data.decode import read_rgb
from hypersal.errors import UserError
from hypersal.evaluation import viz
from hypersal.train.steps import images_to_input

# Lossless as before, for less CPU. At level 1 libpng's default tries all five row filters on
# every row; a map upsampled bilinearly changes by near-constant steps down a column, so the Up
# filter alone leaves runs that zlib's RLE strategy codes. 480x640 maps on the 2-core VM: 3.1 ms
# -> 1.0 ms for the bench's model (8 -> 6 KB), 7.0 -> 4.5 ms for a busier one (63 -> 77 KB).
# The rest is deflate itself: level 0 (stored) takes 0.4 ms but writes 300 KB.
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
       cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]


def load(path: Path, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(image at the training size, the original image)."""
    image = read_rgb(path)
    return resize(image, hw), image


def save(path: Path, ext: str, array: np.ndarray, params: list[int]) -> None:
    ok, data = cv2.imencode(ext, array, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:      # cv2.imwrite said nothing: a full disk gave a "done" stage without maps
        what = "overlay" if ext == ".jpg" else "map"
        raise UserError(f"cannot write the {what} ({e.strerror or e})", file=path, key="run.out_dir",
                        fix="free space on that disk or point run.out_dir at another, then run again") from None


def write(prob: np.ndarray, image: np.ndarray, stem: str, task_dir: Path, overlay: bool) -> None:
    h, w = image.shape[:2]
    u8 = viz.to_uint8(cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), in_place=True)
    save(task_dir / f"{stem}.png", ".png", u8, PNG)
    if overlay:
        bgr = cv2.cvtColor(viz.blend(image, u8), cv2.COLOR_RGB2BGR)
        save(task_dir / "overlays" / f"{stem}.jpg", ".jpg", bgr, JPEG)


class Inputs:
    """A batch's model input (B, 3, h, w) from its uint8 images (B, h, w, 3). On a GPU,
    images_to_input there; on the CPU, one cv2.LUT pass into a reused float buffer with a table
    that images_to_input made (so the values are its own, bit for bit): 0.2 ms per 256x256 image
    instead of 1.1 (three new float tensors, each a fresh allocation)."""

    def __init__(self, device: torch.device):
        self.device, self.buffer = device, None
        ramp = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 1, 256)
        self.table = images_to_input(ramp, torch.device("cpu"))[0, :, 0].T.contiguous().numpy().reshape(256, 1, 3)

    def __call__(self, small: np.ndarray) -> torch.Tensor:
        if self.device.type != "cpu":
            return images_to_input(torch.from_numpy(small).permute(0, 3, 1, 2), self.device)
        if self.buffer is None or self.buffer.shape[1:] != small.shape[1:] or len(self.buffer) < len(small):
            self.buffer = np.empty(small.shape, np.float32)
        out = self.buffer[:len(small)]      # the model is done with it when the next batch comes (CPU)
        cv2.LUT(small.reshape(-1, *small.shape[2:]), self.table, dst=out.reshape(-1, *small.shape[2:]))
        return torch.from_numpy(out).permute(0, 3, 1, 2)     # strides as images_to_input's (NHWC)
