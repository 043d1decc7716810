"""TransformersEngine, the title trie and the engine factory, on real (tiny and default) models."""

from __future__ import annotations

import math
from pathlib import Path

import llm_fixtures
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_fixtures import TITLES, history_prompt

from llmrec_gen.errors import ConfigError, EngineUnavailableError, ModelNotFoundError
from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines import (
    GenerationParams,
    TitleTrie,
    available_engines,
    make_engine,
)
from llmrec_gen.llm.engines.transformers import TransformersEngine

PROMPTS = [
    history_prompt(TITLES[:1]),
    history_prompt(TITLES[2:9]),
    "Plain text prompt without a chat template:",
    history_prompt(TITLES[1:13], n=5),
    history_prompt(TITLES[5:7]),
]
"""Prompts of very different lengths, so batches need real left padding."""

GREEDY = GenerationParams(max_new_tokens=12)

# Shared fixtures (pytest finds fixtures by module attribute; see tests/llm_fixtures.py).
default_model_dir = llm_fixtures.default_model_dir
tiny_model_dir = llm_fixtures.tiny_model_dir
tiny_adapter_dir = llm_fixtures.tiny_adapter_dir


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), batch_size=4)


@pytest.fixture(scope="module")
def tiny_one_by_one(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), batch_size=1)


# ---------------------------------------------------------------- TitleTrie


def test_trie_allows_only_continuations_of_stored_titles() -> None:
    trie = TitleTrie([[5, 6], [5, 7, 8]], eos_token_id=2, labels=["A", "B"])
    assert trie.allowed([]) == [5]
    assert sorted(trie.allowed([5])) == [6, 7]
    assert trie.allowed([5, 6]) == [2]
    assert trie.max_length == 4


def test_trie_allows_eos_after_a_title_that_prefixes_another() -> None:
    trie = TitleTrie([[5], [5, 6]], eos_token_id=2, labels=["Heat", "Heat of the Sun"])
    assert sorted(trie.allowed([5])) == [2, 6]
    assert trie.lookup([5, 2]) == "Heat"
    assert trie.lookup([5, 6, 2]) == "Heat of the Sun"


def test_trie_falls_back_to_eos_off_the_trie() -> None:
    trie = TitleTrie([[5, 6]], eos_token_id=2)
    assert trie.allowed([9]) == [2]
    assert trie.lookup([9, 2]) is None
    assert trie.lookup([5, 2]) is None  # a prefix of a title is not a title


def test_trie_skips_empty_and_duplicate_sequences() -> None:
    trie = TitleTrie([[], [5], [5]], eos_token_id=2, labels=["", "first", "second"])
    assert len(trie) == 1
    assert trie.lookup([5]) == "first"


@settings(max_examples=50, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(3, 9), min_size=1, max_size=5), min_size=1, max_size=8),
    choices=st.lists(st.integers(0, 100), min_size=6, max_size=6),
)
def test_trie_walk_always_spells_a_stored_title(seqs: list[list[int]], choices: list[int]) -> None:
    trie = TitleTrie(seqs, eos_token_id=2)
    prefix: list[int] = []
    for choice in choices:  # follow allowed tokens until EOS, whichever branch is taken
        options = trie.allowed(prefix)
        prefix.append(options[choice % len(options)])
        if prefix[-1] == 2:
            break
    while prefix[-1] != 2:
        prefix.append(trie.allowed(prefix)[0])
    label = trie.lookup(prefix)
    assert label is not None and seqs[label] == prefix[:-1]


# ---------------------------------------------------------------- generate (tiny model)


def test_generate_returns_one_output_per_prompt(tiny: TransformersEngine) -> None:
    outs = tiny.generate(PROMPTS, GREEDY)
    assert len(outs) == len(PROMPTS)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        assert out.n_prompt_tokens == len(tiny.encode(prompt)[1])
        assert 1 <= out.n_generated_tokens <= GREEDY.max_new_tokens
        assert out.text


def test_chat_prompts_get_the_chat_template(tiny: TransformersEngine) -> None:
    text = tiny.render(history_prompt(TITLES[:2]))
    assert text.startswith("<|im_start|>system")
    assert text.endswith("<|im_start|>assistant\n")
    assert tiny.render("plain") == "plain"


def test_batched_greedy_equals_one_by_one(
    tiny: TransformersEngine, tiny_one_by_one: TransformersEngine
) -> None:
    assert tiny.generate(PROMPTS, GREEDY) == tiny_one_by_one.generate(PROMPTS, GREEDY)


def test_greedy_is_deterministic(tiny: TransformersEngine) -> None:
    assert tiny.generate(PROMPTS[:2], GREEDY) == tiny.generate(PROMPTS[:2], GREEDY)


def test_stop_string_cuts_the_text_before_it(tiny: TransformersEngine) -> None:
    full = tiny.generate(PROMPTS[:1], GREEDY)[0].text
    stop = full[4:7]
    cut = tiny.generate(PROMPTS[:1], GenerationParams(max_new_tokens=12, stop=(stop,)))[0]
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text


def test_max_new_tokens_caps_the_output(tiny: TransformersEngine) -> None:
    outs = tiny.generate(PROMPTS, GenerationParams(max_new_tokens=3))
    assert all(out.n_generated_tokens <= 3 for out in outs)


def test_sampling_with_the_same_seed_is_reproducible(tiny: TransformersEngine) -> None:
    params = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=7)
    first = tiny.generate(PROMPTS, params)
    assert tiny.generate(PROMPTS, params) == first
    other = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=8)
    assert tiny.generate(PROMPTS, other) != first


def test_sampling_leaves_the_global_rng_alone(tiny: TransformersEngine) -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    tiny.generate(PROMPTS[:1], GenerationParams(max_new_tokens=4, temperature=1.0))
    assert torch.equal(torch.rand(1), expected)


def test_beam_search_batched_equals_one_by_one(
    tiny: TransformersEngine, tiny_one_by_one: TransformersEngine
) -> None:
    params = GenerationParams(max_new_tokens=6, num_beams=3)
    assert tiny.generate(PROMPTS, params) == tiny_one_by_one.generate(PROMPTS, params)


def test_n_beams_are_returned_best_first(tiny: TransformersEngine) -> None:
    one = tiny.generate(PROMPTS, GenerationParams(max_new_tokens=6, num_beams=3))
    three = tiny.generate(PROMPTS, GenerationParams(max_new_tokens=6, num_beams=3, n=3))
    for best, out in zip(one, three, strict=True):
        assert len(out.texts) == 3
        assert out.texts[0] == out.text == best.text


def test_n_samples_are_seeded(tiny: TransformersEngine) -> None:
    params = GenerationParams(max_new_tokens=6, temperature=1.0, n=4, seed=3)
    first = tiny.generate(PROMPTS[:2], params)
    assert all(len(out.all_texts) == 4 for out in first)
    assert tiny.generate(PROMPTS[:2], params) == first


@pytest.mark.slow
def test_a_stop_string_ends_each_beam(default_model_dir: Path) -> None:
    engine = TransformersEngine(str(default_model_dir), batch_size=2)
    listing = "Movies:\n1. Star Wars (1977)\n2. Fargo (1996)\n3. Contact (1997)\n4."
    params = GenerationParams(max_new_tokens=40, num_beams=6, n=6, stop=("\n",))
    out = engine.generate([listing], params)[0]
    # The best beam stopped at its line break, long before the token cap, and no two beams
    # are the same line cut from longer beams that differ only later.
    assert 0 < out.n_generated_tokens < 40
    assert len(set(out.texts)) == 6 and all(text.strip() for text in out.texts)
    newline = engine.tokenizer.convert_tokens_to_ids("Ċ")
    assert newline in engine._stop_token_ids(("\n",))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n must"),
        ({"n": 3, "num_beams": 2}, "num_beams >= n"),
    ],
)
def test_invalid_params_are_rejected_at_construction(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        GenerationParams(**kwargs)


# ---------------------------------------------------------------- adapters (tiny model)


def test_adapter_changes_output_and_none_restores_the_base_model(
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
) -> None:
    engine = TransformersEngine(str(tiny_model_dir), batch_size=4)
    base = engine.generate(PROMPTS, GREEDY)
    tuned = engine.generate(PROMPTS, GREEDY, adapter=resolve_adapter(str(tiny_adapter_dir)))
    assert tuned != base
    assert engine.generate(PROMPTS, GREEDY) == base
    assert engine.generate(PROMPTS, GREEDY, adapter=resolve_adapter(str(tiny_adapter_dir))) == tuned


def test_engine_default_adapter_is_used_when_calls_pass_none(
    tiny: TransformersEngine,
    tiny_model_dir: Path,
    tiny_adapter_dir: Path,
) -> None:
    engine = TransformersEngine(str(tiny_model_dir), adapter=resolve_adapter(str(tiny_adapter_dir)))
    expected = tiny.generate(PROMPTS[:2], GREEDY, adapter=resolve_adapter(str(tiny_adapter_dir)))
    assert engine.generate(PROMPTS[:2], GREEDY) == expected


def test_constrained_decoding_works_with_an_adapter(
    tiny: TransformersEngine,
    tiny_adapter_dir: Path,
) -> None:
    base = tiny.generate_constrained(PROMPTS[:2], [TITLES, TITLES], k=4)
    tuned = tiny.generate_constrained(
        PROMPTS[:2], [TITLES, TITLES], k=4, adapter=resolve_adapter(str(tiny_adapter_dir))
    )
    assert all(len(o.titles) == 4 and set(o.titles) <= set(TITLES) for o in tuned)
    assert [o.scores for o in tuned] != [o.scores for o in base]


def test_missing_adapter_raises_model_not_found(tiny: TransformersEngine, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="adapter"):
        tiny.generate(PROMPTS[:1], GREEDY, adapter=resolve_adapter(str(tmp_path / "no-adapter")))


# ---------------------------------------------------------------- constrained (tiny model)


def test_title_tokens_match_the_tokenization_in_context(tiny: TransformersEngine) -> None:
    prompt_text, prompt_ids = tiny.encode(history_prompt(TITLES[:2]))
    for title, ids in zip(TITLES, tiny.title_token_ids(TITLES, prompt_text[-16:]), strict=True):
        in_context = tiny.tokenizer(prompt_text + title, add_special_tokens=False).input_ids
        assert in_context == prompt_ids + list(ids), title


def test_constrained_returns_k_distinct_allowed_titles(tiny: TransformersEngine) -> None:
    allowed = [TITLES[5:], TITLES[:20], TITLES]
    outs = tiny.generate_constrained([history_prompt(TITLES[:5]), *PROMPTS[1:3]], allowed, k=7)
    for out, titles in zip(outs, allowed, strict=True):
        assert len(out.titles) == 7 == len(set(out.titles)) == len(out.scores)
        assert set(out.titles) <= set(titles)
        assert out.scores == sorted(out.scores, reverse=True)


def test_constrained_ranking_equals_brute_force_scores(
    tiny: TransformersEngine,
    tiny_model_dir: Path,
) -> None:
    """With as many beams as titles the search is exhaustive: its ranking must be the exact one."""
    from transformers import AutoModelForCausalLM

    prompt, allowed = history_prompt(TITLES[:3]), TITLES[3:9]
    out = tiny.generate_constrained([prompt], [allowed], k=len(allowed))[0]

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    text, prompt_ids = tiny.encode(prompt)
    expected = {}
    for title, ids in zip(allowed, tiny.title_token_ids(allowed, text[-16:]), strict=True):
        target = [*ids, tiny.tokenizer.eos_token_id]
        full = torch.tensor([prompt_ids + target])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0, len(prompt_ids) - 1 : -1], dim=-1)
        token_logp = logp[torch.arange(len(target)), torch.tensor(target)]
        expected[title] = token_logp.mean().item()  # HF beam score: sum / generated length
    assert out.titles == sorted(allowed, key=lambda t: -expected[t])
    for title, score in zip(out.titles, out.scores, strict=True):
        assert math.isclose(score, expected[title], abs_tol=1e-4)


def test_constrained_batched_equals_one_by_one(
    tiny: TransformersEngine, tiny_one_by_one: TransformersEngine
) -> None:
    prompts = PROMPTS[:4]
    allowed = [TITLES[i:] for i in range(4)]
    batched = tiny.generate_constrained(prompts, allowed, k=5)
    single = tiny_one_by_one.generate_constrained(prompts, allowed, k=5)
    assert [o.titles for o in batched] == [o.titles for o in single]
    for a, b in zip(batched, single, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-4)


def test_constrained_with_fewer_allowed_than_k_returns_them_all(tiny: TransformersEngine) -> None:
    outs = tiny.generate_constrained(PROMPTS[:2], [TITLES[:3], []], k=10)
    assert sorted(outs[0].titles) == sorted(TITLES[:3])
    assert outs[1].titles == [] and outs[1].scores == []


def test_constrained_rejects_mismatched_allowed_lists(tiny: TransformersEngine) -> None:
    with pytest.raises(ConfigError):
        tiny.generate_constrained(PROMPTS[:2], [TITLES], k=3)


# ---------------------------------------------------------------- factory


def test_available_engines_reports_every_backend() -> None:
    engines = available_engines()
    assert set(engines) == {"transformers", "vllm", "openai"}
    assert engines["transformers"] is True


def test_make_engine_builds_the_transformers_engine(tiny_model_dir: Path) -> None:
    engine = make_engine("transformers", model=str(tiny_model_dir), batch_size=2)
    assert isinstance(engine, TransformersEngine) and engine.batch_size == 2


def test_make_engine_auto_falls_back_to_transformers(tiny_model_dir: Path) -> None:
    from llmrec_gen.llm.engines import _vllm_usable

    if _vllm_usable():
        pytest.skip("vLLM is usable here, so 'auto' picks it")
    engine = make_engine("auto", model=str(tiny_model_dir), batch_size=2)
    assert isinstance(engine, TransformersEngine)


def test_make_engine_rejects_unknown_names() -> None:
    with pytest.raises(EngineUnavailableError, match="unknown engine"):
        make_engine("nope")


def test_make_engine_rejects_unknown_options(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="tensor_parallel_size"):
        make_engine("transformers", model=str(tiny_model_dir), tensor_parallel_size=2)


@pytest.mark.skipif(available_engines()["vllm"], reason="vllm is installed here")
def test_make_engine_vllm_without_vllm_says_how_to_install() -> None:
    with pytest.raises(EngineUnavailableError, match=r"llmrec-gen\[vllm\]"):
        make_engine("vllm")


def test_missing_model_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        TransformersEngine(str(tmp_path / "no-model"))


# ---------------------------------------------------------------- the real default model


@pytest.fixture(scope="module")
def real(default_model_dir: Path) -> TransformersEngine:
    return TransformersEngine("default", batch_size=4)


REAL_PROMPTS = [history_prompt(TITLES[:3], n=3), history_prompt(TITLES[10:18], n=3)]


@pytest.mark.slow
def test_real_greedy_is_deterministic_and_batch_independent(real: TransformersEngine) -> None:
    params = GenerationParams(max_new_tokens=12)
    batched = real.generate(REAL_PROMPTS, params)
    assert batched == [real.generate([p], params)[0] for p in REAL_PROMPTS]
    assert all(out.text.strip() for out in batched)


@pytest.mark.slow
def test_real_sampling_with_the_same_seed_is_reproducible(real: TransformersEngine) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=0.8, seed=3)
    assert real.generate(REAL_PROMPTS[:1], params) == real.generate(REAL_PROMPTS[:1], params)


@pytest.mark.slow
def test_real_constrained_titles_are_allowed_distinct_and_k(real: TransformersEngine) -> None:
    seen = [TITLES[:3], TITLES[10:18]]
    allowed = [[t for t in TITLES if t not in s] for s in seen]
    outs = real.generate_constrained([history_prompt(s) for s in seen], allowed, k=5)
    for out, titles in zip(outs, allowed, strict=True):
        assert len(out.titles) == 5 == len(set(out.titles))
        assert set(out.titles) <= set(titles)
        assert all(math.isfinite(s) for s in out.scores)
