"""Supervised data for the LLM ranker, from the training split only (LlamaRec-style).

Each training row is one user: the prompt is the user's training history *without* its last
item, with ``n_candidates`` labelled candidates = that last item plus the retriever's other top
candidates for the prefix; the completion is the true item's label. The retriever is fitted on
the prefixes only (every user's last training item removed), so it never saw the item it is asked
to propose. Validation rows (eval loss only) ask for the validation item the same way, with the
retriever fitted on the whole training split. Candidate order is shuffled exactly as the ranker
shuffles it at inference (seeded per user), so the position of the answer carries no signal.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from llmrec_gen.data.loaders import load_dataset
from llmrec_gen.data.splits import split_dataset
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.io import to_python
from llmrec_gen.llm.finetune.config import FinetuneConfig

log = logging.getLogger(__name__)


def _ranker(config: FinetuneConfig) -> Any:
    from llmrec_gen.llm.ranker import LLMRanker

    return LLMRanker(prompt=config.prompt.model_dump(), seed=config.seed)


def _rows(
    config: FinetuneConfig,
    history: TrainData,
    targets: dict[Any, Any],
    retriever_data: TrainData,
    max_samples: int | None,
) -> list[dict[str, Any]]:
    from llmrec_gen.llm.ranker import LABELS
    from llmrec_gen.registry import build_method

    n = config.n_candidates
    if n > len(LABELS):
        raise ConfigError(f"finetune config: n_candidates: at most {len(LABELS)}")
    users = sorted(u for u in targets if u in history.user_index)
    if max_samples is not None and len(users) > max_samples:
        rng = np.random.default_rng(config.seed)
        users = sorted(rng.choice(np.asarray(users), max_samples, replace=False).tolist())
    retriever = build_method(config.retriever, "finetune config: retriever").fit(retriever_data)
    proposed = retriever.recommend(users, n)  # type: ignore[attr-defined]
    ranker = _ranker(config).fit(history)
    rows = []
    for user, cands in zip(users, proposed.item_ids, strict=True):
        target = targets[user]
        others = [i for i in cands.tolist() if i != target][: n - 1]
        shown = ranker.shown_order(user, [target, *others])
        prompt = ranker.prompts([user], [shown])[0]
        label = LABELS[shown.index(target)]
        rows.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": label}],
                "user_id": to_python(user),
                "candidate_ids": [to_python(i) for i in shown],
                "target_ids": [to_python(target)],
            }
        )
    return rows


def prepare_ranker_data(
    config: FinetuneConfig,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The (train, validation) ranker rows for ``config`` (see the module docstring)."""
    split = split_dataset(load_dataset(config.dataset), **config.split.kwargs())
    train = split.train
    inter = train.interactions
    last = inter.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy() == 0
    long_enough = inter.groupby("user_id")["item_id"].transform("size").to_numpy() > 1
    prefixes = TrainData(inter[~(last & long_enough)].reset_index(drop=True), train.catalog)
    held = inter.loc[last & long_enough]
    train_targets = dict(zip(held["user_id"], held["item_id"], strict=True))
    train_rows = _rows(config, prefixes, train_targets, prefixes, config.max_samples)
    valid: pd.DataFrame = split.valid
    valid_targets = dict(zip(valid["user_id"], valid["item_id"], strict=True))
    valid_rows = _rows(config, train, valid_targets, train, config.max_eval_samples)
    log.info("Built %d ranker rows (+%d validation)", len(train_rows), len(valid_rows))
    return train_rows, valid_rows
