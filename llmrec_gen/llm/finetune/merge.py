"""Merging a LoRA adapter into its base model: a standalone Hugging Face model directory."""

from __future__ import annotations

import logging
from pathlib import Path

from llmrec_gen.errors import ConfigError
from llmrec_gen.io import atomic_directory, check_writable

log = logging.getLogger(__name__)


def merge_adapter(base: str, adapter: str | Path, output_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and save a standalone HF model directory.

    Args:
        base: base model (``"default"``, a directory or a Hub id, see
            :func:`llmrec_gen.llm.models.resolve_model`).
        adapter: PEFT adapter directory (e.g. ``runs/sft/final``).
        output_dir: directory to create (model + tokenizer); written via a temp dir + rename.

    Returns:
        ``output_dir``.

    Raises:
        ModelNotFoundError: base or adapter not found.
        ConfigError: ``output_dir`` already exists and is not empty.
    """
    from llmrec_gen.llm.adapters import resolve_adapter

    ref = resolve_adapter(str(adapter))
    assert ref is not None and ref.path is not None
    out = Path(output_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output_dir: '{output_dir}' exists and is not empty")
    check_writable(out.parent, "output_dir", create=True)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrec_gen.llm.models import resolve_model

    base_dir = resolve_model(base)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(ref.path)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if out.exists():
        out.rmdir()  # empty (checked above)
    with atomic_directory(out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("Merged %s into %s -> %s", adapter, base_dir, out)
    return out
