"""The behaviour every recommender must show, as a reusable test class.

Subclass :class:`RecommenderConformance` (name the subclass ``Test...``) and provide a
``make_recommender`` fixture that returns a zero-argument factory of *unfitted*, seeded
recommenders::

    from conformance import RecommenderConformance

    class TestPopularity(RecommenderConformance):
        @pytest.fixture
        def make_recommender(self):
            return PopularityRecommender

The data they are fitted on is the ``conformance_train`` fixture (the block dataset of
``conftest.py`` by default); override it in the subclass to use other data. Generators that may
return fewer than ``k`` items (they rank only what they grounded) set ``full_lists = False``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from llmrec_gen.data import TrainData
from llmrec_gen.errors import ConfigError, NotFittedError, UnknownUserError
from llmrec_gen.recommenders.base import Capability, Recommendations, Recommender

Factory = Callable[[], Recommender]


def _users(train: TrainData, n: int = 6) -> list[Any]:
    """A few users spread over the ID range, as plain Python values."""
    idx = np.linspace(0, train.n_users - 1, num=min(n, train.n_users)).astype(int)
    return [train.user_ids[i].item() for i in idx]


def _same(a: Recommendations, b: Recommendations) -> None:
    assert a.user_ids == b.user_ids
    for ia, ib, sa, sb in zip(a.item_ids, b.item_ids, a.scores, b.scores, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(sa, sb, rtol=1e-6, atol=1e-9)


class RecommenderConformance:
    """Contract tests of :class:`llmrec_gen.recommenders.base.Recommender` (module docstring)."""

    full_lists = True  # False: lists may be shorter than k (a generator's grounded items only)

    @pytest.fixture
    def make_recommender(self) -> Factory:
        """Override: return a factory of unfitted recommenders (deterministic for its seed)."""
        raise NotImplementedError("subclasses provide the make_recommender fixture")

    @pytest.fixture
    def conformance_train(self, block_data: Any) -> TrainData:
        """The data to fit on; override to use another dataset."""
        return block_data.train

    @pytest.fixture
    def fitted(self, make_recommender: Factory, conformance_train: TrainData) -> Recommender:
        return make_recommender().fit(conformance_train)

    def test_fit_returns_self(self, make_recommender: Factory, conformance_train: TrainData):
        rec = make_recommender()
        assert rec.fit(conformance_train) is rec

    def test_recommend_before_fit_raises(
        self, make_recommender: Factory, conformance_train: TrainData
    ):
        with pytest.raises(NotFittedError):
            make_recommender().recommend(_users(conformance_train, 1), k=5)

    def test_returns_at_most_k_distinct_catalog_ids(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train)
        recs = fitted.recommend(users, k=5)
        catalog = set(conformance_train.item_ids.tolist())
        assert recs.user_ids == users
        assert len(recs.item_ids) == len(recs.scores) == len(users)
        for items, scores in zip(recs.item_ids, recs.scores, strict=True):
            assert 0 < len(items) <= 5
            assert not self.full_lists or len(items) == 5
            assert len(scores) == len(items)
            assert len(set(items.tolist())) == len(items)
            assert set(items.tolist()) <= catalog

    def test_k_beyond_catalog_returns_every_unseen_item(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train)
        recs = fitted.recommend(users, k=conformance_train.n_items + 100)
        catalog = set(conformance_train.item_ids.tolist())
        for user, items in zip(users, recs.item_ids, strict=True):
            unseen = catalog - conformance_train.seen_items(user)
            assert len(set(items.tolist())) == len(items)
            if self.full_lists:
                assert set(items.tolist()) == unseen
            else:
                assert 0 < len(items) and set(items.tolist()) <= unseen

    @pytest.mark.parametrize("unknown", ["no-such-user-xyz", -987654321])
    def test_unknown_user_raises(
        self, fitted: Recommender, conformance_train: TrainData, unknown: Any
    ):
        known = _users(conformance_train, 1)
        with pytest.raises(UnknownUserError):
            fitted.recommend(known + [unknown], k=5)

    def test_exclude_seen_never_returns_training_items(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train, conformance_train.n_users)
        recs = fitted.recommend(users, k=conformance_train.n_items)
        for user, items in zip(users, recs.item_ids, strict=True):
            assert not set(items.tolist()) & conformance_train.seen_items(user)

    def test_include_seen_may_return_training_items(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train)
        recs = fitted.recommend(users, k=conformance_train.n_items, exclude_seen=False)
        for user, items in zip(users, recs.item_ids, strict=True):
            if self.full_lists:
                assert conformance_train.seen_items(user) <= set(items.tolist())
            else:
                assert set(items.tolist()) <= set(conformance_train.item_ids.tolist())

    def test_declares_that_it_ranks(self, fitted: Recommender):
        assert fitted.has(Capability.RANK) and fitted.has(Capability.RANK_CANDIDATES)

    def test_ranks_only_the_given_candidates(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train, 3)
        catalog = conformance_train.item_ids.tolist()
        cands = []
        for user in users:
            unseen = [i for i in catalog if i not in conformance_train.seen_items(user)]
            cands.append(unseen[::2][:6])
        recs = fitted.recommend(users, k=4, items=cands)
        for items, allowed in zip(recs.item_ids, cands, strict=True):
            assert set(items.tolist()) <= set(allowed)
            assert len(items) == min(4, len(allowed)) or not self.full_lists

    @pytest.mark.parametrize("k", [0, -1])
    def test_bad_k_is_a_config_error(self, fitted: Recommender, conformance_train: TrainData, k):
        with pytest.raises(ConfigError, match="k must be"):
            fitted.recommend(_users(conformance_train, 1), k=k)

    def test_scores_are_non_increasing(self, fitted: Recommender, conformance_train: TrainData):
        recs = fitted.recommend(_users(conformance_train), k=conformance_train.n_items)
        for scores in recs.scores:
            assert np.all(np.isfinite(scores))
            assert np.all(np.diff(scores) <= 0)

    def test_batch_gives_the_same_answer_as_one_user(
        self, fitted: Recommender, conformance_train: TrainData
    ):
        users = _users(conformance_train)
        together = fitted.recommend(users, k=7)
        for n, user in enumerate(users):
            alone = fitted.recommend([user], k=7)
            np.testing.assert_array_equal(alone.item_ids[0], together.item_ids[n])

    def test_same_seed_same_output(
        self, fitted: Recommender, make_recommender: Factory, conformance_train: TrainData
    ):
        users = _users(conformance_train)
        again = make_recommender().fit(conformance_train)
        _same(fitted.recommend(users, k=10), again.recommend(users, k=10))

    def test_save_load_round_trip(
        self, fitted: Recommender, conformance_train: TrainData, tmp_path: Any
    ):
        users = _users(conformance_train)
        path = tmp_path / "model.pkl"
        fitted.save(path)
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted)
        _same(fitted.recommend(users, k=10), loaded.recommend(users, k=10))
