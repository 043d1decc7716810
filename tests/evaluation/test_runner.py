"""The evaluator: reports, cohorts, LLM grounding rates, checkpoint/resume, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_block_data

from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation import EvalConfig, run_evaluation
from llmrec_gen.registry import MethodSpec


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The block dataset as a generic interactions.csv + items.csv pair."""
    data = make_block_data()
    out = tmp_path_factory.mktemp("blocks")
    data.train.interactions.to_csv(out / "interactions.csv", index=False)
    data.train.catalog.drop(columns="text").to_csv(out / "items.csv", index=False)
    return out


def _config(dataset_dir: Path, out: Path, methods: list[dict], **kw) -> EvalConfig:
    return EvalConfig(
        name="t",
        dataset=str(dataset_dir),
        output_dir=str(out),
        ks=[1, 3],
        plot=kw.pop("plot", False),
        methods=[MethodSpec(**m) for m in methods],
        **kw,
    )


def test_writes_every_report_file(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}], plot=True)
    result = run_evaluation(cfg, progress=False)
    for name in ("metrics.json", "metrics.csv", "report.md", "metrics.png", "config.yaml"):
        assert (result.run_dir / name).stat().st_size > 0
    payload = json.loads((result.run_dir / "metrics.json").read_text())
    assert payload["protocol"]["ranking"] == "full-catalog"
    assert [m["name"] for m in payload["methods"]] == ["popularity", "itemknn"]
    assert "## Cohorts" in (result.run_dir / "report.md").read_text()


def test_known_answer_itemknn_beats_popularity(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "itemknn"}])
    pop, knn = run_evaluation(cfg, progress=False).methods
    assert knn.overall["HR@3"] > pop.overall["HR@3"]
    assert knn.n_users == pop.n_users == 24


def test_cohort_sizes_partition_users(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}])
    (m,) = run_evaluation(cfg, progress=False).methods
    assert m.cohorts["head-target"]["users"] + m.cohorts["tail-target"]["users"] == m.n_users
    assert m.cohorts["cold-users"]["users"] + m.cohorts["warm-users"]["users"] == m.n_users


def test_sampled_metrics_are_labelled(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}], sampled_negatives=5)
    result = run_evaluation(cfg, progress=False)
    assert all("[sampled-5]" in k for k in result.methods[0].overall if k.startswith("NDCG"))
    assert result.protocol["ranking"] == "sampled-5"


def test_llm_method_reports_grounding_rates(dataset_dir, tmp_path, tiny_model_dir):
    params = {
        "model": str(tiny_model_dir),
        "engine": "transformers",
        "prompt": {"history_len": 3},
        "decoding": {"mode": "constrained"},
        "batch_size": 4,
        "grounding": {"use_embeddings": False},
    }
    method = {"type": "llm", "name": "llm-c", "params": params, "fallback": "popularity"}
    cfg = _config(dataset_dir, tmp_path, [method], user_sample=6)
    result = run_evaluation(cfg, progress=False)
    (m,) = result.methods
    assert m.n_users == 6
    assert m.stats["valid_title_rate"] == 1.0 and m.stats["hallucination_rate"] == 0.0
    assert m.stats["constrained_rate"] == 1.0
    report = (result.run_dir / "report.md").read_text()
    assert "## Method statistics" in report and "llm-c" in report


def test_saved_lists_are_not_reused_once_the_adapter_weights_change(tmp_path, tiny_adapter_dir):
    import shutil

    from llmrec_gen.evaluation.runner import _method_key
    from llmrec_gen.registry import build_method

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    cfg = EvalConfig(dataset="ml-100k", methods=[{"type": "popularity"}])
    spec = MethodSpec(type="llm", params={"adapter": str(adapter)})
    before = _method_key(spec, build_method(spec), cfg, 0)
    assert _method_key(spec, build_method(spec), cfg, 0) == before
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    assert _method_key(spec, build_method(spec), cfg, 0) != before


def test_a_new_method_is_one_class_and_one_registry_line(dataset_dir, tmp_path, monkeypatch):
    import numpy as np

    from llmrec_gen import registry
    from llmrec_gen.recommenders.base import ScoringRecommender

    class Newest(ScoringRecommender):
        """Throwaway: scores items by catalogue position (last item first)."""

        name = "newest"

        def _fit(self, train):
            self.n_items_ = train.n_items

        def _score(self, user_idx):
            return np.tile(np.arange(self.n_items_, dtype=float), (len(user_idx), 1))

    monkeypatch.setitem(registry.METHODS, "newest", "")
    registry.register("newest", Newest)
    cfg = _config(dataset_dir, tmp_path, [{"type": "newest"}, {"type": "popularity"}])
    newest, _ = run_evaluation(cfg, progress=False).methods
    assert newest.name == "newest" and newest.n_users == 24


def test_the_evaluation_package_never_asks_for_a_method_name():
    import re

    import llmrec_gen.evaluation as evaluation

    package = Path(evaluation.__file__).parent
    names = ["llm", "popularity", "als", "lightfm", "bm25", "svd", "itemknn", "embedding"]
    for path in package.glob("*.py"):
        code = path.read_text()
        assert "llmrec_gen.llm" not in code, path.name
        assert not re.search(r"\btype\s*==", code), path.name
        for name in names:
            assert not re.search(rf"[\"']{name}[\"']", code), (path.name, name)


def test_resume_continues_from_completed_users(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}])
    run = run_evaluation(cfg, progress=False)
    first = run.methods[0]
    mdir = run.run_dir / "seed-0" / "methods" / "als"
    key = json.loads((mdir / "result.json").read_text())["key"]
    rows = (mdir / "recs.jsonl").read_text().splitlines()
    # simulate a kill after 10 users, with a torn (half-written) last line
    (mdir / "recs.partial.jsonl").write_text(
        "\n".join([json.dumps({"key": key}), *rows[:10], rows[10][:15]])
    )
    (mdir / "result.json").unlink()
    second = run_evaluation(cfg, progress=False).methods[0]
    assert second.timings["resumed_users"] == 10
    assert second.overall == first.overall
    assert not (mdir / "recs.partial.jsonl").exists()


def test_finished_methods_are_reused(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}])
    first = run_evaluation(cfg, progress=False).methods[0]
    second = run_evaluation(cfg, progress=False).methods[0]
    assert second.timings == first.timings  # loaded, not recomputed


def test_unknown_method_type_names_the_field(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "nope"}])
    with pytest.raises(ConfigError, match=r"methods\[0\] \(nope\): unknown method 'nope'"):
        run_evaluation(cfg, progress=False)


def test_bad_method_param_names_the_method(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als", "params": {"factorz": 3}}])
    with pytest.raises(ConfigError, match=r"methods\[0\]"):
        run_evaluation(cfg, progress=False)


def test_duplicate_method_names_rejected(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "popularity"}, {"type": "popularity"}])
    with pytest.raises(ConfigError, match="share a name"):
        run_evaluation(cfg, progress=False)


def test_rating_task_reports_mae_rmse_and_svd_beats_global_mean(tmp_path):
    cfg = EvalConfig(
        name="r",
        task="rating",
        output_dir=str(tmp_path),
        user_sample=300,
        plot=False,
        methods=[MethodSpec(type="global-mean"), MethodSpec(type="svd")],
    )
    glob, svd = run_evaluation(cfg, progress=False).methods
    assert 0 < svd.overall["RMSE"] < glob.overall["RMSE"]
    assert glob.overall["MAE"] <= glob.overall["RMSE"]


def test_rating_task_rejects_ranking_methods(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}], task="rating")
    with pytest.raises(ConfigError, match=r"methods\[0\] \(als\): 'als' cannot do this task"):
        run_evaluation(cfg, progress=False)


def test_rating_cohorts_count_users_not_pairs(tmp_path):
    # a global timeline cut holds out several ratings of the same user
    cfg = EvalConfig(
        name="r",
        task="rating",
        split={"protocol": "global_timeline"},
        output_dir=str(tmp_path),
        plot=False,
        methods=[MethodSpec(type="global-mean")],
    )
    (m,) = run_evaluation(cfg, progress=False).methods
    assert m.overall["pairs"] > m.n_users
    assert m.cohorts["warm-users"]["users"] + m.cohorts["cold-users"]["users"] == m.n_users
    assert m.cohorts["warm-users"]["pairs"] + m.cohorts["cold-users"]["pairs"] == m.overall["pairs"]
