"""Ranking, beyond-accuracy and rating-prediction metrics over ranked lists (pure numpy).

Every ranking metric scores one user's ``ranked`` list (recommended item IDs, best first, no
duplicates) against ``relevant`` (that user's held-out positives, usually one item under
leave-last-out) at a cutoff ``k``. Gains are binary and every denominator is written in the
function's docstring. :func:`ranking_metrics` computes all of them for many users at once and
returns per-user arrays keyed like ``"NDCG@10"``, so the evaluator can average overall and per
cohort with :func:`mean_metrics`.

The definitions are the standard ones and are cross-checked against ``ranx`` in
``tests/test_metrics.py``. The one deliberate difference is the MAP@K denominator: ``min(|R|, K)``
here (a perfect top-K list scores 1), ``|R|`` in ranx and trec_eval; the two agree whenever a user
has at most K positives, which always holds under leave-last-out.

Metric names used in evaluation configs are parsed by :func:`parse_metric`::

    >>> parse_metric("ndcg@10")
    ('NDCG', 10)
    >>> import numpy as np
    >>> per_user = ranking_metrics([np.array([7, 3, 9])], [{9}], ks=(3,))
    >>> round(float(per_user["MRR@3"][0]), 4), round(float(per_user["NDCG@3"][0]), 4)
    (0.3333, 0.5)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

RANKING_METRICS: tuple[str, ...] = ("HR", "Precision", "Recall", "NDCG", "MRR", "MAP")
"""Per-user accuracy metrics over a top-K list; each is reported at a cutoff (``"HR@10"``)."""

BEYOND_ACCURACY_METRICS: tuple[str, ...] = ("Coverage", "ARP", "APLT", "Novelty")
"""Metrics over all users' top-K lists at once (one number per run, also with a cutoff)."""

RATING_METRICS: tuple[str, ...] = ("MAE", "RMSE")
"""Rating-prediction errors; they take no cutoff."""

METRIC_NAMES: tuple[str, ...] = RANKING_METRICS + BEYOND_ACCURACY_METRICS + RATING_METRICS
"""Every metric name :func:`parse_metric` accepts (case-insensitive)."""

_CANONICAL = {name.lower(): name for name in METRIC_NAMES}
_METRIC_RE = re.compile(r"([A-Za-z]+)(?:@([0-9]+))?", re.ASCII)


# --------------------------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------------------------


def parse_metric(name: str) -> tuple[str, int | None]:
    """Validate a metric label and split it into its canonical name and cutoff.

    Names are case-insensitive; ranking and beyond-accuracy metrics need a cutoff ``@K``
    (``K >= 1``), rating metrics take none.

    Args:
        name: a label such as ``"NDCG@10"``, ``"hr@5"``, ``"Coverage@20"`` or ``"RMSE"``.

    Returns:
        ``(canonical_name, k)``, e.g. ``("NDCG", 10)``; ``k`` is ``None`` for MAE and RMSE.

    Raises:
        ValueError: the name is unknown or malformed, or its cutoff is missing, zero or not
            allowed; the message quotes the bad name.
    """
    valid = ", ".join(METRIC_NAMES)
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string like 'NDCG@10', got {name!r}")
    match = _METRIC_RE.fullmatch(name.strip())
    if match is None:
        raise ValueError(
            f"malformed metric {name!r}: expected NAME@K such as 'NDCG@10' (names: {valid})"
        )
    base, k_text = match.groups()
    canonical = _CANONICAL.get(base.lower())
    if canonical is None:
        raise ValueError(f"unknown metric {name!r}: {base!r} is not one of {valid}")
    if canonical in RATING_METRICS:
        if k_text is not None:
            raise ValueError(f"metric {name!r}: {canonical} takes no @K cutoff")
        return canonical, None
    if k_text is None:
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. '{canonical}@10'")
    k = int(k_text)
    if k < 1:
        raise ValueError(f"metric {name!r}: the cutoff must be >= 1")
    return canonical, k


def format_metric(name: str, k: int | None = None) -> str:
    """Build the canonical label for a metric (the inverse of :func:`parse_metric`).

    Args:
        name: a metric name from :data:`METRIC_NAMES` (any case).
        k: the cutoff; required for ranking and beyond-accuracy metrics, ``None`` for rating.

    Returns:
        The label, e.g. ``format_metric("ndcg", 10) == "NDCG@10"``.

    Raises:
        ValueError: as :func:`parse_metric` for the resulting label.
    """
    label = name if k is None else f"{name}@{k}"
    canonical, parsed_k = parse_metric(label)
    return canonical if parsed_k is None else f"{canonical}@{parsed_k}"


# --------------------------------------------------------------------------------------------
# Input handling shared by all metrics
# --------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"cutoff k must be a positive integer, got {k!r}")
    return int(k)


def _top_k(ranked: Sequence[Hashable] | np.ndarray, k: int, user: int) -> list[Hashable]:
    """The first ``k`` items of one ranked list as Python scalars, checked for duplicates."""
    if isinstance(ranked, np.ndarray):
        if ranked.ndim != 1:
            raise ValueError(f"user {user}: ranked list must be 1-D, got shape {ranked.shape}")
        top = ranked[:k].tolist()
    else:
        top = list(ranked)[:k]
    if len(set(top)) != len(top):
        raise ValueError(f"user {user}: ranked list has duplicate items in its top {k}")
    return top


def _relevant_set(relevant: Collection[Hashable] | np.ndarray, user: int) -> set[Hashable]:
    if isinstance(relevant, np.ndarray):
        items = set(relevant.ravel().tolist())
    elif isinstance(relevant, (set, frozenset)):
        items = relevant
    else:
        items = set(relevant)
    if not items:
        raise ValueError(
            f"user {user}: empty relevant set; users without held-out positives must be "
            "filtered out before computing ranking metrics"
        )
    return items


def _hit_matrix(
    ranked_lists: Sequence[Sequence[Hashable] | np.ndarray],
    relevant: Sequence[Collection[Hashable] | np.ndarray],
    k_max: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary hits ``(n_users, k_max)`` (zero-padded past a short list) and ``|R_u|`` per user."""
    if len(ranked_lists) != len(relevant):
        raise ValueError(
            f"got {len(ranked_lists)} ranked lists but {len(relevant)} relevant sets; "
            "they must be aligned per user"
        )
    hits = np.zeros((len(ranked_lists), k_max), dtype=np.float64)
    n_relevant = np.empty(len(ranked_lists), dtype=np.int64)
    for user, (ranked, rel) in enumerate(zip(ranked_lists, relevant, strict=True)):
        rel_set = _relevant_set(rel, user)
        top = _top_k(ranked, k_max, user)
        hits[user, : len(top)] = [item in rel_set for item in top]
        n_relevant[user] = len(rel_set)
    return hits, n_relevant


# --------------------------------------------------------------------------------------------
# Ranking metrics, vectorised over users: each takes hits (n, k) and |R| (n,) -> (n,)
# --------------------------------------------------------------------------------------------


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _hr_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return (hits.sum(axis=1) > 0).astype(np.float64)


def _precision_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / hits.shape[1]


def _recall_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / n_relevant


def _ndcg_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    discounts = _discounts(k)
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    return (hits * discounts).sum(axis=1) / ideal


def _mrr_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    first = hits.argmax(axis=1)  # first maximum; 0 when the row has no hit (masked below)
    return np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)


def _map_rows(hits: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return (precision_at_i * hits).sum(axis=1) / np.minimum(n_relevant, k)


_ROWS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "HR": _hr_rows,
    "Precision": _precision_rows,
    "Recall": _recall_rows,
    "NDCG": _ndcg_rows,
    "MRR": _mrr_rows,
    "MAP": _map_rows,
}


def _one_user(
    metric: str,
    ranked: Sequence[Hashable] | np.ndarray,
    relevant: Collection[Hashable] | np.ndarray,
    k: int,
) -> float:
    k = _check_k(k)
    hits, n_relevant = _hit_matrix([ranked], [relevant], k)
    return float(_ROWS[metric](hits, n_relevant)[0])


def hit_rate(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """HR@K: whether any relevant item is in the top K.

    ``HR@K = 1[ |L_K ∩ R| > 0 ]`` where ``L_K`` is the top-K of ``ranked`` and ``R`` the
    relevant set.

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        1.0 or 0.0.

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("HR", ranked, relevant, k)


def precision(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """Precision@K: the share of the K slots filled with relevant items.

    ``Precision@K = |L_K ∩ R| / K``. The denominator is K even when fewer than K items were
    recommended (an empty slot counts as a miss), so a method cannot gain precision by returning
    short lists; ranx and trec_eval do the same.

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("Precision", ranked, relevant, k)


def recall(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """Recall@K: the share of the relevant items found in the top K.

    ``Recall@K = |L_K ∩ R| / |R|`` (not capped at K: with more than K positives it cannot reach
    1; use NDCG or MAP for a normalised score).

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("Recall", ranked, relevant, k)


def ndcg(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """NDCG@K with binary gains and a log2 discount.

    ``DCG@K = sum_{i=1..K} rel_i / log2(i + 1)`` with ``rel_i = 1`` if the item at rank ``i`` is
    relevant, else 0; ``IDCG@K = sum_{i=1..min(|R|, K)} 1 / log2(i + 1)``;
    ``NDCG@K = DCG@K / IDCG@K``. With one positive at rank ``r <= K`` this is ``1 / log2(r + 1)``.

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("NDCG", ranked, relevant, k)


def mrr(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """MRR@K: the reciprocal rank of the first relevant item within the top K.

    ``RR@K = 1 / r`` where ``r`` is the rank (1-based) of the first relevant item if ``r <= K``,
    else 0. Averaged over users this is MRR@K.

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("MRR", ranked, relevant, k)


def average_precision(
    ranked: Sequence[Hashable] | np.ndarray, relevant: Collection[Hashable] | np.ndarray, k: int
) -> float:
    """AP@K (per user; averaged over users it is MAP@K).

    ``AP@K = sum_{i=1..K} rel_i * Precision@i / min(|R|, K)``: the precision at each rank that
    holds a relevant item, summed and divided by the most hits a top-K list can hold, so a perfect
    list scores 1. (ranx and trec_eval divide by ``|R|``; identical when ``|R| <= K``.) With one
    positive it equals the reciprocal rank.

    Args:
        ranked: recommended item IDs, best first, no duplicates (only the first ``k`` count).
        relevant: the user's held-out positive items (non-empty).
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: empty ``relevant``, duplicate items in the top ``k`` or a bad ``k``.
    """
    return _one_user("MAP", ranked, relevant, k)


def ranking_metrics(
    ranked_lists: Sequence[Sequence[Hashable] | np.ndarray],
    relevant: Sequence[Collection[Hashable] | np.ndarray],
    ks: Iterable[int] | int = (5, 10, 20),
) -> dict[str, np.ndarray]:
    """Every ranking metric at every cutoff, per user.

    The metrics and their formulas are those of :func:`hit_rate` (``HR``), :func:`precision`,
    :func:`recall`, :func:`ndcg`, :func:`mrr` and :func:`average_precision` (``MAP``). Hits are
    found once for the largest cutoff and every metric is computed from that matrix with numpy.

    Args:
        ranked_lists: per user, recommended item IDs, best first, no duplicates. Lists may be
            shorter than a cutoff (missing slots count as misses) or longer (truncated).
        relevant: per user (aligned with ``ranked_lists``), the held-out positive items, as a set
            or an array; must be non-empty.
        ks: cutoffs, each >= 1 (a single int is accepted); duplicates are ignored.

    Returns:
        ``{"HR@5": array(n_users), ..., "MAP@20": array(n_users)}`` of float64, ordered by cutoff
        then by :data:`RANKING_METRICS`.

    Raises:
        ValueError: a user has an empty relevant set or duplicate items in a top-K, the two
            sequences differ in length, or a cutoff is not a positive integer.
    """
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    cutoffs = sorted({_check_k(k) for k in ks})
    if not cutoffs:
        raise ValueError("ks must contain at least one cutoff")
    hits, n_relevant = _hit_matrix(ranked_lists, relevant, cutoffs[-1])
    out: dict[str, np.ndarray] = {}
    for k in cutoffs:
        hits_k = hits[:, :k]
        for name in RANKING_METRICS:
            out[f"{name}@{k}"] = _ROWS[name](hits_k, n_relevant)
    return out


def mean_metrics(
    per_user: Mapping[str, np.ndarray], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Average per-user metric arrays, over all users or over a cohort.

    Args:
        per_user: metric label -> per-user values, as returned by :func:`ranking_metrics`.
        mask: optional boolean array over users selecting a cohort (same length as every array).

    Returns:
        Metric label -> mean as a Python float; ``nan`` when no user is selected (an empty
        cohort), so a report shows the gap instead of a misleading 0.

    Raises:
        ValueError: an array is not 1-D, or ``mask`` is not boolean or has the wrong length.
    """
    selector = None if mask is None else np.asarray(mask)
    if selector is not None and selector.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array over users, got dtype {selector.dtype}")
    out: dict[str, float] = {}
    for name, values in per_user.items():
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"{name}: per-user values must be 1-D, got shape {values.shape}")
        if selector is not None:
            if selector.shape != values.shape:
                raise ValueError(
                    f"{name}: mask has shape {selector.shape} but values have {values.shape}"
                )
            values = values[selector]
        out[name] = float(values.mean()) if values.size else math.nan
    return out


# --------------------------------------------------------------------------------------------
# Beyond-accuracy metrics over all users' top-K lists
# --------------------------------------------------------------------------------------------


def _popularity_lookup(
    item_popularity: Mapping[Hashable, float] | pd.Series | np.ndarray,
) -> dict[Hashable, float]:
    if isinstance(item_popularity, np.ndarray):
        lookup = dict(enumerate(item_popularity.astype(np.float64).tolist()))
    else:
        lookup = {item: float(count) for item, count in dict(item_popularity).items()}
    if any(count < 0 for count in lookup.values()):
        raise ValueError("item popularity counts must be >= 0")
    return lookup


def _mean_of_list_means(
    ranked_lists: Iterable[Sequence[Hashable] | np.ndarray],
    k: int,
    value: Callable[[Hashable], float],
) -> float:
    """Mean over users of the mean ``value`` of their top-k items; empty lists are skipped."""
    per_user = []
    for user, ranked in enumerate(ranked_lists):
        top = _top_k(ranked, k, user)
        if top:
            per_user.append(sum(value(item) for item in top) / len(top))
    return float(np.mean(per_user)) if per_user else math.nan


def catalog_coverage(
    ranked_lists: Iterable[Sequence[Hashable] | np.ndarray], n_items: int, k: int
) -> float:
    """Catalog coverage@K: the share of the catalog recommended to at least one user.

    ``Coverage@K = |∪_u L_K(u)| / n_items``.

    Args:
        ranked_lists: per user, recommended item IDs, best first.
        n_items: catalog size (the number of items that could be recommended), >= 1.
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1].

    Raises:
        ValueError: bad ``n_items`` or ``k``, duplicates in a top-K, or more distinct recommended
            items than ``n_items``.
    """
    k = _check_k(k)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    recommended: set[Hashable] = set()
    for user, ranked in enumerate(ranked_lists):
        recommended.update(_top_k(ranked, k, user))
    if len(recommended) > n_items:
        raise ValueError(
            f"{len(recommended)} distinct items recommended but the catalog has only {n_items}"
        )
    return len(recommended) / n_items


def average_popularity(
    ranked_lists: Iterable[Sequence[Hashable] | np.ndarray],
    item_popularity: Mapping[Hashable, float] | pd.Series | np.ndarray,
    k: int,
) -> float:
    """ARP@K: average recommendation popularity.

    ``ARP@K = (1/|U|) sum_u (1/|L_K(u)|) sum_{i in L_K(u)} pop(i)`` where ``pop(i)`` is the
    item's number of training interactions (0 for items absent from ``item_popularity``). Users
    with an empty list are left out of ``U``.

    Args:
        ranked_lists: per user, recommended item IDs, best first.
        item_popularity: training interaction count per item ID (a dict or ``pd.Series`` indexed
            by item ID, or an array indexed by integer item ID).
        k: cutoff, >= 1.

    Returns:
        The mean popularity (>= 0), or ``nan`` if every list is empty.

    Raises:
        ValueError: a bad ``k``, a negative count, or duplicates in a top-K.
    """
    k = _check_k(k)
    popularity = _popularity_lookup(item_popularity)
    return _mean_of_list_means(ranked_lists, k, lambda item: popularity.get(item, 0.0))


def tail_share(
    ranked_lists: Iterable[Sequence[Hashable] | np.ndarray],
    tail_items: Collection[Hashable] | np.ndarray,
    k: int,
) -> float:
    """APLT@K: average share of long-tail items in the top-K lists.

    ``APLT@K = (1/|U|) sum_u |L_K(u) ∩ T| / |L_K(u)|`` where ``T`` is the set of long-tail items
    (how ``T`` is chosen, e.g. the items outside the head holding 20% of interactions, is the
    caller's decision). Users with an empty list are left out of ``U``.

    Args:
        ranked_lists: per user, recommended item IDs, best first.
        tail_items: IDs of the long-tail items.
        k: cutoff, >= 1.

    Returns:
        A value in [0, 1], or ``nan`` if every list is empty.

    Raises:
        ValueError: a bad ``k`` or duplicates in a top-K.
    """
    k = _check_k(k)
    tail = set(tail_items.tolist()) if isinstance(tail_items, np.ndarray) else set(tail_items)
    return _mean_of_list_means(ranked_lists, k, lambda item: float(item in tail))


def novelty(
    ranked_lists: Iterable[Sequence[Hashable] | np.ndarray],
    item_popularity: Mapping[Hashable, float] | pd.Series | np.ndarray,
    n_users: int,
    k: int,
) -> float:
    """Novelty@K: mean self-information of the recommended items, in bits.

    ``Novelty@K = (1/|U|) sum_u (1/|L_K(u)|) sum_{i in L_K(u)} -log2(pop(i) / n_users)``.
    ``pop(i)`` is the number of training users who interacted with ``i``; an item with no
    training interactions (or absent from ``item_popularity``) is smoothed to ``pop = 1``, so its
    novelty is the finite maximum ``log2(n_users)`` instead of infinity. Users with an empty list
    are left out of ``U``.

    Args:
        ranked_lists: per user, recommended item IDs, best first.
        item_popularity: training users per item ID (dict, ``pd.Series`` or array indexed by
            integer item ID).
        n_users: number of training users, >= 1.
        k: cutoff, >= 1.

    Returns:
        A value in [0, log2(n_users)], or ``nan`` if every list is empty.

    Raises:
        ValueError: bad ``n_users`` or ``k``, a negative count, a recommended item with a
            popularity above ``n_users``, or duplicates in a top-K.
    """
    k = _check_k(k)
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    popularity = _popularity_lookup(item_popularity)

    def self_information(item: Hashable) -> float:
        count = popularity.get(item, 0.0)
        if count > n_users:
            raise ValueError(
                f"item {item!r} has popularity {count:g} > n_users={n_users}; novelty needs the "
                "number of distinct training users per item"
            )
        return -math.log2((count if count > 0 else 1.0) / n_users)

    return _mean_of_list_means(ranked_lists, k, self_information)


# --------------------------------------------------------------------------------------------
# Rating prediction
# --------------------------------------------------------------------------------------------


def _rating_errors(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.shape != pred.shape:
        raise ValueError(f"y_true has shape {truth.shape} but y_pred has {pred.shape}")
    if truth.size == 0:
        raise ValueError("rating metrics need at least one prediction")
    if not (np.isfinite(truth).all() and np.isfinite(pred).all()):
        raise ValueError("ratings and predictions must be finite (found nan or inf)")
    return pred - truth


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error: ``MAE = (1/n) sum_j |y_pred_j - y_true_j|``.

    Args:
        y_true: observed ratings.
        y_pred: predicted ratings, same shape.

    Returns:
        The MAE (>= 0).

    Raises:
        ValueError: shapes differ, the arrays are empty, or a value is not finite.
    """
    return float(np.mean(np.abs(_rating_errors(y_true, y_pred))))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error: ``RMSE = sqrt((1/n) sum_j (y_pred_j - y_true_j)^2)`` (>= MAE).

    Args:
        y_true: observed ratings.
        y_pred: predicted ratings, same shape.

    Returns:
        The RMSE (>= 0).

    Raises:
        ValueError: shapes differ, the arrays are empty, or a value is not finite.
    """
    return float(np.sqrt(np.mean(np.square(_rating_errors(y_true, y_pred)))))


# --------------------------------------------------------------------------------------------
# Sampled-candidate evaluation (only when a config asks for it; results are labelled "sampled")
# --------------------------------------------------------------------------------------------


def sample_candidates(
    rng: np.random.Generator,
    n_items: int,
    positives: Collection[int] | np.ndarray,
    exclude: Collection[int] | np.ndarray,
    n_negatives: int = 100,
) -> np.ndarray:
    """Candidate items for sampled evaluation: the positives plus uniformly drawn negatives.

    Negatives are drawn without replacement, uniformly from the item indices in
    ``[0, n_items)`` that are neither positives nor excluded (typically the user's training
    items). The result is shuffled with ``rng`` so that position carries no information: a model
    that ties every candidate cannot rank the positives first by accident of order. Given the
    same ``rng`` state and inputs the output is identical.

    Sampled metrics overestimate full-catalog ones and can reorder methods (Krichene & Rendle,
    KDD 2020); the default protocol ranks the full catalog.

    Args:
        rng: the random generator (its state advances).
        n_items: catalog size; items are indices ``0..n_items - 1``.
        positives: the user's held-out positive item indices (always included).
        exclude: item indices never drawn as negatives (e.g. the user's training items).
        n_negatives: how many negatives to draw, >= 0 (100 is the common choice).

    Returns:
        int64 array of ``len(set(positives)) + n_negatives`` distinct item indices, shuffled.

    Raises:
        ValueError: an index is outside ``[0, n_items)``, or fewer than ``n_negatives`` items are
            available to draw from.
    """
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    pos = np.unique(np.asarray(list(positives), dtype=np.int64))
    excl = np.asarray(list(exclude), dtype=np.int64)
    for label, idx in (("positives", pos), ("exclude", excl)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_items):
            raise ValueError(f"{label} contain item indices outside [0, {n_items})")
    allowed = np.ones(n_items, dtype=bool)
    allowed[pos] = False
    allowed[excl] = False
    pool = np.flatnonzero(allowed)
    if pool.size < n_negatives:
        raise ValueError(
            f"only {pool.size} items available as negatives but n_negatives={n_negatives}"
        )
    negatives = rng.choice(pool, size=n_negatives, replace=False)
    return rng.permutation(np.concatenate([pos, negatives.astype(np.int64)]))
