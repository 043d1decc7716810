"""What an evaluation produces, and how it is stored in the run directory.

* :class:`MethodResult` / :class:`EvalResult`: the numbers of one method / one run.
* Per-user rows (``recs.jsonl``): ``{"user", "items", "sources", "stats"}`` — the lists each
  method returned, so metrics can be recomputed and a rerun reuses them instead of generating
  again. ``recs.partial.jsonl`` is the checkpoint of a method that has not finished: a header line
  with the method's key, then one line per finished user, appended and fsynced per chunk.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec_gen.io import atomic_write_text, to_python

log = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """Everything measured for one method.

    Attributes:
        name: the label in reports.
        overall: metric -> mean over the evaluated users.
        cohorts: cohort -> {"users": n, metric -> mean}.
        timings: fit/recommend seconds, peak RSS, resumed users.
        stats: the method's summarized statistics (generation/grounding rates), if any.
        n_users: users evaluated.
    """

    name: str
    overall: dict[str, float]
    cohorts: dict[str, dict[str, float]]
    timings: dict[str, float]
    stats: dict[str, float] = field(default_factory=dict)
    n_users: int = 0


@dataclass
class EvalResult:
    """A finished evaluation: where it was written and what each method scored."""

    run_dir: Path
    methods: list[MethodResult]
    protocol: dict[str, Any]


def user_key(user: Any) -> str:
    """The string a user is stored under in checkpoints (``42`` and ``np.int64(42)`` agree)."""
    return str(to_python(user))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The per-user rows of a finished method (``recs.jsonl``)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write per-user rows atomically (one JSON object per line)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def load_checkpoint(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Completed users of a partial checkpoint; a torn last line from a kill is ignored."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        if not lines or json.loads(lines[0]).get("key") != key:
            return {}
    except json.JSONDecodeError:
        return {}
    done = {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[user_key(row["user"])] = row
    if done:
        log.info("resuming: %d users already done in %s", len(done), path)
    return done


def start_checkpoint(path: Path, key: str) -> None:
    """Start a new checkpoint file holding only its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key}) + "\n", encoding="utf-8")


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a checkpoint and fsync, so a kill loses at most the current chunk."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
        fh.flush()
        os.fsync(fh.fileno())


def results_frame(result: EvalResult) -> pd.DataFrame:
    """One row per (method, cohort) with every metric as a column (``cohort="all"`` overall)."""
    rows = []
    for m in result.methods:
        rows.append(
            {
                "method": m.name,
                "cohort": "all",
                "users": m.n_users,
                **m.overall,
                **{f"stats:{k}": v for k, v in m.stats.items()},
                **m.timings,
            }
        )
        for cname, vals in m.cohorts.items():
            rows.append({"method": m.name, "cohort": cname, **vals})
    return pd.DataFrame(rows)
