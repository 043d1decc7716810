"""Ranker SFT rows: from the training split only, the answer is the true next item's label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_gen.data import load_dataset, split_dataset
from llmrec_gen.llm.finetune import FinetuneConfig, prepare_data
from llmrec_gen.llm.ranker import LABELS


def _write(tmp_path: Path, n_users: int = 15, n_items: int = 40, per_user: int = 12) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        rows += [(u, int(i), 4.0, 100 * u + t) for t, i in enumerate(items)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    pd.DataFrame(
        {"item_id": range(1, n_items + 1), "title": [f"Film{i:03d}" for i in range(1, n_items + 1)]}
    ).to_csv(tmp_path / "items.csv", index=False)
    return tmp_path


def test_ranker_rows_hold_out_the_answer_and_label_it(tmp_path):
    data = _write(tmp_path)
    cfg = FinetuneConfig(
        task="ranker",
        retriever="popularity",
        n_candidates=6,
        dataset=str(data),
        prompt={"template": "rank-v1", "history_len": 30},
        max_samples=None,
        max_eval_samples=None,
        output_dir=str(tmp_path / "out"),
    )
    train_rows, valid_rows = prepare_data(cfg)
    split = split_dataset(load_dataset(str(data)))
    history = {u: g.tolist() for u, g in split.train.interactions.groupby("user_id")["item_id"]}
    valid = dict(zip(split.valid["user_id"], split.valid["item_id"], strict=True))
    test = dict(zip(split.test["user_id"], split.test["item_id"], strict=True))
    assert len(train_rows) == len(history) and len(valid_rows) == len(valid)
    for row in train_rows:
        user, (target,) = row["user_id"], row["target_ids"]
        assert target == history[user][-1]  # the last TRAINING item, never valid/test
        assert target not in (valid.get(user), test.get(user))
        cands = row["candidate_ids"]
        assert len(cands) == 6 == len(set(cands)) and cands.count(target) == 1
        assert row["completion"][0]["content"] == LABELS[cands.index(target)]
        prompt = row["prompt"][-1]["content"]
        shown_history = prompt.split("Candidates:")[0]
        assert f"Film{target:03d}" not in shown_history  # the answer is not in the history
    for row in valid_rows:
        assert row["target_ids"] == [valid[row["user_id"]]]
        shown = row["prompt"][-1]["content"].split("Candidates:")[0]
        assert f"Film{test[row['user_id']]:03d}" not in shown  # no test item in the history
