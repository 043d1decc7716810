"""The packed decoders return what Hugging Face ``generate`` returns (tiny and default models).

Reference: the engine's ``generate`` path (``TransformersEngine._constrained_generate``: HF beam
search with ``num_beams = k`` and ``prefix_allowed_tokens_fn``, greedy for k = 1; plain HF greedy
``generate`` for free text), reached by an engine whose packed passes are switched off. Compared:
titles (identical, in order) and scores (float32: within 1e-5; float64: to rounding), for widths
1/3/10, tries with shared prefixes and titles that prefix others, fewer titles than the width,
LoRA adapters, two EOS tokens, both score modes and the bias hook.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import llm_fixtures
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines.base import GenerationParams
from llmrec_gen.llm.engines.constrained import ROOT, TitleTrie
from llmrec_gen.llm.engines.packed import ATTENTION_NAME, PrefixStore, self_test
from llmrec_gen.llm.engines.transformers import TransformersEngine
from llmrec_gen.llm.engines.trie_beam import SearchStats, trie_beam_search

default_model_dir = llm_fixtures.default_model_dir
tiny_model_dir = llm_fixtures.tiny_model_dir
tiny_adapter_dir = llm_fixtures.tiny_adapter_dir

TITLES = [*llm_fixtures.TITLES, "Heat", "Heat of the Sun", "Star", "Star Wars"]
CATALOGUE = [" " + t for t in TITLES]  # after "1." a title starts with a space


def prompt(watched: list[str]) -> list[dict[str, str]]:
    """A recommendation chat prompt with the answer opened as "1." (as the recommender does)."""
    return [*llm_fixtures.history_prompt(watched), {"role": "assistant", "content": "1."}]


PROMPTS = [
    prompt(TITLES[:5]),
    prompt(TITLES[5:12]),
    prompt(TITLES[12:14]),
    prompt(["Heat (1995)", "Star Wars (1977)", "Fargo (1996)"]),
]
ALLOWED = [
    CATALOGUE[5:],  # the unseen titles
    CATALOGUE[:5] + CATALOGUE[12:],
    [" Heat (1995)", " Heat of the Sun, The (1996)", " Heat", " Heat of the Sun"],  # 4 < 10
    [" Star Wars", " Star"],  # fewer titles than most widths; one a prefix of the other
]


def hf_engine(path: Path | str, **kwargs: Any) -> TransformersEngine:
    """An engine that always takes the HF ``generate`` path (the reference)."""
    engine = TransformersEngine(str(path), device="cpu", **kwargs)
    engine._packed = False
    return engine


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_model_dir), device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir: Path) -> TransformersEngine:
    return hf_engine(tiny_model_dir, batch_size=8)


def assert_same(ref: list, new: list, tol: float) -> list[float]:
    """Identical titles in identical order, scores within ``tol`` (relative ``tol / 10`` for
    large summed scores); returns the |differences|."""
    assert len(ref) == len(new)
    diffs = []
    for r, n in zip(ref, new, strict=True):
        assert n.titles == r.titles
        assert n.scores == pytest.approx(r.scores, abs=tol, rel=tol / 10)  # sums reach ~-100
        diffs += [abs(a - b) for a, b in zip(r.scores, n.scores, strict=True)]
    return diffs


# ------------------------------------------------------------------------------ tries
def test_a_view_behaves_like_a_trie_of_the_remaining_titles() -> None:
    rng = random.Random(0)
    seqs = [tuple(rng.randint(3, 8) for _ in range(rng.randint(1, 5))) for _ in range(200)]
    labels = [f"t{i}" for i in range(len(seqs))]  # duplicate sequences get several labels
    catalog = TitleTrie(seqs, eos_token_id=2, labels=labels)
    prefixes = {s[:j] for s in seqs for j in range(len(s) + 1)}
    for trial in range(20):
        excluded = set(rng.sample(labels, rng.randint(0, 199 if trial else 0)))
        keep = [i for i, label in enumerate(labels) if label not in excluded]
        ref = TitleTrie([seqs[i] for i in keep], 2, [labels[i] for i in keep])
        view = catalog.view(exclude=excluded)
        assert len(view) == len(ref)
        assert view.max_length >= ref.max_length
        for prefix in prefixes:
            assert view.allowed(prefix) == ref.allowed(prefix), prefix
        for s in seqs:
            assert view.lookup(s) == ref.lookup(s)
            assert view.lookup((*s, 2, 7)) == ref.lookup((*s, 2, 7))
    assert catalog.view(exclude=["unknown"]).lookup(seqs[0]) == "t0"


@settings(max_examples=60, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(3, 6), min_size=1, max_size=4), min_size=1, max_size=12),
    hide=st.lists(st.integers(0, 11), max_size=12),
    walk=st.lists(st.integers(0, 10), min_size=6, max_size=6),
)
def test_every_live_node_of_a_view_has_an_allowed_token(seqs, hide, walk) -> None:
    """The allowed set of a beam is never empty: walking a view's children always reaches a
    title that the view still holds (the search asserts the same at every step)."""
    labels = [f"t{i}" for i in range(len(seqs))]
    view = TitleTrie(seqs, 2, labels).view(exclude=[labels[i] for i in hide if i < len(seqs)])
    if len(view) == 0:
        assert view.children(ROOT) == ([], [])
        return
    node, tokens = ROOT, []
    for choice in [*walk, *[0] * 10]:
        toks, kids = view.children(node)
        assert toks, "a live node without an allowed token"
        tokens.append(toks[choice % len(toks)])
        node = kids[choice % len(toks)]
        if tokens[-1] == 2:
            break
    assert tokens[-1] == 2
    assert view.label(node) is not None and view.label(node) == view.lookup(tokens)


# ------------------------------------------------------------------------------ tiny model
def test_packed_passes_pass_their_self_test(tiny: TransformersEngine) -> None:
    assert self_test(tiny._base, len(tiny.tokenizer)) < 1e-4
    assert tiny.packed_ok()


@pytest.mark.parametrize("k", [1, 3, 10])
def test_tiny_model_matches_hf(tiny: TransformersEngine, tiny_hf, k: int) -> None:
    ref = tiny_hf.generate_constrained(PROMPTS, ALLOWED, k)
    new = tiny.generate_constrained(PROMPTS, ALLOWED, k)
    assert_same(ref, new, 1e-5)
    assert [len(o.titles) for o in new] == [min(k, len(set(a))) for a in ALLOWED]


@pytest.mark.parametrize("k", [1, 4])
def test_summed_log_probability_matches_hf_without_length_penalty(tiny, tiny_hf, k) -> None:
    ref = tiny_hf.generate_constrained(PROMPTS, ALLOWED, k, score="sum")
    new = tiny.generate_constrained(PROMPTS, ALLOWED, k, score="sum")
    assert_same(ref, new, 1e-5)
    mean = tiny.generate_constrained(PROMPTS, ALLOWED, k)
    assert [o.scores for o in new] != [o.scores for o in mean]


def test_float64_is_exact(tiny_model_dir: Path) -> None:
    """In float64 the two searches compute the same numbers (float noise cannot hide a rule)."""
    new, ref = TransformersEngine(str(tiny_model_dir)), hf_engine(tiny_model_dir)
    new._base.double()
    ref._base.double()
    for k in (1, 3, 10):
        diffs = assert_same(
            ref.generate_constrained(PROMPTS, ALLOWED, k),
            new.generate_constrained(PROMPTS, ALLOWED, k),
            1e-6,
        )
        assert sum(diffs) / len(diffs) < 1e-8


def test_result_does_not_depend_on_batching(tiny: TransformersEngine) -> None:
    """One row at a time, tiny passes, odd blocks, no kept prefix: the same search."""
    ids, tries = tiny.title_tries(PROMPTS * 3, ALLOWED * 3, 10)
    base = trie_beam_search(tiny._model, ids, tries, 10, tiny._eos_ids)
    for options in (
        {"max_active": 1},
        {"max_active": 5, "max_pass_tokens": 1, "prefill_block": 7},
        {"prefill_block": 1000, "prefixes": PrefixStore()},
    ):
        other = trie_beam_search(tiny._model, ids, tries, 10, tiny._eos_ids, **options)
        for a, b in zip(base, other, strict=True):
            assert [h.label for h in a] == [h.label for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_a_kept_prefix_is_reused_across_calls(tiny_model_dir: Path, tiny_hf) -> None:
    engine = TransformersEngine(str(tiny_model_dir), batch_size=8)
    first = engine.generate_constrained(PROMPTS[:2], ALLOWED[:2], 3)
    computed = engine.search_stats.prefill_tokens
    alone = engine.generate_constrained(PROMPTS[2:3], ALLOWED[2:3], 3)  # one prompt: reuses it
    assert engine.search_stats.shared_prefix_tokens > 0
    n_prompt = len(engine.encode(PROMPTS[2])[1])
    assert engine.search_stats.prefill_tokens - computed < n_prompt
    assert_same(tiny_hf.generate_constrained(PROMPTS[:3], ALLOWED[:3], 3), [*first, *alone], 1e-5)


def test_per_prompt_widths_and_empty_tries(tiny: TransformersEngine, tiny_hf) -> None:
    widths = [1, 3, 10, 0]
    allowed = [*ALLOWED[:3], ALLOWED[3]]
    ids, tries = tiny.title_tries(PROMPTS, allowed, 10)
    new = trie_beam_search(tiny._model, ids, tries, widths, tiny._eos_ids)
    assert new[3] == []
    for i, w in enumerate(widths[:3]):
        ref = tiny_hf.generate_constrained(PROMPTS[i : i + 1], allowed[i : i + 1], w)[0]
        assert [h.label for h in new[i]] == ref.titles
    assert tiny.generate_constrained(PROMPTS[:1], [[]], 10)[0].titles == []


def test_two_eos_tokens_keep_three_candidates_per_beam(tiny: TransformersEngine, tiny_hf) -> None:
    """HF keeps max(2, 1 + n_eos) * width candidates per step; with 2 EOS ids that is 3x."""
    saved = tiny._eos_ids
    tiny._eos_ids = tiny_hf._eos_ids = [saved[0], 0]  # <|endoftext|> as a second stop token
    try:
        ref = tiny_hf.generate_constrained(PROMPTS, ALLOWED, 10)
        new = tiny.generate_constrained(PROMPTS, ALLOWED, 10)
    finally:
        tiny._eos_ids = tiny_hf._eos_ids = saved
    assert_same(ref, new, 1e-5)


def test_lora_adapter(tiny: TransformersEngine, tiny_hf, tiny_adapter_dir: Path) -> None:
    adapter = resolve_adapter(str(tiny_adapter_dir))
    ref = tiny_hf.generate_constrained(PROMPTS, ALLOWED, 3, adapter=adapter)
    new = tiny.generate_constrained(PROMPTS, ALLOWED, 3, adapter=adapter)
    assert_same(ref, new, 1e-5)
    base = tiny.generate_constrained(PROMPTS, ALLOWED, 3)  # the kept prefix is per adapter
    assert_same(tiny_hf.generate_constrained(PROMPTS, ALLOWED, 3), base, 1e-5)
    assert [r.scores for r in new] != [r.scores for r in base]


def test_attention_implementation_is_restored(tiny: TransformersEngine) -> None:
    config = tiny._base.config
    before = config._attn_implementation
    stats = SearchStats()
    ids, tries = tiny.title_tries(PROMPTS, ALLOWED, 3)
    trie_beam_search(tiny._model, ids, tries, 3, tiny._eos_ids, stats=stats)
    assert config._attn_implementation == before != ATTENTION_NAME
    assert stats.prompts == 4 and stats.rows > 0 and stats.passes > 0
    with pytest.raises(ValueError):
        trie_beam_search(tiny._model, [[]], tries[:1], 1, [2])
    with pytest.raises(ValueError):
        trie_beam_search(tiny._model, [[1]], [], 1, [2])
    assert config._attn_implementation == before


# ------------------------------------------------------------------------------ hooks
def _node_bias(engine: TransformersEngine, favour: str, amount: float) -> list[np.ndarray]:
    """Per-prompt node arrays: ``+amount`` (log-space) on every edge of title ``favour`` (EOS
    included), a small deterministic pseudo-random penalty everywhere else."""
    _, tries = engine.title_tries(PROMPTS, ALLOWED, 10)
    out = []
    for trie in tries:
        rng = np.random.default_rng(7)
        table = -rng.uniform(0, 0.5, trie.n_nodes).astype(np.float32)
        node = trie.node_of(favour)
        while node is not None and node != ROOT:
            table[node] = amount
            node = trie.parent(node)
        out.append(table)
    return out


@pytest.mark.parametrize("k", [1, 4])
def test_bias_matches_an_hf_logits_processor(tiny: TransformersEngine, tiny_hf, k: int) -> None:
    """A per-node bias equals HF beam search with the bias as a log-probability processor."""
    bias = _node_bias(tiny, " Heat of the Sun", 0.0)
    ref = tiny_hf.generate_constrained(PROMPTS, ALLOWED, k, bias=bias)
    new = tiny.generate_constrained(PROMPTS, ALLOWED, k, bias=bias)
    assert_same(ref, new, 1e-5)
    assert [o.scores for o in new] != [
        o.scores for o in tiny.generate_constrained(PROMPTS, ALLOWED, k)
    ]


def test_bias_forms_agree_and_a_big_bias_wins(tiny: TransformersEngine) -> None:
    arrays = _node_bias(tiny, " Heat of the Sun", 50.0)
    by_array = tiny.generate_constrained(PROMPTS, ALLOWED, 3, bias=arrays)

    def fn(i: int, parents: np.ndarray, children: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        assert len(parents) == len(children) == len(tokens)
        return arrays[i][children]

    by_fn = tiny.generate_constrained(PROMPTS, ALLOWED, 3, bias=fn)
    assert [o.titles for o in by_fn] == [o.titles for o in by_array]
    for out, allowed in zip(by_array, ALLOWED, strict=True):
        if " Heat of the Sun" in allowed:
            assert out.titles[0] == " Heat of the Sun"
    zero = [np.zeros_like(a) for a in arrays]
    assert_same(
        tiny.generate_constrained(PROMPTS, ALLOWED, 3),
        tiny.generate_constrained(PROMPTS, ALLOWED, 3, bias=zero),
        0.0,
    )


# ------------------------------------------------------------------------------ our settings only
@pytest.fixture(scope="module")
def pushy_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model shipping generation defaults that would change or bypass our decoding."""
    out = tmp_path_factory.mktemp("pushy")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    config = json.loads((out / "generation_config.json").read_text())
    config.update(
        do_sample=True,
        temperature=0.01,
        top_k=1,
        top_p=0.01,
        repetition_penalty=5.0,
        no_repeat_ngram_size=1,
        min_new_tokens=4,
        length_penalty=-3.0,
        suppress_tokens=list(range(200, 60000, 3)),
        forced_eos_token_id=7,
    )
    (out / "generation_config.json").write_text(json.dumps(config))
    return out


def test_model_shipped_generation_defaults_are_ignored(pushy_model_dir: Path, tiny, tiny_hf):
    """Both paths decode as with a clean model; every title is allowed (nothing bypassed)."""
    for engine in (TransformersEngine(str(pushy_model_dir)), hf_engine(pushy_model_dir)):
        for k in (1, 3):
            got = engine.generate_constrained(PROMPTS, ALLOWED, k)
            assert_same(tiny_hf.generate_constrained(PROMPTS, ALLOWED, k), got, 1e-5)
            for out, allowed in zip(got, ALLOWED, strict=True):
                assert set(out.titles) <= set(allowed)
        free = engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=10))
        assert free == tiny.generate(PROMPTS[:2], GenerationParams(max_new_tokens=10))


# ------------------------------------------------------------------------------ free greedy
FREE = [
    llm_fixtures.history_prompt(TITLES[:3]),
    llm_fixtures.history_prompt(TITLES[4:15]),
    "Plain text prompt without a chat template:",
    prompt(TITLES[2:6]),
]


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_new_tokens=24),
        GenerationParams(max_new_tokens=30, stop=("\n",)),
        GenerationParams(max_new_tokens=30, stop=("19", ")")),
    ],
)
def test_packed_greedy_equals_hf_generate(tiny: TransformersEngine, tiny_hf, params) -> None:
    got = tiny.generate(FREE * 2, params)
    assert got == tiny_hf.generate(FREE * 2, params)
    assert tiny.greedy_stats.generated > 0


def test_packed_greedy_with_an_adapter(tiny, tiny_hf, tiny_adapter_dir: Path) -> None:
    adapter = resolve_adapter(str(tiny_adapter_dir))
    params = GenerationParams(max_new_tokens=16)
    tuned = tiny.generate(FREE, params, adapter=adapter)
    assert tuned == tiny_hf.generate(FREE, params, adapter=adapter)
    assert tuned != tiny.generate(FREE, params)


# ------------------------------------------------------------------------------ default model
@pytest.fixture(scope="module")
def real(default_model_dir: Path) -> TransformersEngine:
    return TransformersEngine("default", batch_size=8)


@pytest.fixture(scope="module")
def real_hf(default_model_dir: Path) -> TransformersEngine:
    return hf_engine("default", batch_size=8)


@pytest.mark.slow
def test_default_model_matches_hf(real, real_hf) -> None:
    ref = real_hf.generate_constrained(PROMPTS, ALLOWED, 10)
    assert_same(ref, real.generate_constrained(PROMPTS, ALLOWED, 10), 1e-5)


@pytest.mark.slow
def test_default_model_bundled_adapter_and_free_text(real, real_hf) -> None:
    adapter = resolve_adapter("bundled:ml-100k")
    ref = real_hf.generate_constrained(PROMPTS[:2], ALLOWED[:2], 5, adapter=adapter)
    assert_same(ref, real.generate_constrained(PROMPTS[:2], ALLOWED[:2], 5, adapter=adapter), 1e-5)
    params = GenerationParams(max_new_tokens=24)
    assert real.generate(FREE[:2], params) == real_hf.generate(FREE[:2], params)
