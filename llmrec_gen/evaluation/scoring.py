"""Scoring saved per-user lists: accuracy overall and per cohort, beyond-accuracy, rating errors.

Everything here works from what a method returned (ranked item IDs, their provenance), the
split's held-out targets and the cohorts of the data the methods were fit on; nothing here knows
which method produced them. Per-user values are returned as they are (means, confidence
intervals and tests are :mod:`llmrec_gen.evaluation.summary`'s job).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from llmrec_gen.data.splits import Cohorts
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.evaluation import metrics as M
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.results import COHORT_PREFIX
from llmrec_gen.io import to_python
from llmrec_gen.recommenders.compose import FILL


def headline_k(ks: Sequence[int]) -> int:
    """The cutoff reports lead with: 10 when evaluated, else the largest."""
    return 10 if 10 in ks else max(ks)


def metric_suffix(cfg: EvalConfig) -> str:
    """``" [sampled-N]"`` when candidates were sampled, so no one mistakes it for full ranking."""
    return f" [sampled-{cfg.sampled_negatives}]" if cfg.sampled_negatives else ""


def cohort_masks(
    users: list[Any], targets: dict[Any, set], cohorts: Cohorts
) -> dict[str, np.ndarray]:
    """Boolean masks over ``users``: head-/tail-/cold-/warm-item targets and cold/warm users.

    A user's target group is that of their first target (sorted by ID; under leave-one-out the
    only one). Cohorts come from the fit data (:meth:`Split.cohorts_for`), never the targets.
    """
    first = [sorted(targets[u], key=str)[0] for u in users]
    cold_item = np.array([t in cohorts.cold_items for t in first], dtype=bool)
    cold_user = np.array([u in cohorts.cold_users for u in users], dtype=bool)
    return {
        "head-target": np.array([t in cohorts.head_items for t in first], dtype=bool),
        "tail-target": np.array([t in cohorts.tail_items for t in first], dtype=bool),
        "cold-item-target": cold_item,
        "warm-item-target": ~cold_item,
        "cold-users": cold_user,
        "warm-users": ~cold_user,
    }


def score_rankings(
    ranked: list[np.ndarray],
    users: list[Any],
    targets: dict[Any, set],
    fit: TrainData,
    cohorts: Cohorts,
    cfg: EvalConfig,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-user accuracy metrics (with cohort flags) and list-level beyond-accuracy metrics.

    Args:
        ranked: per user, the returned item IDs, best first.
        users: the evaluated users (aligned with ``ranked``).
        targets: user -> held-out positives.
        fit: the data the methods were fit on (popularity, catalogue size).
        cohorts: cohorts of ``fit``.
        cfg: cutoffs, metric names, sampled-candidate suffix.

    Returns:
        ``(per_user, beyond)``: a frame with a ``user`` column, one column per accuracy metric
        (``"NDCG@10"``, with ``" [sampled-N]"`` when candidates were sampled) and a boolean
        ``cohort:<name>`` column per cohort; and ``{"Coverage@10": ..., "ARP@10": ...}``.
    """
    relevant = [targets[u] for u in users]
    per_user = M.ranking_metrics(ranked, relevant, cfg.ks)
    wanted = {M.parse_metric(f"{m}@1")[0] for m in cfg.metrics}
    suffix = metric_suffix(cfg)
    columns = {k + suffix: v for k, v in per_user.items() if M.parse_metric(k)[0] in wanted}
    frame = pd.DataFrame({"user": [to_python(u) for u in users], **columns})
    for name, mask in cohort_masks(users, targets, cohorts).items():
        frame[COHORT_PREFIX + name] = mask
    pop = dict(zip(fit.item_ids.tolist(), fit.item_popularity.tolist(), strict=True))
    user_pop = fit.interactions.groupby("item_id")["user_id"].nunique().to_dict()
    beyond: dict[str, float] = {}
    for k in cfg.ks:
        beyond[f"Coverage@{k}"] = M.catalog_coverage(ranked, fit.n_items, k)
        beyond[f"ARP@{k}"] = M.average_popularity(ranked, pop, k)
        beyond[f"APLT@{k}"] = M.tail_share(ranked, cohorts.tail_items, k)
        beyond[f"Novelty@{k}"] = M.novelty(ranked, user_pop, fit.n_users, k)
    return frame, beyond


def own_item_metrics(
    rows: list[dict[str, Any]], users: list[Any], targets: dict[Any, set], dtype: Any, k: int
) -> dict[str, float]:
    """HR/NDCG@k of the items a method produced itself (fallback fills removed).

    Separates what a generator contributes from what its fallback recommender adds; empty
    when no row holds a filled item.
    """
    if not any(FILL in r.get("sources", ()) for r in rows):
        return {}
    own = [
        np.asarray(
            [i for i, s in zip(r["items"], r.get("sources", []), strict=False) if s != FILL],
            dtype=dtype,
        )
        for r in rows
    ]
    means = M.mean_metrics(M.ranking_metrics(own, [targets[u] for u in users], [k]))
    return {f"HR@{k} without fill": means[f"HR@{k}"], f"NDCG@{k} without fill": means[f"NDCG@{k}"]}


def rating_errors(truth: np.ndarray, preds: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``{"pairs", "MAE", "RMSE"}`` over the (user, item) pairs selected by ``mask``."""
    if not mask.any():
        return {"pairs": 0, "MAE": math.nan, "RMSE": math.nan}
    t, p = truth[mask], preds[mask]
    return {"pairs": int(mask.sum()), "MAE": M.mae(t, p), "RMSE": M.rmse(t, p)}
