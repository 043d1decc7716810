"""Real (tiny or default) language models for engine tests; import the fixtures you need.

``tiny_model_dir`` is a random-init 2-layer Llama (hidden size 64) saved with the real SmolLM2
tokenizer and chat template (read from the packaged GGUF when the default model has not been
converted, so it never waits for that conversion): tokenization, templating, batching and decoding
are exercised for real in about a second. ``tiny_adapter_dir`` is a LoRA adapter for it with
random (non-zero) weights, so it changes the output. ``default_model_dir`` is the converted
SmolLM2-135M-Instruct (converted once into the user cache, ~25 s the first time).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TITLES = [
    "Toy Story (1995)",
    "GoldenEye (1995)",
    "Four Rooms (1995)",
    "Get Shorty (1995)",
    "Copycat (1995)",
    "Twelve Monkeys (1995)",
    "Babe (1995)",
    "Dead Man Walking (1995)",
    "Seven (Se7en) (1995)",
    "Usual Suspects, The (1995)",
    "Star Wars (1977)",
    "Fargo (1996)",
    "Return of the Jedi (1983)",
    "Contact (1997)",
    "Scream (1996)",
    "Liar Liar (1997)",
    "Air Force One (1997)",
    "English Patient, The (1996)",
    "Titanic (1997)",
    "Godfather, The (1972)",
    "Raiders of the Lost Ark (1981)",
    "Silence of the Lambs, The (1991)",
    "Pulp Fiction (1994)",
    "Empire Strikes Back, The (1980)",
    "Independence Day (ID4) (1996)",
    "Star Trek: First Contact (1996)",
    "Jurassic Park (1993)",
    "Men in Black (1997)",
    "Heat (1995)",
    "Heat of the Sun, The (1996)",
]
"""MovieLens-style titles (with shared prefixes such as "Heat"/"Heat of the Sun") for tests."""


def history_prompt(watched: list[str], n: int = 10) -> list[dict[str, str]]:
    """A recommendation-style chat prompt for tests."""
    return [
        {
            "role": "user",
            "content": f"Here are movies a user watched: {'; '.join(watched)}. "
            f"Recommend {n} movies they would like next, one title per line.",
        }
    ]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The converted default model (SmolLM2-135M-Instruct) in the user's llmrec-gen cache."""
    from llmrec_gen.llm.models import resolve_model

    return resolve_model("default")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer Llama with the real SmolLM2 tokenizer, saved to a temp dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmrec_gen.llm.models import load_default_tokenizer

    tokenizer = load_default_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.1,  # the usual 0.02 gives near-uniform logits and "\n\n\n..." output
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A LoRA adapter for the tiny model with random weights (``init_lora_weights=False``).

    PEFT's default init makes LoRA a no-op (B = 0); random B guarantees a different output.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=32,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    out = tmp_path_factory.mktemp("tiny-lora")
    model.save_pretrained(out)
    return out
