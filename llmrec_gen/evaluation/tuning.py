"""Hyperparameter search on the validation target: a method's ``grid`` -> its best ``params``.

A method spec may carry ``grid: {param: [values, ...]}`` (dotted keys reach nested fields, e.g.
``decoding.prior_weight`` or ``fusion.weight``). :func:`tune` evaluates every combination of
every method's grid on ``target: valid`` (fit on train only; the test item is never seen), in
one evaluation so all candidates share the split, users and run directory (methods without a
grid have nothing to choose and are not run), picks per method the
combination with the best validation metric (ties: the first in grid order), and returns the
config with those values fixed and the grids removed: the *tuned config* that ``evaluate``
then runs on the test target unchanged. Every candidate's score is in the returned table.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.registry import MethodSpec

FUSION_PREFIX = "fusion."
"""Grid keys under this prefix set the spec's fusion block instead of the method's params."""


@dataclass(frozen=True)
class Trial:
    """One grid point of one method: its values and its validation score."""

    method: str
    values: dict[str, Any]
    label: str
    score: float | None = None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = dict(tree)
    head, _, rest = dotted.partition(".")
    if rest:
        inner = out.get(head) or {}
        if not isinstance(inner, dict):
            raise ConfigError(f"grid: '{dotted}' goes through '{head}', which is not a mapping")
        out[head] = _set(inner, rest, value)
    else:
        out[head] = value
    return out


def apply_values(spec: MethodSpec, values: dict[str, Any], label: str | None = None) -> MethodSpec:
    """``spec`` with grid ``values`` written into its params (or its fusion block) and no grid.

    Raises:
        ConfigError: a ``fusion.*`` key on a spec without ``fusion``, or a path through a
            non-mapping.
    """
    data = spec.model_dump(exclude_none=True)
    data.pop("grid", None)
    for key, value in values.items():
        if key.startswith(FUSION_PREFIX):
            if spec.fusion is None:
                raise ConfigError(f"grid: '{key}' needs a fusion block on '{spec.label}'")
            data["fusion"] = _set(data["fusion"], key[len(FUSION_PREFIX) :], value)
        else:
            data["params"] = _set(data.get("params", {}), key, value)
    if label is not None:
        data["name"] = label
    return MethodSpec.model_validate(data)


def grid_points(spec: MethodSpec) -> list[dict[str, Any]]:
    """Every combination of ``spec.grid`` in grid order (``[{}]`` without a grid)."""
    if not spec.grid:
        return [{}]
    keys = list(spec.grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.grid.values())]


def _label(spec: MethodSpec, values: dict[str, Any]) -> str:
    if not values:
        return spec.label
    return f"{spec.label} [{', '.join(f'{k}={v}' for k, v in values.items())}]"


def trials_config(cfg: EvalConfig) -> tuple[EvalConfig, list[Trial]]:
    """The validation-target config that evaluates every grid point, and its trials."""
    trials: list[Trial] = []
    specs: list[MethodSpec] = []
    for spec in cfg.methods:
        if not spec.grid:
            continue  # nothing to choose: not run during the search
        for values in grid_points(spec):
            label = _label(spec, values)
            trials.append(Trial(spec.label, values, label))
            specs.append(apply_values(spec, values, label))
    if not specs:
        raise ConfigError("tune: no method has a grid")
    data = cfg.model_dump()
    data.update(
        target="valid",
        name=f"{cfg.name}-tuning",
        methods=[s.model_dump(exclude_none=True) for s in specs],
    )
    data["split"] = {**data["split"], "seeds": None, "seed": cfg.split.run_seeds()[0]}
    return EvalConfig.model_validate(data), trials


def select(
    cfg: EvalConfig, trials: list[Trial], scores: dict[str, float]
) -> tuple[EvalConfig, list[Trial]]:
    """The tuned config (best grid point per method, grids removed) and the scored trials."""
    scored = [Trial(t.method, t.values, t.label, scores.get(t.label)) for t in trials]
    methods = []
    for spec in cfg.methods:
        if not spec.grid:
            methods.append(spec.model_dump(exclude_none=True))
            continue
        mine = [t for t in scored if t.method == spec.label and t.score is not None]
        if not mine:
            raise ConfigError(f"tune: no validation score for method '{spec.label}'")
        best = max(mine, key=lambda t: t.score)  # max keeps the first of equal scores
        methods.append(apply_values(spec, best.values).model_dump(exclude_none=True))
    data = cfg.model_dump()
    data["methods"] = methods
    return EvalConfig.model_validate(data), scored


def trials_table(trials: list[Trial], metric: str) -> str:
    """A Markdown table of every trial's validation score, best per method marked."""
    best: dict[str, float] = {}
    for t in trials:
        if t.score is not None:
            best[t.method] = max(best.get(t.method, float("-inf")), t.score)
    lines = [f"| method | values | valid {metric} | chosen |", "|---|---|---|---|"]
    chosen: set[str] = set()
    for t in trials:
        values = ", ".join(f"{k}={v}" for k, v in t.values.items()) or "—"
        mark = ""
        if t.score is not None and t.score == best.get(t.method) and t.method not in chosen:
            mark, _ = "✓", chosen.add(t.method)
        score = "—" if t.score is None else f"{t.score:.4f}"
        lines.append(f"| {t.method} | {values} | {score} | {mark} |")
    return "\n".join(lines) + "\n"
