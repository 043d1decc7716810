"""Statistics over per-user values: bootstrap confidence intervals, paired tests, Holm correction.

The sampling unit is the user: a recommender is evaluated on a sample of users, so every interval
and test resamples users (all of a user's values move together).

* :func:`bootstrap_means` / :func:`bootstrap_ci`: the percentile bootstrap of a mean over users,
  ``B`` resamples drawn as multinomial counts (one ``(B, n) @ (n, m)`` product for ``m`` metric
  columns at once). :func:`ratio_bootstrap_ci` does the same for a ratio of per-user sums (MAE
  over pairs, clustered by user).
* :func:`paired_bootstrap_p`: two-sided p-value of a zero mean paired difference
  ``d_u = a_u - b_u``: the differences are centred (``d - mean(d)``, so the null holds), resampled,
  and ``p = (1 + #{|mean(d*)| >= |mean(d)|}) / (B + 1)``. Identical inputs give ``p = 1``.
* :func:`wilcoxon_p`: the Wilcoxon signed-rank test of scipy (two-sided, zero differences
  dropped, as scipy's default ``zero_method="wilcox"``); ``p = 1`` when every difference is zero.
* :func:`holm`: Holm's step-down adjustment of a family of p-values (controls the family-wise
  error rate): sort ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.

Everything is seeded: the same inputs and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` multinomial counts: how often each user is drawn in each resample."""
    if n < 1:
        raise ValueError("bootstrap needs at least one user")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def bootstrap_means(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over users.

    Args:
        values: ``(n_users,)`` or ``(n_users, n_columns)`` per-user values.
        n_resamples: bootstrap resamples ``B``.
        seed: seeds the resampling.

    Returns:
        ``(B,)`` or ``(B, n_columns)`` resampled means.
    """
    x = np.asarray(values, dtype=np.float64)
    w = resample_weights(len(x), n_resamples, seed)
    return (w @ x) / len(x)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``level`` percentile interval of ``samples`` along axis 0."""
    _check_level(level)
    tail = (1.0 - level) / 2.0
    return np.quantile(samples, tail, axis=0), np.quantile(samples, 1.0 - tail, axis=0)


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over users.

    Args:
        values: ``(n_users,)`` or ``(n_users, n_columns)`` per-user values.
        level: coverage of the interval, in (0, 1).
        n_resamples: bootstrap resamples.
        seed: seeds the resampling.

    Returns:
        ``(low, high)``, each a scalar array or one entry per column.
    """
    _check_level(level)
    x = np.asarray(values, dtype=np.float64)
    return percentile_interval(bootstrap_means(x, n_resamples, seed), level)


def ratio_bootstrap_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    level: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of ``sum(num) / sum(den)``, resampling users (clustered pairs).

    For MAE a user's numerator is their summed absolute error and the denominator their number
    of pairs.
    """
    _check_level(level)
    num, den = np.asarray(numerators, float), np.asarray(denominators, float)
    w = resample_weights(len(num), n_resamples, seed)
    ratios = (w @ num) / np.maximum(w @ den, 1e-300)
    low, high = percentile_interval(ratios, level)
    return float(low), float(high)


def paired_bootstrap_p(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> float:
    """Two-sided paired bootstrap p-value of ``mean(a - b) == 0`` (see the module docstring)."""
    d = _paired(a, b)
    observed = abs(d.mean())
    if not np.any(d != d[0]):  # constant differences: no resampling variance
        return 1.0 if observed == 0 else 1.0 / (n_resamples + 1)
    null = bootstrap_means(d - d.mean(), n_resamples, seed)
    # a tiny tolerance so floating-point noise in a resampled zero does not count as "smaller"
    extreme = np.abs(null) >= observed - 1e-12
    return float((1 + extreme.sum()) / (n_resamples + 1))


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired ``a - b`` (scipy); 1 if all equal."""
    from scipy.stats import wilcoxon

    d = _paired(a, b)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values, in the input order (see the module docstring)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired test needs two equal-length 1-d arrays, got {a.shape}, {b.shape}")
    return a - b


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
