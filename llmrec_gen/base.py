"""The one recommender contract every method implements (LLM or baseline).

``fit(train) -> self`` and ``recommend(user_ids, k, exclude_seen=True) -> Recommendations``.
The evaluator only ever calls these two methods, so it never special-cases a method.

Most baselines score every catalog item for a batch of users; they subclass
:class:`ScoringRecommender` and implement ``_score(user_idx) -> (n, n_items)`` only, and the
masking of seen items and the top-k selection live here, once.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmrec_gen.data import TrainData
from llmrec_gen.errors import NotFittedError


@dataclass(frozen=True)
class RecommendedItem:
    """Provenance of one recommended item (LLM methods fill this; baselines leave it empty).

    Attributes:
        method: how the item was obtained: ``"exact"``, ``"fuzzy"``, ``"embedding"``,
            ``"constrained"``, ``"fill"`` (taken from the fallback recommender) or ``"score"``.
        score: the grounding/match score in [0, 1] (1.0 for exact/constrained).
        generated: the raw generated title the item was grounded from ("" for fills).
    """

    method: str
    score: float
    generated: str = ""


@dataclass(frozen=True)
class Recommendations:
    """Ranked recommendations for a batch of users.

    Attributes:
        user_ids: the users, in request order.
        item_ids: per user, a ranked array of catalog item IDs (length <= k; shorter only when
            fewer unseen items exist).
        scores: per user, scores aligned with ``item_ids`` (higher is better).
        details: optional per-user, per-item provenance (LLM methods).
        extras: optional per-user free-form outputs (e.g. raw generated text, explanations).
    """

    user_ids: list[Any]
    item_ids: list[np.ndarray]
    scores: list[np.ndarray]
    details: list[list[RecommendedItem]] | None = None
    extras: list[dict[str, Any]] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.user_ids)

    def as_dict(self) -> dict[Any, list[Any]]:
        """Return ``{user_id: [item_id, ...]}`` with plain Python values."""
        return {
            _py(u): [_py(i) for i in items]
            for u, items in zip(self.user_ids, self.item_ids, strict=True)
        }


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Recommender(ABC):
    """Base class: ``fit(train)`` then ``recommend(user_ids, k)``.

    Subclasses set ``name`` (used in reports) and keep hyperparameters as constructor arguments.
    """

    name: str = "recommender"
    train_: TrainData | None = None

    @abstractmethod
    def fit(self, train: TrainData) -> Recommender:
        """Learn from training interactions only and return ``self``."""

    @abstractmethod
    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Return the top-``k`` catalog items for each user, best first.

        Raises:
            UnknownUserError: a user is not in the training data.
            NotFittedError: ``fit`` was not called.
        """

    def _check_fitted(self) -> TrainData:
        if self.train_ is None:
            raise NotFittedError(f"{self.name}: call fit(train) before recommend()")
        return self.train_

    def save(self, path: str | Path) -> None:
        """Pickle the fitted recommender to ``path`` (written atomically)."""
        from llmrec_gen.io import atomic_write_bytes

        atomic_write_bytes(Path(path), pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load(path: str | Path) -> Recommender:
        """Load a recommender saved with :meth:`save`."""
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, Recommender):
            raise TypeError(f"{path} does not hold a Recommender")
        return obj


class ScoringRecommender(Recommender):
    """A recommender that scores the whole catalog; subclasses implement :meth:`_score`."""

    batch_size: int = 1024

    @abstractmethod
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """Return a dense ``(len(user_idx), n_items)`` float score matrix (higher is better)."""

    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Rank the full catalog for each user and keep the top ``k`` (see :class:`Recommender`)."""
        train = self._check_fitted()
        user_idx = train.user_indices(user_ids)
        items, scores = [], []
        for start in range(0, len(user_idx), self.batch_size):
            batch = user_idx[start : start + self.batch_size]
            s = np.asarray(self._score(batch), dtype=np.float64)
            b_items, b_scores = top_k(s, k, train.seen_mask(batch) if exclude_seen else None)
            items.extend(train.item_ids[i] for i in b_items)
            scores.extend(b_scores)
        return Recommendations(list(user_ids), items, scores)


def top_k(
    scores: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-``k`` column indices per row of ``scores``, skipping ``exclude`` (bool mask) entries.

    Ties are broken by the lower column index (stable), so results are deterministic.
    """
    scores = scores.copy()
    if exclude is not None:
        scores[exclude] = -np.inf
    n_items = scores.shape[1]
    kk = min(k, n_items)
    if kk <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return [empty] * len(scores), [empty.astype(scores.dtype)] * len(scores)
    if kk < n_items:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.tile(np.arange(n_items), (scores.shape[0], 1))
    out_idx, out_scores = [], []
    for row, cand in zip(scores, part, strict=True):
        kth = row[cand].min()
        if kk < n_items and not np.isnan(kth):
            # argpartition picks arbitrarily among items tied with the k-th score: take every
            # item scoring at least the k-th score, so the stable sort below sees all the ties.
            cand = np.flatnonzero(row >= kth)
        else:
            cand = np.sort(cand)
        order = cand[np.argsort(-row[cand], kind="stable")][:kk]  # ties: lower column first
        order = order[np.isfinite(row[order])]
        out_idx.append(order)
        out_scores.append(row[order])
    return out_idx, out_scores
