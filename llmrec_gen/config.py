"""Typed, validated configs: the base model, YAML loading and CLI overrides.

Each component owns its config class (``SplitConfig`` in :mod:`llmrec_gen.data.splits`,
``EvalConfig`` in :mod:`llmrec_gen.evaluation.config`, one per recommender, ...); this module holds
what they share.

Precedence: CLI flags / ``--set key=value`` > config file > defaults. Every error names the
field (``split.seed: Input should be a valid integer``) and is raised as
:class:`~llmrec_gen.errors.ConfigError`, which the CLI prints on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

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


def validate(model_cls: type[M], data: Any, owner: str) -> M:
    """Validate ``data`` (a mapping or an instance) as ``model_cls``; errors name ``owner.field``.

    Raises:
        ConfigError: the first invalid field, e.g. ``als: factors: Input should be ...``.
    """
    if isinstance(data, model_cls):
        return data
    try:
        return model_cls.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(f"{owner}: {format_validation_error(exc)}") from None


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
