"""Matrix factorisation: implicit-feedback ALS and BPR (``implicit``), LightFM pure and hybrid.

Every model stores plain float32 factor arrays after ``fit``, so a saved model loads and scores
without the library that trained it. Scores are ``user_factors @ item_factors.T`` (+ item bias).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import ScoringRecommender
from llmrec_gen.recommenders.item_features import lightfm_item_features


def limit_blas_threads() -> Any:
    """Context manager: BLAS single-threaded (what implicit recommends; avoids its warning)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class FactorModel(ScoringRecommender):
    """Scores are ``user_factors @ item_factors.T`` (+ optional item biases)."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    item_bias_: np.ndarray | None = None

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self.user_factors_[user_idx] @ self.item_factors_.T
        if self.item_bias_ is not None:
            scores += self.item_bias_[None, :]
        return scores

    def _store(self, train: TrainData, user_factors: Any, item_factors: Any) -> None:
        user_factors, item_factors = np.asarray(user_factors), np.asarray(item_factors)
        if user_factors.shape[0] != train.n_users or item_factors.shape[0] != train.n_items:
            raise RuntimeError(  # a bug (matrix orientation), not a user error
                f"{self.name}: factor shapes {user_factors.shape}/{item_factors.shape} do not "
                f"match {train.n_users} users x {train.n_items} items"
            )
        self.user_factors_ = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)


class ALSConfig(StrictModel):
    """Hyperparameters of :class:`ALSRecommender`."""

    factors: int = Field(32, ge=1)  # latent dimension; 32-64 on ML-100k (128 overfits)
    regularization: float = Field(1.0, ge=0)  # L2 on factors; 0.01-5 flat, >= 30 underfits
    alpha: float = Field(1.0, gt=0)  # confidence of an observed item; 0.5-2 (>= 5 worse)
    iterations: int = Field(15, ge=1)  # ALS sweeps; 10-30 (converges in ~15)
    num_threads: int = Field(1, ge=0)  # 0 = all cores; results do not depend on it
    seed: int = Field(0, ge=0)  # factor initialisation


class ALSRecommender(FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) from ``implicit``, on the CPU.

    Confidence is ``1 + alpha`` for observed items and 1 otherwise. Each user's least-squares
    solve is independent, so results do not depend on ``num_threads``.
    """

    name = "als"
    config_class = ALSConfig

    def _fit(self, train: TrainData) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        with limit_blas_threads():  # implicit warns at construction otherwise
            model = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                num_threads=c.num_threads,
                random_state=c.seed,
            )
            model.fit(train.matrix, show_progress=False)  # implicit >= 0.5: users x items
        self._store(train, model.user_factors, model.item_factors)


class BPRConfig(StrictModel):
    """Hyperparameters of :class:`BPRRecommender`."""

    factors: int = Field(64, ge=1)  # latent dimension; 32-128
    learning_rate: float = Field(0.01, gt=0)  # SGD step; 0.005-0.01 (0.05 drifts to popularity)
    regularization: float = Field(0.01, ge=0)  # L2 on factors; 0.001-0.05
    iterations: int = Field(100, ge=1)  # epochs over the positives; 100-200 (implicit's default)
    num_threads: int = Field(1, ge=0)  # 1 = deterministic; more is faster but not repeatable
    seed: int = Field(0, ge=0)  # initialisation and negative sampling


class BPRRecommender(FactorModel):
    """Bayesian Personalized Ranking (Rendle et al. 2009) from ``implicit``, on the CPU.

    implicit appends an item-bias column to the item factors (and a constant 1 to the user
    factors), so the dot product includes the bias. ``num_threads=1`` keeps SGD reproducible;
    more threads are faster but lock-free (Hogwild) and so not bit-for-bit repeatable.
    """

    name = "bpr"
    config_class = BPRConfig

    def _fit(self, train: TrainData) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        with limit_blas_threads():  # implicit warns at construction otherwise
            model = BayesianPersonalizedRanking(
                factors=c.factors,
                learning_rate=c.learning_rate,
                regularization=c.regularization,
                iterations=c.iterations,
                num_threads=c.num_threads,
                random_state=c.seed,
            )
            model.fit(train.matrix, show_progress=False)
        self._store(train, model.user_factors, model.item_factors)


class LightFMConfig(StrictModel):
    """Hyperparameters of :class:`LightFMRecommender` (pure collaborative filtering)."""

    loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp"  # warp: top-k ranking
    no_components: int = Field(64, ge=1)  # latent dimension; 32-128 (32 clearly worse)
    epochs: int = Field(30, ge=1)  # passes over the data; 20-30 (50 overfits on ML-100k)
    learning_rate: float = Field(0.05, gt=0)  # adagrad step; 0.02-0.1 (0.05 best)
    item_alpha: float = Field(0.0, ge=0)  # L2 on item features; 0-1e-6 (1e-5 hurts here)
    user_alpha: float = Field(0.0, ge=0)  # L2 on user embeddings; 0-1e-6
    max_sampled: int = Field(10, ge=1)  # WARP negatives tried per positive; 10-30
    num_threads: int = Field(1, ge=1)  # 1 = deterministic; 2 is faster but not repeatable
    seed: int = Field(0, ge=0)  # initialisation and sampling


class LightFMHybridConfig(LightFMConfig):
    """Hyperparameters of :class:`LightFMHybridRecommender`."""

    epochs: int = Field(20, ge=1)  # passes; 20-30 (each costs ~3x pure CF: ~6 features/item)


class LightFMRecommender(FactorModel):
    """LightFM (Kula 2015) WARP, pure collaborative filtering (lightfm-next).

    Scores are ``user_repr @ item_repr.T + item_bias``; the user bias does not change a
    ranking. ``num_threads=1`` keeps training reproducible.
    """

    name = "lightfm"
    config_class = LightFMConfig
    hybrid = False

    def _fit(self, train: TrainData) -> None:
        from lightfm import LightFM

        c = self.config
        model = LightFM(
            no_components=c.no_components,
            loss=c.loss,
            learning_rate=c.learning_rate,
            item_alpha=c.item_alpha,
            user_alpha=c.user_alpha,
            max_sampled=c.max_sampled,
            random_state=c.seed,
        )
        features = self._item_features(train)
        model.fit(
            train.matrix.tocoo(), item_features=features, epochs=c.epochs, num_threads=c.num_threads
        )
        item_bias, item_repr = model.get_item_representations(features)
        _, user_repr = model.get_user_representations()
        self._store(train, user_repr, item_repr)
        self.item_bias_ = np.asarray(item_bias, dtype=np.float32)

    def _item_features(self, train: TrainData) -> sp.csr_matrix | None:
        """LightFM's item-feature matrix (rows in item-index order), or None for pure CF."""
        return lightfm_item_features(train.catalog) if self.hybrid else None


class LightFMHybridRecommender(LightFMRecommender):
    """LightFM with item content features: an item is the sum of the embeddings of its identity,
    genres, decade and title words (:func:`~llmrec_gen.recommenders.item_features.
    lightfm_item_features`), so items with few or no interactions still get a representation."""

    name = "lightfm-hybrid"
    config_class = LightFMHybridConfig
    hybrid = True
