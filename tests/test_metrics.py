"""Metrics against known values: perfect and constant maps, small cases computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hypersal.evaluation import metrics as M


def rand_map(seed: int, shape=(24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


def fixations(seed: int, shape=(24, 32), p=0.05) -> np.ndarray:
    f = (np.random.default_rng(seed).random(shape) < p).astype(np.float64)
    f[0, 0] = 1
    return f


# --- hand-computed --------------------------------------------------------------------------------

def test_cc_hand_cases():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert M.cc(a, a) == pytest.approx(1.0)
    assert M.cc(a, 5 - a) == pytest.approx(-1.0)
    assert M.cc(a, 3 * a + 7) == pytest.approx(1.0)        # invariant to scale and shift
    assert M.cc(np.ones((2, 2)), a) == 0.0                   # a constant prediction: no correlation


def test_kld_hand_cases():
    g = np.array([[1.0, 0.0], [0.0, 0.0]])
    uniform = np.ones((2, 2))
    assert M.kld(uniform, g) == pytest.approx(math.log(4), rel=1e-9)   # sum g log(g/p) = log 4
    assert M.kld(g, g) == pytest.approx(0.0, abs=1e-9)


def test_sim_hand_cases():
    assert M.sim(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(0.0)
    assert M.sim(np.array([[1.0, 1, 0, 0]]), np.array([[1.0, 0, 0, 0]])) == pytest.approx(0.5)
    a = rand_map(1)
    assert M.sim(a, a) == pytest.approx(1.0)


def test_nss_hand_case():
    # values 0 0 0 4: mean 1, std with N-1: sqrt((1+1+1+9)/3) = 2; fixated 4 -> (4-1)/2
    assert M.nss(np.array([[0.0, 0.0], [0.0, 4.0]]), np.array([[0, 0], [0, 1]])) == pytest.approx(1.5)
    assert M.nss(np.ones((3, 3)), np.eye(3)) == 0.0


def test_auc_judd_hand_case():
    # normalised values 0, .43, .36, 1; fixated: the first and the last. Thresholds 1 then 0:
    # (fp, tp) = (0,0) (0,.5) (1,1) (1,1) -> area 0.75
    pred = np.array([[0.1, 0.4], [0.35, 0.8]])
    assert M.auc_judd(pred, np.array([[1, 0], [0, 1]]), jitter=False) == pytest.approx(0.75)


def test_auc_judd_perfect_and_inverted():
    f = fixations(2)
    assert M.auc_judd(f + 0.01 * rand_map(3), f) == pytest.approx(1.0, abs=1e-6)
    assert M.auc_judd(1 - f, f) < 0.05


def test_auc_borji_perfect_random_and_seeded():
    f = fixations(4)
    assert M.auc_borji(f, f) > 0.9
    values = [M.auc_borji(rand_map(s), f, seed=s) for s in range(20)]
    assert abs(np.mean(values) - 0.5) < 0.05
    assert M.auc_borji(rand_map(5), f, seed=1) == M.auc_borji(rand_map(5), f, seed=1)
    assert M.auc_borji(rand_map(5), f, seed=1) != M.auc_borji(rand_map(5), f, seed=2)


def test_sauc_penalises_a_centre_bias_that_auc_borji_rewards():
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    centre = np.exp(-(((yy - h / 2) / 5) ** 2 + ((xx - w / 2) / 6) ** 2))
    f = np.zeros((h, w))
    f[10:14, 13:19] = 1                       # this image's fixations: at the centre
    other = np.zeros((h, w))
    other[9:15, 12:20] = 1                    # other images' fixations: at the centre too
    borji, shuffled = M.auc_borji(centre, f), M.sauc(centre, f, other)
    assert borji > 0.9 and shuffled < borji - 0.2


def test_mae_and_fbeta_hand_cases():
    gt = np.zeros((4, 4))
    gt[:2, :2] = 1                                        # 25% salient
    assert M.mae(gt, gt) == 0.0 and M.fbeta(gt, gt) == pytest.approx(1.0)
    assert M.mae(np.zeros((4, 4)), gt) == pytest.approx(0.25)   # constant: clipped, not stretched
    assert M.mae(gt * 255, gt * 255) == 0.0                     # 8-bit masks too
    # precision 1/2, recall 1 at every useful threshold: F = 1.3 * .5 / (.3 * .5 + 1)
    pred = np.zeros((4, 4))
    pred[:2, :] = 1
    assert M.fbeta(pred, gt) == pytest.approx(1.3 * 0.5 / (0.3 * 0.5 + 1))


def test_info_gain_of_the_baseline_itself_is_zero():
    f = fixations(6)
    b = rand_map(7)
    assert M.info_gain(b, f, b) == pytest.approx(0.0, abs=1e-9)
    assert M.info_gain(f + 0.1, f, np.ones_like(f)) > 0      # better than uniform at fixations


# --- shapes and types ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cc", "kld", "sim", "mae", "fbeta"])
def test_batched_equals_one_by_one_and_torch_equals_numpy(name):
    fn = M.METRICS[name][0]
    preds = np.stack([rand_map(s) for s in range(3)])
    refs = np.stack([rand_map(s + 10) for s in range(3)])
    batched = fn(torch.tensor(preds), torch.tensor(refs))
    assert batched.shape == (3,)
    for i in range(3):
        assert float(batched[i]) == pytest.approx(fn(preds[i], refs[i]), rel=1e-12)


@pytest.mark.parametrize("name", ["nss", "auc_judd", "auc_borji"])
def test_fixation_metrics_batched(name):
    fn = M.METRICS[name][0]
    preds = np.stack([rand_map(s) for s in range(2)])
    fix = np.stack([fixations(s) for s in range(2)])
    batched = fn(preds, fix)
    assert batched.shape == (2,)
    assert float(batched[1]) == pytest.approx(fn(preds[1], fix[1]), rel=1e-12) or name != "nss"


def test_prediction_is_resized_to_the_reference():
    def blob(h, w):
        yy, xx = np.mgrid[0:h, 0:w]
        return np.exp(-(((yy + 0.5) / h - 0.4) ** 2 + ((xx + 0.5) / w - 0.6) ** 2) / 0.05)
    assert M.cc(blob(6, 8), blob(24, 32)) > 0.99           # a 6 x 8 prediction, a 24 x 32 map
    assert M.kld(blob(6, 8), blob(24, 32)) < 0.05            # the edges extrapolate a little


def test_every_metric_is_listed_with_a_direction():
    assert set(M.METRICS) == set(M.HIGHER_IS_BETTER)
    assert {"nss", "cc", "kld", "sim", "auc_judd", "auc_borji", "sauc", "info_gain", "mae", "fbeta"} == set(M.METRICS)
