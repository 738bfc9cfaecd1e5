import math

import numpy as np
import pytest

from emclip.reports import paired_bootstrap


def test_interval_contains_the_mean_and_excludes_zero_for_a_clear_gain():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 0.9, size=60)
    a = b + 0.05 + rng.normal(0, 0.01, size=60)
    out = paired_bootstrap(a, b, resamples=2000)
    assert out["n"] == 60
    assert out["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    assert 0 < out["low"] < out["mean_diff"] < out["high"]


def test_noise_gives_an_interval_around_zero_and_nan_pairs_are_left_out():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.5, 0.9, size=80)
    a = b + rng.normal(0, 0.05, size=80)
    a[3], b[7] = math.nan, math.nan
    out = paired_bootstrap(a, b, resamples=2000)
    assert out["n"] == 78
    assert out["low"] < 0 < out["high"]
    assert paired_bootstrap(a, b, resamples=2000) == out  # seeded: reproducible


def test_rejects_unpaired_input():
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap([0.1, 0.2], [0.1])
    assert math.isnan(paired_bootstrap([math.nan], [0.3])["mean_diff"])
