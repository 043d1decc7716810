"""From per-user, per-seed metrics to the reported numbers: means, CIs, seed spread, paired tests.

The input is the per-user table the run directory stores (``per_user.csv``: one row per
``method, seed, user`` with every accuracy metric and ``cohort:<name>`` flags), so every number
here can be recomputed from that file.

How several split seeds are combined (one rule for every group of users):

* each user's value is the mean of their rows over the seeds in which they are in the group
  (overall: every seed in which they were evaluated);
* the reported mean is the mean of those per-user values over users, and its CI is a percentile
  bootstrap over users (:func:`~llmrec_gen.evaluation.significance.bootstrap_ci`);
* the paired test compares two methods' per-user values of the headline ``NDCG@k`` on the same
  users (paired bootstrap, the primary test that marks significance, and Wilcoxon signed-rank),
  Holm-corrected over the methods tested against the reference;
* next to it, the mean ± sd over seeds of the per-seed means shows the split-to-split spread.

Why average over seeds per user rather than test per seed: the seeds re-draw the split (which
of equal-time interactions is held out), not the users; the population a result should
generalise to is users, so users stay the resampling unit, and averaging a user's seeds first
removes split noise from each user's value instead of treating the same user's five splits as
five independent users. With one seed this is the ordinary per-user bootstrap.

Beyond-accuracy metrics (coverage, popularity) are properties of all lists at once: they get the
mean and sd over seeds only. Rating errors are pooled over pairs: MAE = sum|e| / pairs, with
the CI from resampling users (:func:`~llmrec_gen.evaluation.significance.ratio_bootstrap_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_gen.evaluation import significance as S
from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.results import COHORT_PREFIX, MethodResult
from llmrec_gen.evaluation.scoring import headline_k, metric_suffix

ID_COLUMNS = ("method", "seed", "user")
"""The key columns of a per-user table."""

RATING_COLUMNS = ("pairs", "MAE", "RMSE")
"""Per-user columns of the rating task (``MAE``/``RMSE`` over that user's pairs)."""


@dataclass
class SeedRun:
    """One method on one split seed: per-user values and the list-level numbers.

    Attributes:
        method: the method's label.
        seed: the split seed.
        per_user: ``user`` column, metric columns and ``cohort:<name>`` flags.
        beyond: list-level metrics (coverage, popularity ...), one value for the seed.
        stats: the method's summarized statistics for the seed.
        timings: fit/recommend seconds and peak memory for the seed.
    """

    method: str
    seed: int
    per_user: pd.DataFrame
    beyond: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def per_user_table(runs: Sequence[SeedRun]) -> pd.DataFrame:
    """All runs' per-user rows in one frame (``method, seed, user, metrics..., cohort:...``)."""
    frames = [r.per_user.assign(method=r.method, seed=r.seed) for r in runs]
    table = pd.concat(frames, ignore_index=True)
    first = list(ID_COLUMNS)
    return table[first + [c for c in table.columns if c not in first]]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a per-user table (everything but keys and cohort flags)."""
    return [c for c in table.columns if c not in ID_COLUMNS and not c.startswith(COHORT_PREFIX)]


def cohort_names(table: pd.DataFrame) -> list[str]:
    """The cohorts flagged in a per-user table, in column order."""
    return [c[len(COHORT_PREFIX) :] for c in table.columns if c.startswith(COHORT_PREFIX)]


def headline_metric(cfg: EvalConfig) -> str:
    """The metric the paired tests and the default reference use: ``NDCG@k`` (k = 10 if run)."""
    return f"NDCG@{headline_k(cfg.ks)}{metric_suffix(cfg)}"


def _mean_ci(values: np.ndarray, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Column means of per-user values and their ``(2, n_metrics)`` bootstrap CI."""
    if not len(values):
        nan = np.full(values.shape[1], math.nan)
        return nan, np.vstack([nan, nan])
    st = cfg.stats
    ci = S.bootstrap_ci(values, st.ci_level, st.n_resamples, st.seed)
    return values.mean(axis=0), np.asarray(ci)


def _seed_spread(per_seed: pd.DataFrame, seeds: list[int]) -> tuple[dict, dict]:
    """Per-seed means (config order) and their sd (ddof=1; only with two or more seeds)."""
    per_seed = per_seed.reindex(seeds)
    values = {c: [float(v) for v in per_seed[c]] for c in per_seed.columns}
    sd = {c: float(np.nanstd(v, ddof=1)) for c, v in values.items() if len(v) > 1}
    return values, sd


def _mean_dicts(dicts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean over seeds (keys in first-seen order; a key may be absent on a seed)."""
    keys: list[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]
    out = {}
    for k in keys:
        vals = [float(d[k]) for d in dicts if k in d and d[k] is not None]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out


def _timings(runs: Sequence[SeedRun]) -> dict[str, float]:
    """Mean seconds per seed, the largest peak memory, and the total of resumed users."""
    out: dict[str, float] = {}
    for key in ("fit_s", "recommend_s"):
        vals = [r.timings[key] for r in runs if key in r.timings]
        if vals:
            out[key] = round(float(np.mean(vals)), 3)
    peaks = [r.timings["peak_rss_mb"] for r in runs if "peak_rss_mb" in r.timings]
    if peaks:
        out["peak_rss_mb"] = max(peaks)
    resumed = [r.timings["resumed_users"] for r in runs if "resumed_users" in r.timings]
    if resumed:
        out["resumed_users"] = int(sum(resumed))
    out["seeds"] = len(runs)
    return out


def summarize(runs: Sequence[SeedRun], cfg: EvalConfig) -> list[MethodResult]:
    """One :class:`MethodResult` per method (config order) from its runs over seeds."""
    table = per_user_table(runs)
    seeds = cfg.split.run_seeds()
    labels = list(dict.fromkeys(r.method for r in runs))
    if cfg.task == "rating":
        return [_summarize_rating(table, runs, label, seeds, cfg) for label in labels]
    results = [_summarize_ranking(table, runs, label, seeds, cfg) for label in labels]
    paired_tests(table, results, cfg)
    return results


def _summarize_ranking(
    table: pd.DataFrame, runs: Sequence[SeedRun], label: str, seeds: list[int], cfg: EvalConfig
) -> MethodResult:
    mine = [r for r in runs if r.method == label]
    rows = table[table["method"] == label]
    metrics = metric_columns(table)
    res = MethodResult(label, {}, {}, _timings(mine), _mean_dicts([r.stats for r in mine]))
    for group in ["all", *cohort_names(table)]:
        sel = rows if group == "all" else rows[rows[COHORT_PREFIX + group].astype(bool)]
        by_user = sel.groupby("user", sort=True)[metrics].mean()
        mean, ci = _mean_ci(by_user.to_numpy(dtype=np.float64), cfg)
        means = {m: float(v) for m, v in zip(metrics, mean, strict=True)}
        bounds = {m: [float(ci[0, j]), float(ci[1, j])] for j, m in enumerate(metrics)}
        if group == "all":
            res.overall, res.ci, res.n_users = means, bounds, len(by_user)
            res.seeds, res.seed_sd = _seed_spread(sel.groupby("seed")[metrics].mean(), seeds)
        else:
            res.cohorts[group] = {"users": len(by_user), **means}
            res.cohort_ci[group] = bounds
    beyond = pd.DataFrame([r.beyond for r in mine], index=[r.seed for r in mine])
    if len(beyond.columns):
        per_seed, sd = _seed_spread(beyond, seeds)
        res.overall.update({c: float(np.nanmean(v)) for c, v in per_seed.items()})
        res.seeds.update(per_seed)
        res.seed_sd.update(sd)
    return res


def paired_tests(table: pd.DataFrame, results: list[MethodResult], cfg: EvalConfig) -> None:
    """Test every method against the reference on per-user headline NDCG (sets ``.test``).

    The reference is ``stats.reference`` when given, else the method with the best mean
    headline NDCG. Per user, values are averaged over seeds; only users evaluated for both
    methods are paired. p-values are Holm-corrected over the tested methods; a difference is
    *significant* when the corrected paired-bootstrap p is below ``stats.alpha``.
    """
    metric = headline_metric(cfg)
    if metric not in table.columns or not results:
        return
    st = cfg.stats
    if st.reference is not None:
        ref = next(r for r in results if r.name == st.reference)
    else:
        ref = max(results, key=lambda r: np.nan_to_num(r.overall[metric], nan=-1.0))
    values = table.groupby(["method", "user"], sort=True)[metric].mean()
    ref_values = values.loc[ref.name]
    others = [r for r in results if r is not ref]
    tests = []
    for r in others:
        paired = pd.concat([values.loc[r.name], ref_values], axis=1, join="inner").to_numpy()
        x, y = paired[:, 0], paired[:, 1]
        tests.append(
            {
                "reference": ref.name,
                "metric": metric,
                "users": len(x),
                "diff": float((x - y).mean()),
                "p_bootstrap": S.paired_bootstrap_p(x, y, st.n_resamples, st.seed),
                "p_wilcoxon": S.wilcoxon_p(x, y),
            }
        )
    for key in ("p_bootstrap", "p_wilcoxon"):
        adjusted = S.holm([t[key] for t in tests])
        for t, p in zip(tests, adjusted, strict=True):
            t[f"{key}_holm"] = float(p)
    for r, t in zip(others, tests, strict=True):
        t["significant"] = bool(t["p_bootstrap_holm"] < st.alpha)
        r.test = t
    ref.test = {"reference": ref.name, "metric": metric, "is_reference": True}


def _summarize_rating(
    table: pd.DataFrame, runs: Sequence[SeedRun], label: str, seeds: list[int], cfg: EvalConfig
) -> MethodResult:
    mine = [r for r in runs if r.method == label]
    rows = table[table["method"] == label].assign(
        _abs=lambda f: f["pairs"] * f["MAE"], _sq=lambda f: f["pairs"] * f["RMSE"] ** 2
    )
    st = cfg.stats
    res = MethodResult(label, {}, {}, _timings(mine), _mean_dicts([r.stats for r in mine]))

    def pooled(frame: pd.DataFrame) -> dict[str, float]:
        n = frame["pairs"].sum()
        if not n:
            return {"pairs": 0, "MAE": math.nan, "RMSE": math.nan}
        return {
            "pairs": int(n),
            "MAE": float(frame["_abs"].sum() / n),
            "RMSE": float(math.sqrt(frame["_sq"].sum() / n)),
        }

    for group in ["all", *cohort_names(table)]:
        sel = rows if group == "all" else rows[rows[COHORT_PREFIX + group].astype(bool)]
        by_user = sel.groupby("user", sort=True)[["pairs", "_abs", "_sq"]].sum()
        by_user = by_user[by_user["pairs"] > 0]
        means = pooled(by_user)
        bounds: dict[str, list[float]] = {"MAE": [math.nan] * 2, "RMSE": [math.nan] * 2}
        if len(by_user):
            n = by_user["pairs"].to_numpy()
            args = (st.ci_level, st.n_resamples, st.seed)
            bounds["MAE"] = list(S.ratio_bootstrap_ci(by_user["_abs"].to_numpy(), n, *args))
            lo, hi = S.ratio_bootstrap_ci(by_user["_sq"].to_numpy(), n, *args)
            bounds["RMSE"] = [math.sqrt(lo), math.sqrt(hi)]
        if group == "all":
            res.overall, res.ci, res.n_users = means, bounds, len(by_user)
            per_seed = (
                pd.DataFrame({s: pooled(g) for s, g in sel.groupby("seed")})
                .T[["MAE", "RMSE"]]
                .astype(float)
            )
            res.seeds, res.seed_sd = _seed_spread(per_seed, seeds)
        else:
            res.cohorts[group] = {"users": len(by_user), **means}
            res.cohort_ci[group] = bounds
    return res


def fmt_ci(bounds: Sequence[float] | None) -> str:
    """``"[0.0571, 0.0901]"`` (or ``""`` when the interval is undefined)."""
    if not bounds or any(b is None or math.isnan(b) for b in bounds):
        return ""
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"


def describe_uncertainty(cfg: EvalConfig) -> str:
    """One sentence saying how CIs, seed spread and paired tests were computed."""
    st = cfg.stats
    seeds = cfg.split.run_seeds()
    text = (
        f"Brackets: {st.ci_level:.0%} percentile bootstrap CI of the mean over users "
        f"({st.n_resamples} resamples of users, seed {st.seed})"
    )
    if len(seeds) > 1:
        text += (
            f"; each user's value is first averaged over the {len(seeds)} split seeds, and"
            " ± is the sd of the per-seed means"
        )
    return text + "."
