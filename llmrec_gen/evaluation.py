"""Offline evaluation: every method on one split, one protocol, one metric table.

Flow: dataset -> split -> for each method: ``fit(train)`` -> ``recommend(users, k)`` in chunks
(checkpointed, so an interrupted run resumes from completed users) -> metrics overall and per
cohort -> run directory with ``metrics.json``, ``metrics.csv``, ``report.md``, ``metrics.png``,
``config.yaml`` and per-method recommendations. All files are written atomically.

The evaluator never asks which method it holds: it only calls ``fit`` and ``recommend``. LLM
methods put per-user grounding counts in ``Recommendations.extras``; any numeric extra is summed
and reported, which is how valid-title (hallucination) and fill rates reach the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from llmrec_gen import metrics as M
from llmrec_gen.config import EvalConfig, MethodConfig
from llmrec_gen.data import load_dataset
from llmrec_gen.errors import ConfigError, LLMRecError
from llmrec_gen.io import atomic_write_json, atomic_write_text
from llmrec_gen.splits import Split, split_dataset

log = logging.getLogger(__name__)

COUNT_KEYS = (
    "generated",
    "valid",
    "exact",
    "fuzzy",
    "embedding",
    "constrained",
    "invalid",
    "seen",
    "duplicate",
    "filled",
)


def build_method(method: MethodConfig, index: int = 0) -> Any:
    """Instantiate a method from its config (``type`` = baseline name or ``llm``).

    Raises:
        ConfigError: unknown type or invalid parameters (the message names ``methods[i]``).
    """
    from llmrec_gen.baselines import make_baseline
    from llmrec_gen.rating import RATING_BASELINES, make_rating_predictor

    where = f"methods[{index}] ({method.label})"
    try:
        if method.type == "llm":
            from llmrec_gen.llm import LLMRecommender

            return LLMRecommender(**method.params)
        if method.type in RATING_BASELINES:
            return make_rating_predictor(method.type, **method.params)
        return make_baseline(method.type, **method.params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}.params: {exc}") from None


@dataclass
class MethodResult:
    """Everything measured for one method."""

    name: str
    type: str
    overall: dict[str, float]
    cohorts: dict[str, dict[str, float]]
    timings: dict[str, float]
    llm: dict[str, float] = field(default_factory=dict)
    n_users: int = 0


@dataclass
class EvalResult:
    """A finished evaluation: where it was written and what each method scored."""

    run_dir: Path
    methods: list[MethodResult]
    protocol: dict[str, Any]


class _PeakRSS:
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

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def select_users(split: Split, cfg: EvalConfig) -> list[Any]:
    """Users evaluated: those with a positive held-out target and training history (sampled
    with ``cfg.seed`` when ``user_sample`` is set)."""
    users = sorted(split.targets(cfg.target))
    if cfg.user_sample is not None and cfg.user_sample < len(users):
        rng = np.random.default_rng(cfg.seed)
        users = sorted(rng.choice(np.asarray(users), cfg.user_sample, replace=False).tolist())
    return users


def run_evaluation(cfg: EvalConfig, *, progress: bool = True) -> EvalResult:
    """Run every method of ``cfg`` and write the run directory (see module docstring)."""
    from llmrec_gen.baselines import BASELINES
    from llmrec_gen.rating import RATING_BASELINES

    allowed = [*(BASELINES if cfg.task == "ranking" else RATING_BASELINES), "llm"]
    for i, mc in enumerate(cfg.methods):
        if mc.type not in allowed:
            known = ", ".join(allowed)
            raise ConfigError(f"methods[{i}].type: unknown {cfg.task} method {mc.type!r} ({known})")
    for k in cfg.ks:
        if k < 1:
            raise ConfigError(f"ks: cutoffs must be >= 1, got {k}")
    for name in cfg.metrics:
        if name.lower() not in {m.lower() for m in M.RANKING_METRICS}:
            raise ConfigError(
                f"metrics: unknown ranking metric {name!r} (choose from {list(M.RANKING_METRICS)};"
                " cutoffs come from 'ks')"
            )
    labels = [m.label for m in cfg.methods]
    if len(set(labels)) != len(labels):
        raise ConfigError("methods: two methods share a name; set distinct 'name' fields")

    run_dir = Path(cfg.output_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(cfg.dataset)
    split = split_dataset(dataset, **cfg.split.model_dump())
    users = select_users(split, cfg)
    targets = split.targets(cfg.target)
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
    if cfg.task == "rating":
        results = [
            _run_rating_method(i, mc, cfg, split, users, run_dir, progress)
            for i, mc in enumerate(cfg.methods)
        ]
        result = EvalResult(run_dir, results, {**protocol, "ranking": "rating prediction"})
        write_reports(result, cfg)
        return result
    results = []
    for i, mc in enumerate(cfg.methods):
        results.append(_run_method(i, mc, cfg, split, users, targets, run_dir, progress))
    result = EvalResult(run_dir, results, protocol)
    write_reports(result, cfg)
    return result


def _adapter_digest(mc: MethodConfig) -> str | None:
    """Hash of a local adapter's weights, so a retrained adapter at the same path (or a new
    bundled one) never reuses lists generated with the old one."""
    spec = mc.params.get("adapter")
    if not isinstance(spec, str) or mc.params.get("engine") == "openai":
        return None
    from llmrec_gen.models import resolve_adapter

    try:
        path = Path(resolve_adapter(spec) or "")
    except LLMRecError:
        return None  # the method itself reports the missing adapter when it is built
    digest = hashlib.sha256()
    for file in sorted(path.glob("adapter_model.*")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _method_key(mc: MethodConfig, cfg: EvalConfig) -> str:
    digest = _adapter_digest(mc)
    blob = json.dumps(
        [
            mc.model_dump() | ({"adapter_digest": digest} if digest else {}),
            cfg.dataset,
            cfg.split.model_dump(),
            cfg.target,
            cfg.user_sample,
            cfg.seed,
            max(cfg.ks),
            cfg.sampled_negatives,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_method(
    index: int,
    mc: MethodConfig,
    cfg: EvalConfig,
    split: Split,
    users: list[Any],
    targets: dict[Any, set],
    run_dir: Path,
    progress: bool,
) -> MethodResult:
    mdir = run_dir / "methods" / _safe(mc.label)
    key = _method_key(mc, cfg)
    done_file = mdir / "result.json"
    recs_file = mdir / "recs.jsonl"
    if cfg.resume and done_file.exists() and recs_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            # generation is the expensive part: reuse the saved lists, recompute the metrics
            log.info("%s: reusing finished recommendations from %s", mc.label, recs_file)
            rows = [json.loads(line) for line in recs_file.read_text().splitlines()]
            return _summarize(mc, rows, users, targets, split, cfg, saved["result"]["timings"])
    mdir.mkdir(parents=True, exist_ok=True)
    partial = mdir / "recs.partial.jsonl"
    done = _load_checkpoint(partial, key) if cfg.resume else {}
    if not done:
        partial.write_text(json.dumps({"key": key}) + "\n")
    k_max = split.train.n_items if cfg.sampled_negatives else max(cfg.ks)
    model = build_method(mc, index)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        todo = [u for u in users if _key(u) not in done]
        # checkpoint granularity = the method's own batch size (LLMs: a few users)
        chunk = max(1, int(getattr(model, "batch_size", 256) or 256))
        t0 = time.perf_counter()
        with _progress(progress, f"{mc.label}", len(users), len(users) - len(todo)) as advance:
            for start in range(0, len(todo), chunk):
                batch = todo[start : start + chunk]
                recs = model.recommend(batch, k_max)
                lines = []
                for n, u in enumerate(batch):
                    row = {
                        "user": _py(u),
                        "items": [_py(i) for i in recs.item_ids[n]],
                        "extras": _numeric_extras(recs.extras[n]) if recs.extras else {},
                    }
                    if recs.details is not None:
                        row["methods"] = [d.method for d in recs.details[n]]
                    done[_key(u)] = row
                    lines.append(json.dumps(row))
                _append(partial, lines)
                advance(len(batch))
        rec_s = time.perf_counter() - t0
    rows = [done[_key(u)] for u in users]
    timings = {
        "fit_s": round(fit_s, 3),
        "recommend_s": round(rec_s, 3),
        "peak_rss_mb": round(mem.peak_mb, 1),
        "resumed_users": len(users) - len(todo),
    }
    result = _summarize(mc, rows, users, targets, split, cfg, timings)
    _write_recs(recs_file, rows)
    atomic_write_json(done_file, {"key": key, "result": result.__dict__})
    partial.unlink(missing_ok=True)
    return result


def _summarize(
    mc: MethodConfig,
    rows: list[dict],
    users: list[Any],
    targets: dict[Any, set],
    split: Split,
    cfg: EvalConfig,
    timings: dict[str, float],
) -> MethodResult:
    """Metrics of one method from its saved per-user rows (fresh or reloaded)."""
    ranked = [np.asarray(r["items"], dtype=split.train.item_ids.dtype) for r in rows]
    if cfg.sampled_negatives:
        ranked = _restrict_to_samples(ranked, users, targets, split, cfg)
    overall, cohorts = _score(ranked, users, targets, split, cfg)
    llm = _llm_rates(rows, max(cfg.ks))
    if any("methods" in r for r in rows):
        llm.update(_without_fill(rows, users, targets, split, cfg))
    return MethodResult(mc.label, mc.type, overall, cohorts, timings, llm, len(users))


def _run_rating_method(
    index: int,
    mc: MethodConfig,
    cfg: EvalConfig,
    split: Split,
    users: list[Any],
    run_dir: Path,
    progress: bool,
) -> MethodResult:
    """Predict 1-5 ratings for every held-out (user, item) of the selected users; MAE/RMSE."""
    mdir = run_dir / "methods" / _safe(mc.label)
    key, done_file = _method_key(mc, cfg), mdir / "result.json"
    if cfg.resume and done_file.exists():
        saved = json.loads(done_file.read_text())
        if saved.get("key") == key:
            return MethodResult(**saved["result"])
    frame = split.valid if cfg.target == "valid" else split.test
    frame = frame[frame["user_id"].isin(set(users))]
    pairs = list(zip(frame["user_id"].tolist(), frame["item_id"].tolist(), strict=True))
    truth = frame["rating"].to_numpy(dtype=np.float64)
    model = build_method(mc, index)
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = []
        step = max(1, int(getattr(model, "batch_size", 4096) or 4096))
        with _progress(progress, mc.label, len(pairs), 0) as advance:
            for start in range(0, len(pairs), step):
                preds.extend(model.predict_ratings(pairs[start : start + step]).tolist())
                advance(min(step, len(pairs) - start))
        pred_s = time.perf_counter() - t0
    preds_arr = np.asarray(preds)
    cold = np.array([u in split.cohorts.cold_users for u, _ in pairs])

    def errors(mask: np.ndarray) -> dict[str, float]:
        if not mask.any():
            return {"pairs": 0, "MAE": math.nan, "RMSE": math.nan}
        t, p = truth[mask], preds_arr[mask]
        return {"pairs": int(mask.sum()), "MAE": M.mae(t, p), "RMSE": M.rmse(t, p)}

    overall = errors(np.ones(len(pairs), dtype=bool))
    cohorts = {"cold-users": errors(cold), "warm-users": errors(~cold)}
    for c in cohorts.values():
        c["users"] = c.pop("pairs")
    timings = {
        "fit_s": round(fit_s, 3),
        "recommend_s": round(pred_s, 3),
        "peak_rss_mb": round(mem.peak_mb, 1),
    }
    extra = {"rating_fallbacks": float(getattr(model, "rating_fallbacks_", 0))}
    result = MethodResult(mc.label, mc.type, overall, cohorts, timings, extra, len(set(users)))
    mdir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done_file, {"key": key, "result": result.__dict__})
    return result


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _key(user: Any) -> str:
    return str(_py(user))


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _numeric_extras(extra: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in extra.items() if isinstance(v, int | float)}


def _load_checkpoint(path: Path, key: str) -> dict[str, dict]:
    """Completed users from a partial checkpoint (a torn last line from a kill is ignored)."""
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
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
        done[_key(row["user"])] = row
    if done:
        log.info("resuming: %d users already done in %s", len(done), path)
    return done


def _append(path: Path, lines: list[str]) -> None:
    import os

    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())


def _write_recs(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


class _progress:
    """A rich progress bar (or nothing) with an ``advance(n)`` callable."""

    def __init__(self, enabled: bool, label: str, total: int, completed: int) -> None:
        self.enabled, self.label, self.total, self.completed = enabled, label, total, completed

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
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


def _restrict_to_samples(
    ranked: list[np.ndarray], users: list, targets: dict, split: Split, cfg: EvalConfig
) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    train = split.train
    out = []
    for u, r in zip(users, ranked, strict=True):
        pos = [train.item_index[i] for i in targets[u]]
        seen = [train.item_index[i] for i in train.history(u)]
        assert cfg.sampled_negatives is not None
        cand = M.sample_candidates(rng, train.n_items, pos, seen, cfg.sampled_negatives)
        allowed = set(train.item_ids[cand].tolist())
        out.append(np.asarray([i for i in r.tolist() if i in allowed]))
    return out


def _score(
    ranked: list[np.ndarray], users: list, targets: dict, split: Split, cfg: EvalConfig
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    relevant = [targets[u] for u in users]
    per_user = M.ranking_metrics(ranked, relevant, cfg.ks)
    wanted = {M.parse_metric(f"{m}@1")[0] for m in cfg.metrics}
    per_user = {k: v for k, v in per_user.items() if M.parse_metric(k)[0] in wanted}
    suffix = f" [sampled-{cfg.sampled_negatives}]" if cfg.sampled_negatives else ""
    per_user = {k + suffix: v for k, v in per_user.items()}
    overall = M.mean_metrics(per_user)
    train, coh = split.train, split.cohorts
    pop = dict(zip(train.item_ids.tolist(), train.item_popularity.tolist(), strict=True))
    user_pop = train.interactions.groupby("item_id")["user_id"].nunique().to_dict()
    for k in cfg.ks:
        overall[f"Coverage@{k}"] = M.catalog_coverage(ranked, train.n_items, k)
        overall[f"ARP@{k}"] = M.average_popularity(ranked, pop, k)
        overall[f"APLT@{k}"] = M.tail_share(ranked, coh.tail_items, k)
        overall[f"Novelty@{k}"] = M.novelty(ranked, user_pop, train.n_users, k)
    first_target = [sorted(targets[u], key=str)[0] for u in users]
    masks = {
        "head-target": np.array([t in coh.head_items for t in first_target]),
        "tail-target": np.array([t in coh.tail_items for t in first_target]),
        "cold-item-target": np.array([t in coh.cold_items for t in first_target]),
        "cold-users": np.array([u in coh.cold_users for u in users]),
        "warm-users": np.array([u not in coh.cold_users for u in users]),
    }
    cohorts = {}
    for name, mask in masks.items():
        cohorts[name] = {"users": int(mask.sum()), **M.mean_metrics(per_user, mask)}
    return overall, cohorts


def _without_fill(
    rows: list[dict], users: list, targets: dict, split: Split, cfg: EvalConfig
) -> dict[str, float]:
    """HR/NDCG of the items the method produced itself (fallback fills removed): what the LLM
    contributes, separated from what the fallback recommender adds."""
    k = 10 if 10 in cfg.ks else max(cfg.ks)
    own = [
        np.asarray(
            [i for i, m in zip(r["items"], r.get("methods", []), strict=False) if m != "fill"],
            dtype=split.train.item_ids.dtype,
        )
        for r in rows
    ]
    per_user = M.ranking_metrics(own, [targets[u] for u in users], [k])
    means = M.mean_metrics(per_user)
    return {f"HR@{k} without fill": means[f"HR@{k}"], f"NDCG@{k} without fill": means[f"NDCG@{k}"]}


def _llm_rates(rows: list[dict], k: int) -> dict[str, float]:
    totals: dict[str, float] = {}
    for r in rows:
        for key, v in r.get("extras", {}).items():
            totals[key] = totals.get(key, 0.0) + v
    if not totals:
        return {}
    gen = totals.get("generated", 0.0)
    out = {key: totals[key] for key in COUNT_KEYS if key in totals}
    if gen:
        out["valid_title_rate"] = totals.get("valid", 0.0) / gen
        out["hallucination_rate"] = 1 - out["valid_title_rate"]
        if "seen" in totals:  # valid, but the user's own history: no use as a recommendation
            out["seen_rate"] = totals["seen"] / gen
        for m in ("exact", "fuzzy", "embedding", "constrained"):
            if m in totals:
                out[f"{m}_rate"] = totals[m] / gen
    out["fill_rate"] = totals.get("filled", 0.0) / max(1, len(rows) * k)
    return out


# ---------------------------------------------------------------------------------------------
# Reports


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
                **{f"llm:{k}": v for k, v in m.llm.items()},
                **m.timings,
            }
        )
        for cname, vals in m.cohorts.items():
            rows.append({"method": m.name, "cohort": cname, **vals})
    return pd.DataFrame(rows)


def write_reports(result: EvalResult, cfg: EvalConfig) -> None:
    """Write metrics.json, metrics.csv, report.md and (optionally) metrics.png atomically."""
    run_dir = result.run_dir
    payload = {
        "protocol": result.protocol,
        "methods": [m.__dict__ for m in result.methods],
    }
    atomic_write_json(run_dir / "metrics.json", _clean_nan(payload))
    frame = results_frame(result)
    atomic_write_text(run_dir / "metrics.csv", frame.to_csv(index=False))
    atomic_write_text(run_dir / "report.md", markdown_report(result, cfg))
    if cfg.plot:
        plot_metrics(result, cfg, run_dir / "metrics.png")


def _clean_nan(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean_nan(v) for v in obj]
    return obj


def _fmt(v: Any) -> str:
    if isinstance(v, float) and not math.isnan(v) and v >= 0.01 and v == round(v, 3):
        return f"{v:g}"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(result: EvalResult, cfg: EvalConfig) -> str:
    """Methods x metrics tables: overall, per cohort, LLM grounding, timings."""
    p = result.protocol
    if cfg.task == "rating":
        return _rating_report(result, cfg)
    k = 10 if 10 in cfg.ks else max(cfg.ks)
    methods = result.methods
    out = [f"# {cfg.name}", ""]
    out.append(
        f"Dataset `{p['dataset']}`, split `{p['protocol']}` (seed {p['seed']}), target "
        f"`{p['target']}`, {p['users_evaluated']} users"
        + (f" (seeded sample of {p['user_sample']})" if p.get("user_sample") else "")
        + f", **{p['ranking']}** ranking, seen items excluded."
    )
    out.append("")
    ranking = [
        c for c in methods[0].overall if not c.startswith(("Coverage", "ARP", "APLT", "Nov"))
    ]
    # all metrics at the headline cutoff, HR/NDCG at the others (the CSV/JSON have everything)
    main = [
        c for c in ranking if f"@{k}" in c.split(" ")[0] and c.split("@")[1].split(" ")[0] == str(k)
    ]
    main += [c for c in ranking if c not in main and c.startswith(("HR@", "NDCG@"))]
    out += [
        "## Overall",
        "",
        _table(["method", *main], [[m.name, *[m.overall[c] for c in main]] for m in methods]),
        "",
    ]
    beyond = [f"Coverage@{k}", f"ARP@{k}", f"APLT@{k}", f"Novelty@{k}"]
    out += [
        "## Beyond accuracy",
        "",
        _table(["method", *beyond], [[m.name, *[m.overall[c] for c in beyond]] for m in methods]),
        "",
    ]
    ndcg = next((c for c in main if c.startswith(f"NDCG@{k}")), main[0])
    hr = next((c for c in main if c.startswith(f"HR@{k}")), main[0])
    cohort_names = list(methods[0].cohorts)
    header = ["method"] + [f"{c} {hr} / {ndcg}" for c in cohort_names]
    rows = [
        [m.name, *[f"{_fmt(m.cohorts[c][hr])} / {_fmt(m.cohorts[c][ndcg])}" for c in cohort_names]]
        for m in methods
    ]
    sizes = ", ".join(f"{c}: {methods[0].cohorts[c]['users']}" for c in cohort_names)
    out += ["## Cohorts", "", f"Users per cohort: {sizes}.", "", _table(header, rows), ""]
    llm = [m for m in methods if m.llm]
    if llm:
        cols = [
            "valid_title_rate",
            "hallucination_rate",
            "seen_rate",
            "exact_rate",
            "fuzzy_rate",
            "embedding_rate",
            "constrained_rate",
            "fill_rate",
            f"HR@{k} without fill",
            f"NDCG@{k} without fill",
        ]
        out += [
            "## LLM grounding",
            "",
            "Rates are over all generated titles (valid = grounded to a catalog item; seen ="
            " valid but already in the user's history); *without fill* scores only the items"
            " the model produced itself (fallback fills removed).",
            "",
            _table(
                ["method", *cols], [[m.name, *[m.llm.get(c, math.nan) for c in cols]] for m in llm]
            ),
            "",
        ]
    tcols = ["fit_s", "recommend_s", "peak_rss_mb"]
    out += [
        "## Timings",
        "",
        _table(["method", *tcols], [[m.name, *[m.timings[c] for c in tcols]] for m in methods]),
        "",
    ]
    return "\n".join(out)


def _rating_report(result: EvalResult, cfg: EvalConfig) -> str:
    p = result.protocol
    methods = result.methods
    cohorts = list(methods[0].cohorts)
    out = [
        f"# {cfg.name}",
        "",
        f"Rating prediction (1-5) on `{p['dataset']}` `{p['target']}` interactions of "
        f"{p['users_evaluated']} users, split `{p['protocol']}` (seed {p['seed']}).",
        "",
        _table(
            ["method", "MAE", "RMSE", *[f"{c} MAE / RMSE" for c in cohorts], "fit_s", "predict_s"],
            [
                [
                    m.name,
                    m.overall["MAE"],
                    m.overall["RMSE"],
                    *[
                        f"{_fmt(m.cohorts[c]['MAE'])} / {_fmt(m.cohorts[c]['RMSE'])}"
                        for c in cohorts
                    ],
                    m.timings["fit_s"],
                    m.timings["recommend_s"],
                ]
                for m in methods
            ],
        ),
        "",
    ]
    return "\n".join(out)


def plot_metrics(result: EvalResult, cfg: EvalConfig, path: Path) -> None:
    """Bar chart of HR@k and NDCG@k per method, overall and for tail-target / cold users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmrec_gen.io import atomic_write_bytes

    k = 10 if 10 in cfg.ks else max(cfg.ks)
    suffix = f" [sampled-{cfg.sampled_negatives}]" if cfg.sampled_negatives else ""
    names = [m.name for m in result.methods]
    groups = ["all", "head-target", "tail-target", "cold-users"]
    metrics = (f"HR@{k}{suffix}", f"NDCG@{k}{suffix}")
    if cfg.task == "rating":
        groups, metrics = ["all", "cold-users", "warm-users"], ("MAE", "RMSE")
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) + 4), 4.5), sharey=False)
    for ax, metric in zip(axes, metrics, strict=True):
        width = 0.8 / len(groups)
        x = np.arange(len(names))
        for g, group in enumerate(groups):
            vals = [
                (m.overall if group == "all" else m.cohorts[group]).get(metric, math.nan)
                for m in result.methods
            ]
            ax.bar(x + g * width, vals, width, label=group)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=30, ha="right")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{cfg.name}: {result.protocol['ranking']} ranking, "
        f"{result.protocol['users_evaluated']} users"
    )
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["EvalResult", "MethodResult", "LLMRecError", "build_method", "run_evaluation"]
