"""hypersal.metrics against an independent implementation: pysaliency (the Tuebingen
benchmark's code). Where the two benchmarks' definitions differ, the test states how."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

# pysaliency 0.2.22 calls np.trapz, which numpy 2.4 removed; np.trapezoid is the same function.
if not hasattr(np, "trapz"):
    np.trapz = np.trapezoid
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pysaliency.metrics import CC, MIT_KLDiv, NSS, SIM
    from pysaliency.roc import general_roc

from hypersal.evaluation import metrics as M

CASES = range(12)


def case(seed: int, h: int = 48, w: int = 64):
    """A blob-shaped reference map, a noisy prediction, fixations drawn from the reference."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-(((yy - rng.integers(10, h - 10)) / 8.0) ** 2 + ((xx - rng.integers(10, w - 10)) / 10.0) ** 2))
    p = g + 0.4 * rng.random((h, w))
    fix = (rng.random((h, w)) < 0.1 * g).astype(float)
    fix[np.unravel_index(np.argmax(g), g.shape)] = 1
    other = (rng.random((h, w)) < 0.05).astype(float)
    return p, g, fix, other


@pytest.mark.parametrize("seed", CASES)
def test_cc_and_kld_equal_the_reference(seed):
    p, g, _, _ = case(seed)
    assert M.cc(p, g) == pytest.approx(CC(p, g), abs=1e-12)
    assert M.kld(p, g) == pytest.approx(MIT_KLDiv(p, g), abs=1e-12)


@pytest.mark.parametrize("seed", CASES)
def test_sim_equals_the_reference_on_maps_starting_at_zero(seed):
    # The MIT code min-max normalises before summing to 1; pysaliency only shifts negative maps.
    # The two agree when each map's minimum is 0.
    p, g, _, _ = case(seed)
    p, g = p - p.min(), g - g.min()
    assert M.sim(p, g) == pytest.approx(SIM(p, g), abs=1e-12)


@pytest.mark.parametrize("seed", CASES)
def test_nss_equals_the_reference_up_to_the_std_convention(seed):
    # MIT's MATLAB std divides by N-1, pysaliency's numpy std by N: a factor sqrt((N-1)/N).
    p, _, fix, _ = case(seed)
    ys, xs = np.nonzero(fix)
    n = p.size
    assert M.nss(p, fix) == pytest.approx(NSS(p, xs, ys).mean() * np.sqrt((n - 1) / n), abs=1e-12)


@pytest.mark.parametrize("seed", CASES)
def test_auc_judd_equals_the_reference(seed):
    p, _, fix, _ = case(seed)
    reference = general_roc(p[fix > 0].astype(float), p[fix == 0].astype(float), judd=1)[0]
    assert M.auc_judd(p, fix, jitter=False) == pytest.approx(reference, abs=1e-12)


def test_borji_and_shuffled_auc_approximate_the_exact_roc_area():
    # The MIT versions draw 100 splits of negatives and threshold at 0, 0.1, ...; pysaliency's
    # general_roc is the exact area with all thresholds, the value both approximate.
    borji, shuffled = [], []
    for seed in CASES:
        p, _, fix, other = case(seed)
        pos = p[fix > 0].astype(float)
        borji.append(M.auc_borji(p, fix, seed=seed) - general_roc(pos, p.flatten().astype(float))[0])
        shuffled.append(M.sauc(p, fix, other, seed=seed) - general_roc(pos, p[other > 0].astype(float))[0])
    assert abs(np.mean(borji)) < 0.01 and np.max(np.abs(borji)) < 0.03
    assert abs(np.mean(shuffled)) < 0.01 and np.max(np.abs(shuffled)) < 0.04
