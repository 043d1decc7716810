"""Neighbourhood models on the binary user x item matrix: item-kNN and user-kNN (cosine)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import ScoringRecommender


def cosine_top_k(rows: sp.csr_matrix, k: int, shrink: float) -> sp.csr_matrix:
    """Row ``i`` holds the ``k`` rows most cosine-similar to row ``i`` (itself excluded).

    ``sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)``; the shrink term damps similarities
    that rest on few co-occurrences. Computed in row blocks so memory stays bounded.
    """
    rows = sp.csr_matrix(rows, dtype=np.float32)
    n = rows.shape[0]
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float64).ravel())
    k = min(k, n - 1)
    if k <= 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rows_t = rows.T.tocsc()
    block = max(1, 2**23 // max(1, n))  # rows per block: <= 64 MB per float64 array
    coo_r, coo_c, coo_v = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dots = (rows[start:stop] @ rows_t).toarray().astype(np.float64)
        sims = dots / (norms[start:stop, None] * norms[None, :] + shrink + 1e-9)
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sims, top, axis=1)
        keep = vals > 0
        coo_r.append(np.nonzero(keep)[0] + start)
        coo_c.append(top[keep])
        coo_v.append(vals[keep])
    return sp.csr_matrix(
        (np.concatenate(coo_v), (np.concatenate(coo_r), np.concatenate(coo_c))),
        shape=(n, n),
        dtype=np.float32,
    )


class ItemKNNConfig(StrictModel):
    """Hyperparameters of :class:`ItemKNN`."""

    k_neighbors: int = Field(200, ge=1)  # neighbours per item; 50-400 all within noise (ML-100k)
    shrink: float = Field(10.0, ge=0)  # damps similarities resting on few co-raters; 0-50


class ItemKNN(ScoringRecommender):
    """Item-based kNN on the binary matrix (cosine with shrinkage, top-k neighbours per item).

    ``score(u, j) = sum_{i in I_u, i in N_k(j)} sim(i, j)``: each target item ``j`` keeps its
    ``k_neighbors`` most similar items (the ItemKNN-CF of Dacrema et al., RecSys 2019).
    """

    name = "itemknn"
    config_class = ItemKNNConfig

    def _fit(self, train: TrainData) -> None:
        sim = cosine_top_k(train.matrix.T.tocsr(), self.config.k_neighbors, self.config.shrink)
        self.similarity_ = sim.T.tocsr()  # column j = neighbours of target item j
        self.matrix_ = train.matrix

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.matrix_[user_idx] @ self.similarity_).toarray()


class UserKNNConfig(StrictModel):
    """Hyperparameters of :class:`UserKNN`."""

    k_neighbors: int = Field(30, ge=1)  # neighbours per user; 20-50 best on ML-100k, >100 worse
    shrink: float = Field(10.0, ge=0)  # damps similarities resting on few shared items; 0-50


class UserKNN(ScoringRecommender):
    """User-based kNN: ``score(u, j) = sum_{v in N_k(u)} sim(u, v) * x_vj`` (cosine + shrink)."""

    name = "userknn"
    config_class = UserKNNConfig

    def _fit(self, train: TrainData) -> None:
        self.similarity_ = cosine_top_k(train.matrix, self.config.k_neighbors, self.config.shrink)
        self.matrix_ = train.matrix

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.similarity_[user_idx] @ self.matrix_).toarray()
