"""OpenCV's INTER_AREA shrink of uint8 images, bit for bit, in torch: so a GPU can resize the run
stage's images to the training size with the pixels cv2.resize gives on the host.

For a scale that is not a whole number in both directions, OpenCV (modules/imgproc/src/resize.cpp,
`computeResizeAreaTab` and `ResizeArea_Invoker`, the generic path) sums each output pixel's
source pixels in float32: along a row, every source pixel the output cell covers times its
share of the cell (`alpha`, computed in double and rounded to float), in order from left to
right; then down the column, every such row sum times its share (`beta`), from top to bottom;
then rounds half to even into 0..255. Each product and each sum is rounded on its own (no fused
multiply-add): done here as the same products and sums, one torch operation each, every output
pixel's terms padded to one count with zero shares (x + 0 * s is x). Float32 products and sums
round the same on every IEEE device, so a GPU gives the CPU's bytes (tests/test_area.py checks the
CPU against cv2; bench/gpu.sh checks a GPU).

Whole-number scales in both directions (e.g. 512x512 to 256x256) take OpenCV's integer
`resizeAreaFast` path instead, and enlarging takes INTER_LINEAR: `plan` says None for them, and
the host resizes those images as before.
"""
from __future__ import annotations

import functools
import math

import torch

DBL_EPSILON = 2.220446049250313e-16


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def taps(ssize: int, dsize: int, scale: float) -> list[list[tuple[int, float]]]:
    """For each output index, its (source index, share) terms in OpenCV's order
    (computeResizeAreaTab, the shares rounded to float32)."""
    out = []
    for dx in range(dsize):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, ssize - fsx1)
        sx1, sx2 = math.ceil(fsx1), math.floor(fsx2)
        sx2 = min(sx2, ssize - 1)
        sx1 = min(sx1, sx2)
        terms = []
        if sx1 - fsx1 > 1e-3:
            terms.append((sx1 - 1, _f32((sx1 - fsx1) / cell)))
        terms += [(sx, _f32(1.0 / cell)) for sx in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3:
            terms.append((sx2, _f32(min(min(fsx2 - sx2, 1.0), cell) / cell)))
        out.append(terms)
    return out


def plan(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[float, float] | None:
    """OpenCV's (scale_y, scale_x) where cv2.resize(INTER_AREA) to dst_hw takes the generic float
    path this module copies; None where it does not (enlarging in either direction, the same
    size, or a whole-number scale in both)."""
    (H, W), (h, w) = src_hw, dst_hw
    if H < h or W < w or (H, W) == (h, w):
        return None
    scale_x, scale_y = 1.0 / (w / W), 1.0 / (h / H)      # as cv::resize: inv_scale = dsize / ssize
    fast = abs(scale_x - round(scale_x)) < DBL_EPSILON and abs(scale_y - round(scale_y)) < DBL_EPSILON
    return None if fast else (scale_y, scale_x)


@functools.lru_cache(maxsize=64)
def _tables(ssize: int, dsize: int, scale: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(source indices (T, dsize) int64, shares (T, dsize) float32): term t of every output index,
    padded with share 0 (and index 0) to the longest output's count of terms."""
    terms = taps(ssize, dsize, scale)
    longest = max(len(t) for t in terms)
    index = torch.zeros(longest, dsize, dtype=torch.int64)
    share = torch.zeros(longest, dsize, dtype=torch.float32)
    for d, row in enumerate(terms):
        for t, (s, a) in enumerate(row):
            index[t, d], share[t, d] = s, a
    return index.to(device), share.to(device)


def _weighted_sum(x: torch.Tensor, dim: int, index: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """sum_t x.index_select(dim, index[t]) * share[t], accumulated term by term from 0, each
    product and sum rounded alone (OpenCV's `buf[dxn] += S[sxn] * alpha`)."""
    shape = [1] * x.dim()
    shape[dim] = -1
    total = None
    for t in range(len(index)):
        term = x.index_select(dim, index[t]) * share[t].view(shape)
        total = term if total is None else total + term      # 0 + term is term: the first sum is exact
    return total


def resize(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, h, w, C), where `plan` gives a scale: cv2.resize(image,
    (w, h), interpolation=cv2.INTER_AREA)'s pixels, on the images' device."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"area.resize takes uint8 (N, H, W, C), not {images.dtype} {tuple(images.shape)}")
    scales = plan(tuple(images.shape[1:3]), hw)
    if scales is None:
        raise ValueError(f"area.resize: {tuple(images.shape[1:3])} to {tuple(hw)} is not OpenCV's generic area path")
    (H, W), (h, w), device = images.shape[1:3], hw, str(images.device)
    rows = _weighted_sum(images.float(), 2, *_tables(W, w, scales[1], device))       # along each row
    out = _weighted_sum(rows, 1, *_tables(H, h, scales[0], device))                   # down each column
    return out.round_().clamp_(0, 255).to(torch.uint8)       # cvRound: half to even, then saturate
