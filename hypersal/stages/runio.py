"""The run stage's work per image: decode and resize for the model, its input batch, and the
map (and overlay) resized, stretched, encoded and written. Maps equal the stage's before these
were made cheaper (issue 24) pixel for pixel, overlays within 1 grey level
(tests/test_run_speed_path.py). The map's PNG is ISA-L's deflate (hypersal.data.png)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from hypersal.data import png
from hypersal.data.cache import resize
from hypersal.data.decode import read_rgb
from hypersal.errors import UserError
from hypersal.evaluation import viz
from hypersal.train.steps import images_to_input

JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]


def load(path: Path, hw: tuple[int, int], keep: bool,
         out: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int], np.ndarray | None]:
    """(image at the training size, the original's (H, W), the original if `keep`: an overlay
    needs it). With `out` (a (h, w, 3) uint8 row of the batch's array) the small image is
    resized straight into it, so the batch needs no stack. Without overlays the original is let
    go once resized, in the thread that decoded it, so the next decode there reuses its memory:
    else AHEAD batches of full-size images stay in flight and each decode faults its pages in
    anew (~140-280 a 480x640 image)."""
    image = read_rgb(path)
    small = resize(image, hw, out)
    return small, image.shape[:2], image if keep else None


def jpeg(array: np.ndarray, path: Path) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", array, JPEG)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    return data


def put(path: Path, data, what: str) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:      # cv2.imwrite said nothing: a full disk gave a "done" stage without maps
        raise UserError(f"cannot write the {what} ({e.strerror or e})", file=path, key="run.out_dir",
                        fix="free space on that disk or point run.out_dir at another, then run again") from None


def write(prob: np.ndarray, hw: tuple[int, int], image: np.ndarray | None, stem: str, task_dir: Path) -> None:
    """The map at the image's size `hw`; its overlay too where the image is given."""
    h, w = hw
    u8 = viz.to_uint8(cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), in_place=True)
    put(task_dir / f"{stem}.png", png.encode_grey(u8), "map")
    if image is not None:
        path = task_dir / "overlays" / f"{stem}.jpg"
        put(path, jpeg(viz.blend_bgr(image, u8), path), "overlay")


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
