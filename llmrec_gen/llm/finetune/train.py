"""Training a LoRA adapter with TRL's ``SFTTrainer`` (loss on the completion tokens only).

Commands (see ``finetune/README.md`` for the recipes and measured CPU numbers)::

    # train the CPU recipe; --resume continues a killed run
    llmrec-gen finetune train --config ml100k-smollm2-lora [--resume] [--set training.max_steps=10]
    # write the training/validation examples as JSONL (inspect what the model is taught)
    llmrec-gen finetune build-data --config ml100k-smollm2-lora --out sft.jsonl
    # merge base + adapter into a standalone model directory
    llmrec-gen finetune merge --base default --adapter runs/sft-ml100k/final --out merged/

From Python::

    from llmrec_gen.llm.finetune import load_finetune_config, train_sft
    cfg = load_finetune_config("ml100k-smollm2-lora", {"training.max_steps": 10})
    final_dir = train_sft(cfg)  # output_dir/final: adapter + config.yaml + metrics.json + ...

Output layout (``output_dir``): ``checkpoint-N/`` (every ``save_steps``; ``resume=True`` continues
from the latest one) and ``final/`` (written to a temp dir, then renamed): the PEFT adapter
(``adapter_model.safetensors``, ``adapter_config.json``), ``config.yaml`` (resolved config),
``train_log.jsonl`` (trainer log history), ``loss.png`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmrec_gen.errors import ConfigError
from llmrec_gen.io import atomic_directory, atomic_write_json, check_writable
from llmrec_gen.llm.finetune.config import FinetuneConfig
from llmrec_gen.llm.finetune.examples import make_builder, prepare_data, strip_example_tokens
from llmrec_gen.llm.prompting import special_token_strings

log = logging.getLogger(__name__)

FINAL_DIR = "final"
TRAIN_COLUMNS = ("prompt", "completion")


def checkpoint_is_complete(path: Path) -> bool:
    """Whether a ``checkpoint-N`` directory can be resumed from.

    It needs a readable ``trainer_state.json`` (a JSON object), the adapter's config, weights
    whose safetensors header fits the file, and the optimizer state as a whole torch archive; a
    directory a kill left half-written (or a torn copy of one) fails this check.
    """
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    weights = path / "adapter_model.safetensors"
    # torch.save files (optimizer, scheduler, RNG state, .bin weights) are zip archives
    archives = [p for p in path.iterdir() if p.suffix in (".pt", ".pth", ".bin")]
    return (
        isinstance(state, dict)
        and (path / "adapter_config.json").is_file()
        and (_safetensors_whole(weights) or (path / "adapter_model.bin").is_file())
        and any(path.glob("optimizer.*"))
        and all(_torch_archive_whole(p) for p in archives)
    )


def _safetensors_whole(path: Path) -> bool:
    """Whether a safetensors file has a JSON header whose tensors end exactly at the file end."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        return path.stat().st_size == 8 + size + max(ends, default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False


def _torch_archive_whole(path: Path) -> bool:
    """Whether a ``torch.save`` file is a complete zip archive (its directory is at the end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-N`` with the largest N in ``output_dir``, or None.

    Incomplete or corrupt checkpoints (see :func:`checkpoint_is_complete`) are skipped with a
    warning, so ``--resume`` continues from the last good one instead of crashing inside the
    trainer.
    """
    path = Path(output_dir)
    if not path.is_dir():
        return None
    found = sorted(
        (
            (int(p.name.rsplit("-", 1)[1]), p)
            for p in path.glob("checkpoint-*")
            if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()
        ),
        reverse=True,
    )
    for _, candidate in found:
        if checkpoint_is_complete(candidate):
            return candidate
        log.warning("skipping %s: incomplete or corrupt checkpoint", candidate.name)
    return None


def _filter_long(rows: list[dict], tokenizer: Any, max_length: int) -> tuple[list[dict], dict]:
    """Drop examples longer than ``max_length`` tokens (truncation would cut the completion)."""
    lengths = [
        len(
            tokenizer.apply_chat_template(
                r["prompt"] + r["completion"], tokenize=True, return_dict=True
            )["input_ids"]
        )
        for r in rows
    ]
    kept = [r for r, n in zip(rows, lengths, strict=True) if n <= max_length]
    stats = {
        "tokens_mean": float(np.mean(lengths)) if lengths else 0.0,
        "tokens_max": int(max(lengths, default=0)),
        "dropped_too_long": len(rows) - len(kept),
    }
    if stats["dropped_too_long"]:
        log.warning(
            "Dropped %d of %d examples longer than max_length=%d tokens (longest: %d)",
            stats["dropped_too_long"],
            len(rows),
            max_length,
            stats["tokens_max"],
        )
    return kept, stats


def _sft_arguments(
    config: FinetuneConfig, compute_dtype: Any, has_eval: bool, device: str
) -> dict[str, Any]:
    """``trl.SFTConfig`` keyword arguments: the recipe's ``training`` plus what we decide.

    The dtype follows the device (bf16/fp16 flags); ``eval_strategy`` stays "no" without
    validation rows; gradient checkpointing is passed under the name this transformers has
    (``activation_checkpointing`` in transformers >= 5.2x).
    """
    import torch
    from trl import SFTConfig

    args = config.training_args()
    args.setdefault("bf16", compute_dtype == torch.bfloat16)
    args.setdefault("fp16", compute_dtype == torch.float16)
    args.setdefault("dataloader_pin_memory", device != "cpu")
    if not has_eval:
        args["eval_strategy"] = "no"
    fields = SFTConfig.__dataclass_fields__
    if "activation_checkpointing" in fields and "gradient_checkpointing" in args:
        args["activation_checkpointing"] = args.pop("gradient_checkpointing")
    return args


def train_sft(
    config: FinetuneConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()
) -> Path:
    """Fine-tune a LoRA adapter with TRL ``SFTTrainer`` and write ``output_dir/final``.

    Args:
        config: the run (see :class:`FinetuneConfig`).
        resume: continue from the latest ``checkpoint-N`` in ``output_dir`` (optimizer, scheduler,
            RNG and data position are restored, so the result matches an uninterrupted run with
            the same seed). Without a checkpoint the run starts from scratch; when every
            checkpoint is incomplete or corrupt it stops instead (delete them to start again).
        callbacks: extra ``transformers.TrainerCallback`` objects (progress hooks, tests).

    Returns:
        ``output_dir/final`` (adapter, config.yaml, train_log.jsonl, loss.png, metrics.json).

    Raises:
        ConfigError: ``output_dir`` already holds a run and ``resume`` is False, or is not
            writable; ``resume`` but only corrupt checkpoints; no training examples.
        ModelNotFoundError: the base model is not available.
    """
    out = check_writable(config.output_dir, "finetune config: output_dir", create=True)
    checkpoint = latest_checkpoint(out)
    if not resume and (checkpoint is not None or (out / FINAL_DIR).exists()):
        raise ConfigError(
            f"finetune config: output_dir: '{config.output_dir}' already holds a run "
            f"({(checkpoint or out / FINAL_DIR).name}): pass --resume to continue it or choose "
            "a new output_dir"
        )
    if resume and checkpoint is None:
        torn = sorted(p.name for p in out.glob("checkpoint-*") if p.is_dir())
        if torn:
            raise ConfigError(
                f"--resume: every checkpoint in '{out}' is incomplete or corrupt "
                f"({', '.join(torn)}); delete them to start from scratch"
            )
        log.warning("No checkpoint in %s: starting from scratch", out)

    import torch
    import transformers
    from datasets import Dataset as HFDataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from llmrec_gen.llm.models import pick_device, pick_dtype, quiet_transformers, resolve_model

    started = time.perf_counter()
    model_dir = resolve_model(config.model_name_or_path)
    device = pick_device("auto")
    compute_dtype = pick_dtype(device, config.dtype)
    if device == "cpu" and compute_dtype != torch.float32:
        from llmrec_gen.llm.models import cpu_features

        if compute_dtype != torch.bfloat16 or not cpu_features().native_bf16:
            log.warning("%s on this CPU is emulated and ~10x slower than float32", compute_dtype)

    train_rows, valid_rows = prepare_data(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    specials = special_token_strings(tokenizer)  # defence in depth over the builder's cleaning
    train_rows = strip_example_tokens(train_rows, specials)
    valid_rows = strip_example_tokens(valid_rows, specials)
    max_length = int(config.training_args()["max_length"])
    train_rows, token_stats = _filter_long(train_rows, tokenizer, max_length)
    valid_rows, _ = _filter_long(valid_rows, tokenizer, max_length)
    if not train_rows:
        raise ConfigError(
            "finetune config: no training examples (users need min_history + n_targets training "
            "interactions, and examples must fit max_length)"
        )

    def to_hf(rows: list[dict]) -> Any:
        return HFDataset.from_list([{k: r[k] for k in TRAIN_COLUMNS} for r in rows])

    transformers.set_seed(config.seed)  # LoRA init happens inside SFTTrainer
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        bias="none",
    )
    eval_dataset = to_hf(valid_rows) if valid_rows else None
    args = SFTConfig(**_sft_arguments(config, compute_dtype, eval_dataset is not None, device))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_hf(train_rows),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks) or None,
    )
    resuming = resume and checkpoint is not None
    start_file = out / "eval_start.json"  # train() resets log_history: keep the baseline apart
    start_eval: dict[str, Any] = {}
    if config.eval_on_start and eval_dataset is not None and not resuming:
        start_eval = {**trainer.evaluate(), "step": 0}
        if trainer.is_world_process_zero():
            atomic_write_json(start_file, start_eval)
    elif resuming and start_file.is_file():
        start_eval = json.loads(start_file.read_text(encoding="utf-8"))
    log.info(
        "Training on %d examples (%d validation rows), %s, device %s%s",
        len(train_rows),
        len(valid_rows),
        compute_dtype,
        device,
        f", resuming from {checkpoint.name}" if resuming else "",
    )
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if resuming else None)
    final_eval = trainer.evaluate() if eval_dataset is not None else {}

    history = ([start_eval] if start_eval else []) + list(trainer.state.log_history)
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    metrics = {
        "train_loss": train_losses[-1] if train_losses else None,
        # mean of every logged training loss, before and after a resume (the trainer's own
        # training_loss averages only the steps of the last call)
        "train_loss_mean": float(np.mean(train_losses)) if train_losses else None,
        "eval_loss": final_eval.get("eval_loss"),
        "eval_loss_start": eval_losses[0][1] if eval_losses and eval_losses[0][0] == 0 else None,
        "runtime_s": round(time.perf_counter() - started, 1),
        "train_runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
        "samples": len(train_rows),
        "eval_samples": len(valid_rows),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "resumed_from": checkpoint.name if resuming else None,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "device": device,
        "dtype": str(compute_dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "template": make_builder(config).template_id,
        **token_stats,
    }
    final = out / FINAL_DIR
    if trainer.is_world_process_zero():  # `accelerate launch`: one writer
        _write_final(out, trainer, config, history, metrics)
    trainer.accelerator.wait_for_everyone()
    log.info(
        "Wrote %s (train loss %s, eval loss %s, %.0f s)",
        final,
        metrics["train_loss"],
        metrics["eval_loss"],
        metrics["runtime_s"],
    )
    return final


def _write_final(
    out: Path, trainer: Any, config: FinetuneConfig, history: list[dict], metrics: dict
) -> Path:
    """Build ``final/`` in a temp dir next to it, then rename it into place."""
    from llmrec_gen.llm.adapters import resolve_adapter

    with atomic_directory(out / FINAL_DIR) as tmp:
        model = trainer.model
        for peft_cfg in model.peft_config.values():
            peft_cfg.base_model_name_or_path = config.model_name_or_path  # not a local cache path
        model.save_pretrained(tmp, save_embedding_layers=False)
        resolve_adapter(str(tmp))  # validates it: no embedding/LM-head modules, weights present
        (tmp / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        (tmp / "train_log.jsonl").write_text(
            "".join(json.dumps(h) + "\n" for h in history), encoding="utf-8"
        )
        plot_loss(history, tmp / "loss.png")
        atomic_write_json(tmp / "metrics.json", metrics)
        (tmp / "README.md").write_text(model_card(config, metrics), encoding="utf-8")
    return out / FINAL_DIR


def model_card(config: FinetuneConfig, metrics: Mapping[str, Any]) -> str:
    """A short README for ``final/`` (replaces PEFT's boilerplate card with a local path)."""

    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    taught = (
        f"the next {config.n_targets} training items as a numbered list"
        if config.task == "generator"
        else f"the label of the true next item among {config.n_candidates} candidates proposed "
        f"by `{config.retriever}` (a ranker: use it as `llm-ranker` with a retriever)"
    )
    return (
        f"# LoRA adapter: {config.model_name_or_path} fine-tuned on {config.dataset}\n\n"
        "Made by `llmrec_gen.llm.finetune` (TRL SFTTrainer + PEFT LoRA) from the **training "
        f"split only** ({config.split.protocol}, seed {config.split.seed}): prompts are "
        f"`{config.prompt.template}` with up to {config.prompt.history_len} history items; "
        f"completions are {taught}.\n\n"
        "| metric | value |\n|---|---|\n"
        + "".join(
            f"| {k} | {fmt(metrics.get(k))} |\n"
            for k in (
                "samples",
                "steps",
                "train_loss",
                "eval_loss_start",
                "eval_loss",
                "runtime_s",
                "device",
                "dtype",
            )
        )
        + f"\nLoRA r={config.lora_r}, alpha={config.lora_alpha}, targets "
        f"{', '.join(config.lora_target_modules)} (no embeddings/LM head: vLLM-compatible).\n\n"
        'Use: `LLMRecommender(model="default", adapter="<this dir>")`, or '
        '`PeftModel.from_pretrained(base, "<this dir>")`. Resolved config: `config.yaml`; '
        "log: `train_log.jsonl`, `loss.png`; numbers: `metrics.json`.\n"
    )


def plot_loss(history: list[dict], path: str | Path) -> Path:
    """Plot train and eval loss against the optimizer step into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if evals:
        ax.plot(
            *zip(*evals, strict=True),
            "o--",
            label="eval loss (validation items)",
            color="tab:orange",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens, nats)")
    ax.set_title("SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
