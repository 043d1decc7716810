"""Running an evaluation: every method on one split, one protocol, one metric table.

Flow: dataset -> split -> for each method: ``fit(train)`` -> ``recommend(users, k)`` in chunks
(checkpointed, so an interrupted run resumes from completed users) -> metrics overall and per
cohort -> run directory with ``metrics.json``, ``metrics.csv``, ``report.md``, ``metrics.png``,
``config.yaml`` and per-method recommendations. All files are written atomically.

The runner never asks which method it holds: methods are built from their spec by the registry,
and the runner asks for capabilities (ranking or rating prediction, statistics, a content
digest for result caching). Sampled-candidate evaluation passes each user's candidates to
``recommend(..., items=...)``, so a ranker ranks exactly those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmrec_gen.data.loaders import load_dataset
from llmrec_gen.data.splits import Split, split_dataset
from llmrec_gen.errors import ConfigError
from llmrec_gen.evaluation import metrics as M
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.report import write_reports
from llmrec_gen.evaluation.results import (
    EvalResult,
    MethodResult,
    append_rows,
    load_checkpoint,
    read_rows,
    start_checkpoint,
    user_key,
    write_rows,
)
from llmrec_gen.evaluation.scoring import (
    headline_k,
    own_item_metrics,
    rating_errors,
    score_rankings,
)
from llmrec_gen.io import atomic_write_json, atomic_write_text, to_python
from llmrec_gen.recommenders.base import Capability, Method
from llmrec_gen.registry import MethodSpec, build_method

log = logging.getLogger(__name__)


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        """Peak resident memory in MiB."""
        return self.peak / 2**20


class Progress:
    """A rich progress bar (or nothing) whose ``advance(n)`` the runner calls per chunk."""

    def __init__(self, enabled: bool, label: str, total: int, completed: int) -> None:
        self.enabled, self.label, self.total, self.completed = enabled, label, total, completed

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._p = RichProgress(
            TextColumn("{task.description:>24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._p.start()
        task = self._p.add_task(self.label, total=self.total, completed=self.completed)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.stop()


def select_users(split: Split, cfg: EvalConfig) -> list[Any]:
    """Users evaluated: those with a positive held-out target and training history (a seeded
    sample of them when ``user_sample`` is set)."""
    users = sorted(split.targets(cfg.target))
    if cfg.user_sample is not None and cfg.user_sample < len(users):
        rng = np.random.default_rng(cfg.seed)
        users = sorted(rng.choice(np.asarray(users), cfg.user_sample, replace=False).tolist())
    return users


def check_config(cfg: EvalConfig) -> list[Method]:
    """Validate ``cfg`` and build its methods (unfitted), before any data is loaded.

    Raises:
        ConfigError: bad cutoffs or metric names, duplicate method names, or a method that
            cannot do the config's task (the message names ``methods[i]``).
    """
    for k in cfg.ks:
        if k < 1:
            raise ConfigError(f"ks: cutoffs must be >= 1, got {k}")
    known = {m.lower() for m in M.RANKING_METRICS}
    for name in cfg.metrics:
        if name.lower() not in known:
            raise ConfigError(
                f"metrics: unknown ranking metric {name!r} (choose from {list(M.RANKING_METRICS)};"
                " cutoffs come from 'ks')"
            )
    labels = [m.label for m in cfg.methods]
    if len(set(labels)) != len(labels):
        raise ConfigError("methods: two methods share a name; set distinct 'name' fields")
    need = Capability.RANK if cfg.task == "ranking" else Capability.PREDICT_RATINGS
    if cfg.task == "ranking" and cfg.sampled_negatives:
        need = Capability.RANK_CANDIDATES
    methods = []
    for i, spec in enumerate(cfg.methods):
        where = f"methods[{i}] ({spec.label})"
        method = build_method(spec, where)
        if not method.has(need):
            raise ConfigError(f"{where}: '{spec.type}' cannot do this task ({need.value})")
        methods.append(method)
    return methods


def run_evaluation(cfg: EvalConfig, *, progress: bool = True) -> EvalResult:
    """Run every method of ``cfg`` and write the run directory (see the module docstring)."""
    methods = check_config(cfg)
    run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg.dataset)
    split = split_dataset(dataset, **cfg.split.model_dump())
    users = select_users(split, cfg)
    protocol = {
        **split.protocol,
        "dataset": dataset.name,
        "target": cfg.target,
        "users_evaluated": len(users),
        "user_sample": cfg.user_sample,
        "ranking": f"sampled-{cfg.sampled_negatives}" if cfg.sampled_negatives else "full-catalog",
        "seen_items_excluded": True,
        "cohorts": split.cohorts.rule,
    }
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    run = _run_rating_method if cfg.task == "rating" else _run_ranking_method
    results = [
        run(spec, method, cfg, split, users, run_dir, progress)
        for spec, method in zip(cfg.methods, methods, strict=True)
    ]
    if cfg.task == "rating":
        protocol["ranking"] = "rating prediction"
    result = EvalResult(run_dir, results, protocol)
    write_reports(result, cfg)
    return result


def _method_key(spec: MethodSpec, method: Method, cfg: EvalConfig) -> str:
    """Everything a method's saved lists depend on: its spec, files it reads, the protocol."""
    blob = json.dumps(
        [
            spec.model_dump(),
            method.content_digest(),
            cfg.dataset,
            cfg.split.model_dump(),
            cfg.target,
            cfg.user_sample,
            cfg.seed,
            max(cfg.ks),
            cfg.sampled_negatives,
            cfg.task,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _candidates(split: Split, users: list[Any], targets: dict, cfg: EvalConfig) -> list[list]:
    """Per user: the held-out positives plus ``sampled_negatives`` unseen items (seeded)."""
    rng = np.random.default_rng(cfg.seed)
    train = split.train
    out = []
    assert cfg.sampled_negatives is not None
    for u in users:
        pos = [train.item_index[i] for i in targets[u]]
        seen = [train.item_index[i] for i in train.history(u)]
        cand = M.sample_candidates(rng, train.n_items, pos, seen, cfg.sampled_negatives)
        out.append(train.item_ids[np.sort(cand)].tolist())
    return out


def _run_ranking_method(
    spec: MethodSpec,
    model: Method,
    cfg: EvalConfig,
    split: Split,
    users: list[Any],
    run_dir: Path,
    progress: bool,
) -> MethodResult:
    targets = split.targets(cfg.target)
    mdir = run_dir / "methods" / _safe(spec.label)
    key = _method_key(spec, model, cfg)
    done_file, recs_file = mdir / "result.json", mdir / "recs.jsonl"
    if cfg.resume and done_file.exists() and recs_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            # generation is the expensive part: reuse the saved lists, recompute the metrics
            log.info("%s: reusing finished recommendations from %s", spec.label, recs_file)
            return _summarize(spec, model, read_rows(recs_file), users, targets, split, cfg,
                              saved["result"]["timings"])  # fmt: skip
    partial = mdir / "recs.partial.jsonl"
    done = load_checkpoint(partial, key) if cfg.resume else {}
    if not done:
        start_checkpoint(partial, key)
    candidates = _candidates(split, users, targets, cfg) if cfg.sampled_negatives else None
    k_max = split.train.n_items if cfg.sampled_negatives else max(cfg.ks)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        todo = [n for n, u in enumerate(users) if user_key(u) not in done]
        chunk = max(1, model.users_per_call)  # checkpoint granularity (LLMs: a few users)
        t0 = time.perf_counter()
        with Progress(progress, spec.label, len(users), len(users) - len(todo)) as advance:
            for start in range(0, len(todo), chunk):
                idx = todo[start : start + chunk]
                batch = [users[n] for n in idx]
                items = [candidates[n] for n in idx] if candidates is not None else None
                recs = model.recommend(batch, k_max, items=items)  # type: ignore[attr-defined]
                rows = []
                for n, u in enumerate(batch):
                    row: dict[str, Any] = {
                        "user": to_python(u),
                        "items": [to_python(i) for i in recs.item_ids[n]],
                    }
                    if recs.details is not None:
                        row["sources"] = [d.source for d in recs.details[n]]
                    if recs.stats is not None:
                        row["stats"] = recs.stats[n]
                    done[user_key(u)] = row
                    rows.append(row)
                append_rows(partial, rows)
                advance(len(batch))
        rec_s = time.perf_counter() - t0
    rows = [done[user_key(u)] for u in users]
    timings = {
        "fit_s": round(fit_s, 3),
        "recommend_s": round(rec_s, 3),
        "peak_rss_mb": round(mem.peak_mb, 1),
        "resumed_users": len(users) - len(todo),
    }
    result = _summarize(spec, model, rows, users, targets, split, cfg, timings)
    write_rows(recs_file, rows)
    atomic_write_json(done_file, {"key": key, "result": result.__dict__})
    partial.unlink(missing_ok=True)
    return result


def _summarize(
    spec: MethodSpec,
    model: Method,
    rows: list[dict],
    users: list[Any],
    targets: dict[Any, set],
    split: Split,
    cfg: EvalConfig,
    timings: dict[str, float],
) -> MethodResult:
    """Metrics of one method from its per-user rows (fresh or reloaded)."""
    dtype = split.train.item_ids.dtype
    ranked = [np.asarray(r["items"], dtype=dtype) for r in rows]
    overall, cohorts = score_rankings(ranked, users, targets, split, cfg)
    stats = model.summarize_stats([r.get("stats", {}) for r in rows])
    stats.update(own_item_metrics(rows, users, targets, dtype, headline_k(cfg.ks)))
    return MethodResult(spec.label, overall, cohorts, timings, stats, len(users))


def _run_rating_method(
    spec: MethodSpec,
    model: Method,
    cfg: EvalConfig,
    split: Split,
    users: list[Any],
    run_dir: Path,
    progress: bool,
) -> MethodResult:
    """Predict ratings for every held-out (user, item) of the selected users; MAE/RMSE."""
    mdir = run_dir / "methods" / _safe(spec.label)
    key, done_file = _method_key(spec, model, cfg), mdir / "result.json"
    if cfg.resume and done_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            return MethodResult(**saved["result"])
    frame = split.valid if cfg.target == "valid" else split.test
    frame = frame[frame["user_id"].isin(set(users))]
    pairs = list(zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True))
    truth = frame["rating"].to_numpy(dtype=np.float64)
    stats: dict[str, float] = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds: list[float] = []
        step = max(1, model.users_per_call)
        with Progress(progress, spec.label, len(pairs), 0) as advance:
            for start in range(0, len(pairs), step):
                out = model.predict_ratings(pairs[start : start + step])  # type: ignore[attr-defined]
                preds.extend(out.values.tolist())
                for name, value in (out.stats or {}).items():
                    stats[name] = stats.get(name, 0.0) + float(value)
                advance(min(step, len(pairs) - start))
        pred_s = time.perf_counter() - t0
    preds_arr = np.asarray(preds)
    cold = np.array([u in split.cohorts.cold_users for u, _ in pairs], dtype=bool)
    overall = rating_errors(truth, preds_arr, np.ones(len(pairs), dtype=bool))
    cohorts = {
        "cold-users": rating_errors(truth, preds_arr, cold),
        "warm-users": rating_errors(truth, preds_arr, ~cold),
    }
    for name, c in cohorts.items():  # the cohort size in users (pairs stay in "pairs")
        mask = cold if name == "cold-users" else ~cold
        c["users"] = len({u for (u, _), m in zip(pairs, mask, strict=True) if m})
    timings = {
        "fit_s": round(fit_s, 3),
        "recommend_s": round(pred_s, 3),
        "peak_rss_mb": round(mem.peak_mb, 1),
    }
    result = MethodResult(spec.label, overall, cohorts, timings, stats, len(set(users)))
    mdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done_file, {"key": key, "result": result.__dict__})
    return result
