"""Supervised fine-tuning (LoRA) of an LLM recommender on the training split only.

BIGRec-style recipe: each training example is a user's chronological *training* history cut at
some point, rendered with the same prompt template as inference (so the chat template is applied
identically), and the completion is the next ``n_targets`` training items in the numbered-list
format that the inference parser reads. Training uses TRL's ``SFTTrainer`` with a PEFT LoRA
adapter, loss on the completion tokens only. Validation/test interactions never enter a training
example; the validation items serve only as an eval-loss monitor.

Commands (see ``finetune/README.md`` for the recipes and measured CPU numbers)::

    # train the CPU recipe (SmolLM2-135M, 15-30 min on 2 cores); --resume continues a killed run
    llmrec-gen finetune train --config ml100k-smollm2-lora [--resume] [--set max_steps=10]
    # write the training/validation examples as JSONL (inspect what the model is taught)
    llmrec-gen finetune build-data --config ml100k-smollm2-lora --out sft.jsonl
    # merge base + adapter into a standalone model directory
    llmrec-gen finetune merge --base default --adapter runs/sft-ml100k/final --out merged/

From Python::

    from llmrec_gen.finetune import load_finetune_config, train_sft
    cfg = load_finetune_config("finetune/configs/ml100k-smollm2-lora.yaml", {"max_steps": 10})
    final_dir = train_sft(cfg)  # output_dir/final: adapter + config.yaml + metrics.json + ...

Output layout (``output_dir``): ``checkpoint-N/`` (every ``save_steps``; ``resume=True`` continues
from the latest one) and ``final/`` (written to a temp dir, then renamed): the PEFT adapter
(``adapter_model.safetensors``, ``adapter_config.json``), ``config.yaml`` (resolved config),
``train_log.jsonl`` (trainer log history), ``loss.png`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, field_validator

from llmrec_gen.config import SplitConfig, StrictModel, load_yaml_model
from llmrec_gen.data import TrainData
from llmrec_gen.errors import ConfigError, ModelNotFoundError
from llmrec_gen.io import atomic_write_json, atomic_write_text
from llmrec_gen.prompting import (
    DEFAULT_TEMPLATE,
    ITEM_FIELDS,
    PromptBuilder,
    format_answer,
    format_title,
)

if TYPE_CHECKING:
    from llmrec_gen.splits import Split

log = logging.getLogger(__name__)

FORBIDDEN_LORA_MODULES = frozenset({"embed_tokens", "lm_head"})
"""Never adapted: vLLM's LoRA loader rejects adapters that touch the embeddings or the LM head."""
ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_MODULES = ["gate_proj", "up_proj", "down_proj"]
FINAL_DIR = "final"
TRAIN_COLUMNS = ("prompt", "completion")


# ---------------------------------------------------------------------------------------------
# Config


class FinetuneConfig(StrictModel):
    """A LoRA fine-tuning run. Names follow Hugging Face / TRL where they exist.

    Precedence: CLI ``--set key=value`` > YAML file > these defaults. The resolved config is saved
    as ``final/config.yaml``. Keep ``dataset``, ``split``, ``template``, ``history_len``,
    ``fields`` and ``n_targets`` equal to the evaluation config that will use the adapter: the
    split decides which interactions are held out, and the prompt must look like inference.
    """

    # model
    model_name_or_path: str = "default"  # "default" = bundled SmolLM2-135M-Instruct; dir or Hub id
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 CPU, bf16 GPU
    # data (train split only; keep equal to the evaluation config)
    dataset: str = "ml-100k"  # built-in name or path (see llmrec_gen.data)
    split: SplitConfig = Field(default_factory=SplitConfig)  # same split as the evaluation
    template: str = DEFAULT_TEMPLATE  # prompt template id; the inference template
    history_len: int = Field(20, ge=1, le=200)  # items shown in a prompt; 10-50 typical
    fields: list[str] = Field(default_factory=lambda: ["title", "year"])  # item fields in history
    n_targets: int = Field(10, ge=1, le=50)  # items in each completion (= k asked at inference)
    min_history: int = Field(5, ge=1)  # shortest prefix used as a prompt; 3-10
    samples_per_user: int = Field(2, ge=1)  # windows per user (latest + random earlier); 1-10
    max_samples: int | None = Field(1024, ge=1)  # BIGRec-style cap (seeded sample); None = all
    max_eval_samples: int | None = Field(128, ge=1)  # validation rows for eval loss; None = all
    # LoRA
    lora_r: int = Field(16, ge=1, le=512)  # adapter rank; 8-64 typical
    lora_alpha: int = Field(32, ge=1)  # scaling = alpha / r; usually 2 x r
    lora_dropout: float = Field(0.05, ge=0, lt=1)  # 0-0.1
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(ATTENTION_MODULES), min_length=1
    )  # linear layers to adapt; never embed_tokens/lm_head (vLLM rejects them)
    # optimisation
    learning_rate: float = Field(2e-4, gt=0, le=1)  # LoRA likes 1e-4..5e-4
    lr_scheduler_type: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "polynomial", "inverse_sqrt"
    ] = "cosine"  # transformers scheduler; cosine or linear for short LoRA runs
    warmup_steps: float = Field(0.05, ge=0)  # < 1: ratio of total steps; >= 1: steps
    weight_decay: float = Field(0.0, ge=0)  # 0-0.1
    num_train_epochs: float = Field(1.0, gt=0)  # used when max_steps = -1
    max_steps: int = Field(-1, ge=-1)  # -1: epochs decide; > 0 overrides num_train_epochs
    per_device_train_batch_size: int = Field(8, ge=1)  # CPU 4-8; GPU 16-64
    per_device_eval_batch_size: int = Field(8, ge=1)  # eval is forward-only: can be larger
    gradient_accumulation_steps: int = Field(1, ge=1)  # effective batch = batch x this x GPUs
    max_length: int = Field(1024, ge=32)  # tokens; longer examples are dropped (not truncated)
    gradient_checkpointing: bool = False  # CPU: +25-45 % step time, -45 % memory (measured)
    # run
    save_steps: int = Field(20, ge=1)  # checkpoint every N optimizer steps (resume granularity)
    save_total_limit: int | None = Field(2, ge=1)  # checkpoints kept; None = all
    logging_steps: int = Field(5, ge=1)  # train-loss log interval (steps)
    eval_steps: int | None = Field(None, ge=1)  # eval-loss interval; None = start and end only
    eval_on_start: bool = True  # eval loss of the untrained model (the baseline to beat)
    seed: int = 0  # seeds window sampling, LoRA init, dropout and data order
    output_dir: str = "runs/sft"  # checkpoints and final/ go here

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if f not in ITEM_FIELDS]
        if bad:
            raise ValueError(f"unknown item field(s) {bad}; choose from {list(ITEM_FIELDS)}")
        return value

    @field_validator("lora_target_modules")
    @classmethod
    def _no_embeddings(cls, value: list[str]) -> list[str]:
        bad = sorted({m for m in value if m.split(".")[-1] in FORBIDDEN_LORA_MODULES})
        if bad:
            raise ValueError(
                f"{', '.join(bad)} cannot be adapted (vLLM's LoRA loader rejects embedding/LM-head "
                "adapters); use projection layers such as q_proj, v_proj"
            )
        return value

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("use -1 (epochs decide) or a positive number")
        return value


def load_finetune_config(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> FinetuneConfig:
    """Load a :class:`FinetuneConfig` from YAML plus overrides (CLI > file > defaults).

    Args:
        path: a YAML file, a packaged recipe name (``ml100k-smollm2-lora``) or None (defaults).
        overrides: ``{"lora_r": 8, "split.seed": 1}`` (dotted keys reach nested sections).

    Returns:
        The validated config.

    Raises:
        ConfigError: bad file or field (one line naming the field), or output_dir not writable.
        ModelNotFoundError: ``model_name_or_path`` is not available locally.
    """
    cfg = load_yaml_model(FinetuneConfig, path, overrides, what="finetune config")
    check_model_available(cfg.model_name_or_path)
    check_writable(cfg.output_dir)
    return cfg


def check_model_available(name: str) -> None:
    """Raise :class:`ModelNotFoundError` unless ``name`` can be loaded without converting it.

    The default model counts as available when its GGUF source is installed (it is converted on
    first use by :func:`llmrec_gen.models.resolve_model`).
    """
    from llmrec_gen import models

    if models.is_default_alias(name):
        if not (models.default_model_dir() / models.MARKER_FILE).is_file():
            models.find_default_gguf()
        return
    models.resolve_model(name)


def check_writable(output_dir: str | Path, *, create: bool = False) -> Path:
    """Raise :class:`ConfigError` naming ``output_dir`` unless it can be created and written.

    Args:
        output_dir: the directory.
        create: create it (and its parents); otherwise only the nearest existing ancestor is
            checked, so validating a config has no side effects.

    Returns:
        The expanded path.
    """
    path = Path(output_dir).expanduser()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
            return path
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise NotADirectoryError(20, f"'{probe}' is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(13, f"no write permission on '{probe}'")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"finetune config: output_dir: '{output_dir}' is not writable ({reason})"
        ) from None
    return path


def make_builder(config: FinetuneConfig) -> PromptBuilder:
    """The prompt builder the run uses (the same template/options as inference)."""
    return PromptBuilder(
        template=config.template,
        history_len=config.history_len,
        fields=tuple(config.fields),
        k=config.n_targets,
    )


# ---------------------------------------------------------------------------------------------
# Data


def _prefix_view(train: TrainData, rows: pd.DataFrame) -> TrainData:
    """A :class:`TrainData` holding only ``rows`` (one user's prefix), sharing the catalog index."""
    view = TrainData(rows, train.catalog)
    view.__dict__["item_index"] = train.item_index  # cached_property: skip rebuilding per window
    view.__dict__["item_ids"] = train.item_ids
    return view


def _titles(train: TrainData) -> dict[Any, str]:
    """Item ID -> ``"Title (Year)"``, the form the model writes (and the parser reads)."""
    cat = train.catalog
    return {
        i: format_title(t, y)
        for i, t, y in zip(cat["item_id"].tolist(), cat["title"], cat["year"], strict=True)
    }


def _answer(titles: Mapping[Any, str], item_ids: Sequence[Any]) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": format_answer([titles[i] for i in item_ids])}]


def _to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def build_sft_examples(
    train: TrainData,
    builder: PromptBuilder,
    *,
    max_history: int = 20,
    n_targets: int = 10,
    samples_per_user: int = 2,
    max_samples: int | None = None,
    min_history: int = 5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sliding-window SFT examples from the training split only.

    For a user with chronological training history ``h`` (length ``L``), the candidate cut points
    are ``c`` in ``[min_history, L - n_targets]``. Per user the latest cut (closest to what the
    model sees at inference) plus ``samples_per_user - 1`` random earlier cuts are taken. The
    prompt renders ``h[c - max_history : c]`` with ``builder`` (which shows its last
    ``history_len`` items) asking for ``n_targets`` items; the completion is ``h[c : c +
    n_targets]`` as a numbered list. Users shorter than ``min_history + n_targets`` give nothing.

    Args:
        train: the training split (never validation/test data).
        builder: the inference prompt builder (template, history length, fields).
        max_history: most items kept before a cut (the builder may show fewer).
        n_targets: items in each completion.
        samples_per_user: windows per user.
        max_samples: cap on the total (seeded uniform sample, BIGRec uses 1024); None = all.
        min_history: shortest prefix.
        seed: seeds the window choice and the cap.

    Returns:
        Dicts with ``prompt`` (chat messages, ending with the user turn) and ``completion``
        (one assistant message) in TRL's conversational prompt/completion format, plus
        ``user_id``, ``history_ids`` and ``target_ids`` for inspection (drop them for training).
    """
    rng = np.random.default_rng(seed)
    grouped = {u: g for u, g in train.interactions.groupby("user_id", sort=True)}
    windows: list[tuple[Any, int]] = []
    for user in train.user_ids.tolist():
        length = len(grouped[user])
        last = length - n_targets
        if last < min_history:
            continue
        earlier = np.arange(min_history, last)
        n_extra = min(samples_per_user - 1, len(earlier))
        extra = rng.choice(earlier, size=n_extra, replace=False) if n_extra else []
        windows += [(user, int(c)) for c in sorted([*extra, last])]
    if max_samples is not None and len(windows) > max_samples:
        keep = np.sort(rng.choice(len(windows), size=max_samples, replace=False))
        windows = [windows[i] for i in keep]
    titles = _titles(train)
    examples = []
    for user, cut in windows:
        rows = grouped[user]
        prefix = rows.iloc[max(0, cut - max_history) : cut]
        targets = rows["item_id"].iloc[cut : cut + n_targets].tolist()
        messages = builder.build(_prefix_view(train, prefix), user, k=n_targets)
        examples.append(
            {
                "prompt": messages,
                "completion": _answer(titles, targets),
                "user_id": _to_python(user),
                "history_ids": [_to_python(i) for i in prefix["item_id"].tolist()],
                "target_ids": [_to_python(i) for i in targets],
            }
        )
    log.info("Built %d SFT examples from %d users", len(examples), len({u for u, _ in windows}))
    return examples


def build_valid_examples(
    train: TrainData,
    valid: pd.DataFrame,
    builder: PromptBuilder,
    *,
    n_targets: int = 10,
    max_samples: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Eval-loss rows: prompt = full training history, completion = the validation item.

    Used only to monitor validation loss, never trained on. The prompt asks for ``n_targets``
    items exactly as at inference while the completion holds one item (the only known next item),
    so the loss also counts the end-of-turn token after it: compare eval losses with each other
    (start vs end of training), not with the train loss.

    Args:
        train: the training split (the prompt's only source).
        valid: ``split.valid`` (one row per validation target).
        builder: the inference prompt builder.
        n_targets: items requested in the prompt.
        max_samples: cap on the number of rows (seeded sample); None = all.
        seed: seeds the cap.
    """
    valid = valid[valid["user_id"].isin(train.user_index)]
    valid = valid[valid["item_id"].isin(train.item_index)]
    order = np.arange(len(valid))
    if max_samples is not None and len(valid) > max_samples:
        order = np.sort(np.random.default_rng(seed).choice(len(valid), max_samples, replace=False))
    titles = _titles(train)
    examples = []
    for row in valid.iloc[order].itertuples():
        examples.append(
            {
                "prompt": builder.build(train, row.user_id, k=n_targets),
                "completion": _answer(titles, [row.item_id]),
                "user_id": _to_python(row.user_id),
                "history_ids": [_to_python(i) for i in train.history(row.user_id).tolist()],
                "target_ids": [_to_python(row.item_id)],
            }
        )
    return examples


def prepare_data(config: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load the dataset, split it and build the (train, validation) examples for ``config``."""
    from llmrec_gen.data import load_dataset
    from llmrec_gen.splits import split_dataset

    split: Split = split_dataset(load_dataset(config.dataset), **config.split.model_dump())
    builder = make_builder(config)
    train_rows = build_sft_examples(
        split.train,
        builder,
        max_history=config.history_len,
        n_targets=config.n_targets,
        samples_per_user=config.samples_per_user,
        max_samples=config.max_samples,
        min_history=config.min_history,
        seed=config.seed,
    )
    valid_rows = build_valid_examples(
        split.train,
        split.valid,
        builder,
        n_targets=config.n_targets,
        max_samples=config.max_eval_samples,
        seed=config.seed,
    )
    return train_rows, valid_rows


def write_examples(path: str | Path, train_rows: list[dict], valid_rows: list[dict]) -> Path:
    """Write examples as JSONL (one per line, with a ``split`` field: train/valid), atomically."""
    lines = [
        json.dumps({"split": name, **row}, ensure_ascii=False)
        for name, rows in (("train", train_rows), ("valid", valid_rows))
        for row in rows
    ]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Training


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-N`` directory with the largest N in ``output_dir``, or None."""
    path = Path(output_dir)
    if not path.is_dir():
        return None
    found = [
        (int(p.name.rsplit("-", 1)[1]), p)
        for p in path.glob("checkpoint-*")
        if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return max(found)[1] if found else None


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


def train_sft(
    config: FinetuneConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()
) -> Path:
    """Fine-tune a LoRA adapter with TRL ``SFTTrainer`` and write ``output_dir/final``.

    Args:
        config: the run (see :class:`FinetuneConfig`).
        resume: continue from the latest ``checkpoint-N`` in ``output_dir`` (optimizer, scheduler,
            RNG and data position are restored, so the result matches an uninterrupted run with
            the same seed). Without a checkpoint the run starts from scratch.
        callbacks: extra ``transformers.TrainerCallback`` objects (progress hooks, tests).

    Returns:
        ``output_dir/final`` (adapter, config.yaml, train_log.jsonl, loss.png, metrics.json).

    Raises:
        ConfigError: ``output_dir`` already holds a run and ``resume`` is False, or is not
            writable; no training examples.
        ModelNotFoundError: the base model is not available.
    """
    out = check_writable(config.output_dir, create=True)
    checkpoint = latest_checkpoint(out)
    if not resume and (checkpoint is not None or (out / FINAL_DIR).exists()):
        raise ConfigError(
            f"finetune config: output_dir: '{config.output_dir}' already holds a run "
            f"({(checkpoint or out / FINAL_DIR).name}): pass --resume to continue it or choose "
            "a new output_dir"
        )
    if resume and checkpoint is None:
        log.warning("No checkpoint in %s: starting from scratch", out)

    import torch
    import transformers
    from datasets import Dataset as HFDataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from llmrec_gen.models import pick_device, pick_dtype, resolve_model

    started = time.perf_counter()
    model_dir = resolve_model(config.model_name_or_path)
    device = pick_device("auto")
    compute_dtype = pick_dtype(device, config.dtype)
    if device == "cpu" and compute_dtype != torch.float32:
        log.warning("%s on CPU is emulated and ~10x slower than float32", compute_dtype)

    train_rows, valid_rows = prepare_data(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows, token_stats = _filter_long(train_rows, tokenizer, config.max_length)
    valid_rows, _ = _filter_long(valid_rows, tokenizer, config.max_length)
    if not train_rows:
        raise ConfigError(
            "finetune config: no training examples (users need min_history + n_targets training "
            "interactions, and examples must fit max_length)"
        )

    def to_hf(rows: list[dict]) -> Any:
        return HFDataset.from_list([{k: r[k] for k in TRAIN_COLUMNS} for r in rows])

    transformers.set_seed(config.seed)  # LoRA init happens inside SFTTrainer
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
    # transformers >= 5.2x renamed gradient_checkpointing (TRL defaults it to True) to
    # activation_checkpointing; pass whichever this version has, so the choice is ours.
    checkpointing = (
        {"activation_checkpointing": config.gradient_checkpointing}
        if "activation_checkpointing" in SFTConfig.__dataclass_fields__
        else {"gradient_checkpointing": config.gradient_checkpointing}
    )
    args = SFTConfig(
        output_dir=str(out),
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        **checkpointing,
        bf16=compute_dtype == torch.bfloat16,
        fp16=compute_dtype == torch.float16,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if (config.eval_steps and eval_dataset is not None) else "no",
        eval_steps=config.eval_steps,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=device != "cpu",
    )
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
        "train_loss_mean": result.training_loss,
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{FINAL_DIR}.", suffix=".tmp", dir=out))
    try:
        model = trainer.model
        for peft_cfg in model.peft_config.values():
            peft_cfg.base_model_name_or_path = config.model_name_or_path  # not a local cache path
        model.save_pretrained(tmp, save_embedding_layers=False)
        check_adapter_keys(tmp)
        (tmp / "config.yaml").write_text(
            yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
        )
        (tmp / "train_log.jsonl").write_text(
            "".join(json.dumps(h) + "\n" for h in history), encoding="utf-8"
        )
        plot_loss(history, tmp / "loss.png")
        atomic_write_json(tmp / "metrics.json", metrics)
        (tmp / "README.md").write_text(model_card(config, metrics), encoding="utf-8")
        share_permissions(tmp)
        _replace_dir(tmp, out / FINAL_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / FINAL_DIR


def model_card(config: FinetuneConfig, metrics: Mapping[str, Any]) -> str:
    """A short README for ``final/`` (replaces PEFT's boilerplate card with a local path)."""

    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return (
        f"# LoRA adapter: {config.model_name_or_path} fine-tuned on {config.dataset}\n\n"
        "Made by `llmrec_gen.finetune` (TRL SFTTrainer + PEFT LoRA) from the **training split "
        f"only** ({config.split.protocol}, seed {config.split.seed}): prompts are "
        f"`{config.template}` with up to {config.history_len} history items; completions are "
        f"the next {config.n_targets} training items as a numbered list.\n\n"
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


def share_permissions(directory: Path) -> None:
    """Give a temp-built directory the usual umask permissions (mkdtemp/mkstemp use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_dir(src: Path, dst: Path) -> None:
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_adapter_keys(adapter_dir: str | Path) -> list[str]:
    """Return the adapter's tensor names; raise if any touches embed_tokens/lm_head.

    Raises:
        ModelNotFoundError: no ``adapter_model.safetensors`` in ``adapter_dir``.
        ConfigError: the adapter adapts or saves the embeddings / LM head (vLLM would reject it).
    """
    from safetensors import safe_open

    file = Path(adapter_dir) / "adapter_model.safetensors"
    if not file.is_file():
        raise ModelNotFoundError(f"'{adapter_dir}' holds no adapter_model.safetensors")
    with safe_open(str(file), framework="pt") as fh:
        keys = list(fh.keys())
    bad = [k for k in keys if any(m in k for m in FORBIDDEN_LORA_MODULES)]
    if bad:
        raise ConfigError(f"adapter '{adapter_dir}' contains embedding/LM-head tensors: {bad[0]}")
    return keys


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


# ---------------------------------------------------------------------------------------------
# Merging


def merge_adapter(base: str, adapter: str | Path, output_dir: str | Path) -> Path:
    """Merge a LoRA adapter into its base model and save a standalone HF model directory.

    Args:
        base: base model (``"default"``, a directory or a Hub id, see
            :func:`llmrec_gen.models.resolve_model`).
        adapter: PEFT adapter directory (e.g. ``runs/sft/final``).
        output_dir: directory to create (model + tokenizer); written via a temp dir + rename.

    Returns:
        ``output_dir``.

    Raises:
        ModelNotFoundError: base or adapter not found.
        ConfigError: ``output_dir`` already exists and is not empty.
    """
    adapter = Path(adapter).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"adapter '{adapter}' not found (no adapter_config.json)")
    out = Path(output_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output_dir: '{output_dir}' exists and is not empty")
    check_writable(out.parent, create=True)

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrec_gen.models import resolve_model

    base_dir = resolve_model(base)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        share_permissions(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Merged %s into %s -> %s", adapter, base_dir, out)
    return out
