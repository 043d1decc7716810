"""Composition: Fallback fills, Rerank re-orders a retriever's candidates, Fuse re-weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conformance import RecommenderConformance

from llmrec_gen.errors import ConfigError
from llmrec_gen.recommenders.base import Recommendations, Recommender
from llmrec_gen.recommenders.compose import FILL, RANKER, RETRIEVER, Fallback, Fuse, Rerank
from llmrec_gen.recommenders.factorization import ALSRecommender
from llmrec_gen.recommenders.neighborhood import ItemKNN
from llmrec_gen.recommenders.popularity import PopularityRecommender, RandomRecommender
from llmrec_gen.recommenders.rating import BiasedSVD
from llmrec_gen.registry import build_method


class TestRerankConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self) -> Any:
        return lambda: Rerank(PopularityRecommender(), ItemKNN(), n_candidates=6)


class TestFallbackConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self) -> Any:
        return lambda: Fallback(ItemKNN(k_neighbors=2), PopularityRecommender())


def test_rerank_orders_the_candidates_then_follows_the_retriever(block_data):
    train = block_data.train
    users = list(block_data.held_out)[:4]
    retriever, ranker = RandomRecommender(seed=3), ItemKNN()
    rec = Rerank(retriever, ranker, n_candidates=5).fit(train)
    recs = rec.recommend(users, k=9)
    ret = retriever.recommend(users, 9)
    for n, items in enumerate(recs.item_ids):
        cands = ret.item_ids[n][:5].tolist()
        expected_top = ranker.recommend([users[n]], 5, items=[cands]).item_ids[0].tolist()
        assert items[:5].tolist() == expected_top
        assert items[5:].tolist() == [i for i in ret.item_ids[n].tolist() if i not in cands][:4]
        assert [d.source for d in recs.details[n]] == [RANKER] * 5 + [RETRIEVER] * 4


def test_rerank_rejects_bad_parts_before_fitting(block_data):
    with pytest.raises(ConfigError, match="retriever: 'svd' cannot rank items"):
        Rerank(BiasedSVD(), ItemKNN())  # type: ignore[arg-type]
    rec = Rerank(PopularityRecommender(), ItemKNN(), n_candidates=10_000)
    with pytest.raises(ConfigError, match="n_candidates: 10000 exceeds the catalogue"):
        rec.fit(block_data.train)


class _TwoItems(Recommender):
    """A generator-like method that only ever returns two items (its last unseen ones)."""

    name = "two-items"

    def fit(self, train):
        self.train_ = train
        return self

    def recommend(self, user_ids, k=10, *, exclude_seen=True, items=None):
        train = self._check_fitted()
        lists = []
        for user in user_ids:
            unseen = [i for i in train.item_ids.tolist() if i not in train.seen_items(user)]
            lists.append(np.asarray(unseen[-2:][:k]))
        return Recommendations(list(user_ids), lists, [np.ones(len(x)) for x in lists])


def test_fallback_fills_only_missing_slots(block_data):
    train = block_data.train
    user = next(iter(block_data.held_out))
    rec = Fallback(_TwoItems(), PopularityRecommender()).fit(train)
    recs = rec.recommend([user], k=5)
    own = _TwoItems().fit(train).recommend([user], 5).item_ids[0].tolist()
    pop = PopularityRecommender().fit(train).recommend([user], 10).item_ids[0].tolist()
    assert recs.item_ids[0][:2].tolist() == own
    assert recs.item_ids[0][2:].tolist() == [i for i in pop if i not in own][:3]
    assert [d.source for d in recs.details[0]] == ["score"] * 2 + [FILL] * 3
    assert recs.stats == [{"filled": 3, "slots": 5}]


def test_fuse_with_weight_zero_equals_the_primary(block_data):
    train = block_data.train
    users = list(block_data.held_out)[:5]
    alone = ALSRecommender().fit(train).recommend(users, 8)
    fused = Fuse(ALSRecommender(), ItemKNN(), mode="scores", weight=0.0).fit(train)
    for a, b in zip(alone.item_ids, fused.recommend(users, 8).item_ids, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fuse_with_weight_one_follows_the_other_method(block_data):
    train = block_data.train
    users = list(block_data.held_out)[:5]
    other = ALSRecommender().fit(train).recommend(users, train.n_items)  # no ties
    fused = Fuse(RandomRecommender(), ALSRecommender(), mode="scores", weight=1.0).fit(train)
    for a, b in zip(other.item_ids, fused.recommend(users, 5).item_ids, strict=True):
        np.testing.assert_array_equal(a[:5], b)


def test_fuse_popularity_needs_distances(block_data):
    rec = Fuse(PopularityRecommender(), mode="popularity", weight=0.5).fit(block_data.train)
    with pytest.raises(ConfigError, match="negative distances"):
        rec.recommend([next(iter(block_data.held_out))], 3)


def test_specs_compose_fusion_and_fallback():
    rec = build_method({"type": "als", "fusion": {"mode": "scores", "other": "bpr", "weight": 0.3}})
    assert isinstance(rec, Fuse) and rec.weight == 0.3 and rec.other is not None
    with pytest.raises(ConfigError, match="mode 'scores' needs a CF method"):
        build_method({"type": "als", "fusion": {"mode": "scores"}})
