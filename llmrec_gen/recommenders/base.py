"""The one method contract (LLM or traditional): ``fit``, then ``recommend`` or ``predict_ratings``.

Every method is a :class:`Method` with a typed, validated config (``config_class``, pydantic) and
a set of declared :class:`Capability` values; code above the methods (the evaluator, the CLI)
asks for capabilities, never for names::

    rec = ALSRecommender(factors=64).fit(split.train)
    recs = rec.recommend([42, 7], k=10)                       # full-catalogue ranking
    recs = rec.recommend([42], k=5, items=[[1, 2, 3, 50]])    # rank given candidates only

Most rankers score every catalogue item for a batch of users; they subclass
:class:`ScoringRecommender` and implement ``_score(user_idx) -> (n, n_items)`` only: masking of
seen items, restriction to candidates and the top-k selection live here, once.
"""

from __future__ import annotations

import logging
import pickle
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from llmrec_gen.config import StrictModel, validate
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError, DataError, NotFittedError

log = logging.getLogger(__name__)


class Capability(str, Enum):
    """What a method can do (declared by the class; asked for by the evaluator and the CLI)."""

    RANK = "rank"
    """``recommend(users, k)`` ranks the full catalogue."""
    RANK_CANDIDATES = "rank_candidates"
    """``recommend(users, k, items=...)`` ranks only the given candidates."""
    PREDICT_RATINGS = "predict_ratings"
    """``predict_ratings(pairs)`` predicts ratings of (user, item) pairs."""
    GENERATION_STATS = "generation_stats"
    """Recommendations carry per-user statistics; ``summarize_stats`` turns them into rates."""
    CONTENT_DIGEST = "content_digest"
    """Results depend on files beyond the config (e.g. adapter weights): ``content_digest()``."""


RANKER = frozenset({Capability.RANK, Capability.RANK_CANDIDATES})
"""The capabilities of a method that ranks the catalogue or a candidate list."""


@dataclass(frozen=True)
class Provenance:
    """How one recommended item was obtained (generative methods fill this in).

    Attributes:
        source: ``"exact"``, ``"fuzzy"``, ``"embedding"`` or ``"constrained"`` (grounded from
            the model's text), ``"fill"`` (taken from a fallback recommender), ``"ranker"`` /
            ``"retriever"`` (two-stage recommenders) or ``"score"``.
        score: the grounding/match score in [0, 1] (1.0 for exact/constrained).
        generated: the generated text the item was grounded from ("" when none).
    """

    source: str
    score: float
    generated: str = ""


@dataclass(frozen=True)
class Recommendations:
    """Ranked recommendations for a batch of users.

    Attributes:
        user_ids: the users, in request order.
        item_ids: per user, a ranked array of catalogue item IDs (length <= k; shorter when
            fewer unseen items or candidates exist, or when a generator grounded fewer items:
            compose it with :class:`~llmrec_gen.recommenders.compose.Fallback` to fill them).
        scores: per user, scores aligned with ``item_ids`` (higher is better, non-increasing).
        details: optional per-user, per-item provenance.
        stats: optional per-user statistics (methods with ``GENERATION_STATS``): plain counts
            that ``Method.summarize_stats`` turns into rates.
        texts: optional per-user raw generated text.
    """

    user_ids: list[Any]
    item_ids: list[np.ndarray]
    scores: list[np.ndarray]
    details: list[list[Provenance]] | None = None
    stats: list[dict[str, float]] | None = None
    texts: list[str] | None = None

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass(frozen=True)
class RatingPredictions:
    """Predicted ratings for (user, item) pairs, with optional per-pair statistics.

    Attributes:
        values: one predicted rating per pair.
        stats: optional counts (e.g. answers that could not be parsed), summed over the pairs.
        texts: optional raw generated answer per pair.
    """

    values: np.ndarray
    stats: dict[str, float] | None = None
    texts: list[str] | None = None


class NoConfig(StrictModel):
    """The config of a method without hyperparameters."""


class Method(ABC):
    """Base class of every method: a validated config, declared capabilities and ``fit``.

    Subclasses set ``name`` (the registry name, used in messages), ``capabilities`` and
    ``config_class``, and read their hyperparameters from ``self.config``. The constructor takes
    a config object or mapping and/or keyword overrides::

        ALSRecommender(ALSConfig(factors=64))  ==  ALSRecommender(factors=64)

    Attributes:
        config: the validated config (a pydantic model; errors name the method and field).
        users_per_call: how many users the evaluator passes per ``recommend`` call (and so how
            often it checkpoints): large for fast methods, a few for LLMs.
    """

    name: ClassVar[str] = "method"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    config_class: ClassVar[type[StrictModel]] = NoConfig
    users_per_call: int = 1024
    train_: TrainData | None = None

    def __init__(self, config: BaseModel | Mapping[str, Any] | None = None, **overrides: Any):
        if isinstance(config, BaseModel):
            config = config.model_dump()
        self.config = validate(self.config_class, {**(config or {}), **overrides}, self.name)

    @abstractmethod
    def fit(self, train: TrainData) -> Method:
        """Learn from training interactions only and return ``self``."""

    def has(self, capability: Capability) -> bool:
        """Whether this method declares ``capability``."""
        return capability in self.capabilities

    def content_digest(self) -> str | None:
        """A digest of files the results depend on beyond the config (``CONTENT_DIGEST``)."""
        return None

    def summarize_stats(self, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """Totals and rates from per-user ``Recommendations.stats`` (``GENERATION_STATS``).

        The method, not the evaluator, knows what its statistics mean; rows reloaded from a
        finished run are summarized by a freshly built (unfitted) method.
        """
        return {}

    def _check_fitted(self) -> TrainData:
        if self.train_ is None:
            raise NotFittedError(f"{self.name}: call fit(train) before using the method")
        return self.train_

    def get_params(self) -> dict[str, Any]:
        """The config as a plain dict (hyperparameters and run options)."""
        return self.config.model_dump()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def save(self, path: str | Path) -> None:
        """Pickle the fitted method to ``path`` (written atomically)."""
        from llmrec_gen.io import atomic_write_bytes

        atomic_write_bytes(Path(path), pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load(path: str | Path) -> Method:
        """Load a method saved with :meth:`save`."""
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        if not isinstance(obj, Method):
            raise TypeError(f"{path} does not hold a llmrec-gen method")
        return obj


class Recommender(Method):
    """A method that ranks items: ``fit(train)`` then ``recommend(user_ids, k)``."""

    capabilities = RANKER

    @abstractmethod
    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Return the top-``k`` items for each user, best first.

        Args:
            user_ids: the users (training users; IDs as in the data).
            k: list length (>= 1).
            exclude_seen: never return an item of the user's training history.
            items: per user, the candidate item IDs to rank (``None``: the full catalogue).

        Raises:
            UnknownUserError: a user is not in the training data.
            NotFittedError: ``fit`` was not called.
        """


class RatingPredictor(Method):
    """A method that predicts ratings: ``fit(train)`` then ``predict_ratings(pairs)``."""

    capabilities = frozenset({Capability.PREDICT_RATINGS})

    @abstractmethod
    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> RatingPredictions:
        """Predicted ratings for ``(user_id, item_id)`` pairs."""


def check_k(k: int) -> int:
    """``k`` as an int >= 1, else a one-line :class:`ConfigError`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def candidate_mask(train: TrainData, items: Sequence[Sequence[Any]], n_users: int) -> np.ndarray:
    """Boolean ``(n_users, n_items)`` mask of each user's candidate items.

    Raises:
        DataError: ``items`` does not have one list per user, or names an unknown item.
    """
    if len(items) != n_users:
        raise DataError(f"items: got {len(items)} candidate lists for {n_users} users")
    mask = np.zeros((n_users, train.n_items), dtype=bool)
    index = train.item_index
    for row, cands in enumerate(items):
        try:
            mask[row, [index[i] for i in cands]] = True
        except KeyError as exc:
            raise DataError(f"items: unknown item ID {exc.args[0]!r}") from None
    return mask


class ScoringRecommender(Recommender):
    """A recommender that scores the whole catalogue.

    Subclasses implement ``_fit(train)`` (store plain numpy/scipy arrays only, so a saved model
    loads without the library that trained it) and ``_score(user_idx)``; :meth:`fit` sets
    ``train_`` only once fitting succeeded.
    """

    def fit(self, train: TrainData) -> ScoringRecommender:
        """Learn from ``train`` (training interactions only) and return ``self``."""
        self.train_ = None
        start = time.perf_counter()
        self._fit(train)
        self.train_ = train
        log.info("%s: fitted in %.2fs", self.name, time.perf_counter() - start)
        return self

    @abstractmethod
    def _fit(self, train: TrainData) -> None:
        """Learn the model's arrays from ``train``."""

    @abstractmethod
    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """Return a dense ``(len(user_idx), n_items)`` float score matrix (higher is better)."""

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Rank the catalogue (or the candidates) for each user (see :class:`Recommender`)."""
        train = self._check_fitted()
        k = check_k(k)
        user_idx = train.user_indices(user_ids)
        allowed = candidate_mask(train, items, len(user_idx)) if items is not None else None
        ranked, scores = [], []
        step = max(1, self.users_per_call)
        for start in range(0, len(user_idx), step):
            batch = user_idx[start : start + step]
            s = np.asarray(self._score(batch), dtype=np.float64)
            exclude = train.seen_mask(batch) if exclude_seen else None
            if allowed is not None:
                outside = ~allowed[start : start + step]
                exclude = outside if exclude is None else exclude | outside
            b_items, b_scores = top_k(s, k, exclude)
            ranked.extend(train.item_ids[i] for i in b_items)
            scores.extend(b_scores)
        return Recommendations(list(user_ids), ranked, scores)


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
