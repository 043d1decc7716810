"""Recommenders made of recommenders (lkpy-style composition instead of flags).

* :class:`Fallback` — the primary's list, filled up to ``k`` from a fallback recommender (a
  generator that wrote too few valid titles, say). Filled items are marked ``"fill"``.
* :class:`Rerank` — a retriever's top ``n_candidates``, re-ordered by a ranker that can rank a
  given candidate list, followed by the retriever's order for the rest, so full-catalogue metrics
  stay defined.

Both declare the capabilities of their parts and pass statistics through, so the evaluator treats
them like any other method::

    rec = Fallback(LLMRecommender(...), PopularityRecommender())
    rec = Rerank(ALSRecommender(), LLMRanker(...), n_candidates=20)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.recommenders.base import (
    Capability,
    Provenance,
    Recommendations,
    Recommender,
    check_k,
)

FILL = "fill"
"""Provenance source of an item taken from a :class:`Fallback`'s fallback recommender."""
RANKER = "ranker"
"""Provenance source of a candidate placed by a :class:`Rerank`'s ranker."""
RETRIEVER = "retriever"
"""Provenance source of an item placed in the retriever's order by a :class:`Rerank`."""


def _require_ranker(method: Any, role: str, capability: Capability = Capability.RANK) -> None:
    if not isinstance(method, Recommender) or not method.has(capability):
        what = "rank given candidates" if capability is Capability.RANK_CANDIDATES else "rank items"
        raise ConfigError(f"{role}: '{getattr(method, 'name', method)}' cannot {what}")


def _rank_scores(n: int) -> np.ndarray:
    """Rank-based scores 1, 1/2, 1/3, ... (higher is better) for a merged list."""
    return 1.0 / np.arange(1, n + 1)


class _Composite(Recommender):
    """Shared plumbing: a composite has no config of its own beyond its parts."""

    parts: tuple[Recommender, ...]

    def _set_parts(self, *parts: Recommender) -> None:
        self.parts = parts
        self.users_per_call = min(p.users_per_call for p in parts)
        stats = any(p.has(Capability.GENERATION_STATS) for p in parts)
        self.capabilities = frozenset(
            {Capability.RANK, Capability.RANK_CANDIDATES}
            | ({Capability.GENERATION_STATS} if stats else set())
            | (
                {Capability.CONTENT_DIGEST}
                if any(p.has(Capability.CONTENT_DIGEST) for p in parts)
                else set()
            )
        )

    def fit(self, train: TrainData) -> _Composite:
        """Fit every part on ``train`` and return ``self``."""
        for part in self.parts:
            part.fit(train)
        self.train_ = train
        return self

    def content_digest(self) -> str | None:
        """The parts' digests joined (None when no part has one)."""
        digests = [d for d in (p.content_digest() for p in self.parts) if d]
        return "+".join(digests) or None

    def get_params(self) -> dict[str, Any]:
        """The parts' configs."""
        return {p.name: p.get_params() for p in self.parts}


class Fallback(_Composite):
    """The primary recommender's list, filled up to ``k`` from ``fallback``.

    Args:
        primary: any ranking method (typically a generator whose lists may be short).
        fallback: a ranking method used for the missing slots (popularity, BM25, ...).
    """

    name = "fallback"

    def __init__(self, primary: Recommender, fallback: Recommender) -> None:
        _require_ranker(primary, "primary")
        _require_ranker(fallback, "fallback")
        self.primary, self.fallback = primary, fallback
        self.name = primary.name
        self._set_parts(primary, fallback)

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """The primary's items, then the fallback's first items not already listed."""
        k = check_k(k)
        train = self._check_fitted()
        users = list(user_ids)
        own = self.primary.recommend(users, k, exclude_seen=exclude_seen, items=items)
        fills = self.fallback.recommend(users, k + k, exclude_seen=exclude_seen, items=items)
        out_items, out_scores, out_details, out_stats = [], [], [], []
        for n, user_items in enumerate(own.item_ids):
            ids = user_items.tolist()[:k]
            details = (
                list(own.details[n][:k])
                if own.details is not None
                else [Provenance("score", float(s)) for s in own.scores[n][:k]]
            )
            taken = set(ids)
            for item in fills.item_ids[n].tolist():
                if len(ids) >= k:
                    break
                if item not in taken:
                    ids.append(item)
                    taken.add(item)
                    details.append(Provenance(FILL, 0.0))
            filled = sum(d.source == FILL for d in details)
            out_items.append(np.asarray(ids, dtype=train.item_ids.dtype))
            out_scores.append(_rank_scores(len(ids)))
            out_details.append(details)
            base = dict(own.stats[n]) if own.stats is not None else {}
            out_stats.append({**base, "filled": filled, "slots": k})
        return Recommendations(users, out_items, out_scores, out_details, out_stats, own.texts)

    def summarize_stats(self, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The primary's summary plus how many slots the fallback filled (``fill_rate``)."""
        out = self.primary.summarize_stats(stats)
        filled = sum(float(s.get("filled", 0)) for s in stats)
        slots = sum(float(s.get("slots", 0)) for s in stats)
        out["filled"] = filled
        out["fill_rate"] = filled / max(1.0, slots)
        return out


class Rerank(_Composite):
    """Two stages: ``retriever`` proposes ``n_candidates``, ``ranker`` orders them.

    The final list is the ranker's order of the candidates (candidates it leaves out follow in
    the retriever's order), then the retriever's order for the rest of the catalogue.

    Args:
        retriever: a ranking method (ALS, LightFM, SASRec, ...).
        ranker: a method with the ``RANK_CANDIDATES`` capability.
        n_candidates: candidates per user (10-50; caps what the ranker can reach).
    """

    name = "rerank"

    def __init__(self, retriever: Recommender, ranker: Recommender, n_candidates: int = 20):
        _require_ranker(retriever, "retriever")
        _require_ranker(ranker, "ranker", Capability.RANK_CANDIDATES)
        if isinstance(n_candidates, bool) or not isinstance(n_candidates, int) or n_candidates < 1:
            raise ConfigError(f"n_candidates: must be an integer >= 1, got {n_candidates!r}")
        self.retriever, self.ranker, self.n_candidates = retriever, ranker, n_candidates
        self.name = f"{ranker.name}@{retriever.name}"
        self._set_parts(retriever, ranker)

    def fit(self, train: TrainData) -> Rerank:
        """Fit both stages on ``train`` (checks ``n_candidates`` against the catalogue)."""
        if self.n_candidates > train.n_items:
            raise ConfigError(
                f"n_candidates: {self.n_candidates} exceeds the catalogue ({train.n_items} items)"
            )
        super().fit(train)
        return self

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Retrieve, re-rank the candidates, then continue in the retriever's order."""
        k = check_k(k)
        train = self._check_fitted()
        users = list(user_ids)
        if not users:
            return Recommendations([], [], [])
        depth = max(k, self.n_candidates)
        retrieved = self.retriever.recommend(users, depth, exclude_seen=exclude_seen, items=items)
        candidates = [r[: self.n_candidates].tolist() for r in retrieved.item_ids]
        width = max(1, max(len(c) for c in candidates))
        ranked = self.ranker.recommend(users, width, exclude_seen=exclude_seen, items=candidates)
        out_items, out_scores, out_details = [], [], []
        for n, cands in enumerate(candidates):
            allowed = set(cands)
            ids = [i for i in ranked.item_ids[n].tolist() if i in allowed]
            details = [Provenance(RANKER, 1.0)] * len(ids)
            taken = set(ids)
            for item in retrieved.item_ids[n].tolist():
                if item not in taken:
                    ids.append(item)
                    taken.add(item)
                    details.append(Provenance(RETRIEVER, 0.0))
            ids, details = ids[:k], details[:k]
            out_items.append(np.asarray(ids, dtype=train.item_ids.dtype))
            out_scores.append(_rank_scores(len(ids)))
            out_details.append(details)
        return Recommendations(
            users, out_items, out_scores, out_details, ranked.stats, ranked.texts
        )

    def summarize_stats(self, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The ranker's summary."""
        return self.ranker.summarize_stats(stats)


class Fuse(_Composite):
    """Collaborative fusion of a full-ranking generator with popularity or a CF model (BIGRec).

    Both parts rank the whole catalogue (``k = n_items``); the fused score re-orders it:

    * ``mode="popularity"`` (BIGRec ``adjust_pda``): the primary's scores must be negative
      distances ``-D(i)`` (full-ranking grounding); ``fused(i) = -D(i) * (1 + pop_i) ** -weight``
      with ``pop_i`` the item's training interaction count, so ``weight = 0`` is the primary alone.
    * ``mode="scores"`` (``adjust_ci``-style mixing with ``other``, e.g. ALS): per user, both score
      lists are standardised over the primary's items and mixed,
      ``fused = (1 - weight) * z(primary) + weight * z(other)``; items ``other`` did not rank get
      its lowest z-score.

    Args:
        primary: a ranking method whose lists cover the catalogue.
        other: the CF method (``mode="scores"`` only).
        mode: ``"popularity"`` or ``"scores"``.
        weight: gamma (``popularity``, 0-1) or the mixing weight (``scores``, 0-1); choose it on
            the validation target.
    """

    name = "fuse"

    def __init__(
        self,
        primary: Recommender,
        other: Recommender | None = None,
        mode: str = "popularity",
        weight: float = 0.0,
    ) -> None:
        _require_ranker(primary, "primary")
        if mode not in ("popularity", "scores"):
            raise ConfigError(f"mode: must be 'popularity' or 'scores', got {mode!r}")
        if mode == "scores":
            if other is None:
                raise ConfigError("other: mode 'scores' needs a CF method to mix with")
            _require_ranker(other, "other")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"weight: must be a number >= 0, got {weight!r}")
        self.primary, self.other, self.mode, self.weight = primary, other, mode, float(weight)
        self.name = primary.name
        self._set_parts(*([primary] if other is None else [primary, other]))

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Both parts' full rankings, fused per user (see the class docstring)."""
        k = check_k(k)
        train = self._check_fitted()
        users = list(user_ids)
        n = train.n_items
        own = self.primary.recommend(users, n, exclude_seen=exclude_seen, items=items)
        mixed = (
            self.other.recommend(users, n, exclude_seen=exclude_seen, items=items)
            if self.other is not None
            else None
        )
        pop = train.item_popularity.astype(np.float64)
        index = train.item_index
        out_items, out_scores = [], []
        for row, (ids, scores) in enumerate(zip(own.item_ids, own.scores, strict=True)):
            s = np.asarray(scores, dtype=np.float64)
            if self.mode == "popularity":
                if len(s) and s.max() > 0:
                    raise ConfigError(
                        f"{self.primary.name}: popularity fusion needs negative distances as "
                        "scores (full-ranking grounding)"
                    )
                pops = pop[[index[i] for i in ids.tolist()]]
                fused = s * (1.0 + pops) ** (-self.weight)
            else:
                assert mixed is not None
                theirs = dict(zip(mixed.item_ids[row].tolist(), mixed.scores[row], strict=True))
                z_own = _standardise(s)
                other_s = np.asarray([theirs.get(i, np.nan) for i in ids.tolist()])
                z_other = _standardise(np.nan_to_num(other_s, nan=np.nanmin(other_s, initial=0)))
                fused = (1.0 - self.weight) * z_own + self.weight * z_other
            order = np.argsort(-fused, kind="stable")[:k]
            out_items.append(np.asarray(ids)[order])
            out_scores.append(fused[order])
        return Recommendations(users, out_items, out_scores, None, own.stats, own.texts)

    def summarize_stats(self, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The primary's summary."""
        return self.primary.summarize_stats(stats)


def _standardise(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / sd`` (zeros when ``x`` is constant)."""
    if len(x) == 0:
        return x
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
