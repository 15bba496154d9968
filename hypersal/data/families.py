"""Task families: the classical saliency tasks made parametric, 8 members a family, so that a
held-out task can be a new family (leave one family out) or a new member of a seen one.

| family    | members (name: what)                                                              |
|-----------|-----------------------------------------------------------------------------------|
| frequency | frequency-0..2: spectral residual analysed at 32, 64, 128 px wide;                 |
|           | frequency-3..5: image signature at 32, 64, 128 px; frequency-6..7: phase spectrum   |
|           | (PFT) at 32 and 96 px                                                             |
| contrast  | contrast-0..5: centre-surround (difference of Gaussians) at centre/surround scales |
|           | (0.5%/4%, 1%/8%, 2%/16% of the side), intensity only (0, 2, 4) or with colour     |
|           | opponency (1, 3, 5); contrast-6..7: frequency-tuned with a 3 and a 9 px blur       |
| region    | region-0..7: boolean maps (surroundedness) with 2, 4, 8, 16 thresholds, blurred by |
|           | 2% or 6% of the side                                                              |
| prior     | prior-0..7: a Gaussian centre bias of width 15%, 25%, 35% of the side, centred or  |
|           | shifted, some mixed with 30% of an intensity-contrast image term                  |

Names are `<family>-<k>`; `FAMILIES` lists them and `python -m hypersal.data.families
--overlap N` prints how much the families overlap (CC between members' maps on N generated
scenes: within each family and across families).
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from hypersal.data.tasks import TASKS, _blur, _normalise, boolean_map


def _small_lab(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    sh = max(2, int(round(h * width / w / 2)) * 2)    # cv2.dct needs even sizes
    small = cv2.resize(img, (width, sh), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _back(m: np.ndarray, img: np.ndarray, blur: float) -> np.ndarray:
    h, w = img.shape[:2]
    return _normalise(cv2.resize(_blur(m.astype(np.float32), blur), (w, h), interpolation=cv2.INTER_LINEAR))


def spectral_residual(img: np.ndarray, width: int) -> np.ndarray:
    """Hou & Zhang 2007 on the intensity at `width` px: the log amplitude minus its local mean."""
    gray = _small_lab(img, width)[:, :, 0]
    f = np.fft.fft2(gray)
    log_amp, phase = np.log(np.abs(f) + 1e-8), np.angle(f)
    residual = log_amp - cv2.blur(log_amp.astype(np.float32), (3, 3))
    m = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    return _back(m, img, 0.04)


def signature(img: np.ndarray, width: int) -> np.ndarray:
    """Hou et al. 2012: the sign of the DCT, back-transformed and squared, per Lab channel."""
    lab = _small_lab(img, width)
    m = sum(cv2.idct(np.sign(cv2.dct(np.ascontiguousarray(lab[:, :, c])))) ** 2 for c in range(3))
    return _back(m, img, 0.05)


def phase_spectrum(img: np.ndarray, width: int) -> np.ndarray:
    """Guo et al. 2008 (PFT): the phase alone, back-transformed and squared."""
    gray = _small_lab(img, width)[:, :, 0]
    m = np.abs(np.fft.ifft2(np.exp(1j * np.angle(np.fft.fft2(gray))))) ** 2
    return _back(m, img, 0.04)


def dog(img: np.ndarray, centre: float, surround: float, colour: bool) -> np.ndarray:
    rgb = img.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    channels = [(r + g + b) / 3] + ([r - g, b - (r + g) / 2] if colour else [])
    side = max(img.shape[:2])
    total = np.zeros(img.shape[:2], np.float32)
    for ch in channels:
        c = cv2.GaussianBlur(ch, (0, 0), centre * side + 0.5)
        s = cv2.GaussianBlur(ch, (0, 0), surround * side)
        total += _normalise(np.abs(c - s))
    return _normalise(_blur(total, 0.02))


def frequency_tuned(img: np.ndarray, blur: int) -> np.ndarray:
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    blurred = cv2.GaussianBlur(lab, (blur, blur), 0)
    return _normalise(np.linalg.norm(blurred - lab.reshape(-1, 3).mean(0), axis=2))


def region(img: np.ndarray, thresholds: int, blur: float) -> np.ndarray:
    m = boolean_map(img, thresholds=thresholds)
    return _normalise(_blur(m, blur))


def prior(img: np.ndarray, width: float, dx: float, dy: float, image_weight: float) -> np.ndarray:
    h, w = img.shape[:2]
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2 - dy * h) / (width * h)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2 - dx * w) / (width * w)
    gauss = _normalise(np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)))
    if not image_weight:
        return gauss
    return _normalise((1 - image_weight) * gauss + image_weight * dog(img, 0.01, 0.08, False))


# family -> members, each (function, its parameters); member k is named "<family>-<k>".
SPECS: dict[str, list[tuple]] = {
    "frequency": [(spectral_residual, dict(width=w)) for w in (32, 64, 128)]
                 + [(signature, dict(width=w)) for w in (32, 64, 128)]
                 + [(phase_spectrum, dict(width=w)) for w in (32, 96)],
    "contrast": [(dog, dict(centre=c, surround=s, colour=colour))
                 for c, s in ((0.005, 0.04), (0.01, 0.08), (0.02, 0.16)) for colour in (False, True)]
                + [(frequency_tuned, dict(blur=b)) for b in (3, 9)],
    "region": [(region, dict(thresholds=t, blur=b)) for t in (2, 4, 8, 16) for b in (0.02, 0.06)],
    "prior": [(prior, dict(width=wd, dx=dx, dy=dy, image_weight=iw)) for wd, dx, dy, iw in (
        (0.15, 0, 0, 0), (0.25, 0, 0, 0), (0.35, 0, 0, 0), (0.25, 0.15, 0, 0), (0.25, -0.1, 0.1, 0),
        (0.15, 0, 0, 0.3), (0.25, 0, 0, 0.3), (0.35, 0.1, -0.1, 0.3))],
}
FAMILIES: dict[str, list[str]] = {fam: [f"{fam}-{k}" for k in range(len(m))] for fam, m in SPECS.items()}


def _register() -> None:
    for fam, members in SPECS.items():
        for k, (fn, params) in enumerate(members):
            if f"{fam}-{k}" not in TASKS:    # run as a script, this module is imported twice
                TASKS.register(f"{fam}-{k}")(lambda img, fn=fn, params=params: fn(img, **params))


_register()


def family_of(task: str) -> str | None:
    fam = task.rsplit("-", 1)[0]
    return fam if fam in FAMILIES and task in FAMILIES[fam] else None


def overlap(n: int = 60, size=(96, 128), seed: int = 0) -> dict:
    """CC between every two members' maps, averaged over n generated scenes: the mean within
    each family, across each pair of families, and the most similar pair across families."""
    from hypersal.data.synth import scene
    names = [t for members in FAMILIES.values() for t in members]
    rng = np.random.default_rng([seed, 11])
    total = np.zeros((len(names), len(names)))
    for _ in range(n):
        img = scene(rng, *size)
        maps = np.stack([TASKS.get(t)(img).ravel() for t in names])
        total += np.corrcoef(maps)
    cc = total / n
    fam = [family_of(t) for t in names]
    out = {"images": n, "within": {}, "across": {}}
    for a in FAMILIES:
        idx = [i for i, f in enumerate(fam) if f == a]
        block = cc[np.ix_(idx, idx)]
        out["within"][a] = float(block[~np.eye(len(idx), dtype=bool)].mean())
    best = (-2.0, "", "")
    for i, a in enumerate(FAMILIES):
        for b in list(FAMILIES)[i + 1:]:
            ia, ib = [k for k, f in enumerate(fam) if f == a], [k for k, f in enumerate(fam) if f == b]
            block = cc[np.ix_(ia, ib)]
            out["across"][f"{a}/{b}"] = float(block.mean())
            k = np.unravel_index(np.argmax(block), block.shape)
            if block[k] > best[0]:
                best = (float(block[k]), names[ia[k[0]]], names[ib[k[1]]])
    out["closest_across"] = {"cc": best[0], "tasks": [best[1], best[2]]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hypersal.data.families", description=__doc__.split("\n\n")[0])
    p.add_argument("--overlap", type=int, metavar="N", default=60, help="scenes to measure the overlap on")
    args = p.parse_args(argv)
    for fam, members in FAMILIES.items():
        print(f"{fam}: {', '.join(members)}")
    o = overlap(args.overlap)
    print(f"\nmean CC between members' maps ({o['images']} scenes, 96x128):")
    print("| family | within | " + " | ".join(FAMILIES) + " |")
    print("|---|---|" + "---|" * len(FAMILIES))
    for a in FAMILIES:
        cells = []
        for b in FAMILIES:
            key = f"{a}/{b}" if f"{a}/{b}" in o["across"] else f"{b}/{a}"
            cells.append("" if a == b else f"{o['across'][key]:.2f}")
        print(f"| {a} | {o['within'][a]:.2f} | " + " | ".join(cells) + " |")
    c = o["closest_across"]
    print(f"\nclosest pair across families: {c['tasks'][0]} and {c['tasks'][1]}, CC {c['cc']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
