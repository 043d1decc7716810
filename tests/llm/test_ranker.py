"""The LLM ranker (verbalizer over a retriever's candidates) and full-ranking grounding, on the
real tiny Llama (random weights, real SmolLM2 tokenizer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conformance import RecommenderConformance

from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.ranker import LABELS, LLMRanker
from llmrec_gen.llm.recommender import LLMRecommender
from llmrec_gen.recommenders.compose import Rerank
from llmrec_gen.recommenders.popularity import PopularityRecommender


def _ranker(model: Any, **kw: Any) -> LLMRanker:
    return LLMRanker(model=str(model), engine="transformers", prompt={"history_len": 4}, **kw)


class TestTwoStageConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Any) -> Any:
        return lambda: Rerank(PopularityRecommender(), _ranker(tiny_model_dir), n_candidates=6)


def test_label_scores_equal_a_plain_forward_pass(block_data, tiny_model_dir):
    import torch

    train = block_data.train
    ranker = _ranker(tiny_model_dir).fit(train)
    users = list(block_data.held_out)[:3]
    shown = [
        [i for i in train.item_ids.tolist() if i not in train.seen_items(u)][:5] for u in users
    ]
    scores = ranker.score_candidates(users, shown)
    engine = ranker.engine_
    label_ids = ranker.label_token_ids(ranker.prompts(users[:1], shown[:1])[0])
    for prompt, got in zip(ranker.prompts(users, shown), scores, strict=True):
        ids = torch.tensor([engine.encode(prompt)[1]])
        with torch.no_grad():
            logits = engine._base(input_ids=ids).logits[0, -1]
        expected = torch.log_softmax(logits.float(), -1)[label_ids[: len(got)]].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_labels_are_single_distinct_tokens(block_data, tiny_model_dir):
    ranker = _ranker(tiny_model_dir).fit(block_data.train)
    user = next(iter(block_data.held_out))
    ids = ranker.label_token_ids(ranker.prompts([user], [[block_data.train.item_ids[0]]])[0])
    assert len(set(ids)) == len(LABELS)


def test_candidate_order_is_shuffled_per_user_and_seed(block_data, tiny_model_dir):
    ranker = _ranker(tiny_model_dir).fit(block_data.train)
    users = list(block_data.held_out)[:2]
    cands = block_data.train.item_ids[:12].tolist()
    a = ranker.shown_order(users[0], cands)
    assert sorted(a) == sorted(cands) and a != cands
    assert a == ranker.shown_order(users[0], cands)
    assert a != ranker.shown_order(users[1], cands)
    other = _ranker(tiny_model_dir, seed=1).fit(block_data.train)
    assert other.shown_order(users[0], cands) != a
    plain = _ranker(tiny_model_dir, shuffle=False).fit(block_data.train)
    assert plain.shown_order(users[0], cands) == cands


def test_bad_ranker_setups_fail_before_any_model_loads(block_data, tmp_path):
    missing = tmp_path / "no-model"  # would fail when loaded; the config errors come first
    with pytest.raises(ConfigError, match="has no 'candidates' slot"):
        LLMRanker(model=str(missing), prompt={"template": "zeroshot-v1"})
    ranker = LLMRanker(model=str(missing)).fit(block_data.train)
    with pytest.raises(ConfigError, match="use it with a retriever"):
        ranker.recommend([next(iter(block_data.held_out))], 3)
    with pytest.raises(ConfigError, match="exceeds the catalogue"):
        Rerank(PopularityRecommender(), ranker, n_candidates=999).fit(block_data.train)


def test_full_ranking_grounding_returns_every_unseen_item_once(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:3]
    rec = LLMRecommender(
        model=str(tiny_model_dir),
        engine="transformers",
        prompt={"history_len": 4},
        decoding={"mode": "constrained", "n_titles": 3},
        grounding={"full_ranking": True},
    ).fit(train)
    recs = rec.recommend(users, k=train.n_items)
    for user, items, scores, details in zip(
        users, recs.item_ids, recs.scores, recs.details, strict=True
    ):
        unseen = set(train.item_ids.tolist()) - train.seen_items(user)
        assert len(items) == len(set(items.tolist())) == len(unseen)
        assert set(items.tolist()) == unseen
        assert np.all(np.diff(scores) <= 0)
        sources = [d.source for d in details]
        named = sources.count("constrained")  # the titles the model wrote: distance 0, first
        assert named == 3 and sources[:named] == ["constrained"] * named
        assert set(sources[named:]) == {"distance"}
