"""End-to-end CLI tests through typer's CliRunner: exit codes and output, no tracebacks."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmrec_gen.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.output


def test_help_lists_commands():
    result = _run("--help")
    assert result.exit_code == 0
    for cmd in ("recommend", "evaluate", "data", "prompt"):
        assert cmd in result.output


def test_data_info_reports_ml100k_sizes():
    result = _run("data", "info", "ml-100k", "--json")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert (info["users"], info["items"], info["interactions"]) == (943, 1664, 99693)
    assert info["duplicate_items_merged"] == 18


def test_prompt_show_renders_the_users_history():
    result = _run(
        "prompt", "show", "--user", "42", "--template", "zeroshot-v1", "--history-len", "3"
    )
    assert result.exit_code == 0
    assert "# template: zeroshot-v1" in result.output and "--- user ---" in result.output


def test_prompt_list_has_the_packaged_templates():
    result = _run("prompt", "list")
    assert {"zeroshot-v1", "fewshot-v1", "rerank-v1"} <= set(result.output.split())


def test_recommend_baseline_json_has_ten_unseen_items():
    result = _run("recommend", "--user", "42", "--method", "als", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    ids = [r["item_id"] for r in payload["recommendations"]]
    assert len(ids) == 10 == len(set(ids))


@pytest.mark.slow
def test_recommend_default_llm_prints_ten_distinct_unseen_items():
    from llmrec_gen.data import TrainData, load_dataset

    result = _run("recommend", "--user", "42", "--json", "--history-len", "10")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{") :])
    ids = [r["item_id"] for r in payload["recommendations"]]
    ds = load_dataset("ml-100k")
    seen = TrainData(ds.interactions, ds.catalog).seen_items(42)
    assert len(ids) == 10 == len(set(ids)) and not set(ids) & seen
    assert {r["grounding"] for r in payload["recommendations"]} <= {"constrained", "fill"}


def test_recommend_title_beams_need_free_decoding():
    result = _run("recommend", "--user", "42", "--title-beams", "8", "--no-adapter")
    _one_line_error(result, "--title-beams: needs --free")


def test_recommend_rating_method_is_a_one_line_error():
    result = _run("recommend", "--user", "42", "--method", "svd")
    _one_line_error(result, "'svd' predicts ratings; it cannot rank items")


def test_evaluate_bad_fuzzy_threshold_fails_before_anything_loads(tmp_path):
    # the model does not exist either: the config error must come first, naming the field
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "methods:\n  - type: llm\n    params: {model: /nonexistent/model, "
        "grounding: {fuzzy_threshold: 150}}\n"
    )
    result = _run("evaluate", "--config", str(cfg), "--output-dir", str(tmp_path))
    _one_line_error(result, "methods[0] (llm): llm: grounding.fuzzy_threshold")


@pytest.mark.slow
def test_recommend_free_title_beams_ground_each_beam():
    args = ("--user", "42", "--json", "--free", "--title-beams", "8", "--history-len", "10")
    result = _run("recommend", *args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("{") :])["recommendations"]
    assert len(rows) == 10 == len({r["item_id"] for r in rows})
    assert {r["grounding"] for r in rows} <= {"exact", "fuzzy", "embedding", "fill"}
    assert any(r["grounding"] != "fill" for r in rows)  # some beams ground to unseen items


def test_recommend_unknown_user_is_a_one_line_error():
    _one_line_error(_run("recommend", "--user", "99999", "--method", "popularity"), "unknown user")


def test_recommend_missing_model_is_a_one_line_error(tmp_path):
    result = _run("recommend", "--user", "42", "--model", str(tmp_path / "nope"), "--no-adapter")
    _one_line_error(result, "does not exist")


def test_recommend_missing_adapter_is_a_one_line_error(tmp_path):
    _one_line_error(_run("recommend", "--user", "42", "--adapter", str(tmp_path / "x")), "adapter")


def test_recommend_broken_template_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken-v1.j2"
    bad.write_text("@@system\n{% for x in %}\n@@user\nhi\n")
    _one_line_error(
        _run("recommend", "--user", "42", "--template", str(bad), "--no-adapter"), "line"
    )


def test_recommend_uninstalled_engine_is_a_one_line_error():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    _one_line_error(_run("recommend", "--user", "42", "--engine", "vllm", "--no-adapter"), "vllm")


def test_recommend_malformed_dataset_is_a_one_line_error(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n1,2,notatime\n")
    (tmp_path / "items.csv").write_text("item_id,title\n2,Heat\n")
    result = _run("recommend", "--user", "1", "--dataset", str(tmp_path), "--method", "popularity")
    _one_line_error(result, "timestamp")


def test_evaluate_unknown_config_field_names_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nmethods: [{type: popularity}]\nbogus: 1\n")
    _one_line_error(_run("evaluate", "--config", str(cfg)), "bogus")


def test_evaluate_bad_override_names_the_field(tmp_path):
    result = _run("evaluate", "--config", "ml100k-baselines", "--set", "split.seed=abc")
    _one_line_error(result, "split.seed")


def test_evaluate_runs_and_writes_reports(tmp_path):
    result = _run(
        "evaluate",
        "--config",
        "ml100k-baselines",
        "--only",
        "popularity,random",
        "--seeds",
        "0",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
        "--set",
        "plot=false",
    )
    assert result.exit_code == 0, result.output
    assert "| popularity |" in result.output
    (run_dir,) = tmp_path.glob("ml100k-baselines-*")
    assert f"wrote {run_dir}/" in result.output
    assert (run_dir / "metrics.csv").exists() and (run_dir / "per_user.csv").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "split.protocol=bogus"], "split.protocol: Input should be 'leave_last_out'"),
        (["--set", "split.seeds=[]"], "split.seeds: Value error, needs at least one seed"),
        (["--seeds", "0,x"], "--seeds: expected comma-separated integers"),
        (["--seeds", ","], "--seeds: give at least one seed"),
        (["--set", "stats.ci_level=1.5"], "stats.ci_level: Value error, must be in (0, 1)"),
        (["--set", "stats.ci_level=0"], "stats.ci_level: Value error, must be in (0, 1)"),
        (["--set", "split.cold_item_fraction=1.5"], "split.cold_item_fraction: Value error"),
        (["--set", "stats.reference=als"], "stats.reference: no method named 'als'"),
    ],
)
def test_evaluate_bad_config_is_a_one_line_error(tmp_path, args, fragment):
    # the hostile-input probe's rows (output dirs, no users, ...) are in test_hostile_inputs.py
    base = ["evaluate", "--config", "ml100k-baselines", "--only", "popularity", "--no-progress"]
    if "--output-dir" not in args:
        base += ["--output-dir", str(tmp_path)]
    _one_line_error(_run(*base, *args), fragment)
