"""Small copies of SALICON, MIT1003 and CAT2000 in the layouts their authors ship, with the real
file names and the real .mat structures (what hypersal.data.convert reads), made of generated
scenes: a handful of images each, written in a second.

SALICON's fixation files hold `image`, `resolution` ([H, W]) and `gaze`, one struct per observer
with `location` (mouse positions), `timestamp` and `fixations` (N x 2, [x, y], 1-based, as
MATLAB counts). CAT2000's FIXATIONLOCS files hold `fixLocs`, a binary H x W matrix. MIT1003's
fixation points are a binary JPEG (`_fixPts.jpg`), its map a JPEG (`_fixMap.jpg`).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from scipy.io import savemat

from hypersal.data.synth import scene

H, W = 48, 64


def _points(rng: np.random.Generator, n: int, h: int = H, w: int = W) -> np.ndarray:
    """n fixations as 0-based (x, y), clustered round one spot, as people look."""
    cx, cy = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4)
    xs = np.clip(rng.normal(cx, w / 8, n).round(), 0, w - 1).astype(int)
    ys = np.clip(rng.normal(cy, h / 8, n).round(), 0, h - 1).astype(int)
    return np.stack([xs, ys], 1)


def _density(points: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    m[points[:, 1], points[:, 0]] = 1
    m = cv2.GaussianBlur(m, (0, 0), 4)
    return (m / m.max() * 255).astype(np.uint8)


def _save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def salicon(root: Path, n: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """images/{train,val,test}, maps/{train,val}, fixations/{train,val}/*.mat. Returns the
    0-based fixation points of each labelled image, by stem."""
    rng = np.random.default_rng(seed)
    n = n or {"train": 8, "val": 4, "test": 2}
    truth = {}
    for split, count in n.items():
        for i in range(count):
            stem = f"COCO_{split}2014_{i + 1:012d}"
            _save(scene(rng, H, W), root / "images" / split / f"{stem}.jpg")
            if split == "test":
                continue
            subjects = [_points(rng, int(rng.integers(3, 7))) for _ in range(3)]
            gaze = np.zeros((len(subjects), 1), dtype=[("location", "O"), ("timestamp", "O"), ("fixations", "O")])
            for s, pts in enumerate(subjects):
                gaze[s, 0]["fixations"] = (pts + 1).astype(float)           # MATLAB's 1-based [x, y]
                gaze[s, 0]["location"] = (pts + 1).astype(float)
                gaze[s, 0]["timestamp"] = np.arange(len(pts), dtype=float)[:, None] * 20
            (root / "fixations" / split).mkdir(parents=True, exist_ok=True)
            savemat(root / "fixations" / split / f"{stem}.mat",
                    {"image": stem, "resolution": np.array([[H, W]], np.uint16), "gaze": gaze})
            every = np.concatenate(subjects)
            _save(_density(every), root / "maps" / split / f"{stem}.png")
            truth[stem] = every
    return truth


def mit1003(root: Path, n: int = 10, seed: int = 1) -> dict[str, np.ndarray]:
    """ALLSTIMULI/<stem>.jpeg, ALLFIXATIONMAPS/<stem>_fixMap.jpg and <stem>_fixPts.jpg."""
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n):
        stem = f"i{i:04d}_static_street_p10{i:05d}"
        _save(scene(rng, H, W), root / "ALLSTIMULI" / f"{stem}.jpeg")
        pts = _points(rng, 12)
        binary = np.zeros((H, W), np.uint8)
        binary[pts[:, 1], pts[:, 0]] = 255
        _save(binary, root / "ALLFIXATIONMAPS" / f"{stem}_fixPts.jpg")
        _save(_density(pts), root / "ALLFIXATIONMAPS" / f"{stem}_fixMap.jpg")
        truth[stem] = pts
    return truth


def cat2000(root: Path, categories=("Action", "Indoor"), per_category: int = 5, seed: int = 2) -> dict[str, np.ndarray]:
    """trainSet/{Stimuli,FIXATIONMAPS,FIXATIONLOCS}/<category>/NNN.*, testSet/Stimuli/<category>/."""
    rng = np.random.default_rng(seed)
    truth = {}
    for cat in categories:
        for i in range(1, per_category + 1):
            stem = f"{i:03d}"
            _save(scene(rng, H, W), root / "trainSet" / "Stimuli" / cat / f"{stem}.jpg")
            pts = _points(rng, 10)
            locs = np.zeros((H, W), np.float64)
            locs[pts[:, 1], pts[:, 0]] = 1
            (root / "trainSet" / "FIXATIONLOCS" / cat).mkdir(parents=True, exist_ok=True)
            savemat(root / "trainSet" / "FIXATIONLOCS" / cat / f"{stem}.mat", {"fixLocs": locs})
            _save(_density(pts), root / "trainSet" / "FIXATIONMAPS" / cat / f"{stem}.jpg")
            truth[f"{cat}_{stem}"] = pts
        _save(scene(rng, H, W), root / "testSet" / "Stimuli" / cat / "201.jpg")
    return truth


MAKERS = {"salicon": salicon, "mit1003": mit1003, "cat2000": cat2000}
