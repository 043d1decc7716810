"""Scoring saved per-user lists: accuracy overall and per cohort, beyond-accuracy, rating errors.

Everything here works from what a method returned (ranked item IDs, their provenance) and the
split's held-out targets and train-only cohorts; nothing here knows which method produced them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmrec_gen.data.splits import Split
from llmrec_gen.evaluation import metrics as M
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.recommenders.compose import FILL


def headline_k(ks: Sequence[int]) -> int:
    """The cutoff reports lead with: 10 when evaluated, else the largest."""
    return 10 if 10 in ks else max(ks)


def metric_suffix(cfg: EvalConfig) -> str:
    """``" [sampled-N]"`` when candidates were sampled, so no one mistakes it for full ranking."""
    return f" [sampled-{cfg.sampled_negatives}]" if cfg.sampled_negatives else ""


def score_rankings(
    ranked: list[np.ndarray],
    users: list[Any],
    targets: dict[Any, set],
    split: Split,
    cfg: EvalConfig,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over users, overall (with beyond-accuracy metrics) and per cohort.

    Cohorts (train data only): head-/tail-/cold-item targets (of the user's first target) and
    cold/warm users; each cohort row holds its user count.
    """
    relevant = [targets[u] for u in users]
    per_user = M.ranking_metrics(ranked, relevant, cfg.ks)
    wanted = {M.parse_metric(f"{m}@1")[0] for m in cfg.metrics}
    per_user = {k: v for k, v in per_user.items() if M.parse_metric(k)[0] in wanted}
    suffix = metric_suffix(cfg)
    per_user = {k + suffix: v for k, v in per_user.items()}
    overall = M.mean_metrics(per_user)
    train, coh = split.train, split.cohorts
    pop = dict(zip(train.item_ids.tolist(), train.item_popularity.tolist(), strict=True))
    user_pop = train.interactions.groupby("item_id")["user_id"].nunique().to_dict()
    for k in cfg.ks:
        overall[f"Coverage@{k}"] = M.catalog_coverage(ranked, train.n_items, k)
        overall[f"ARP@{k}"] = M.average_popularity(ranked, pop, k)
        overall[f"APLT@{k}"] = M.tail_share(ranked, coh.tail_items, k)
        overall[f"Novelty@{k}"] = M.novelty(ranked, user_pop, train.n_users, k)
    first_target = [sorted(targets[u], key=str)[0] for u in users]
    masks = {
        "head-target": np.array([t in coh.head_items for t in first_target]),
        "tail-target": np.array([t in coh.tail_items for t in first_target]),
        "cold-item-target": np.array([t in coh.cold_items for t in first_target]),
        "cold-users": np.array([u in coh.cold_users for u in users]),
        "warm-users": np.array([u not in coh.cold_users for u in users]),
    }
    cohorts = {}
    for name, mask in masks.items():
        cohorts[name] = {"users": int(mask.sum()), **M.mean_metrics(per_user, mask)}
    return overall, cohorts


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
