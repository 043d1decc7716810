"""Validation-target hyperparameter search: grid expansion, value placement, selection, and the
`tune` command end to end on ML-100k."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmrec_gen.cli import app
from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.tuning import apply_values, grid_points, select, trials_config
from llmrec_gen.registry import MethodSpec


def _cfg(**spec) -> EvalConfig:
    return EvalConfig.model_validate({"methods": [{"type": "popularity"}, spec]})


@given(st.dictionaries(st.sampled_from("abc"), st.lists(st.integers(), min_size=1, max_size=3)))
def test_grid_points_are_the_full_product_in_grid_order(grid):
    points = grid_points(MethodSpec(type="itemknn", grid=grid))
    expected = 1
    for values in grid.values():
        expected *= len(values)
    assert len(points) == expected
    if grid:
        first = next(iter(grid))
        assert points[0][first] == grid[first][0]


def test_dotted_values_reach_nested_params_and_the_fusion_block():
    spec = MethodSpec(
        type="llm",
        params={"decoding": {"mode": "constrained"}},
        fusion={"mode": "popularity", "weight": 0.0},
        grid={"decoding.prior_weight": [1.0]},
    )
    out = apply_values(spec, {"decoding.prior_weight": 2.0, "fusion.weight": 0.5})
    assert out.params["decoding"] == {"mode": "constrained", "prior_weight": 2.0}
    assert out.fusion is not None and out.fusion.weight == 0.5
    assert out.grid == {}


def test_a_fusion_key_without_fusion_names_the_key():
    with pytest.raises(ConfigError, match="fusion.weight"):
        apply_values(MethodSpec(type="als"), {"fusion.weight": 0.5})


def test_a_config_without_grids_is_an_error():
    with pytest.raises(ConfigError, match="no method has a grid"):
        trials_config(EvalConfig.model_validate({"methods": [{"type": "popularity"}]}))


def test_empty_grid_values_are_rejected():
    with pytest.raises(Exception, match="at least one value"):
        MethodSpec(type="als", grid={"factors": []})


def test_trials_run_on_the_validation_target_with_one_seed():
    cfg = _cfg(type="itemknn", grid={"k_neighbors": [10, 20]})
    cfg = cfg.model_copy(update={"split": cfg.split.model_copy(update={"seeds": [3, 4]})})
    search, trials = trials_config(cfg)
    assert search.target == "valid" and search.split.run_seeds() == [3]
    assert [t.label for t in trials] == [
        "itemknn [k_neighbors=10]",
        "itemknn [k_neighbors=20]",
    ]


def test_select_keeps_the_best_point_and_the_first_of_ties():
    cfg = _cfg(type="itemknn", grid={"k_neighbors": [10, 20, 30]})
    _, trials = trials_config(cfg)
    scores = {
        "itemknn [k_neighbors=10]": 0.2,
        "itemknn [k_neighbors=20]": 0.3,
        "itemknn [k_neighbors=30]": 0.3,
    }
    tuned, _ = select(cfg, trials, scores)
    assert tuned.methods[1].params == {"k_neighbors": 20}
    assert tuned.methods[0] == cfg.methods[0]  # no grid: passed through unchanged
    assert tuned.target == cfg.target and tuned.methods[1].grid == {}


def test_tune_command_writes_the_tuned_config(tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "grid",
                "dataset": "ml-100k",
                "user_sample": 200,
                "plot": False,
                "output_dir": str(tmp_path / "runs"),
                "methods": [
                    {"type": "popularity"},
                    {"type": "itemknn", "grid": {"k_neighbors": [1, 100]}},
                ],
            }
        )
    )
    out = tmp_path / "tuned.yaml"
    result = CliRunner().invoke(
        app, ["tune", "-c", str(config), "--out", str(out), "--user-sample", "100", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    table = (tmp_path / "tuned.tuning.md").read_text()
    rows = [r.split("|") for r in table.splitlines()[2:]]
    knn = {r[2].strip(): float(r[3]) for r in rows if r[1].strip() == "itemknn"}
    best = max(knn, key=knn.get)
    tuned = yaml.safe_load(out.read_text())
    assert f"k_neighbors={tuned['methods'][1]['params']['k_neighbors']}" == best
    assert EvalConfig.model_validate(tuned).target == "test"
    assert tuned["user_sample"] == 200  # --user-sample narrows the search only
    (run_dir,) = (tmp_path / "runs").glob("grid-tuning-*")
    searched = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert searched["target"] == "valid" and searched["user_sample"] == 100
