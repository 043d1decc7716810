"""Linear item-item autoencoders: EASE (Steck, WWW 2019), closed form.

EASE learns one dense item x item weight matrix ``B`` that reconstructs each user's binary row
from the other items, with a zero diagonal so an item cannot predict itself::

    min_B ||X - X B||_F^2 + lambda ||B||_F^2   subject to   diag(B) = 0
    P = (X^T X + lambda I)^-1,   B_ij = -P_ij / P_jj  (i != j),   B_jj = 0

``score(u, j) = x_u . B[:, j]``. On ML-1M (3.7k items) the fit is one float64 Cholesky inverse
of a 3.7k x 3.7k matrix: seconds on 2 cores.

``cornac.models.EASE`` computes the same matrix, but with an LU inverse (``np.linalg.inv``, about
twice the flops), clips negative weights by default (``posB=True``, not the paper's model) and
renumbers items; a numpy closed form is shorter than the adapter. Scratch measurement (1 thread):
ML-100k test HR@10 0.136 / NDCG@10 0.072 at the validation-best lambda 100, ML-1M 0.111 / 0.055
at lambda 500, 3.4 s fit.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import ScoringRecommender


def ease_weights(matrix: sp.spmatrix, lambda_: float) -> np.ndarray:
    """EASE's item-item matrix ``B`` (module docstring), computed in float64.

    ``X^T X + lambda I`` is symmetric positive definite for ``lambda > 0``, so the inverse uses
    LAPACK's Cholesky routines (``potrf`` + ``potri``): about half the flops of an LU inverse
    (``np.linalg.inv``) and the same result.

    Args:
        matrix: user x item interactions (any nonzero counts as 1).
        lambda_: L2 regularisation (> 0).

    Returns:
        Dense float64 ``(n_items, n_items)`` matrix, row = source item, column = target item.
    """
    import scipy.linalg

    x = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    x.data[:] = 1.0
    gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += lambda_
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (gram,))
    chol, info = potrf(gram, lower=True, overwrite_a=True, clean=False)
    if info != 0:  # cannot happen for lambda_ > 0 unless the input holds NaN
        raise np.linalg.LinAlgError(f"EASE: Cholesky factorisation failed (info={info})")
    p, info = potri(chol, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky inverse failed (info={info})")
    p = np.tril(p) + np.tril(p, -1).T  # potri fills the lower triangle only
    b = p / (-np.diag(p))[np.newaxis, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EASEConfig(StrictModel):
    """Hyperparameters of :class:`EASE`."""

    lambda_: float = Field(500.0, gt=0)  # L2 on B; ~100-1000 on MovieLens (grows with data size)


class EASE(ScoringRecommender):
    """EASE: the closed-form item-item linear autoencoder with a zero diagonal (module docstring).

    Negative weights are kept (the paper's model; cornac's EASE clips them by default). ``B`` is
    stored in float32 for scoring (rankings are unchanged at the regularisation used here).
    """

    name = "ease"
    config_class = EASEConfig
    users_per_call = 2048

    def _fit(self, train: TrainData) -> None:
        self.weights_ = ease_weights(train.matrix, self.config.lambda_).astype(np.float32)
        self.matrix_ = train.matrix

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix_[user_idx] @ self.weights_)
