"""Typed, validated configs loaded from YAML files, with CLI overrides.

Precedence: CLI flags / ``--set key=value`` > config file > defaults. Every error names the
field (``split.seed: Input should be a valid integer``) and is raised as
:class:`~llmrec_gen.errors.ConfigError`, which the CLI prints on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmrec_gen.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configs: unknown fields are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["split.seed=3", "ks=[5,10]"]`` into ``{"split.seed": 3, "ks": [5, 10]}``.

    Values are parsed as YAML, so numbers, booleans, null and lists get their types.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _apply(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        if isinstance(node, list):  # "methods.2.params.adapter": index into a list
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{dotted}: no list item {part!r}")
            node = node[int(part)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
        node = child
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ConfigError(f"{dotted}: no list item {leaf!r}")
        node[int(leaf)] = value
    else:
        node[leaf] = value


def load_yaml_model(
    model_cls: type[M],
    path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    what: str = "config",
) -> M:
    """Load ``model_cls`` from a YAML file (or defaults when ``path`` is None) plus overrides.

    Args:
        model_cls: the pydantic model to validate against.
        path: YAML file, or the name of a packaged config (e.g. ``ml100k-baselines``).
        overrides: dotted keys -> values, applied over the file (CLI > file > defaults).
        what: label used in error messages.

    Raises:
        ConfigError: unreadable/malformed file or invalid field (message names the field).
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{what} {file}: cannot read ({exc})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{what} {file}{where}: invalid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{what} {file}: top level must be a mapping")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        _apply(data, key, value)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{what}: {format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError) -> str:
    """First pydantic error as ``field.path: message`` (one line)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (f" (+{more} more)" if more else "")


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or a packaged config name (looked up in eval/ and finetune/ configs)."""
    p = Path(path)
    if p.exists():
        return p
    for package in ("llmrec_gen.eval_configs", "llmrec_gen.finetune_configs"):
        cand = Path(str(resources.files(package))) / f"{p.stem}.yaml"
        if p.suffix in ("", ".yaml") and cand.exists() and p.parent == Path("."):
            return cand
    raise ConfigError(f"config file not found: {path}")


# ---------------------------------------------------------------------------------------------
# Evaluation configs


class SplitConfig(StrictModel):
    """How to split (see :func:`llmrec_gen.splits.split_dataset`)."""

    protocol: Literal["leave_last_out", "global_timeline"] = "leave_last_out"
    seed: int = 0  # seeds the timestamp tie-break and cold-start simulation
    min_rating: float | None = None  # None = every interaction is a positive; 4.0 = liked only
    valid_frac: float = Field(0.1, ge=0, lt=1)  # global_timeline only
    test_frac: float = Field(0.1, gt=0, lt=1)  # global_timeline only
    head_share: float = Field(0.2, gt=0, lt=1)  # head items cover this share of train events
    cold_user_max: int = Field(5, ge=0)  # users with <= this many train interactions are cold
    cold_start_fraction: float = Field(0.0, ge=0, le=1)  # simulate cold users (0 = off)
    cold_start_keep: int = Field(3, ge=1)  # train interactions kept by simulated cold users


class MethodConfig(StrictModel):
    """One method to evaluate.

    ``type`` is a baseline name (``popularity``, ``als``, ``lightfm-hybrid``, ...) or ``llm``;
    ``params`` are its constructor arguments (validated when the method is built).
    """

    name: str | None = None  # label in reports; defaults to type
    type: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        """Name shown in reports."""
        return self.name or self.type


class EvalConfig(StrictModel):
    """An offline evaluation: one dataset, one split, several methods, one metric table."""

    name: str = "experiment"  # run name; the run directory is output_dir/name
    task: Literal["ranking", "rating"] = "ranking"  # rating = predict 1-5 for held-out pairs
    dataset: str = "ml-100k"  # built-in name or path (see llmrec_gen.data)
    split: SplitConfig = Field(default_factory=SplitConfig)
    target: Literal["valid", "test"] = "test"  # which held-out interaction is ranked
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    metrics: list[str] = Field(
        default_factory=lambda: ["HR", "Precision", "Recall", "NDCG", "MRR", "MAP"]
    )
    user_sample: int | None = Field(None, ge=1)  # None = all users; else a seeded sample
    sampled_negatives: int | None = Field(None, ge=1)  # None = full catalog (default, honest)
    seed: int = 0  # seeds user sampling and sampled negatives
    methods: list[MethodConfig] = Field(min_length=1)
    output_dir: str = "runs"  # parent of the run directory
    resume: bool = True  # reuse finished methods / LLM checkpoints from an interrupted run
    plot: bool = True  # write metrics.png
