"""Saliency metrics, following the MIT / Tuebingen saliency benchmark code (Bylinskii et al.,
the MATLAB `code_forMetrics`) to the letter, plus the salient-object metrics of QUICKSAL.

Every function takes a prediction and a reference as numpy arrays or torch tensors, one map
(H, W) or a batch (B, H, W), and returns a float (one map) or a tensor (B,). The prediction is
resized to the reference's size first (bilinear; MATLAB's bicubic imresize is not reproduced
bit for bit). Fixations are binary maps (nonzero = fixated).

| metric    | against       | definition (MIT code)                                             |
|-----------|---------------|-------------------------------------------------------------------|
| cc        | saliency map  | Pearson correlation of the two z-scored maps                      |
| kld       | saliency map  | sum(g * log(eps + g / (p + eps))), p and g summed to 1, eps 2.2204e-16 |
| sim       | saliency map  | sum(min(p, g)), each min-max normalised then summed to 1          |
| nss       | fixations     | mean of the z-scored prediction (std with N-1) at fixated pixels  |
| auc_judd  | fixations     | thresholds at the fixated values; tiny seeded jitter breaks ties  |
| auc_borji | fixations     | 100 splits of uniformly drawn pixels as negatives, thresholds 0:0.1:max |
| sauc      | fixations     | as auc_borji, negatives drawn from other images' fixations        |
| info_gain | fixations     | mean(log2(eps + p) - log2(eps + b)) at fixations, b a baseline    |
| mae       | object mask   | mean |p - g|, p min-max normalised, g binarised at 0.5 (QUICKSAL)  |
| fbeta     | object mask   | max over 256 thresholds of F (beta^2 = 0.3)                        |

Random choices (jitter, splits) come from a generator seeded by `seed`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPS = 2.2204e-16          # MATLAB's eps, as in the benchmark code
BETA2 = 0.3


def _as_batch(x) -> tuple[torch.Tensor, bool]:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    single = t.dim() == 2
    return (t.unsqueeze(0) if single else t), single


def _resize(pred: torch.Tensor, size) -> torch.Tensor:
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False).squeeze(1)


def _prepare(pred, ref) -> tuple[torch.Tensor, torch.Tensor, bool]:
    p, single = _as_batch(pred)
    g, _ = _as_batch(ref)
    p = _resize(p.to(g.device), g.shape[-2:])
    return p.flatten(1), g.flatten(1), single


def _out(values: torch.Tensor, single: bool):
    return float(values[0]) if single else values


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Each row to [0, 1]. A constant row (where the MIT code divides 0 by 0) becomes all ones:
    a uniform distribution once summed to 1, rather than NaN."""
    lo, hi = x.min(1, keepdim=True).values, x.max(1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(EPS), torch.ones_like(x))


def _zscore(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(EPS)   # std: N-1, as MATLAB


def cc(pred, target):
    p, g, single = _prepare(pred, target)
    p, g = _zscore(p), _zscore(g)
    r = (p * g).sum(1) / torch.sqrt((p * p).sum(1) * (g * g).sum(1)).clamp_min(EPS)
    return _out(r, single)


def kld(pred, target):
    p, g, single = _prepare(pred, target)
    p = p / p.sum(1, keepdim=True).clamp_min(EPS)
    g = g / g.sum(1, keepdim=True).clamp_min(EPS)
    return _out((g * torch.log(EPS + g / (p + EPS))).sum(1), single)


def sim(pred, target):
    p, g, single = _prepare(pred, target)
    p, g = _minmax(p), _minmax(g)
    p = p / p.sum(1, keepdim=True).clamp_min(EPS)
    g = g / g.sum(1, keepdim=True).clamp_min(EPS)
    return _out(torch.minimum(p, g).sum(1), single)


def nss(pred, fixations):
    p, f, single = _prepare(pred, fixations)
    z = _zscore(p)
    mask = f > 0
    return _out((z * mask).sum(1) / mask.sum(1).clamp_min(1), single)


def _object(pred, mask) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Salient-object convention: the prediction to [0, 1] (a constant one clipped, not
    stretched), the mask binarised at half its range."""
    p, g, single = _prepare(pred, mask)
    scale = 255.0 if g.max() > 1 else 1.0
    g = g / scale > 0.5
    lo, hi = p.min(1, keepdim=True).values, p.max(1, keepdim=True).values
    p = torch.where(hi > lo, (p - lo) / (hi - lo).clamp_min(EPS), p.clamp(0, 1))
    return p, g, single


def mae(pred, mask):
    p, g, single = _object(pred, mask)
    return _out((p - g.double()).abs().mean(1), single)


def fbeta(pred, mask):
    p, g, single = _object(pred, mask)
    # Thresholds k/255, k = 0..255: p >= k/255 exactly when floor(255 p) >= k, so histograms of
    # floor(255 p) over the positive and the negative pixels give every threshold's counts.
    bins = (p * 255).floor().long().clamp(0, 255)
    offset = torch.arange(p.shape[0], device=p.device).unsqueeze(1) * 256
    pos = torch.bincount((bins + offset)[g], minlength=256 * p.shape[0]).view(-1, 256)
    allb = torch.bincount((bins + offset).flatten(), minlength=256 * p.shape[0]).view(-1, 256)
    tp = pos.flip(1).cumsum(1).flip(1).double()                               # (B, 256): p >= k/255
    predicted = allb.flip(1).cumsum(1).flip(1).double()
    precision = tp / predicted.clamp_min(1)
    recall = tp / g.sum(1, keepdim=True).clamp_min(1)
    f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall).clamp_min(EPS)
    return _out(f.max(1).values, single)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _per_image(fn: Callable, p: torch.Tensor, f: torch.Tensor, single: bool, *args):
    return _out(torch.tensor([fn(p[i], f[i], *args) for i in range(p.shape[0])], dtype=torch.float64), single)


def _auc_judd_one(s: torch.Tensor, f: torch.Tensor, gen: torch.Generator, jitter: bool) -> float:
    s = s.cpu()
    f = f.cpu() > 0
    if jitter:  # the MIT code adds rand/1e7 to break ties between equal values
        s = s + torch.rand(s.shape, generator=gen, dtype=s.dtype) / 1e7
    s = (s - s.min()) / max(float(s.max() - s.min()), EPS)
    sth = torch.sort(s[f], descending=True).values
    n_fix, n_pix = sth.numel(), s.numel()
    if n_fix == 0:
        return float("nan")
    ordered = torch.sort(s).values
    above = n_pix - torch.searchsorted(ordered, sth, side="left")          # count of s >= thresh
    i = torch.arange(1, n_fix + 1, dtype=s.dtype)
    tp = torch.cat([torch.zeros(1, dtype=s.dtype), i / n_fix, torch.ones(1, dtype=s.dtype)])
    fp = torch.cat([torch.zeros(1, dtype=s.dtype), (above - i) / max(n_pix - n_fix, 1),
                    torch.ones(1, dtype=s.dtype)])
    return float(torch.trapezoid(tp, fp))


def auc_judd(pred, fixations, seed: int = 0, jitter: bool = True):
    p, f, single = _prepare(pred, fixations)
    gen = _generator(seed)
    return _per_image(_auc_judd_one, p, f, single, gen, jitter)


def _split_auc(sth: torch.Tensor, negatives: torch.Tensor, step: float) -> torch.Tensor:
    """AUC of every split (columns of `negatives`) with thresholds fliplr(0:step:max)."""
    n_fix = sth.numel()
    aucs = []
    for k in range(negatives.shape[1]):
        cur = negatives[:, k]
        top = float(torch.cat([sth, cur]).max())
        thresholds = torch.arange(int(np.floor(top / step + 1e-10)), -1, -1, dtype=sth.dtype) * step
        tp = (sth.unsqueeze(0) >= thresholds.unsqueeze(1)).sum(1) / n_fix
        fp = (cur.unsqueeze(0) >= thresholds.unsqueeze(1)).sum(1) / cur.numel()
        zero, one = torch.zeros(1, dtype=sth.dtype), torch.ones(1, dtype=sth.dtype)
        aucs.append(torch.trapezoid(torch.cat([zero, tp, one]), torch.cat([zero, fp, one])))
    return torch.stack(aucs)


def _auc_borji_one(s, f, gen, splits: int, step: float) -> float:
    s, f = _minmax(s.cpu().unsqueeze(0))[0], f.cpu() > 0
    sth = s[f]
    if sth.numel() == 0:
        return float("nan")
    idx = torch.randint(0, s.numel(), (sth.numel(), splits), generator=gen)
    return float(_split_auc(sth, s[idx], step).mean())


def auc_borji(pred, fixations, seed: int = 0, splits: int = 100, step: float = 0.1):
    p, f, single = _prepare(pred, fixations)
    return _per_image(_auc_borji_one, p, f, single, _generator(seed), splits, step)


def sauc(pred, fixations, other_fixations, seed: int = 0, splits: int = 100, step: float = 0.1):
    """Shuffled AUC: `other_fixations` is a binary map of other images' fixations (their union),
    of the same size as `fixations`."""
    p, f, single = _prepare(pred, fixations)
    o, _ = _as_batch(other_fixations)
    o = o.flatten(1)
    gen = _generator(seed)
    values = []
    for i in range(p.shape[0]):
        s = _minmax(p[i].cpu().unsqueeze(0))[0]
        sth = s[f[i].cpu() > 0]
        others = torch.nonzero(o[i if o.shape[0] > 1 else 0].cpu() > 0).flatten()
        n = min(sth.numel(), others.numel())
        if sth.numel() == 0 or n == 0:
            values.append(float("nan"))
            continue
        cols = [s[others[torch.randperm(others.numel(), generator=gen)[:n]]] for _ in range(splits)]
        values.append(float(_split_auc(sth, torch.stack(cols, 1), step).mean()))
    return _out(torch.tensor(values, dtype=torch.float64), single)


def info_gain(pred, fixations, baseline):
    """Information gain over a baseline map (e.g. a centre bias), in bits per fixation."""
    p, f, single = _prepare(pred, fixations)
    b, _, _ = _prepare(baseline, fixations)
    p, b = _minmax(p), _minmax(b)
    p = p / p.sum(1, keepdim=True).clamp_min(EPS)
    b = b / b.sum(1, keepdim=True).clamp_min(EPS)
    mask = f > 0
    gain = (torch.log2(EPS + p) - torch.log2(EPS + b)) * mask
    return _out(gain.sum(1) / mask.sum(1).clamp_min(1), single)


# Metric name -> (function, what it compares against: "map", "fixations", "mask")
METRICS: dict[str, tuple[Callable, str]] = {
    "cc": (cc, "map"), "kld": (kld, "map"), "sim": (sim, "map"),
    "nss": (nss, "fixations"), "auc_judd": (auc_judd, "fixations"), "auc_borji": (auc_borji, "fixations"),
    "sauc": (sauc, "fixations"), "info_gain": (info_gain, "fixations"),
    "mae": (mae, "map"), "fbeta": (fbeta, "map"),
}
HIGHER_IS_BETTER = {"cc": True, "kld": False, "sim": True, "nss": True, "auc_judd": True,
                    "auc_borji": True, "sauc": True, "info_gain": True, "mae": False, "fbeta": True}
