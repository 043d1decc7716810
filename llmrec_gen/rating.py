"""Rating prediction (1-5) for held-out (user, item) pairs: MAE/RMSE baselines.

Every rating predictor implements ``fit(train)`` and ``predict_ratings(pairs) -> np.ndarray``;
:class:`~llmrec_gen.llm.LLMRecommender` implements the same two methods (it asks the model with
the ``rating-v1`` template), so the evaluator treats them alike.

Baselines: global mean, user mean, item mean (both shrunk toward the global mean), and an
SVD-style model: user/item biases plus a truncated SVD (``scipy.sparse.linalg.svds``) of the
residuals, predictions clipped to [1, 5].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from llmrec_gen.data import TrainData
from llmrec_gen.errors import ConfigError


class RatingPredictor:
    """Base class: ``fit(train)`` then ``predict_ratings([(user, item), ...])``."""

    name = "rating"

    def fit(self, train: TrainData) -> RatingPredictor:
        """Learn from training ratings only."""
        self.train_ = train
        r = train.interactions["rating"].to_numpy(dtype=np.float64)
        self.mu_ = float(r.mean())
        return self

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """Predicted ratings for ``pairs`` (unknown users/items get the global mean)."""
        return np.full(len(pairs), self.mu_)


class GlobalMean(RatingPredictor):
    """Predicts the mean training rating for everyone."""

    name = "global-mean"


class _Biases(RatingPredictor):
    def __init__(self, shrinkage: float = 10.0) -> None:
        self.shrinkage = shrinkage  # pseudo-ratings at the global mean; 5-25 typical

    def _bias(self, column: str) -> dict[Any, float]:
        inter = self.train_.interactions
        g = (inter["rating"] - self.mu_).groupby(inter[column])
        return (g.sum() / (g.count() + self.shrinkage)).to_dict()


class UserMean(_Biases):
    """Global mean plus the user's shrunk mean deviation."""

    name = "user-mean"

    def fit(self, train: TrainData) -> UserMean:
        """Learn user biases."""
        super().fit(train)
        self.bu_ = self._bias("user_id")
        return self

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """See :meth:`RatingPredictor.predict_ratings`."""
        return np.array([self.mu_ + self.bu_.get(u, 0.0) for u, _ in pairs])


class ItemMean(_Biases):
    """Global mean plus the item's shrunk mean deviation."""

    name = "item-mean"

    def fit(self, train: TrainData) -> ItemMean:
        """Learn item biases."""
        super().fit(train)
        self.bi_ = self._bias("item_id")
        return self

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """See :meth:`RatingPredictor.predict_ratings`."""
        return np.array([self.mu_ + self.bi_.get(i, 0.0) for _, i in pairs])


class BiasedSVD(_Biases):
    """Biases + rank-``factors`` truncated SVD of the residual matrix (scipy ``svds``)."""

    name = "svd"

    def __init__(self, factors: int = 20, shrinkage: float = 10.0) -> None:
        super().__init__(shrinkage)
        self.factors = factors  # latent dimensions; 10-50 on ML-100k

    def fit(self, train: TrainData) -> BiasedSVD:
        """Fit biases, then factorize the residuals of observed ratings."""
        from scipy.sparse.linalg import svds

        super().fit(train)
        inter = train.interactions
        self.bi_ = self._bias("item_id")
        resid_u = inter["rating"] - self.mu_ - inter["item_id"].map(self.bi_)
        self.bu_ = (
            resid_u.groupby(inter["user_id"]).sum()
            / (resid_u.groupby(inter["user_id"]).count() + self.shrinkage)
        ).to_dict()
        resid = resid_u - inter["user_id"].map(self.bu_)
        rows = inter["user_id"].map(train.user_index).to_numpy()
        cols = inter["item_id"].map(train.item_index).to_numpy()
        m = sp.csr_matrix((resid.to_numpy(), (rows, cols)), shape=(train.n_users, train.n_items))
        k = max(1, min(self.factors, min(m.shape) - 1))
        u, s, vt = svds(m, k=k, random_state=0)
        self.P_, self.Q_ = u * s, vt.T
        return self

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """See :meth:`RatingPredictor.predict_ratings`."""
        out = []
        for u, i in pairs:
            pred = self.mu_ + self.bu_.get(u, 0.0) + self.bi_.get(i, 0.0)
            ui, ii = self.train_.user_index.get(u), self.train_.item_index.get(i)
            if ui is not None and ii is not None:
                pred += float(self.P_[ui] @ self.Q_[ii])
            out.append(pred)
        return np.clip(np.asarray(out), 1.0, 5.0)


RATING_BASELINES: dict[str, type[RatingPredictor]] = {
    c.name: c for c in (GlobalMean, UserMean, ItemMean, BiasedSVD)
}


def make_rating_predictor(name: str, **params: Any) -> RatingPredictor:
    """Build a rating baseline by name (``global-mean``, ``user-mean``, ``item-mean``, ``svd``)."""
    if name not in RATING_BASELINES:
        raise ConfigError(f"unknown rating method {name!r} ({', '.join(RATING_BASELINES)}, llm)")
    try:
        return RATING_BASELINES[name](**params)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
