"""Tests of the strong traditional references: EASE, SASRec and the ID two-tower (``id-mf``).

Their shared contract runs in ``test_baselines.py`` (they are registry baselines); here: the
maths against direct computations and a pattern only a sequential model can learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conformance import RecommenderConformance

from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.recommenders.linear import EASE, ease_weights
from llmrec_gen.recommenders.neural import TwoTowerMF, normalized_adjacency
from llmrec_gen.recommenders.sequential import SASRec, full_softmax_cross_entropy, left_pad

# ---------------------------------------------------------------------------------------------
# EASE


def _ease_direct(x: np.ndarray, lam: float) -> np.ndarray:
    """EASE by the paper's formula with a plain inverse (no Cholesky, no symmetry tricks)."""
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[np.newaxis, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("lam", [0.5, 10.0, 300.0])
def test_ease_weights_match_the_closed_form(lam: float):
    rng = np.random.default_rng(3)
    x = (rng.random((40, 15)) < 0.3).astype(float)
    x[0, 0] = 5.0  # any nonzero counts as an interaction
    expected = _ease_direct((x > 0).astype(float), lam)
    got = ease_weights(sp.csr_matrix(x), lam)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(got) == 0)


def test_ease_scores_are_history_times_weights(block_data: Any):
    train = block_data.train
    rec = EASE(lambda_=20.0).fit(train)
    x = train.matrix.toarray().astype(float)
    idx = np.arange(train.n_users)
    np.testing.assert_allclose(rec._score(idx), x @ _ease_direct(x, 20.0), rtol=1e-4, atol=1e-5)


def test_ease_lambda_must_be_positive():
    with pytest.raises(ConfigError, match="lambda_"):
        EASE(lambda_=0)


# ---------------------------------------------------------------------------------------------
# SASRec


def _cycle_data(n_items: int = 12, n_users: int = 48, length: int = 6, seed: int = 0):
    """Users walk a cycle of items in order; the right next item is the last one's successor.

    Item-item co-occurrence cannot tell the successor of the last item from the predecessor of
    the first (both neighbour the history equally often); only the order can.
    """
    rng = np.random.default_rng(seed)
    rows, target = [], {}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        walk = [(start + t) % n_items for t in range(length + 1)]
        target[u] = 100 + walk[-1]
        rows += [(u, 100 + item, 4.0, 1000 * u + t) for t, item in enumerate(walk[:-1])]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    catalog = pd.DataFrame({"item_id": 100 + np.arange(n_items), "title": "x", "text": "x"})
    return TrainData(inter, catalog), target


SASREC_SMALL = {"max_len": 8, "hidden": 16, "batch_size": 16, "num_threads": 1}


def test_sasrec_learns_the_next_item_of_a_sequence():
    train, target = _cycle_data()
    rec = SASRec(**SASREC_SMALL, max_epochs=60, patience=0, dropout=0.0, lr=1e-2, seed=1)
    recs = rec.fit(train).recommend(list(target), k=1)
    hits = np.mean([items[0] == target[u] for u, items in zip(target, recs.item_ids, strict=True)])
    assert hits >= 0.9
    assert rec.history_[-1]["loss"] < rec.history_[0]["loss"]


def test_sasrec_early_stopping_keeps_the_best_epoch():
    train, _ = _cycle_data(seed=2)
    rec = SASRec(**SASREC_SMALL, max_epochs=40, patience=3, lr=1e-2).fit(train)
    scores = [r["valid_ndcg@10"] for r in rec.history_]
    assert len(rec.history_) < 40 or max(scores) == scores[-1]
    net = rec._network()  # rebuilt from weights_: the best epoch's state, not the last one's
    from llmrec_gen.recommenders.sequential import _ValidationSet

    hist = [np.asarray([train.item_index[i] for i in train.history(u)]) for u in train.user_ids]
    valid = _ValidationSet([h[:-1] for h in hist], np.array([h[-1] for h in hist]), 12, 8)
    assert valid.ndcg(net, "cpu") == pytest.approx(max(scores))


def test_sasrec_rejects_heads_that_do_not_divide_hidden(block_data: Any):
    with pytest.raises(ConfigError, match="n_heads"):
        SASRec(hidden=10, n_heads=3).fit(block_data.train)


def test_chunked_cross_entropy_equals_the_plain_one():
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 8, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5000, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5000, (300,), generator=g)
    ours = full_softmax_cross_entropy(hidden, weight, target)  # chunks of 209 rows
    d_ours = torch.autograd.grad(ours, (hidden, weight))
    plain = F.cross_entropy(hidden @ weight.T, target)
    d_plain = torch.autograd.grad(plain, (hidden, weight))
    torch.testing.assert_close(ours, plain)
    for a, b in zip(d_ours, d_plain, strict=True):
        torch.testing.assert_close(a, b)


def test_left_pad_keeps_the_tail_shifted_by_one():
    out = left_pad([np.array([0, 1, 2, 3]), np.array([5]), np.array([], dtype=int)], 3)
    np.testing.assert_array_equal(out, [[2, 3, 4], [0, 0, 6], [0, 0, 0]])


class TestSASRecOnCycles(RecommenderConformance):
    """The contract again on sequence data (string-free integer IDs, one cold-free catalogue)."""

    @pytest.fixture
    def conformance_train(self) -> TrainData:
        return _cycle_data(n_users=12)[0]

    @pytest.fixture
    def make_recommender(self) -> Any:
        return lambda: SASRec(**SASREC_SMALL, max_epochs=3, patience=0)


# ---------------------------------------------------------------------------------------------
# Two-tower MF (id-mf)


def test_normalized_adjacency_is_symmetric_with_unit_spectral_radius():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=float))
    a = normalized_adjacency(r).toarray()
    np.testing.assert_allclose(a, a.T)
    assert a[0, 3] == pytest.approx(1 / np.sqrt(2 * 1))  # user 0 (deg 2) - item 0 (deg 1)
    assert a[0, 4] == pytest.approx(1 / np.sqrt(2 * 2))
    assert np.max(np.abs(np.linalg.eigvalsh(a))) == pytest.approx(1.0)
    assert not a[2].any() and not a[5].any()  # isolated user and item


class TestIDMFBPR(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self) -> Any:
        return lambda: TwoTowerMF(loss="bpr", n_layers=0, epochs=5, batch_size=32, num_threads=1)


@pytest.mark.parametrize("params", [{"loss": "softmax"}, {"loss": "bpr", "lr": 0.02}])
def test_id_mf_ranks_the_held_out_item_first(block_data: Any, params: dict):
    users = list(block_data.held_out)
    rec = TwoTowerMF(**params, epochs=40, num_threads=1).fit(block_data.train)
    top = rec.recommend(users, k=1).item_ids
    assert all(t[0] == block_data.held_out[u] for u, t in zip(users, top, strict=True))
    assert rec.history_[-1]["loss"] < rec.history_[0]["loss"]


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_id_mf_never_trains_cold_items_as_negatives(block_data: Any, loss: str):
    """Items without interactions get no gradient: their vectors stay at initialisation."""
    train = block_data.train
    cold = [train.item_index[i] for i in block_data.block_items[-1]]
    warm = np.setdiff1d(np.arange(train.n_items), cold)
    fits = [TwoTowerMF(loss=loss, n_layers=0, epochs=e, num_threads=1).fit(train) for e in (1, 6)]
    np.testing.assert_array_equal(fits[0].item_factors_[cold], fits[1].item_factors_[cold])
    assert not np.allclose(fits[0].item_factors_[warm], fits[1].item_factors_[warm])
