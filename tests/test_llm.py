"""LLMRecommender end to end with real models: the tiny random Llama (fast) and the default
SmolLM2-135M-Instruct (slow). No mocked engine: generation is real."""

from __future__ import annotations

import pytest

from llmrec_gen.base import Recommender
from llmrec_gen.errors import ConfigError, UnknownUserError
from llmrec_gen.llm import LLMRecommender


def _llm(model, **kw) -> LLMRecommender:
    params = dict(
        model=str(model),
        engine="transformers",
        history_len=5,
        max_new_tokens=40,
        use_embeddings=False,
    )
    params.update(kw)
    return LLMRecommender(**params)


def test_constrained_returns_k_distinct_unseen_catalog_items(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:3]
    recs = _llm(tiny_model_dir, constrained=True).fit(train).recommend(users, k=5)
    for u, items, details in zip(users, recs.item_ids, recs.details, strict=True):
        assert len(items) == 5 and len(set(items.tolist())) == 5
        assert set(items.tolist()) <= set(train.item_ids.tolist())
        assert not set(items.tolist()) & train.seen_items(u)
        assert {d.method for d in details} <= {"constrained", "fill"}


def test_constrained_is_never_invalid(block_data, tiny_model_dir):
    users = list(block_data.held_out)[:2]
    recs = _llm(tiny_model_dir, constrained=True).fit(block_data.train).recommend(users, k=4)
    for extra in recs.extras:
        assert extra["generated"] == extra["valid"] == extra["constrained"]


def test_free_generation_fills_short_lists_from_fallback_and_marks_them(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:2]
    recs = (
        _llm(tiny_model_dir, constrained=False, fallback="popularity")
        .fit(train)
        .recommend(users, k=6)
    )
    for u, items, details, extra in zip(
        users, recs.item_ids, recs.details, recs.extras, strict=True
    ):
        assert len(items) == 6
        assert not set(items.tolist()) & train.seen_items(u)
        n_fill = sum(d.method == "fill" for d in details)
        assert n_fill == extra["filled"]
        assert extra["generated"] == extra["valid"] + extra["invalid"]
        assert extra["template"] == "zeroshot-v1"


def test_title_beams_rank_distinct_unseen_items_and_count_them(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:2]
    rec = _llm(tiny_model_dir, title_beams=4, fallback="popularity").fit(train)
    recs = rec.recommend(users, k=5)
    for u, items, details, extra in zip(
        users, recs.item_ids, recs.details, recs.extras, strict=True
    ):
        assert len(items) == 5 and len(set(items.tolist())) == 5
        assert not set(items.tolist()) & train.seen_items(u)
        assert extra["generated"] == extra["valid"] + extra["invalid"] <= 4
        assert sum(d.method == "fill" for d in details) == extra["filled"]
    assert rec.recommend(users, k=5).item_ids[0].tolist() == recs.item_ids[0].tolist()


@pytest.mark.parametrize("kwargs", [{"title_beams": -1}, {"title_beams": 4, "constrained": True}])
def test_title_beams_reject_bad_values_naming_the_field(kwargs):
    with pytest.raises(ConfigError, match="title_beams"):
        LLMRecommender(**kwargs)


def test_free_generation_is_deterministic_when_greedy(block_data, tiny_model_dir):
    users = list(block_data.held_out)[:2]
    a = _llm(tiny_model_dir).fit(block_data.train).recommend(users, k=5)
    b = _llm(tiny_model_dir).fit(block_data.train).recommend(users, k=5)
    assert [x.tolist() for x in a.item_ids] == [x.tolist() for x in b.item_ids]
    assert [e["text"] for e in a.extras] == [e["text"] for e in b.extras]


def test_unknown_user_fails_before_generation(block_data, tiny_model_dir):
    rec = _llm(tiny_model_dir).fit(block_data.train)
    with pytest.raises(UnknownUserError):
        rec.recommend([999_999], k=3)


def test_rerank_template_needs_a_retriever():
    with pytest.raises(ConfigError, match="candidates_from"):
        LLMRecommender(template="rerank-v1")


def test_rerank_prompt_lists_retriever_candidates(block_data, tiny_model_dir):
    train = block_data.train
    rec = _llm(tiny_model_dir, template="rerank-v1", candidates_from="popularity", n_candidates=4)
    rec.fit(train)
    user = next(iter(block_data.held_out))
    prompt = rec._prompt(user, 3)[-1]["content"]
    cands = rec.retriever_.recommend([user], 4).item_ids[0]
    for title in train.items(cands.tolist())["title"]:
        assert title in prompt


def test_fewshot_demonstrations_come_from_other_users(block_data, tiny_model_dir):
    rec = _llm(
        tiny_model_dir, template="fewshot-v1", n_demos=2, demo_history_len=3, demo_answer_len=2
    ).fit(block_data.train)
    user = rec.demos_[0].user_id
    messages = rec._prompt(user, 3)
    assert sum(m["role"] == "assistant" for m in messages) == 2
    # the user's own demonstration is skipped
    own = "\n".join(f"{n}. {t}" for n, t in enumerate(rec.demos_[0].answer, start=1))
    assert all(m["content"] != own for m in messages if m["role"] == "assistant")


def test_save_load_keeps_recommendations(block_data, tiny_model_dir, tmp_path):
    users = list(block_data.held_out)[:2]
    rec = _llm(tiny_model_dir, constrained=True).fit(block_data.train)
    before = rec.recommend(users, k=3)
    rec.save(tmp_path / "llm.pkl")
    after = Recommender.load(tmp_path / "llm.pkl").recommend(users, k=3)
    assert [x.tolist() for x in before.item_ids] == [x.tolist() for x in after.item_ids]


def test_rating_prediction_returns_values_in_range(block_data, tiny_model_dir):
    rec = _llm(tiny_model_dir).fit(block_data.train)
    user, item = next(iter(block_data.held_out.items()))
    preds = rec.predict_ratings([(user, item)])
    assert preds.shape == (1,) and 1.0 <= preds[0] <= 5.0


@pytest.mark.slow
def test_default_model_recommends_ten_unseen_ml100k_items():
    from llmrec_gen.data import TrainData, load_dataset

    ds = load_dataset("ml-100k")
    train = TrainData(ds.interactions, ds.catalog)
    rec = LLMRecommender(engine="transformers", constrained=True, history_len=10).fit(train)
    recs = rec.recommend([42], k=10)
    items = recs.item_ids[0].tolist()
    assert len(items) == 10 == len(set(items))
    assert not set(items) & train.seen_items(42)
    assert all(d.method == "constrained" for d in recs.details[0])


@pytest.mark.slow
def test_default_model_title_beams_are_distinct_grounded_titles():
    from llmrec_gen.data import TrainData, load_dataset

    ds = load_dataset("ml-100k")
    train = TrainData(ds.interactions, ds.catalog)
    rec = LLMRecommender(engine="transformers", title_beams=8, history_len=10).fit(train)
    recs = rec.recommend([42], k=10)
    extra, lines = recs.extras[0], recs.extras[0]["text"].splitlines()
    # one title per beam: 8 lines, none holding list numbering from a next line
    assert len(lines) == 8 and not any(line[:3].rstrip(".").isdigit() for line in lines)
    assert extra["generated"] == extra["valid"] + extra["invalid"] and extra["valid"] > 0
    items = recs.item_ids[0].tolist()
    assert len(items) == 10 == len(set(items)) and not set(items) & train.seen_items(42)


def test_open_assistant_turn_is_continued_not_closed(default_model_dir):
    from transformers import AutoTokenizer

    from llmrec_gen.engines.base import render_prompt

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    msgs = [{"role": "user", "content": "Recommend."}]
    opened = render_prompt(tok, [*msgs, {"role": "assistant", "content": "1."}])
    assert opened.endswith("assistant\n1.")
    assert render_prompt(tok, msgs).endswith("assistant\n")
