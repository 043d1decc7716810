"""What an evaluation produces, and how it is stored in the run directory.

* :class:`MethodResult` / :class:`EvalResult`: the numbers of one method / one run.
* ``per_user.csv``: one row per ``method, seed, user`` with every accuracy metric (or, for the
  rating task, the user's pairs, MAE and RMSE) and ``cohort:<name>`` flags (0/1), so any
  comparison can be recomputed (:func:`read_per_user`).
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

COHORT_PREFIX = "cohort:"
"""Per-user tables mark cohort membership in boolean columns ``cohort:<name>``."""


@dataclass
class MethodResult:
    """Everything measured for one method (over all split seeds).

    Attributes:
        name: the label in reports.
        overall: metric -> mean over the evaluated users (beyond-accuracy metrics: mean over
            seeds); see :mod:`llmrec_gen.evaluation.summary` for how seeds are combined.
        cohorts: cohort -> {"users": n, metric -> mean}.
        timings: fit/recommend seconds (mean per seed), peak RSS, resumed users, seeds.
        stats: the method's summarized statistics (generation/grounding rates; mean per seed).
        n_users: users evaluated.
        ci: accuracy metric -> ``[low, high]`` bootstrap CI of ``overall``.
        cohort_ci: cohort -> metric -> ``[low, high]``.
        seeds: metric -> the per-seed means, in the config's seed order.
        seed_sd: metric -> sd of the per-seed means (two or more seeds only).
        test: the paired test against the reference method (empty when not tested).
    """

    name: str
    overall: dict[str, float]
    cohorts: dict[str, dict[str, float]]
    timings: dict[str, float]
    stats: dict[str, float] = field(default_factory=dict)
    n_users: int = 0
    ci: dict[str, list[float]] = field(default_factory=dict)
    cohort_ci: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seeds: dict[str, list[float]] = field(default_factory=dict)
    seed_sd: dict[str, float] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)


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
    """Completed users of a partial checkpoint.

    A torn tail from a kill (text after the last newline, or a line that does not parse) is
    dropped by rewriting the file atomically with the complete lines before anything is appended,
    so the rows of this resume start on a fresh line and a second resume still reads them.
    """
    if not path.exists():
        return {}
    *lines, tail = path.read_text(encoding="utf-8").split("\n")  # tail: "" unless torn
    try:
        if not lines or json.loads(lines[0]).get("key") != key:
            return {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    done = {}
    whole = 1  # lines read whole: the header, then one per finished user
    for line in lines[1:]:
        try:
            row = json.loads(line)
            done[user_key(row["user"])] = row
        except (json.JSONDecodeError, TypeError, KeyError):
            break
        whole += 1
    if tail or whole < len(lines):
        log.warning("%s: dropping a torn tail (%d line(s))", path, len(lines) - whole + bool(tail))
        atomic_write_text(path, "".join(line + "\n" for line in lines[:whole]))
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
    """One row per (method, cohort) with every metric as a column (``cohort="all"`` overall).

    CIs are the columns ``<metric> ci_low`` / ``<metric> ci_high``, the spread over seeds
    ``<metric> seed_sd``, and the paired test vs the reference ``test:<field>``.
    """
    rows = []
    for m in result.methods:
        row: dict[str, Any] = {"method": m.name, "cohort": "all", "users": m.n_users}
        row.update(m.overall)
        for metric, (lo, hi) in m.ci.items():
            row[f"{metric} ci_low"], row[f"{metric} ci_high"] = lo, hi
        row.update({f"{k} seed_sd": v for k, v in m.seed_sd.items()})
        row.update({f"test:{k}": v for k, v in m.test.items()})
        row.update({f"stats:{k}": v for k, v in m.stats.items()})
        row.update(m.timings)
        rows.append(row)
        for cname, vals in m.cohorts.items():
            crow: dict[str, Any] = {"method": m.name, "cohort": cname, **vals}
            for metric, (lo, hi) in m.cohort_ci.get(cname, {}).items():
                crow[f"{metric} ci_low"], crow[f"{metric} ci_high"] = lo, hi
            rows.append(crow)
    return pd.DataFrame(rows)


def write_per_user(path: Path, table: pd.DataFrame) -> None:
    """Write the per-user table (``method, seed, user``, metrics, cohort flags) as CSV."""
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == bool:
            out[col] = out[col].astype(int)
    atomic_write_text(path, out.to_csv(index=False, float_format="%.6g"))


def read_per_user(path: Path) -> pd.DataFrame:
    """Read ``per_user.csv`` back (cohort flags as booleans)."""
    table = pd.read_csv(path)
    for col in table.columns:
        if col.startswith(COHORT_PREFIX):
            table[col] = table[col].astype(bool)
    return table
