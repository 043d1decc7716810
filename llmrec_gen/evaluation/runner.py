"""Running an evaluation: every method on one split protocol, per split seed, one report.

Flow: dataset -> for each split seed: split -> ``fit_data(target)`` (train for ``valid``,
train + valid for ``test``) -> for each method: ``fit`` -> ``recommend(users, k)`` in chunks
(checkpointed, so an interrupted run resumes from completed users) -> per-user metrics with
cohort flags -> means, bootstrap CIs, seed spread and paired tests over all seeds
(:mod:`llmrec_gen.evaluation.summary`) -> reports.

Run directory: ``output_dir/<name>-<digest8>/``, where the digest is taken over the resolved
config (everything but ``output_dir``, ``resume`` and ``plot``), so two different configs that
share a ``name`` never replace each other's report and rerunning the same config resumes. It
holds ``config.yaml``, ``report.md``, ``metrics.json``, ``metrics.csv``, ``per_user.csv``,
``metrics.png`` and ``seed-<N>/`` (that seed's ``metrics.json`` and per-method lists and
checkpoints). A run holds a lock on its directory (:func:`llmrec_gen.io.directory_lock`): a
second run into the same directory fails at once with a one-line message naming the holder.
All files are written atomically with the caller's umask.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from llmrec_gen.data.dataset import Dataset
from llmrec_gen.data.loaders import load_dataset
from llmrec_gen.data.splits import Cohorts, Split, describe_fit, split_dataset
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError, DataError
from llmrec_gen.evaluation import metrics as M
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.report import write_reports
from llmrec_gen.evaluation.results import (
    COHORT_PREFIX,
    EvalResult,
    append_rows,
    load_checkpoint,
    read_rows,
    start_checkpoint,
    user_key,
    write_per_user,
    write_rows,
)
from llmrec_gen.evaluation.scoring import (
    headline_k,
    own_item_metrics,
    score_rankings,
)
from llmrec_gen.evaluation.summary import SeedRun, per_user_table, summarize
from llmrec_gen.io import (
    atomic_write_json,
    atomic_write_text,
    check_writable,
    directory_lock,
    to_python,
)
from llmrec_gen.recommenders.base import Capability, Method
from llmrec_gen.registry import MethodSpec, build_method

log = logging.getLogger(__name__)

DIGEST_EXCLUDES = frozenset({"output_dir", "resume", "plot"})
"""Config fields that do not change any number, so they do not change the run directory."""


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


@dataclass(frozen=True)
class SeedContext:
    """What every method of one split seed is fit on and scored against.

    Attributes:
        seed: the split seed.
        split: the split.
        fit: ``split.fit_data(target)``: what ``fit`` sees, the history, the seen items.
        cohorts: cohorts of ``fit``.
        targets: user -> held-out positives of the target.
        users: the users evaluated (sorted; a seeded sample with ``user_sample``).
        dir: ``run_dir/seed-<seed>``.
    """

    seed: int
    split: Split
    fit: TrainData
    cohorts: Cohorts
    targets: dict[Any, set]
    users: list[Any]
    dir: Path


def select_users(split: Split, cfg: EvalConfig) -> list[Any]:
    """Users evaluated: those with a positive held-out target and fit data (a seeded sample of
    them when ``user_sample`` is set)."""
    users = sorted(split.targets(cfg.target))
    if cfg.user_sample is not None and cfg.user_sample < len(users):
        rng = np.random.default_rng(cfg.seed)
        users = sorted(rng.choice(np.asarray(users), cfg.user_sample, replace=False).tolist())
    return users


def check_config(cfg: EvalConfig) -> list[Method]:
    """Validate ``cfg`` and build its methods (unfitted), before any data is loaded.

    Raises:
        ConfigError: bad cutoffs or metric names, duplicate method names, an unknown
            ``stats.reference``, an ``output_dir`` that cannot be written, or a method that
            cannot do the config's task (the message names ``methods[i]``).
    """
    if not cfg.ks:
        raise ConfigError("ks: give at least one cutoff, e.g. [5, 10, 20]")
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
    if cfg.stats.reference is not None and cfg.stats.reference not in labels:
        raise ConfigError(
            f"stats.reference: no method named {cfg.stats.reference!r} "
            f"(methods: {', '.join(labels)})"
        )
    check_writable(cfg.output_dir, "eval config: output_dir")
    return _build_methods(cfg)


def _build_methods(cfg: EvalConfig) -> list[Method]:
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


def config_digest(cfg: EvalConfig) -> str:
    """8 hex digits of the resolved config's SHA-256 (without :data:`DIGEST_EXCLUDES`)."""
    blob = json.dumps(cfg.model_dump(exclude=set(DIGEST_EXCLUDES)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def run_directory(cfg: EvalConfig) -> Path:
    """``output_dir/<name>-<digest8>``: one directory per resolved config."""
    return Path(cfg.output_dir).expanduser() / f"{_safe(cfg.name)}-{config_digest(cfg)}"


def run_evaluation(cfg: EvalConfig, *, progress: bool = True) -> EvalResult:
    """Run every method of ``cfg`` on every split seed and write the run directory.

    Raises:
        ConfigError: an invalid config (see :func:`check_config`).
        DataError: the dataset cannot be loaded, or a split leaves no user to evaluate.
        BusyError: another process is writing the same run directory.
    """
    methods = check_config(cfg)
    run_dir = run_directory(cfg)
    check_writable(run_dir, "eval config: output_dir", create=True)
    with directory_lock(run_dir):
        log.info("run directory: %s", run_dir)
        dataset = load_dataset(cfg.dataset)
        atomic_write_text(
            run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False)
        )
        run = _run_rating_method if cfg.task == "rating" else _run_ranking_method
        runs: list[SeedRun] = []
        contexts = []
        for n, seed in enumerate(cfg.split.run_seeds()):
            ctx = _seed_context(dataset, cfg, seed, run_dir)
            contexts.append(ctx)
            if n:  # a fresh, unfitted instance per seed
                methods = _build_methods(cfg)
            seed_runs = [
                run(spec, method, cfg, ctx, progress)
                for spec, method in zip(cfg.methods, methods, strict=True)
            ]
            _write_seed_metrics(ctx, seed_runs)
            runs += seed_runs
        table = per_user_table(runs)
        write_per_user(run_dir / "per_user.csv", table)
        result = EvalResult(run_dir, summarize(runs, cfg), _protocol(dataset, cfg, contexts))
        write_reports(result, cfg)
    return result


def _seed_context(dataset: Dataset, cfg: EvalConfig, seed: int, run_dir: Path) -> SeedContext:
    split = split_dataset(dataset, **cfg.split.kwargs(seed))
    users = select_users(split, cfg)
    if not users:
        raise DataError(
            f"no users to evaluate on {cfg.target}: split '{cfg.split.protocol}' (seed {seed})"
            f" of '{dataset.name}' leaves no user with a positive {cfg.target} item and a"
            " fit history"
        )
    fit = split.fit_data(cfg.target)
    if cfg.task == "ranking" and not cfg.sampled_negatives and max(cfg.ks) > fit.n_items:
        raise ConfigError(f"ks: {max(cfg.ks)} exceeds the catalogue ({fit.n_items} items)")
    return SeedContext(
        seed=seed,
        split=split,
        fit=fit,
        cohorts=split.cohorts_for(cfg.target),
        targets=split.targets(cfg.target),
        users=users,
        dir=run_dir / f"seed-{seed}",
    )


def _protocol(dataset: Dataset, cfg: EvalConfig, contexts: list[SeedContext]) -> dict[str, Any]:
    """What was done, for metrics.json and the report's protocol paragraph."""
    first = contexts[0]
    per_seed_keys = ("train_interactions", "valid_interactions", "test_interactions")
    per_seed = [
        {
            "seed": c.seed,
            "users_evaluated": len(c.users),
            "fit_interactions": len(c.fit.interactions),
            **{k: c.split.protocol[k] for k in per_seed_keys},
            "cold_items_removed": c.split.protocol["cold_items_removed"],
        }
        for c in contexts
    ]
    protocol = {
        **{k: v for k, v in first.split.protocol.items() if k not in per_seed_keys},
        "seed": first.seed,
        "seeds": [c.seed for c in contexts],
        "dataset": dataset.name,
        "target": cfg.target,
        "fit_on": describe_fit(cfg.split.protocol, cfg.target),
        "users_evaluated": len({u for c in contexts for u in c.users}),
        "user_sample": cfg.user_sample,
        "ranking": f"sampled-{cfg.sampled_negatives}" if cfg.sampled_negatives else "full-catalog",
        "seen_items_excluded": True,
        "cohorts": first.cohorts.rule,
        "per_seed": per_seed,
        "stats": cfg.stats.model_dump(),
    }
    if cfg.task == "rating":
        protocol["ranking"] = "rating prediction"
    return protocol


def _write_seed_metrics(ctx: SeedContext, runs: list[SeedRun]) -> None:
    """``seed-<N>/metrics.json``: per-method means of this seed alone."""
    methods = []
    for r in runs:
        metrics = [c for c in r.per_user.columns if c != "user" and not c.startswith(COHORT_PREFIX)]
        overall = {c: float(r.per_user[c].mean()) for c in metrics}
        methods.append(
            {
                "name": r.method,
                "users": len(r.per_user),
                "overall": {**overall, **r.beyond},
                "stats": r.stats,
                "timings": r.timings,
            }
        )
    payload = {"protocol": ctx.split.protocol, "methods": methods}
    atomic_write_json(ctx.dir / "metrics.json", payload)


def _method_key(spec: MethodSpec, method: Method, cfg: EvalConfig, seed: int) -> str:
    """Everything a method's saved lists depend on: its spec, files it reads, the protocol."""
    blob = json.dumps(
        [
            spec.model_dump(),
            method.content_digest(),
            cfg.dataset,
            cfg.split.kwargs(seed),
            cfg.target,
            describe_fit(cfg.split.protocol, cfg.target),
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


def _candidates(ctx: SeedContext, cfg: EvalConfig) -> list[list]:
    """Per user: the held-out positives plus ``sampled_negatives`` unseen items (seeded)."""
    rng = np.random.default_rng([cfg.seed, ctx.seed])
    fit = ctx.fit
    out = []
    assert cfg.sampled_negatives is not None
    for u in ctx.users:
        pos = [fit.item_index[i] for i in ctx.targets[u]]
        seen = [fit.item_index[i] for i in fit.history(u)]
        cand = M.sample_candidates(rng, fit.n_items, pos, seen, cfg.sampled_negatives)
        out.append(fit.item_ids[np.sort(cand)].tolist())
    return out


def _run_ranking_method(
    spec: MethodSpec, model: Method, cfg: EvalConfig, ctx: SeedContext, progress: bool
) -> SeedRun:
    users = ctx.users
    mdir = ctx.dir / "methods" / _safe(spec.label)
    key = _method_key(spec, model, cfg, ctx.seed)
    done_file, recs_file = mdir / "result.json", mdir / "recs.jsonl"
    if cfg.resume and done_file.exists() and recs_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            # generation is the expensive part: reuse the saved lists, recompute the metrics
            log.info("%s: reusing finished recommendations from %s", spec.label, recs_file)
            return _score(spec, model, read_rows(recs_file), cfg, ctx, saved["timings"])
    partial = mdir / "recs.partial.jsonl"
    done = load_checkpoint(partial, key) if cfg.resume else {}
    if not done:
        start_checkpoint(partial, key)
    candidates = _candidates(ctx, cfg) if cfg.sampled_negatives else None
    k_max = ctx.fit.n_items if cfg.sampled_negatives else max(cfg.ks)
    label = spec.label if len(cfg.split.run_seeds()) == 1 else f"{spec.label} (seed {ctx.seed})"
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(ctx.fit)
        fit_s = time.perf_counter() - t0
        todo = [n for n, u in enumerate(users) if user_key(u) not in done]
        chunk = max(1, model.users_per_call)  # checkpoint granularity (LLMs: a few users)
        t0 = time.perf_counter()
        with Progress(progress, label, len(users), len(users) - len(todo)) as advance:
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
    result = _score(spec, model, rows, cfg, ctx, timings)
    write_rows(recs_file, rows)
    atomic_write_json(done_file, {"key": key, "timings": timings})
    partial.unlink(missing_ok=True)
    return result


def _score(
    spec: MethodSpec,
    model: Method,
    rows: list[dict],
    cfg: EvalConfig,
    ctx: SeedContext,
    timings: dict[str, float],
) -> SeedRun:
    """Per-user metrics of one method on one seed from its per-user rows (fresh or reloaded)."""
    dtype = ctx.fit.item_ids.dtype
    ranked = [np.asarray(r["items"], dtype=dtype) for r in rows]
    per_user, beyond = score_rankings(ranked, ctx.users, ctx.targets, ctx.fit, ctx.cohorts, cfg)
    stats = model.summarize_stats([r.get("stats", {}) for r in rows])
    stats.update(own_item_metrics(rows, ctx.users, ctx.targets, dtype, headline_k(cfg.ks)))
    return SeedRun(spec.label, ctx.seed, per_user, beyond, stats, timings)


def _run_rating_method(
    spec: MethodSpec, model: Method, cfg: EvalConfig, ctx: SeedContext, progress: bool
) -> SeedRun:
    """Predict ratings for every held-out (user, item) of the selected users; MAE/RMSE."""
    mdir = ctx.dir / "methods" / _safe(spec.label)
    key, done_file = _method_key(spec, model, cfg, ctx.seed), mdir / "result.json"
    if cfg.resume and done_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            per_user = pd.DataFrame(saved["per_user"])
            return SeedRun(spec.label, ctx.seed, per_user, {}, saved["stats"], saved["timings"])
    frame = ctx.split.held_out(cfg.target)
    frame = frame[frame["user_id"].isin(set(ctx.users))]
    pairs = list(zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True))
    truth = frame["rating"].to_numpy(dtype=np.float64)
    stats: dict[str, float] = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(ctx.fit)
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
    errors = pd.DataFrame(
        {"user": [to_python(u) for u, _ in pairs], "e": np.asarray(preds) - truth}
    )
    per_user = (
        errors.assign(a=errors["e"].abs(), s=errors["e"] ** 2)
        .groupby("user", sort=True)
        .agg(pairs=("e", "size"), MAE=("a", "mean"), RMSE=("s", "mean"))
        .reset_index()
    )
    per_user["RMSE"] = np.sqrt(per_user["RMSE"])
    cold = per_user["user"].isin(ctx.cohorts.cold_users).to_numpy()
    per_user[COHORT_PREFIX + "cold-users"] = cold
    per_user[COHORT_PREFIX + "warm-users"] = ~cold
    timings = {
        "fit_s": round(fit_s, 3),
        "recommend_s": round(pred_s, 3),
        "peak_rss_mb": round(mem.peak_mb, 1),
    }
    mdir.mkdir(parents=True, exist_ok=True)
    record = {"key": key, "timings": timings, "stats": stats}
    atomic_write_json(done_file, {**record, "per_user": per_user.to_dict(orient="records")})
    return SeedRun(spec.label, ctx.seed, per_user, {}, stats, timings)
