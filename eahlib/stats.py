"""Statistics for the analyses: bootstrap confidence intervals and the dense-to-sparse test.

Everything resamples *images* (or captions), the unit the benchmarks draw, with
``scipy.stats.bootstrap``; ratios such as CHAIRi resample numerator and denominator together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _interval(data: tuple[np.ndarray, ...], statistic: Callable[..., float], paired: bool, confidence: float,
              n_resamples: int, seed: int, vectorized: bool = False) -> Estimate:
    if any(len(d) < 2 for d in data):
        raise ValueError("A bootstrap interval needs at least 2 observations.")
    value = float(statistic(*data))
    if all(np.ptp(d) == 0 for d in data):  # no variation: the interval collapses
        return Estimate(value, value, value)
    result = stats.bootstrap(data, statistic, paired=paired, vectorized=vectorized, confidence_level=confidence,
                             n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    return Estimate(value, float(result.confidence_interval.low), float(result.confidence_interval.high))


def bootstrap_mean(values: ArrayLike, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of per-item values (e.g. 0/1 hallucination flags per caption) with a percentile CI."""
    return _interval((np.asarray(values, dtype=float),), np.mean, False, confidence, n_resamples, seed)


def bootstrap_ratio(numerators: ArrayLike, denominators: ArrayLike, confidence: float = 0.95,
                    n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """``sum(numerators) / sum(denominators)`` (e.g. CHAIRi) with items resampled as pairs."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError(f"numerators and denominators must pair up, got {num.shape} and {den.shape}.")
    return _interval((num, den), lambda n, d: n.sum() / max(d.sum(), 1e-12), True, confidence, n_resamples, seed)


def bootstrap_difference(treated: ArrayLike, control: ArrayLike, confidence: float = 0.95,
                         n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean paired difference ``treated - control`` over the same items, with a CI."""
    a, b = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired values must have the same shape, got {a.shape} and {b.shape}.")
    return _interval((a - b,), np.mean, False, confidence, n_resamples, seed)


Statistic = Callable[..., np.ndarray]
"""A statistic of per-item arrays, vectorised: ``statistic(*arrays, axis=-1)`` reduces the item axis."""


def ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray, axis: int = -1) -> np.ndarray:
    """``sum(numerators) / sum(denominators)`` over ``axis`` (0 where the denominator sums to 0), e.g. CHAIRi."""
    total = np.sum(denominators, axis=axis)
    return np.sum(numerators, axis=axis) / np.where(total == 0, 1, total)


def bootstrap_statistic(statistic: Statistic, *arrays: ArrayLike, confidence: float = 0.95,
                        n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Any statistic of per-item arrays (one value per item in each) with a CI over resampled items.

    Args:
        statistic: vectorised, ``statistic(*arrays, axis=-1)`` (see :data:`Statistic`).
        arrays: per-item values, each ``[items]``; an item's values are resampled together.
    """
    data = _paired_arrays(arrays)
    return _interval(data, statistic, True, confidence, n_resamples, seed, vectorized=True)


def bootstrap_paired_difference(statistic: Statistic, treated: Sequence[ArrayLike], control: Sequence[ArrayLike],
                                confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """``statistic(*treated) - statistic(*control)`` over the same items, both resampled with the same items.

    Two methods run on the same images: the per-method intervals overlap even when one method is better
    on almost every image, because they also carry the spread between images. Resampling the images
    jointly cancels that spread, so this interval separates methods that the per-method ones cannot.
    Works for ratio statistics too (CHAIRi: ``ratio_of_sums`` of hallucinated and total mentions).

    Args:
        statistic: vectorised, ``statistic(*arrays, axis=-1)``.
        treated, control: the same number of per-item arrays for each method, all ``[items]``, item ``i``
            being the same item (image, question) in every array.
    """
    if len(treated) != len(control):
        raise ValueError(f"treated and control need the same arrays, got {len(treated)} and {len(control)}.")
    data = _paired_arrays([*treated, *control])
    half = len(treated)

    def difference(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(*arrays[:half], axis=axis) - statistic(*arrays[half:], axis=axis)

    if all(np.array_equal(a, b) for a, b in zip(data[:half], data[half:])):  # identical outputs: no difference
        return Estimate(0.0, 0.0, 0.0)
    return _interval(data, difference, True, confidence, n_resamples, seed, vectorized=True)


def _paired_arrays(arrays: Sequence[ArrayLike]) -> tuple[np.ndarray, ...]:
    data = tuple(np.asarray(a, dtype=float) for a in arrays)
    if any(d.ndim != 1 for d in data) or len({d.shape for d in data}) != 1:
        raise ValueError(f"Per-item arrays must be 1-D and pair up, got shapes {[d.shape for d in data]}.")
    return data


def bootstrap_correlation(x: ArrayLike, y: ArrayLike, method: str = "spearman", confidence: float = 0.95,
                          n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Spearman (or Pearson) correlation of paired values with a CI over resampled pairs."""
    functions = {"spearman": lambda a, b: stats.spearmanr(a, b).statistic,
                 "pearson": lambda a, b: stats.pearsonr(a, b).statistic}
    if method not in functions:
        raise ValueError(f"method must be one of {sorted(functions)}, got {method!r}.")
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("A correlation needs variation in both variables; one of them is constant.")
    corr = functions[method]
    return _interval((a, b), lambda u, v: float(np.nan_to_num(corr(u, v))), True, confidence, n_resamples, seed)


@dataclass(frozen=True)
class DepthTrend:
    """Is sink density higher in shallow than in deep layers?

    Attributes:
        spearman: rank correlation of layer index and density over all (image, layer) pairs.
        shallow_mean, deep_mean: mean density of the shallow and the deep half of the layers.
        wilcoxon_statistic, p_value: one-sided Wilcoxon signed-rank test, per image, of
            shallow-half mean > deep-half mean.
    """

    spearman: float
    shallow_mean: float
    deep_mean: float
    wilcoxon_statistic: float
    p_value: float


def depth_trend(density: np.ndarray) -> DepthTrend:
    """Test the dense (shallow) → sparse (deep) transition.

    Args:
        density: ``[images, layers]`` mean sink density per head, per image and layer.

    Returns:
        The :class:`DepthTrend`.
    """
    density = np.asarray(density, dtype=float)
    if density.ndim != 2 or density.shape[1] < 2 or density.shape[0] < 2:
        raise ValueError(f"density must be [images >= 2, layers >= 2], got shape {density.shape}.")
    layers = np.broadcast_to(np.arange(density.shape[1]), density.shape)
    half = density.shape[1] // 2
    shallow, deep = density[:, :half].mean(1), density[:, half:].mean(1)
    spearman = float(np.nan_to_num(stats.spearmanr(layers.ravel(), density.ravel()).statistic))
    if np.all(shallow == deep):
        return DepthTrend(spearman, float(shallow.mean()), float(deep.mean()), 0.0, 1.0)
    test = stats.wilcoxon(shallow, deep, alternative="greater")
    return DepthTrend(spearman, float(shallow.mean()), float(deep.mean()), float(test.statistic), float(test.pvalue))
