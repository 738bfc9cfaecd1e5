"""Paired comparison of two models on the same cases: mean difference with a bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap"]


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of the per-case differences ``a - b`` with a percentile bootstrap interval.

    The cases are resampled with replacement, so the interval reflects how much the mean
    difference depends on which cases happened to be in the test set; a claim that ``a`` beats
    ``b`` holds when the whole interval is above zero.

    Args:
        a: per-case values of the first model (e.g. Dice of one class).
        b: the second model's values for the same cases, in the same order.
        resamples: bootstrap resamples.
        confidence: coverage of the interval.
        seed: seed of the resampling, so that a report is reproducible.

    Returns:
        ``{"n", "mean_diff", "low", "high"}``; pairs with a NaN on either side are left out (and
        not counted in ``n``); with no pair left every value but ``n`` is NaN.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_bootstrap needs two 1D sequences of equal length, got {x.shape} and {y.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = (x - y)[~(np.isnan(x) | np.isnan(y))]
    if diff.size == 0:
        return {"n": 0, "mean_diff": math.nan, "low": math.nan, "high": math.nan}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"n": int(diff.size), "mean_diff": float(diff.mean()), "low": float(low), "high": float(high)}
