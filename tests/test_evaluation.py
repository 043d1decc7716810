"""The evaluator: reports, cohorts, LLM grounding rates, checkpoint/resume, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_block_data

from llmrec_gen.config import EvalConfig, MethodConfig
from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation import run_evaluation


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
        methods=[MethodConfig(**m) for m in methods],
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
        "constrained": True,
        "history_len": 3,
        "batch_size": 4,
        "use_embeddings": False,
    }
    cfg = _config(
        dataset_dir, tmp_path, [{"type": "llm", "name": "llm-c", "params": params}], user_sample=6
    )
    (m,) = run_evaluation(cfg, progress=False).methods
    assert m.n_users == 6
    assert m.llm["valid_title_rate"] == 1.0 and m.llm["hallucination_rate"] == 0.0


def test_seen_rate_is_the_share_of_generated_titles_already_in_the_history():
    from llmrec_gen.evaluation import _llm_rates

    rows = [
        {"extras": {"generated": 4, "valid": 3, "seen": 2, "returned": 1, "filled": 9}},
        {"extras": {"generated": 6, "valid": 6, "seen": 1, "returned": 5, "filled": 5}},
    ]
    rates = _llm_rates(rows, k=10)
    assert rates["seen_rate"] == pytest.approx(3 / 10)
    assert rates["valid_title_rate"] == pytest.approx(9 / 10)
    assert rates["fill_rate"] == pytest.approx(14 / 20)


def test_saved_lists_are_not_reused_once_the_adapter_weights_change(tmp_path):
    from llmrec_gen.evaluation import _method_key

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    cfg = EvalConfig(dataset="ml-100k", methods=[{"type": "popularity"}])
    mc = MethodConfig(type="llm", params={"adapter": str(adapter)})
    before = _method_key(mc, cfg)
    assert _method_key(mc, cfg) == before
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    assert _method_key(mc, cfg) != before


def test_resume_continues_from_completed_users(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}])
    first = run_evaluation(cfg, progress=False).methods[0]
    mdir = tmp_path / "t" / "methods" / "als"
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
    with pytest.raises(ConfigError, match=r"methods\[0\]\.type"):
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
        methods=[MethodConfig(type="global-mean"), MethodConfig(type="svd")],
    )
    glob, svd = run_evaluation(cfg, progress=False).methods
    assert 0 < svd.overall["RMSE"] < glob.overall["RMSE"]
    assert glob.overall["MAE"] <= glob.overall["RMSE"]


def test_rating_task_rejects_ranking_methods(dataset_dir, tmp_path):
    cfg = _config(dataset_dir, tmp_path, [{"type": "als"}], task="rating")
    with pytest.raises(ConfigError, match="unknown rating method"):
        run_evaluation(cfg, progress=False)
