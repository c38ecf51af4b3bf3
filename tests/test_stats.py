"""Bootstrap intervals and the depth-trend test on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from eahlib import stats


def test_bootstrap_mean_covers_the_mean() -> None:
    values = np.random.default_rng(0).binomial(1, 0.3, size=400)
    estimate = stats.bootstrap_mean(values)
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.low < estimate.value < estimate.high
    assert 0.05 < estimate.high - estimate.low < 0.15  # ~ 4 standard errors of a proportion
    assert stats.bootstrap_mean([1.0, 1.0, 1.0]) == stats.Estimate(1.0, 1.0, 1.0)


def test_bootstrap_ratio_is_a_ratio_of_sums() -> None:
    rng = np.random.default_rng(1)
    mentions = rng.integers(1, 8, size=300)
    hallucinated = rng.binomial(mentions, 0.2)
    estimate = stats.bootstrap_ratio(hallucinated, mentions)
    assert estimate.value == pytest.approx(hallucinated.sum() / mentions.sum())
    assert estimate.low < 0.2 < estimate.high
    with pytest.raises(ValueError, match="pair up"):
        stats.bootstrap_ratio([1, 2], [1, 2, 3])


def test_paired_difference_and_correlation() -> None:
    rng = np.random.default_rng(2)
    control = rng.normal(size=200)
    treated = control + 0.5 + rng.normal(scale=0.1, size=200)
    difference = stats.bootstrap_difference(treated, control)
    assert difference.low < 0.5 < difference.high and difference.low > 0.4
    correlation = stats.bootstrap_correlation(control, treated)
    assert correlation.value > 0.9 and correlation.low > 0.8
    with pytest.raises(ValueError, match="constant"):
        stats.bootstrap_correlation([1, 1, 1], [1, 2, 3])


def test_depth_trend_detects_dense_shallow_layers() -> None:
    rng = np.random.default_rng(3)
    dense_to_sparse = np.linspace(20, 2, 8)[None, :] + rng.normal(size=(30, 8))
    trend = stats.depth_trend(dense_to_sparse)
    assert trend.spearman < -0.8 and trend.shallow_mean > trend.deep_mean and trend.p_value < 1e-6
    flat = stats.depth_trend(rng.normal(10, 1, size=(30, 8)))
    assert flat.p_value > 0.01
    with pytest.raises(ValueError, match="images >= 2"):
        stats.depth_trend(np.ones(5))


def test_paired_difference_separates_what_per_method_intervals_cannot() -> None:
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(0, 1, size=120)  # images differ a lot; the treatment lowers every one a little
    control = rng.binomial(1, difficulty)
    treated = np.where(rng.uniform(size=120) < 0.25, 0, control)  # a quarter of the hallucinations removed
    a, b = stats.bootstrap_mean(treated), stats.bootstrap_mean(control)
    assert a.high > b.low  # the per-method intervals overlap...
    mean = lambda x, axis=-1: np.mean(x, axis=axis)
    paired = stats.bootstrap_paired_difference(mean, [treated], [control])
    assert paired.value == pytest.approx(treated.mean() - control.mean())
    assert paired.high < 0  # ...the paired one excludes 0
    assert paired.value == pytest.approx(stats.bootstrap_difference(treated, control).value)


def test_paired_ratio_difference_resamples_both_methods_jointly() -> None:
    rng = np.random.default_rng(5)
    mentions = rng.integers(1, 10, size=200)
    control = rng.binomial(mentions, 0.3)
    treated = np.maximum(control - 1, 0)
    paired = stats.bootstrap_paired_difference(stats.ratio_of_sums, [treated, mentions], [control, mentions])
    assert paired.value == pytest.approx(treated.sum() / mentions.sum() - control.sum() / mentions.sum())
    separate = stats.bootstrap_ratio(treated, mentions).high - stats.bootstrap_ratio(treated, mentions).low
    assert paired.high - paired.low < separate  # joint resampling cancels the spread between images
    assert stats.bootstrap_paired_difference(stats.ratio_of_sums, [control, mentions], [control, mentions]) == \
        stats.Estimate(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="pair up"):
        stats.bootstrap_paired_difference(stats.ratio_of_sums, [treated, mentions], [control[:-1], mentions[:-1]])
    assert stats.ratio_of_sums(np.array([0, 0]), np.array([0, 0])) == 0.0
