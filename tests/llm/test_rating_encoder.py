"""Tests of ``llm-rating``: the LM item encoder fine-tuned with LoRA for rating regression."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conformance import RecommenderConformance

from llmrec_gen.data import TrainData
from llmrec_gen.errors import DataError, ModelNotFoundError
from llmrec_gen.llm.rating_encoder import LLMRatingRegressor
from llmrec_gen.recommenders.base import Capability
from llmrec_gen.registry import build_method

WORDS = ["Sunny", "Golden", "Bright", "Happy", "Lucky", "Sweet"]


def _tiny(model_dir: Path, **kw: Any) -> LLMRatingRegressor:
    spec = {"model": str(model_dir), "num_threads": 1}
    return LLMRatingRegressor(encoder=spec, num_threads=1, **kw)


def taste_data() -> tuple[TrainData, list[int], list[int], list[int]]:
    """Two user groups with opposite tastes: group A rates "Wonderful ..." items 5 and
    "Terrible ..." items 1, group B the reverse, so item biases explain nothing and only the
    text can tell a new item's rating. Items 0 and 1 (one of each kind) have no ratings."""
    items = [
        {"item_id": 10 + n, "title": f"{kind} {w}", "year": 2000, "genres": "Drama"}
        for n, (kind, w) in enumerate(
            (kind, w) for w in WORDS for kind in ("Wonderful", "Terrible")
        )
    ]
    catalog = pd.DataFrame(items)
    catalog["year"] = catalog["year"].astype("Int64")
    catalog["text"] = catalog["title"]
    group_a, group_b = list(range(100, 108)), list(range(200, 208))
    rows = []
    for user in group_a + group_b:
        for t, item in enumerate(items[2:]):
            good = item["title"].startswith("Wonderful") == (user in group_a)
            rows.append((user, item["item_id"], 5.0 if good else 1.0, 1_000 + t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return TrainData(inter, catalog), group_a, group_b, [items[0]["item_id"], items[1]["item_id"]]


class TestLLMRatingConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Path) -> Any:
        return lambda: _tiny(tiny_model_dir, epochs=1, items_per_step=16)


def test_text_tells_a_new_items_rating(tiny_model_dir: Path):
    train, group_a, group_b, (wonderful, terrible) = taste_data()
    rec = _tiny(tiny_model_dir, epochs=40, items_per_step=10, lr=5e-3, factors=8).fit(train)
    assert rec.history_[-1]["train_mse"] < 0.5 * rec.history_[0]["train_mse"]
    pairs = [(u, i) for u in group_a + group_b for i in (wonderful, terrible)]
    pred = rec.predict_ratings(pairs).values.reshape(-1, 2)
    n = len(group_a)
    assert (pred[:n, 0] > pred[:n, 1]).mean() >= 0.75  # group A prefers the new "Wonderful"
    assert (pred[n:, 0] < pred[n:, 1]).mean() >= 0.75  # group B the new "Terrible"


def test_predictions_stay_in_the_rating_range_and_unknowns_fall_back(tiny_model_dir: Path):
    train, group_a, _, (wonderful, _) = taste_data()
    rec = _tiny(tiny_model_dir, epochs=1).fit(train)
    pred = rec.predict_ratings([(group_a[0], wonderful), ("nobody", wonderful), (group_a[0], -1)])
    assert np.all((pred.values >= 1.0) & (pred.values <= 5.0))
    assert pred.values[2] == pytest.approx(rec.mu_ + rec.user_bias_[train.user_index[group_a[0]]])


def test_registry_declares_ratings_ranking_and_a_content_digest(tiny_model_dir: Path):
    rec = build_method(
        {"type": "llm-rating", "params": {"encoder": {"model": str(tiny_model_dir)}}}
    )
    assert rec.has(Capability.PREDICT_RATINGS) and rec.has(Capability.RANK)
    assert rec.content_digest()


def test_bad_encoder_and_missing_text_field_are_one_line_errors(tmp_path: Path, block_data):
    with pytest.raises(ModelNotFoundError) as err:
        LLMRatingRegressor(encoder={"model": str(tmp_path)}).fit(block_data.train)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError) as err:
        LLMRatingRegressor(encoder={"model": str(tmp_path), "text_fields": ["plot"]}).fit(
            block_data.train
        )
    assert "plot" in str(err.value) and "\n" not in str(err.value)
