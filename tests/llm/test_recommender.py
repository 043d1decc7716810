"""LLMRecommender end to end with real models: the tiny random Llama (fast) and the default
SmolLM2-135M-Instruct (slow). No mocked engine: generation is real."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conformance import RecommenderConformance
from hypothesis import given
from hypothesis import strategies as st

from llmrec_gen.errors import ConfigError, UnknownUserError
from llmrec_gen.llm.recommender import LLMRecommender, parse_rating
from llmrec_gen.recommenders.base import Capability, Method
from llmrec_gen.recommenders.compose import FILL, Fallback, Rerank
from llmrec_gen.recommenders.popularity import PopularityRecommender


def _llm(model: Any, mode: str = "list", **kw: Any) -> LLMRecommender:
    decoding = {"mode": mode, "max_new_tokens": 40, **kw.pop("decoding", {})}
    prompt = {"history_len": 5, **kw.pop("prompt", {})}
    return LLMRecommender(
        model=str(model),
        engine="transformers",
        prompt=prompt,
        decoding=decoding,
        grounding={"use_embeddings": False},
        **kw,
    )


class TestConstrainedLLMConformance(RecommenderConformance):
    """The generator passes the contract every baseline passes (lists may be short)."""

    full_lists = False

    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Any) -> Any:
        return lambda: _llm(tiny_model_dir, "constrained", batch_size=8)


def test_declares_what_it_can_do():
    caps = LLMRecommender.capabilities
    assert {Capability.RANK, Capability.RANK_CANDIDATES, Capability.PREDICT_RATINGS} <= caps
    assert {Capability.GENERATION_STATS, Capability.CONTENT_DIGEST} <= caps


def test_constrained_returns_distinct_unseen_catalog_items(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:3]
    recs = _llm(tiny_model_dir, "constrained").fit(train).recommend(users, k=5)
    for u, items, details in zip(users, recs.item_ids, recs.details, strict=True):
        assert len(items) == 5 and len(set(items.tolist())) == 5
        assert set(items.tolist()) <= set(train.item_ids.tolist())
        assert not set(items.tolist()) & train.seen_items(u)
        assert {d.source for d in details} == {"constrained"}


def test_constrained_is_never_invalid(block_data, tiny_model_dir):
    users = list(block_data.held_out)[:2]
    recs = _llm(tiny_model_dir, "constrained").fit(block_data.train).recommend(users, k=4)
    for stats in recs.stats:
        assert stats["generated"] == stats["valid"] == stats["constrained"] == 4
        assert stats["invalid"] == 0


def test_candidates_restrict_constrained_decoding(block_data, tiny_model_dir):
    train = block_data.train
    user = next(iter(block_data.held_out))
    unseen = [i for i in train.item_ids.tolist() if i not in train.seen_items(user)]
    cands = unseen[::3][:5]
    recs = _llm(tiny_model_dir, "constrained").fit(train).recommend([user], k=3, items=[cands])
    assert set(recs.item_ids[0].tolist()) <= set(cands) and len(recs.item_ids[0]) == 3


def test_free_lists_are_filled_from_a_fallback_and_marked(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:2]
    rec = Fallback(_llm(tiny_model_dir), PopularityRecommender()).fit(train)
    recs = rec.recommend(users, k=6)
    for u, items, details, stats in zip(
        users, recs.item_ids, recs.details, recs.stats, strict=True
    ):
        assert len(items) == 6 and len(set(items.tolist())) == 6
        assert not set(items.tolist()) & train.seen_items(u)
        assert sum(d.source == FILL for d in details) == stats["filled"]
        assert stats["generated"] == stats["valid"] + stats["invalid"]
        assert stats["returned"] + stats["filled"] == 6
    summary = rec.summarize_stats(recs.stats)
    filled = sum(s["filled"] for s in recs.stats)
    assert summary["fill_rate"] == pytest.approx(filled / 12)


def test_title_beams_rank_distinct_unseen_items_and_count_them(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:2]
    rec = _llm(tiny_model_dir, "title_beams", decoding={"title_beams": 4}).fit(train)
    recs = rec.recommend(users, k=5)
    for u, items, stats in zip(users, recs.item_ids, recs.stats, strict=True):
        assert len(set(items.tolist())) == len(items) <= 4
        assert not set(items.tolist()) & train.seen_items(u)
        assert stats["generated"] == stats["valid"] + stats["invalid"] <= 4
        assert stats["returned"] == len(items)
    assert rec.recommend(users, k=5).item_ids[0].tolist() == recs.item_ids[0].tolist()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"decoding": {"title_beams": 0}}, "decoding.title_beams"),
        ({"decoding": {"mode": "beams"}}, "decoding.mode"),
        ({"grounding": {"fuzzy_threshold": 150}}, "grounding.fuzzy_threshold"),
        ({"prompt": {"history_len": 0}}, "prompt.history_len"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_config_fails_at_construction_naming_the_field(params, field):
    with pytest.raises(ConfigError, match=rf"^llm: {field}: "):
        LLMRecommender(params)


def test_free_generation_is_deterministic_when_greedy(block_data, tiny_model_dir):
    users = list(block_data.held_out)[:2]
    a = _llm(tiny_model_dir).fit(block_data.train).recommend(users, k=5)
    b = _llm(tiny_model_dir).fit(block_data.train).recommend(users, k=5)
    assert [x.tolist() for x in a.item_ids] == [x.tolist() for x in b.item_ids]
    assert a.texts == b.texts


def test_unknown_user_fails_before_generation(block_data, tiny_model_dir):
    rec = _llm(tiny_model_dir).fit(block_data.train)
    with pytest.raises(UnknownUserError):
        rec.recommend([999_999], k=3)


def test_candidate_template_alone_is_a_config_error(block_data, tiny_model_dir):
    rec = _llm(tiny_model_dir, prompt={"template": "rerank-v1"}).fit(block_data.train)
    with pytest.raises(ConfigError, match="shows candidates"):
        rec.recommend([next(iter(block_data.held_out))], k=3)


def test_reranker_prompt_lists_the_retrievers_candidates(block_data, tiny_model_dir):
    train = block_data.train
    ranker = _llm(tiny_model_dir, prompt={"template": "rerank-v1"})
    rec = Rerank(PopularityRecommender(), ranker, n_candidates=4).fit(train)
    user = next(iter(block_data.held_out))
    cands = rec.retriever.recommend([user], 4).item_ids[0].tolist()
    prompt = ranker.prompts([user], 3, items=[cands])[0][-1]["content"]
    for title in train.items(cands)["title"]:
        assert title in prompt
    recs = rec.recommend([user], k=6)
    assert len(recs.item_ids[0]) == 6 and set(recs.item_ids[0][:4].tolist()) == set(cands)


def test_fewshot_demonstrations_come_from_other_users(block_data, tiny_model_dir):
    prompt = {"template": "fewshot-v1", "n_demos": 2, "demo_history_len": 3, "demo_answer_len": 2}
    rec = _llm(tiny_model_dir, prompt=prompt).fit(block_data.train)
    user = rec.demos_[0].user_id
    messages = rec.prompts([user], 3)[0]
    assert sum(m["role"] == "assistant" for m in messages) == 2
    own = "\n".join(f"{n}. {t}" for n, t in enumerate(rec.demos_[0].answer, start=1))
    shown = [m["content"] for m in messages if m["role"] == "assistant"]
    others = ["\n".join(f"{n}. {t}" for n, t in enumerate(d.answer, 1)) for d in rec.demos_[1:]]
    assert own not in shown and shown == others[:2]


def test_save_load_keeps_recommendations(block_data, tiny_model_dir, tmp_path):
    users = list(block_data.held_out)[:2]
    rec = _llm(tiny_model_dir, "constrained").fit(block_data.train)
    before = rec.recommend(users, k=3)
    rec.save(tmp_path / "llm.pkl")
    after = Method.load(tmp_path / "llm.pkl").recommend(users, k=3)  # type: ignore[attr-defined]
    assert [x.tolist() for x in before.item_ids] == [x.tolist() for x in after.item_ids]


@given(st.text(max_size=30))
def test_parse_rating_reads_the_first_digit_one_to_five(text):
    value = parse_rating(text)
    digits = [c for c in text if c in "12345"]
    assert value == (float(digits[0]) if digits else None)


def test_rating_prediction_counts_unparsed_answers(block_data, tiny_model_dir):
    rec = _llm(tiny_model_dir).fit(block_data.train)
    pairs = list(block_data.held_out.items())[:3]
    out = rec.predict_ratings(pairs)
    assert out.stats is not None and out.texts is not None and out.stats["pairs"] == 3
    unparsed = 0
    for (user, _), text, value in zip(pairs, out.texts, out.values, strict=True):
        parsed = parse_rating(text)
        unparsed += parsed is None
        mean = float(np.mean(block_data.train.history_ratings(user)))
        assert value == (mean if parsed is None else parsed)
    assert out.stats["unparsed"] == unparsed


@pytest.mark.slow
def test_default_model_recommends_ten_unseen_ml100k_items():
    from llmrec_gen.data import TrainData, load_dataset

    ds = load_dataset("ml-100k")
    train = TrainData(ds.interactions, ds.catalog)
    rec = LLMRecommender(
        engine="transformers", prompt={"history_len": 10}, decoding={"mode": "constrained"}
    ).fit(train)
    recs = rec.recommend([42], k=10)
    items = recs.item_ids[0].tolist()
    assert len(items) == 10 == len(set(items))
    assert not set(items) & train.seen_items(42)
    assert all(d.source == "constrained" for d in recs.details[0])


@pytest.mark.slow
def test_default_model_title_beams_are_distinct_grounded_titles():
    from llmrec_gen.data import TrainData, load_dataset

    ds = load_dataset("ml-100k")
    train = TrainData(ds.interactions, ds.catalog)
    rec = LLMRecommender(
        engine="transformers",
        prompt={"history_len": 10},
        decoding={"mode": "title_beams", "title_beams": 8},
    ).fit(train)
    recs = rec.recommend([42], k=10)
    stats, lines = recs.stats[0], recs.texts[0].splitlines()
    # one title per beam: 8 lines, none holding list numbering from a next line
    assert len(lines) == 8 and not any(line[:3].rstrip(".").isdigit() for line in lines)
    assert stats["generated"] == stats["valid"] + stats["invalid"] and stats["valid"] > 0
    items = recs.item_ids[0].tolist()
    assert len(items) == len(set(items)) == stats["returned"]
    assert not set(items) & train.seen_items(42)


def test_open_assistant_turn_is_continued_not_closed(default_model_dir):
    from transformers import AutoTokenizer

    from llmrec_gen.llm.engines.base import render_prompt

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    msgs = [{"role": "user", "content": "Recommend."}]
    opened = render_prompt(tok, [*msgs, {"role": "assistant", "content": "1."}])
    assert opened.endswith("assistant\n1.")
    assert render_prompt(tok, msgs).endswith("assistant\n")


def test_deterministic_generations_are_generated_once_per_process(block_data, tiny_model_dir):
    from llmrec_gen.llm import recommender as module

    users = list(block_data.held_out)[:3]
    make = lambda: LLMRecommender(  # noqa: E731
        model=str(tiny_model_dir), engine="transformers", prompt={"history_len": 4}
    ).fit(block_data.train)
    first = make().recommend(users, k=3)
    engine = make().engine_
    calls = []
    original = engine.generate
    engine.generate = lambda *a, **kw: calls.append(a) or original(*a, **kw)
    try:
        again = make().recommend(users, k=3)
        sampled = LLMRecommender(
            model=str(tiny_model_dir),
            engine="transformers",
            prompt={"history_len": 4},
            decoding={"temperature": 0.7},
        ).fit(block_data.train)
        sampled.recommend(users, k=3)
    finally:
        del engine.generate
    assert [a.tolist() for a in again.item_ids] == [a.tolist() for a in first.item_ids]
    assert again.texts == first.texts
    assert len(calls) == 1  # only the sampled run reached the engine
    assert module._GENERATIONS
