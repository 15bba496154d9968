"""Means with 95% intervals for nested results: family > task > model seed > draw of the k
pairs, the few-shot study's design. The estimate is the macro mean (draws averaged within a
seed, seeds within a task, tasks within a family, then families: a family with more tasks
does not weigh more); the interval is a hierarchical bootstrap that resamples, with
replacement, the families, then the tasks within each, the seeds within each task and the
draws within each seed.

With few families (the study has 4) a percentile bootstrap over them is too narrow: it cannot
see more between-family spread than the 4 show. tests/test_stats.py checks >= 80% coverage with
12 families; read 4-family intervals as optimistic.

Paired comparisons (arm A against arm B) bootstrap the differences record by record, so both
arms see the same resampled families, tasks, seeds and draws:

    nested = {"prior": {"prior-3": {0: [0.61, 0.58], 1: [0.63]}}, ...}
    macro_mean(nested)                    -> 0.60
    interval(nested)                      -> (estimate, low, high)
    paired_interval(a, b)                 -> the same for a - b (records matched by their keys)
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

Nested = Mapping[Any, Any]     # family -> task -> seed -> list of draws (any depth; leaves: lists)


def macro_mean(node) -> float:
    """The mean of the means of the children, down to the leaves' values."""
    if isinstance(node, Mapping):
        if not node:
            raise ValueError("an empty level: every family, task and seed needs a value")
        return float(np.mean([macro_mean(child) for child in node.values()]))
    values = np.asarray(node, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("an empty list of draws")
    return float(values.mean())


def _replicates(node, rng: np.random.Generator, n: int) -> np.ndarray:
    """n independent bootstrap replicates of the node's macro mean: at every level the children
    are drawn with replacement, and each draw of a child is a replicate of its own. Built level by
    level for all n at once (numpy), not replicate by replicate: the same distribution as drawing
    one replicate at a time, ~100x faster for the study's 2,000."""
    if isinstance(node, Mapping):
        children = list(node.values())
        picks = rng.integers(0, len(children), (n, len(children)))
        means = np.empty(picks.shape)
        for j, child in enumerate(children):
            where = picks == j
            if where.any():
                means[where] = _replicates(child, rng, int(where.sum()))
        return means.mean(axis=1)
    values = np.asarray(node, dtype=float).ravel()
    return values[rng.integers(0, values.size, (n, values.size))].mean(axis=1)


def interval(nested: Nested, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(macro mean, lower, upper) of the hierarchical bootstrap's percentile interval."""
    reps = _replicates(nested, np.random.default_rng(seed), n_boot)
    tail = (1 - level) / 2 * 100
    return macro_mean(nested), float(np.percentile(reps, tail)), float(np.percentile(reps, 100 - tail))


def difference(a: Nested, b: Nested, where: str = "") -> Nested:
    """a - b record by record; both must have the same families, tasks, seeds and draws."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise ValueError(f"the arms differ in depth at {where or 'the top'}")
    if isinstance(a, Mapping):
        if set(a) != set(b):
            raise ValueError(f"the arms are not paired at {where or 'the top'}: "
                             f"{sorted(map(str, set(a) ^ set(b)))} in one only")
        return {k: difference(a[k], b[k], f"{where}/{k}") for k in a}
    va, vb = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if va.shape != vb.shape:
        raise ValueError(f"the arms have {va.size} and {vb.size} draws at {where}")
    return list(va - vb)


def paired_interval(a: Nested, b: Nested, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """(macro mean of a - b, lower, upper): the paired difference's interval."""
    return interval(difference(a, b), n_boot, seed, level)
