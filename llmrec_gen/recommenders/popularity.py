"""Non-personalised floors every method must beat: a seeded random ranking and popularity."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import NoConfig, ScoringRecommender


class RandomConfig(StrictModel):
    """Hyperparameters of :class:`RandomRecommender`."""

    seed: int = Field(0, ge=0)  # any integer >= 0; different seeds give independent rankings


class RandomRecommender(ScoringRecommender):
    """Uniformly random ranking of the unseen catalogue: the sanity floor.

    A user's scores depend only on ``seed`` and the user's index in the training data, so
    ``recommend`` is repeatable, independent of batching, and survives save/load.
    """

    name = "random"
    config_class = RandomConfig

    def _fit(self, train: TrainData) -> None:
        self.n_items_ = train.n_items

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        seed = self.config.seed
        return np.stack(
            [np.random.default_rng([seed, int(u)]).random(self.n_items_) for u in user_idx]
        )


class PopularityRecommender(ScoringRecommender):
    """Most popular unseen items first (training interaction counts); ties by catalogue order."""

    name = "popularity"
    config_class = NoConfig

    def _fit(self, train: TrainData) -> None:
        self.popularity_ = train.item_popularity.astype(np.float64)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(user_idx), len(self.popularity_)))
