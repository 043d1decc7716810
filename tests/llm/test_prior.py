"""The D3 collaborative prior on constrained decoding: per-node biases that telescope to the CF
log-probability, and what they do to the recommender's lists (real tiny Llama)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.engines.constrained import TitleTrie
from llmrec_gen.llm.grounding.prior import cf_distribution, prior_bias, title_paths
from llmrec_gen.llm.recommender import LLMRecommender
from llmrec_gen.recommenders.popularity import PopularityRecommender
from llmrec_gen.registry import build_method

sequences = st.lists(
    st.lists(st.integers(3, 9), min_size=1, max_size=5), min_size=1, max_size=12, unique_by=tuple
)


@settings(max_examples=60, deadline=None)
@given(sequences, st.data(), st.floats(0.1, 3.0))
def test_biases_telescope_to_weighted_cf_log_probability(seqs, data, weight):
    trie = TitleTrie(seqs, eos_token_id=2)
    scores = data.draw(st.lists(st.floats(-5, 5), min_size=len(seqs), max_size=len(seqs)))
    bias = prior_bias(trie, title_paths(trie), dict(enumerate(scores)), weight)
    p = cf_distribution(np.array(scores))
    for label, expected in enumerate(p):
        node, total = trie.node_of(label), 0.0
        while node > 0:
            total += float(bias[node])
            node = trie.parent(node)
        assert total == pytest.approx(weight * np.log(expected), abs=1e-4)
    assert (bias <= 0).all()


def test_hidden_titles_get_no_mass():
    trie = TitleTrie([[5, 6], [5, 7], [8]], eos_token_id=2)
    view = trie.view(exclude=[1])
    bias = prior_bias(view, title_paths(trie), {0: 1.0, 2: 0.0}, 1.0)
    assert bias[trie.node_of(1)] == 0.0
    # with title 1 gone, the step into its sibling's prefix [5] only carries title 0's mass
    p = cf_distribution(np.array([1.0, 0.0]))
    assert bias[trie._children[0][5]] == pytest.approx(np.log(p[0]), abs=1e-5)


def _constrained(model: Any, **decoding: Any) -> LLMRecommender:
    return LLMRecommender(
        model=str(model),
        engine="transformers",
        prompt={"history_len": 4},
        decoding={"mode": "constrained", **decoding},
    )


def test_a_strong_prior_orders_the_list_by_cf_score(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:3]
    rec = _constrained(tiny_model_dir, score="sum", prior_weight=500.0)
    rec = rec.with_prior(PopularityRecommender()).fit(train)
    pop = PopularityRecommender().fit(train)
    counts = dict(zip(train.item_ids.tolist(), pop.popularity_, strict=True))
    for ids in rec.recommend(users, k=5).item_ids:
        got = [counts[i] for i in ids.tolist()]
        assert got == sorted(got, reverse=True)


def test_zero_weight_prior_changes_nothing(block_data, tiny_model_dir):
    train = block_data.train
    users = list(block_data.held_out)[:3]
    plain = _constrained(tiny_model_dir).fit(train).recommend(users, k=5)
    prior = _constrained(tiny_model_dir).with_prior(PopularityRecommender()).fit(train)
    out = prior.recommend(users, k=5)
    for a, b in zip(plain.item_ids, out.item_ids, strict=True):
        assert a.tolist() == b.tolist()


def test_prior_needs_constrained_decoding(tiny_model_dir):
    with pytest.raises(ConfigError, match="constrained"):
        build_method(
            {
                "type": "llm",
                "params": {"model": str(tiny_model_dir), "decoding": {"mode": "list"}},
                "prior": "popularity",
            }
        )


def test_prior_on_a_method_without_decoding_fails_naming_the_field():
    with pytest.raises(ConfigError, match="prior"):
        build_method({"type": "als", "prior": "popularity"})


def test_content_free_logprobs_equal_a_plain_forward_pass(block_data, tiny_model_dir):
    import torch

    from llmrec_gen.llm.engines.calibration import content_free_logprobs, title_token_paths

    rec = _constrained(tiny_model_dir).fit(block_data.train)
    engine = rec.engine_
    prompt = [
        *rec.builder.content_free(block_data.train, 5),
        {"role": "assistant", "content": "1."},
    ]
    titles = [" " + t for t in rec.title_index()]
    encoded, tries = engine.title_tries([prompt], [titles], 5)
    values = content_free_logprobs(engine._base, encoded[0], tries[0].base, batch_size=3)
    for toks, nodes in title_token_paths(tries[0].base)[:4]:
        ids = torch.tensor([encoded[0] + toks])
        with torch.no_grad():
            lp = torch.log_softmax(engine._base(input_ids=ids).logits[0].float(), -1)
        n = len(encoded[0])
        expected = [float(lp[n - 1 + j, t]) for j, t in enumerate(toks)]
        np.testing.assert_allclose(values[nodes], expected, atol=1e-4)


@pytest.mark.parametrize("chunk", [3, 512])
def test_packed_content_free_logprobs_equal_teacher_forcing(block_data, tiny_model_dir, chunk):
    from llmrec_gen.llm.engines.calibration import (
        content_free_logprobs,
        packed_content_free_logprobs,
    )

    rec = _constrained(tiny_model_dir).fit(block_data.train)
    engine = rec.engine_
    prompt = [
        *rec.builder.content_free(block_data.train, 5),
        {"role": "assistant", "content": "1."},
    ]
    titles = [" " + t for t in rec.title_index()]
    encoded, tries = engine.title_tries([prompt], [titles], 5)
    base = tries[0].base
    plain = content_free_logprobs(engine._base, encoded[0], base, batch_size=4)
    packed = packed_content_free_logprobs(engine._base, encoded[0], base, chunk=chunk)
    assert np.count_nonzero(plain) == base.n_nodes - 1  # every edge has a value
    np.testing.assert_allclose(packed, plain, atol=1e-4)


def test_content_free_values_are_cached_on_disk(block_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(tmp_path))
    rec = _constrained(tiny_model_dir, score="sum", calibration=1.0).fit(block_data.train)
    rec.engine_._content_free.clear()  # the engine is shared across tests
    users = list(block_data.held_out)[:3]
    rec.recommend(users, k=5)
    files = list((tmp_path / "content-free").glob("*.npy"))
    assert len(files) == 1
    # A later process reads the file: zeroed values make the calibration a no-op.
    np.save(files[0], np.zeros_like(np.load(files[0])))
    rec.engine_._content_free.clear()
    plain = _constrained(tiny_model_dir, score="sum", calibration=0.0).fit(block_data.train)
    try:
        got = rec.recommend(users, k=5).item_ids
    finally:
        rec.engine_._content_free.clear()  # do not leave the zeroed table to later tests
    assert [a.tolist() for a in got] == [b.tolist() for b in plain.recommend(users, k=5).item_ids]


def test_calibration_changes_the_constrained_ranking(block_data, tiny_model_dir):
    users = list(block_data.held_out)[:3]
    plain = _constrained(tiny_model_dir, score="sum", calibration=0.0).fit(block_data.train)
    calibrated = _constrained(tiny_model_dir, score="sum", calibration=1.0).fit(block_data.train)
    a = plain.recommend(users, k=5).item_ids
    b = calibrated.recommend(users, k=5).item_ids
    assert any(x.tolist() != y.tolist() for x, y in zip(a, b, strict=True))
    assert all(len(set(x.tolist())) == len(x) for x in b)


@pytest.mark.slow
def test_default_decoding_has_no_digit_leading_title_bias(default_model_dir):
    """Length-normalised constrained lists of the default model are ~55 % digit-leading titles
    ("2001: ...", "101 Dalmatians") against 0.7 % of the catalogue (300 validation users,
    ``benchmarks/bench_digit_bias.py``); the default decoding (summed score, domain-conditional
    PMI) brings the share back near the catalogue's."""
    from llmrec_gen.data import load_dataset, split_dataset

    split = split_dataset(load_dataset("ml-100k"))
    train = split.fit_data("valid")
    users = list(split.valid["user_id"].unique()[:20])
    title = dict(zip(train.catalog["item_id"], train.catalog["title"], strict=True))
    catalogue = np.mean([str(t)[:1].isdigit() for t in train.catalog["title"]])

    def share(**decoding: Any) -> float:
        rec = LLMRecommender(
            model=str(default_model_dir),
            engine="transformers",
            prompt={"template": "zeroshot-v2", "history_len": 20},
            decoding={"mode": "constrained", **decoding},
        ).fit(train)
        ids = np.concatenate(rec.recommend(users, k=10).item_ids)
        return float(np.mean([str(title[i])[:1].isdigit() for i in ids]))

    assert share() <= catalogue + 0.03
    assert share(score="mean", calibration=0.0) > 0.2  # the bias the default removes
