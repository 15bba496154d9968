"""Classical saliency models: the "tasks" hypersal distils (RGB uint8 (H, W, 3) -> float32
(H, W) in [0, 1]).

| name               | model                                                              |
|--------------------|--------------------------------------------------------------------|
| spectral_residual  | Hou & Zhang 2007, OpenCV's cv2.saliency implementation             |
| fine_grained       | Montabone & Soto 2010, OpenCV's cv2.saliency implementation        |
| frequency_tuned    | Achanta et al. 2009: distance to the mean colour in Lab, blurred   |
| image_signature    | Hou et al. 2012: sign of the DCT, back-transformed, squared        |
| center_bias        | a centred Gaussian (sigma a quarter of each side)                  |
| dog_contrast       | centre-surround (difference of Gaussians) on intensity and colour  |
|                    | opponency, Itti-style, single scale                                |
| boolean_map        | Zhang & Sclaroff 2013 (BMS): regions of thresholded colour channels |
|                    | that do not touch the border (surroundedness), averaged            |

Phase spectrum (PFT) is left out on purpose: it nearly duplicates spectral residual (mean CC
0.81 over our generated images).
"""
from __future__ import annotations

import cv2
import numpy as np

from hypersal.registry import Registry

TASKS: Registry = Registry("saliency task")


def _normalise(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float32)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _blur(m: np.ndarray, sigma_fraction: float) -> np.ndarray:
    sigma = max(1.0, sigma_fraction * max(m.shape[:2]))
    return cv2.GaussianBlur(m, (0, 0), sigma)


@TASKS.register("spectral_residual")
def spectral_residual(img: np.ndarray) -> np.ndarray:
    ok, m = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(img)
    return _normalise(m)


@TASKS.register("fine_grained")
def fine_grained(img: np.ndarray) -> np.ndarray:
    ok, m = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(img)
    return _normalise(_blur(m.astype(np.float32), 0.01))


@TASKS.register("frequency_tuned")
def frequency_tuned(img: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    blurred = cv2.GaussianBlur(lab, (5, 5), 0)
    return _normalise(np.linalg.norm(blurred - lab.reshape(-1, 3).mean(0), axis=2))


@TASKS.register("image_signature")
def image_signature(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    small_w = 64
    small_h = max(2, int(round(h * small_w / w / 2)) * 2)  # cv2.dct needs even sizes
    lab = cv2.cvtColor(cv2.resize(img, (small_w, small_h), interpolation=cv2.INTER_AREA)
                       .astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    out = np.zeros((small_h, small_w), np.float32)
    for c in range(3):
        recon = cv2.idct(np.sign(cv2.dct(np.ascontiguousarray(lab[:, :, c]))))
        out += recon * recon
    out = _blur(out, 0.05)
    return _normalise(cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR))


@TASKS.register("center_bias")
def center_bias(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / (0.25 * h)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / (0.25 * w)
    return _normalise(np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)))


@TASKS.register("dog_contrast")
def dog_contrast(img: np.ndarray) -> np.ndarray:
    rgb = img.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    channels = [(r + g + b) / 3, r - g, b - (r + g) / 2]   # intensity, red-green, blue-yellow
    side = max(img.shape[:2])
    total = np.zeros(img.shape[:2], np.float32)
    for ch in channels:
        centre = cv2.GaussianBlur(ch, (0, 0), 0.01 * side + 0.5)
        surround = cv2.GaussianBlur(ch, (0, 0), 0.08 * side)
        total += _normalise(np.abs(centre - surround))
    return _normalise(_blur(total, 0.02))


@TASKS.register("boolean_map")
def boolean_map(img: np.ndarray, thresholds: int = 8) -> np.ndarray:
    h, w = img.shape[:2]
    scale = 120.0 / max(h, w)                      # BMS works on a small image
    small = cv2.resize(img, (max(8, int(w * scale)), max(8, int(h * scale))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2Lab)
    attention = np.zeros(small.shape[:2], np.float32)
    for c in range(3):
        channel = lab[:, :, c]
        for t in np.linspace(channel.min(), channel.max(), thresholds + 2)[1:-1]:
            for boolean in (channel > t, channel <= t):
                n, labels = cv2.connectedComponents(boolean.astype(np.uint8), connectivity=4)
                border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
                surrounded = boolean & ~np.isin(labels, border)
                attention += surrounded
    attention = cv2.dilate(attention, np.ones((3, 3), np.uint8))
    return _normalise(cv2.resize(_blur(attention, 0.03), (w, h), interpolation=cv2.INTER_LINEAR))


def compute(name: str, img: np.ndarray) -> np.ndarray:
    return TASKS.get(name)(img)


# The parametric families (frequency-0 ... prior-7) register themselves in TASKS.
from hypersal.data import families  # noqa: E402,F401
