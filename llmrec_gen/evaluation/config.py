"""The evaluation config: one dataset, one split protocol, several methods, one metric table.

Loaded from ``eval/configs/*.yaml`` (or a packaged name) with CLI overrides; precedence and
error format as in :mod:`llmrec_gen.config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llmrec_gen.config import StrictModel
from llmrec_gen.data.splits import SplitConfig
from llmrec_gen.registry import MethodSpec


class StatsConfig(StrictModel):
    """How uncertainty is reported (see :mod:`llmrec_gen.evaluation.significance`)."""

    ci_level: float = 0.95  # bootstrap CI coverage, in (0, 1); 0.9-0.99
    n_resamples: int = Field(1000, ge=10)  # bootstrap resamples of users; 1000-10000
    seed: int = 0  # seeds every bootstrap
    reference: str | None = None  # method (name) every other is tested against; None = best
    alpha: float = 0.05  # significance level of the Holm-corrected paired tests, in (0, 1)

    @field_validator("ci_level", "alpha")
    @classmethod
    def _unit_interval(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must be in (0, 1), got {value}")
        return value


class EvalConfig(StrictModel):
    """An offline evaluation: one dataset, one split, several methods, one metric table."""

    name: str = "experiment"  # run name; the run directory is output_dir/<name>-<digest8>
    task: Literal["ranking", "rating"] = "ranking"  # rating = predict 1-5 for held-out pairs
    dataset: str = "ml-100k"  # built-in name or path (see llmrec_gen.data)
    split: SplitConfig = Field(default_factory=SplitConfig)
    target: Literal["valid", "test"] = "test"  # which held-out interaction is ranked
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    metrics: list[str] = Field(
        default_factory=lambda: ["HR", "Precision", "Recall", "NDCG", "MRR", "MAP"]
    )
    user_sample: int | None = Field(None, ge=1)  # None = all users; else a seeded sample
    sampled_negatives: int | None = Field(None, ge=1)  # None = full catalogue (default, honest)
    seed: int = 0  # seeds user sampling and sampled negatives
    stats: StatsConfig = Field(default_factory=StatsConfig)
    methods: list[MethodSpec] = Field(min_length=1)
    output_dir: str = "runs"  # parent of the run directory
    resume: bool = True  # reuse finished methods / checkpoints from an interrupted run
    plot: bool = True  # write metrics.png
