"""The study's statistics on known inputs: the macro mean weighs families equally, the
hierarchical bootstrap's interval collapses where nothing varies, covers the truth where
things do, narrows with more data, and pairs arms record by record."""
from __future__ import annotations

import numpy as np
import pytest

from hypersal.evaluation.stats import difference, interval, macro_mean, paired_interval


def nested(values_by_family: dict) -> dict:
    """{family: {task: {seed: [draws]}}} from {family: {task: [[draws of seed 0], [seed 1], ...]}}."""
    return {f: {t: dict(enumerate(seeds)) for t, seeds in tasks.items()} for f, tasks in values_by_family.items()}


def test_the_macro_mean_weighs_each_family_once():
    data = nested({"a": {"a1": [[0.0]], "a2": [[0.0]], "a3": [[0.0]]}, "b": {"b1": [[1.0]]}})
    assert macro_mean(data) == 0.5                    # not 0.25, the mean of the four tasks
    data = nested({"a": {"a1": [[0.2, 0.4], [0.6]]}})
    assert macro_mean(data) == pytest.approx(np.mean([0.3, 0.6]))   # draws within a seed first


def test_nothing_varies_nothing_to_resample():
    data = nested({f: {f"{f}{i}": [[0.7] * 5] * 3 for i in range(2)} for f in "abcd"})
    assert interval(data, n_boot=200) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))


def test_the_interval_covers_the_truth_and_narrows_with_more_families():
    rng = np.random.default_rng(0)

    def draw(n_families: int) -> dict:      # true macro mean 0.5; families, tasks, draws all vary
        fams = {}
        for f in range(n_families):
            mu_f = 0.5 + rng.normal(0, 0.1)
            fams[f] = {t: {s: list(mu_f + rng.normal(0, 0.05) + rng.normal(0, 0.02, 5)) for s in range(3)}
                       for t in range(2)}
        return fams
    hits, widths = 0, {12: [], 36: []}
    for n_families in (12, 36):
        for rep in range(16):
            est, lo, hi = interval(draw(n_families), n_boot=150, seed=rep)
            assert lo <= est <= hi
            hits += n_families == 12 and lo < 0.5 < hi
            widths[n_families].append(hi - lo)
    assert hits >= 13                                   # >= 80% of 16 intervals cover the truth
    assert np.mean(widths[36]) < 0.8 * np.mean(widths[12])   # 3x the families: narrower (1/sqrt(3) in theory)


def test_the_bootstrap_is_seeded():
    data = nested({"a": {"a1": [[0.1, 0.5], [0.3]]}, "b": {"b1": [[0.9], [0.2, 0.4]]}})
    assert interval(data, n_boot=300, seed=5) == interval(data, n_boot=300, seed=5)
    assert interval(data, n_boot=300, seed=5) != interval(data, n_boot=300, seed=6)


def test_paired_arms_compare_record_by_record():
    rng = np.random.default_rng(1)
    a = {f: {t: {s: list(rng.uniform(0.2, 0.8, 4)) for s in range(3)} for t in range(2)} for f in range(4)}
    b = {f: {t: {s: [v - 0.05 for v in a[f][t][s]] for s in a[f][t]} for t in a[f]} for f in a}
    # Unpaired, the arms' spreads overlap (each interval is ~0.1 wide); paired, the difference is
    # exactly 0.05 every time.
    assert paired_interval(a, b, n_boot=300) == (pytest.approx(0.05), pytest.approx(0.05), pytest.approx(0.05))
    _, lo_a, _ = interval(a, n_boot=300)
    _, _, hi_b = interval(b, n_boot=300)
    assert lo_a < hi_b
    b[0][0][0] = b[0][0][0][:3]
    with pytest.raises(ValueError, match="the arms have 4 and 3 draws at /0/0/0"):
        difference(a, b)
    del b[3]
    with pytest.raises(ValueError, match=r"not paired at the top: \['3'\] in one only"):
        difference(a, b)
