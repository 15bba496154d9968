"""The run stage's work per image: decode and resize for the model, its input batch, each map
resized to its image and stretched to uint8 where the model ran, and the map (and overlay)
encoded and written. Maps equal the stage's before these were made cheaper (issue 24) pixel for
pixel, overlays within 1 grey level (tests/test_run_speed_path.py); on a GPU the maps are
resized and stretched there, within 1 grey level of the host's (tests/test_run_maps.py). The
map's PNG is ISA-L's deflate (hypersal.data.png)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from hypersal.data import area, png
from hypersal.data.cache import resize
from hypersal.data.decode import read_bgr, read_rgb
from hypersal.errors import UserError
from hypersal.evaluation import viz
from hypersal.train.steps import images_to_input

JPEG = [cv2.IMWRITE_JPEG_QUALITY, 90]


def load(path: Path, hw: tuple[int, int], keep: bool, out: np.ndarray | None = None,
         defer: bool = False) -> tuple[np.ndarray | None, tuple[int, int], np.ndarray | None, np.ndarray | None]:
    """(RGB image at the training size, the original's (H, W), the original in BGR if `keep`: an
    overlay needs it, and its JPEG encoder takes BGR; the original in BGR if `defer` left its
    resize to the device). With `out` (a (h, w, 3) uint8 row of the batch's array) the small
    image is resized straight into it, so the batch needs no stack. With `defer`, an image that
    OpenCV shrinks by its generic area path (hypersal.data.area.plan) is not resized here: the
    device resizes it (Inputs), with the same pixels, and the small image is None. With `keep`
    or `defer` the image is decoded as BGR and only the small one turned to RGB (the resize works
    on each channel alone, so its pixels are the RGB resize's): no pass over the full-size image.
    Without overlays the original is let go once resized (or sent), so the next decode in that
    thread reuses its memory: else AHEAD batches of full-size images stay in flight and each
    decode faults its pages in anew (~140-280 a 480x640 image)."""
    if not (keep or defer):
        image = read_rgb(path)
        return resize(image, hw, out), image.shape[:2], None, None
    image = read_bgr(path)
    if defer and area.plan(image.shape[:2], hw) is not None:
        return None, image.shape[:2], image if keep else None, image
    small = resize(image, hw, out)
    if small is image:                # the training size itself: the original stays BGR
        small = small.copy()
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=small), image.shape[:2], image if keep else None, None


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


def stretched(prob: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A map of probabilities (h, w) at the image's size `hw`, stretched to uint8: the host's way
    (OpenCV's bilinear resize, viz.to_uint8), the pixels of the stage before issue 24."""
    h, w = hw
    return viz.to_uint8(cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR), in_place=True)


def by_size(sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], list[int]]]:
    """The images' sizes, each with the rows of the batch that have it, in order of first sight."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(sizes):
        groups.setdefault(tuple(hw), []).append(i)
    return list(groups.items())


def stretched_groups(probs: torch.Tensor, sizes: list[tuple[int, int]]):
    """`stretched` for a batch (B, h, w) where it lies (the GPU's way), one size at a time:
    (rows of the batch, their uint8 maps (G, H, W)). The maps of one size are resized at once
    (torch's bilinear, on OpenCV's half-pixel grid) and each stretched by its own minimum and
    maximum in float32, a constant map 0: within 1 grey level of `stretched` (the weights' and
    the range's rounding), tests/test_run_maps.py."""
    for hw, rows in by_size(sizes):
        p = probs[torch.tensor(rows, device=probs.device)] if len(rows) < len(probs) else probs
        m = F.interpolate(p[:, None].float(), size=hw, mode="bilinear", align_corners=False)[:, 0]
        lo = m.amin(dim=(1, 2), keepdim=True)
        span = m.amax(dim=(1, 2), keepdim=True) - lo
        m = m.sub_(lo).div_(torch.where(span > 0, span, 1)).mul_(255).add_(0.5).masked_fill_(span <= 0, 0)
        yield rows, m.to(torch.uint8)


def stretched_on_device(probs: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Each image's uint8 map by `stretched_groups`, in the batch's order."""
    out = [None] * len(sizes)
    for rows, u8 in stretched_groups(probs, sizes):
        for row, u in zip(rows, u8):
            out[row] = u
    return out


def blended_on_device(images: torch.Tensor, u8: torch.Tensor, alpha: float = 0.55) -> torch.Tensor:
    """The overlay of uint8 maps (G, H, W) over their BGR images (G, H, W, 3) where they lie (the
    GPU's way), in BGR: the float32 formula of the stage before issue 24 (image * (1 - w) +
    colour * w, truncated; w = alpha * map / 255), step for step, so within 1 grey level of the
    host's fixed-point viz.blend_bgr as that is of it (tests/test_run_maps.py)."""
    table = torch.from_numpy(np.ascontiguousarray(viz.INFERNO_RGB.reshape(256, 3)[:, ::-1])).to(images.device)
    weight = (u8.float() / 255.0)[..., None] * alpha
    return (images * (1 - weight) + table[u8.long()] * weight).to(torch.uint8)


def maps(probs: torch.Tensor, sizes: list[tuple[int, int]], staged: list[tuple[list[int], torch.Tensor]] = ()
         ) -> tuple[list, list]:
    """(Each image's uint8 map at its size, each image's BGR overlay or None), made where the model
    ran. Maps: on the CPU numpy arrays (`stretched`); on a GPU (`stretched_groups`) uint8 tensors
    on their way to pinned host memory, one copy per size, not waited for (`as_array` them once
    the caller's event says they are there). Overlays: of the images `staged` on the device (rows,
    BGR (G, H, W, 3)), blended there (`blended_on_device`) and sent likewise; None for the rest,
    which the host blends. The host then only encodes and writes."""
    overlays = [None] * len(sizes)
    if probs.device.type == "cpu":
        out = [stretched(p, hw) for p, hw in zip(probs.numpy(), sizes)]
        on_device = [torch.from_numpy(m) for m in out]
    else:
        out, on_device = [None] * len(sizes), [None] * len(sizes)
        for rows, u8 in stretched_groups(probs, sizes):
            for row, u, host in zip(rows, u8, u8.to("cpu", non_blocking=True)):
                on_device[row], out[row] = u, host
    for rows, images in staged:
        blended = blended_on_device(images, torch.stack([on_device[r] for r in rows]))
        for row, over in zip(rows, blended.to("cpu", non_blocking=True) if blended.is_cuda else blended):
            overlays[row] = over
    return out, overlays


def as_array(u8) -> np.ndarray | None:
    return u8.numpy() if isinstance(u8, torch.Tensor) else u8


def write(u8: np.ndarray, image: np.ndarray | None, stem: str, task_dir: Path,
          overlay: np.ndarray | None = None) -> None:
    """The uint8 map (at its image's size); its overlay too where the image (BGR) is given, or
    the overlay (BGR) itself, blended on the device."""
    put(task_dir / f"{stem}.png", png.encode_grey(u8), "map")
    if image is not None or overlay is not None:
        path = task_dir / "overlays" / f"{stem}.jpg"
        put(path, jpeg(viz.blend_bgr(image, u8, bgr=True) if overlay is None else overlay, path), "overlay")


class Inputs:
    """A batch's model input (B, 3, h, w) from its uint8 images (B, h, w, 3), and the images whose
    resize was left to the device (`stage`, then area.resize there, in the batch's rows). On a
    GPU, images_to_input there; on the CPU, one cv2.LUT pass into a reused float buffer with a
    table that images_to_input made (so the values are its own, bit for bit): 0.2 ms per 256x256
    image instead of 1.1 (three new float tensors, each a fresh allocation)."""

    def __init__(self, device: torch.device):
        self.device, self.buffer = device, None
        ramp = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 1, 256)
        self.table = images_to_input(ramp, torch.device("cpu"))[0, :, 0].T.contiguous().numpy().reshape(256, 1, 3)

    def stage(self, deferred: list[tuple[int, np.ndarray]]) -> list[tuple[list[int], torch.Tensor]]:
        """The host's share of the device's resize: the full-size BGR images (row, image) sent to
        the device, those of one size as one (G, H, W, 3) tensor: one copy each into pinned memory
        and a non-blocking copy from there on a GPU; the same host copy on the CPU, where it
        stands for it (bench/run_speed.py counts it as host work)."""
        groups = []
        for hw, at in by_size([image.shape[:2] for _, image in deferred]):
            buf = torch.empty((len(at), *hw, 3), dtype=torch.uint8, pin_memory=self.device.type == "cuda")
            torch.stack([torch.from_numpy(deferred[i][1]) for i in at], out=buf)
            groups.append(([deferred[i][0] for i in at], buf.to(self.device, non_blocking=True)))
        return groups

    def __call__(self, small: np.ndarray, staged: list[tuple[list[int], torch.Tensor]] = ()) -> torch.Tensor:
        hw = small.shape[1:3]
        if self.device.type != "cpu":
            u8 = torch.from_numpy(small).to(self.device, non_blocking=True)
            for rows, images in staged:
                u8[torch.tensor(rows, device=self.device)] = area.resize(images, hw).flip(-1)   # BGR -> RGB
            return images_to_input(u8.permute(0, 3, 1, 2), self.device)
        for rows, images in staged:
            small[rows] = area.resize(images, hw).flip(-1).numpy()
        if self.buffer is None or self.buffer.shape[1:] != small.shape[1:] or len(self.buffer) < len(small):
            self.buffer = np.empty(small.shape, np.float32)
        out = self.buffer[:len(small)]      # the model is done with it when the next batch comes (CPU)
        cv2.LUT(small.reshape(-1, *small.shape[2:]), self.table, dst=out.reshape(-1, *small.shape[2:]))
        return torch.from_numpy(out).permute(0, 3, 1, 2)     # strides as images_to_input's (NHWC)
