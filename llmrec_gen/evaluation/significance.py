"""Uncertainty of per-user metrics: bootstrap confidence intervals and paired significance tests.

Users are the sampling unit: a reported mean is a mean over users, its confidence interval
comes from resampling users with replacement (percentile bootstrap), and two methods are
compared on the *same* users (paired). All resampling is seeded; resamples are drawn as
multinomial counts, so ``m`` metric columns cost one ``(B, n) @ (n, m)`` product.

* :func:`bootstrap_ci` — percentile CI of a mean over users.
* :func:`ratio_bootstrap_ci` — CI of ``sum(num) / sum(den)`` resampling users (e.g. MAE over
  rating pairs, grouped by user).
* :func:`paired_bootstrap_p` — two-sided p-value of ``mean(x - y) = 0`` by the paired bootstrap:
  the differences are centred (so the null holds), resampled, and
  ``p = (1 + #{|mean(d*)| >= |mean(d)|}) / (1 + B)`` (Davison & Hinkley's +1 correction).
* :func:`wilcoxon_p` — the Wilcoxon signed-rank test (scipy), zero differences dropped.
* :func:`holm` — Holm's step-down correction for testing several methods against one.

::

    >>> import numpy as np
    >>> x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    >>> lo, hi = bootstrap_ci(x, level=0.9, n_resamples=2000, seed=0)
    >>> bool(lo <= x.mean() <= hi)
    True
    >>> paired_bootstrap_p(x, x)
    1.0
    >>> [round(float(p), 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return float(level)


def resample_counts(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n)`` multinomial counts: how often each user is drawn per resample."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one user")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def bootstrap_means(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` user resamples (with replacement) of ``values``.

    Args:
        values: ``(n_users,)`` or ``(n_users, n_metrics)``; one row per user.
        n_resamples: bootstrap resamples (1000 puts the 95 % CI ends within about a tenth of
            the interval's width of their limit).
        seed: seeds the resampling (the same seed draws the same users for every column).

    Returns:
        ``(n_resamples,)`` or ``(n_resamples, n_metrics)`` resampled means.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = resample_counts(values.shape[0], n_resamples, seed)
    return counts @ values / values.shape[0]


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float] | np.ndarray:
    """Percentile bootstrap confidence interval of the mean over users.

    Args:
        values: per-user values, ``(n_users,)`` or ``(n_users, n_metrics)``.
        level: coverage, in (0, 1) (0.95 = a 95 % interval).
        n_resamples: bootstrap resamples.
        seed: seeds the resampling.

    Returns:
        ``(low, high)`` for 1-D input; a ``(2, n_metrics)`` array of lows and highs for 2-D.
        With a single user the interval is that user's value.

    Raises:
        ValueError: ``level`` outside (0, 1), or no users.
    """
    level = _check_level(level)
    means = bootstrap_means(values, n_resamples, seed)
    alpha = (1 - level) / 2
    bounds = np.quantile(means, [alpha, 1 - alpha], axis=0)
    if np.ndim(values) == 1:
        return float(bounds[0]), float(bounds[1])
    return bounds


def ratio_bootstrap_ci(
    num: np.ndarray,
    den: np.ndarray,
    level: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of ``sum(num) / sum(den)`` resampling users (rows) with replacement.

    Used for errors over rating pairs grouped by user: with ``num`` = a user's summed absolute
    errors and ``den`` = their number of pairs it is the MAE's interval.
    """
    level = _check_level(level)
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError("num and den must be equal-length 1-D arrays")
    counts = resample_counts(len(num), n_resamples, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = (counts @ num) / (counts @ den)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not len(x):
        raise ValueError(f"a paired test needs equal-length 1-D arrays, got {x.shape}, {y.shape}")
    return x - y


def paired_bootstrap_p(
    x: np.ndarray, y: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> float:
    """Two-sided paired-bootstrap p-value for ``mean(x - y) == 0``.

    ``d = x - y`` per user is centred (``d - mean(d)``, so the null holds), resampled over
    users, and ``p = (1 + #{|mean(d*)| >= |mean(d)|}) / (1 + n_resamples)``. Identical inputs
    give ``p = 1``; the smallest attainable p is ``1 / (1 + n_resamples)``.
    """
    d = _differences(x, y)
    if not np.any(d):
        return 1.0
    observed = abs(d.mean())
    boot = bootstrap_means(d - d.mean(), n_resamples, seed)
    # a tolerance, so that round-off in the centred means never counts as "as extreme"
    extreme = np.abs(boot) >= observed - 1e-12 * max(1.0, observed)
    return float((1 + extreme.sum()) / (1 + n_resamples))


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``x - y``.

    scipy's :func:`scipy.stats.wilcoxon` with its defaults (zero differences dropped,
    ``method="auto"``: exact for small samples without ties, else the normal approximation).
    All differences zero gives ``p = 1`` (scipy would not define it).
    """
    from scipy import stats

    d = _differences(x, y)
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few non-zero pairs: approximate
        p = float(stats.wilcoxon(d).pvalue)
    return 1.0 if math.isnan(p) else p


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control); NaN entries are skipped.

    With the m finite p-values sorted ascending, ``adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j))``
    (1-based ``j``), returned in the input order. Each adjusted value is at least its raw
    value, and the adjustment keeps the order of the raw values.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if not m:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
