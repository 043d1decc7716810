"""Supervised fine-tuning data from the training split only: prompt/completion windows.

BIGRec-style: each example is a user's chronological *training* history cut at some point,
rendered with the same prompt template as inference (so the chat template is applied
identically), and the completion is the next ``n_targets`` training items in the numbered-list
format the inference parser reads. Validation items serve only as an eval-loss monitor; no row
ever contains an item at or after a held-out target's position.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec_gen.data.loaders import load_dataset
from llmrec_gen.data.splits import split_dataset
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.io import atomic_write_text, to_python
from llmrec_gen.llm.finetune.config import FinetuneConfig
from llmrec_gen.llm.prompting import (
    PromptBuilder,
    format_answer,
    format_title,
    strip_messages,
)

log = logging.getLogger(__name__)


def make_builder(config: FinetuneConfig) -> PromptBuilder:
    """The prompt builder the run uses (the same template/options as inference)."""
    return PromptBuilder(config.prompt)


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
                "user_id": to_python(user),
                "history_ids": [to_python(i) for i in prefix["item_id"].tolist()],
                "target_ids": [to_python(i) for i in targets],
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
                "user_id": to_python(row.user_id),
                "history_ids": [to_python(i) for i in train.history(row.user_id).tolist()],
                "target_ids": [to_python(row.item_id)],
            }
        )
    return examples


def prepare_data(config: FinetuneConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load the dataset, split it and build the (train, validation) examples for ``config``."""
    if config.task == "ranker":
        from llmrec_gen.llm.finetune.ranker_examples import prepare_ranker_data

        return prepare_ranker_data(config)
    split = split_dataset(load_dataset(config.dataset), **config.split.kwargs())
    builder = make_builder(config)
    train_rows = build_sft_examples(
        split.train,
        builder,
        max_history=config.prompt.history_len,
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


def strip_example_tokens(
    rows: Sequence[dict[str, Any]], special_tokens: Sequence[str]
) -> list[dict[str, Any]]:
    """``rows`` with the given special-token strings removed from every prompt and completion
    message (:func:`~llmrec_gen.llm.prompting.strip_messages`); other fields are kept."""
    if not special_tokens:
        return list(rows)
    return [
        {
            **row,
            "prompt": strip_messages(row["prompt"], special_tokens),
            "completion": strip_messages(row["completion"], special_tokens),
        }
        for row in rows
    ]


def write_examples(path: str | Path, train_rows: list[dict], valid_rows: list[dict]) -> Path:
    """Write examples as JSONL (one per line, with a ``split`` field: train/valid), atomically."""
    lines = [
        json.dumps({"split": name, **row}, ensure_ascii=False)
        for name, rows in (("train", train_rows), ("valid", valid_rows))
        for row in rows
    ]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
    return Path(path)
