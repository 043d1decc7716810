"""Tests for ``llmrec_gen.config``: YAML loading, dotted overrides, and one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrec_gen.config import load_yaml_model, parse_overrides, resolve_config_path
from llmrec_gen.data.splits import SplitConfig
from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation.config import EvalConfig

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "eval" / "configs" / "ml100k-baselines.yaml"
MINIMAL = "methods:\n  - type: popularity\n"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path: str | Path | None, overrides: dict | None = None) -> str:
    """The one-line message of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as info:
        load_yaml_model(EvalConfig, path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Loading


def test_baselines_config_file_loads() -> None:
    cfg = load_yaml_model(EvalConfig, BASELINES)
    assert cfg.name == "ml100k-baselines"
    assert cfg.dataset == "ml-100k"
    assert cfg.split == SplitConfig(protocol="leave_last_out", seeds=[0, 1, 2, 3, 4])
    assert cfg.ks == [5, 10, 20]
    assert [m.type for m in cfg.methods][:3] == ["random", "popularity", "itemknn"]


def test_packaged_config_name_resolves() -> None:
    assert load_yaml_model(EvalConfig, "ml100k-baselines") == load_yaml_model(EvalConfig, BASELINES)


def test_packaged_config_name_with_yaml_suffix_resolves() -> None:
    assert resolve_config_path("ml100k-baselines.yaml").name == "ml100k-baselines.yaml"


@pytest.mark.parametrize("path", sorted((REPO / "eval" / "configs").glob("*.yaml")))
def test_every_shipped_eval_config_validates(path: Path) -> None:
    assert load_yaml_model(EvalConfig, path).methods


def test_defaults_apply_to_fields_the_file_omits(tmp_path: Path) -> None:
    cfg = load_yaml_model(EvalConfig, write(tmp_path, MINIMAL))
    assert cfg.split.seed == 0
    assert cfg.target == "test"
    assert cfg.sampled_negatives is None


def test_method_label_defaults_to_its_type(tmp_path: Path) -> None:
    text = "methods:\n  - type: popularity\n  - {name: pop2, type: popularity}\n"
    cfg = load_yaml_model(EvalConfig, write(tmp_path, text))
    assert [m.label for m in cfg.methods] == ["popularity", "pop2"]


def test_no_file_means_defaults_plus_overrides() -> None:
    cfg = load_yaml_model(EvalConfig, None, {"methods": [{"type": "popularity"}]})
    assert cfg.name == "experiment"


# ---------------------------------------------------------------------------------------------
# Overrides (CLI > file > defaults)


def test_dotted_override_beats_the_file() -> None:
    cfg = load_yaml_model(EvalConfig, BASELINES, {"split.seed": 3})
    assert cfg.split.seed == 3


def test_override_keeps_the_sections_other_fields() -> None:
    cfg = load_yaml_model(EvalConfig, BASELINES, {"split.seed": 3})
    assert cfg.split.protocol == "leave_last_out"


def test_override_creates_a_section_the_file_omits(tmp_path: Path) -> None:
    cfg = load_yaml_model(EvalConfig, write(tmp_path, MINIMAL), {"split.min_rating": 4})
    assert cfg.split.min_rating == 4.0


def test_parse_overrides_reads_yaml_values() -> None:
    overrides = parse_overrides(["split.seed=3", "ks=[5, 10]", "name=run one", "user_sample=null"])
    assert overrides == {"split.seed": 3, "ks": [5, 10], "name": "run one", "user_sample": None}


def test_parsed_overrides_apply_end_to_end() -> None:
    cfg = load_yaml_model(EvalConfig, BASELINES, parse_overrides(["split.seed=3", "ks=[1]"]))
    assert (cfg.split.seed, cfg.ks) == (3, [1])


def test_override_value_that_is_not_yaml_stays_a_string() -> None:
    assert parse_overrides(["name=[unclosed"]) == {"name": "[unclosed"}


def test_override_without_equals_sign_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^override 'split\.seed': expected key=value$"):
        parse_overrides(["split.seed"])


def test_override_into_a_scalar_is_an_error() -> None:
    assert config_error(BASELINES, {"name.x": 1}) == "name.x: 'name' is not a section"


# ---------------------------------------------------------------------------------------------
# Errors name the field


def test_unknown_top_level_field_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "seeed: 1\n")
    assert config_error(path) == "config: seeed: unknown field"


def test_unknown_nested_field_is_named() -> None:
    assert config_error(BASELINES, {"split.sed": 3}) == "config: split.sed: unknown field"


def test_unknown_method_field_is_named_with_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "methods:\n  - type: popularity\n    prams: {}\n")
    assert config_error(path) == "config: methods.0.prams: unknown field"


def test_wrong_type_names_the_field_path() -> None:
    assert config_error(BASELINES, {"split.seed": "abc"}).startswith(
        "config: split.seed: Input should be a valid integer"
    )


def test_wrong_type_in_a_list_names_the_element() -> None:
    assert config_error(BASELINES, {"ks": [5, "x"]}).startswith(
        "config: ks.1: Input should be a valid integer"
    )


def test_out_of_range_value_names_the_field() -> None:
    message = config_error(BASELINES, {"split.test_frac": 1.5})
    assert message.startswith("config: split.test_frac: Input should be less than 1")


def test_invalid_choice_names_the_field() -> None:
    message = config_error(BASELINES, {"split.protocol": "random"})
    assert message.startswith("config: split.protocol: Input should be 'leave_last_out',")
    assert "'random_leave_one_out'" in message  # lists every protocol


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    assert config_error(write(tmp_path, "name: x\n")) == "config: methods: Field required"


def test_several_errors_report_the_first_and_a_count(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, MINIMAL + "a: 1\nb: 2\n"))
    assert message == "config: a: unknown field (+1 more)"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsplit:\n  seed: 1\n   bad: [\n")
    assert config_error(path) == f"config {path} line 4: invalid YAML"


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert config_error(path) == f"config {path}: top level must be a mapping"


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert config_error(write(tmp_path, "")) == "config: methods: Field required"


def test_undecodable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"name: \xff\n")
    assert config_error(path).startswith(f"config {path}: cannot read (")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert config_error(missing) == f"config file not found: {missing}"


def test_unknown_packaged_name_is_an_error() -> None:
    assert config_error("ml100k-nothing") == "config file not found: ml100k-nothing"


def test_error_label_is_configurable() -> None:
    with pytest.raises(ConfigError, match=r"^eval config: split\.sed: unknown field$"):
        load_yaml_model(EvalConfig, BASELINES, {"split.sed": 1}, what="eval config")


def test_assignment_is_validated() -> None:
    cfg = load_yaml_model(EvalConfig, BASELINES)
    with pytest.raises(ValueError, match="seed"):
        cfg.split.seed = "abc"  # type: ignore[assignment]


def test_override_can_index_into_the_methods_list():
    cfg = load_yaml_model(EvalConfig, "ml100k-baselines", {"methods.1.params.seed": 3})
    assert cfg.methods[1].params == {"seed": 3}


def test_override_with_bad_list_index_names_it():
    with pytest.raises(ConfigError, match="methods.99"):
        load_yaml_model(EvalConfig, "ml100k-baselines", {"methods.99.type": "als"})
