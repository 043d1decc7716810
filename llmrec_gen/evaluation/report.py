"""Reports of a finished evaluation: metrics.json, metrics.csv, report.md and metrics.png.

Tables are rendered from the results generically: whatever metrics, cohorts and method
statistics the run holds (the method's own summary, e.g. valid-title rates, lands in the
"Method statistics" table). Every report opens with the protocol (split, seeds, target, what
was fit on, ranking, seen-item exclusion, users) and gives each mean with its bootstrap CI, the
spread over seeds, and the paired test against the reference method; tables computed on a user
sample say so in their heading.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmrec_gen.evaluation.config import EvalConfig
from llmrec_gen.evaluation.results import EvalResult, results_frame
from llmrec_gen.evaluation.scoring import headline_k, metric_suffix
from llmrec_gen.evaluation.summary import describe_uncertainty, fmt_ci
from llmrec_gen.io import atomic_write_bytes, atomic_write_json, atomic_write_text


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


def _fmt_p(p: float) -> str:
    """A p-value: 4 decimals, or 2 significant digits below 0.001 (never a bare 0.0000)."""
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.4f}" if p >= 0.001 else f"{p:.1e}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(m: Any, metric: str, cohort: str | None = None) -> str:
    """``mean ± seed-sd [CI]`` of one metric (sd only with several seeds)."""
    if cohort is None:
        mean, ci, sd = m.overall.get(metric, math.nan), m.ci.get(metric), m.seed_sd.get(metric)
    else:
        mean, ci, sd = m.cohorts[cohort].get(metric, math.nan), None, None
        ci = m.cohort_ci.get(cohort, {}).get(metric)
    text = _fmt(float(mean))
    if sd is not None and not math.isnan(sd):
        text += f" ± {sd:.4f}"
    bounds = fmt_ci(ci)
    return f"{text} {bounds}" if bounds else text


def _sample_label(cfg: EvalConfig, p: dict[str, Any]) -> str:
    """`` — seeded sample of N users`` for tables computed on a user sample (else empty)."""
    if cfg.user_sample is None:
        return ""
    return f" — seeded sample of {p['users_evaluated']} users (user_sample={cfg.user_sample})"


def protocol_lines(result: EvalResult, cfg: EvalConfig) -> list[str]:
    """The report's protocol paragraph: split, target, fit data, ranking, users, seeds."""
    p = result.protocol
    seeds = p.get("seeds", [p["seed"]])
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    users = (
        f"a **seeded sample of {p['users_evaluated']} users** (`user_sample: {cfg.user_sample}`)"
        if cfg.user_sample
        else f"all {p['users_evaluated']} users with a positive `{p['target']}` item"
    )
    lines = [
        "## Protocol",
        "",
        f"- Dataset `{p['dataset']}`; split `{p['protocol']}`, {seed_text}"
        f" (held-out order: {p['tie_break']}).",
        f"- Target `{p['target']}`; every method is fit on **{p['fit_on']}**; that fit data is"
        " also the history prompts are built from, and cohorts are computed from it.",
    ]
    if cfg.task == "rating":
        lines.append(f"- Rating prediction (MAE/RMSE) for every held-out pair of {users}.")
    else:
        lines += [
            f"- Ranking: **{p['ranking']}**"
            + (" (the whole catalogue)" if p["ranking"] == "full-catalog" else "")
            + "; the user's fit items (seen items) are excluded.",
            f"- Users: {users}.",
            "- Positives: "
            + (
                "every held-out interaction."
                if p.get("min_rating") is None
                else f"held-out interactions rated >= {p['min_rating']:g}."
            ),
        ]
    if p.get("cold_item_fraction"):
        removed = ", ".join(str(s["cold_items_removed"]) for s in p["per_seed"])
        lines.append(
            f"- Cold items: a seeded {p['cold_item_fraction']:.0%} of the items with interactions"
            f" ({removed} per seed) is removed from the fit data entirely; users whose target is"
            " such an item form the `cold-item-target` cohort, the others `warm-item-target`."
        )
    if p.get("cold_start_fraction"):
        lines.append(
            f"- Simulated cold-start users: a seeded {p['cold_start_fraction']:.0%} of users keep"
            f" only their last {p['cold_start_keep']} fit interactions."
        )
    lines += [f"- {describe_uncertainty(cfg)}", ""]
    return lines


def markdown_report(result: EvalResult, cfg: EvalConfig) -> str:
    """Methods x metrics tables with CIs: protocol, overall, paired tests, cohorts, timings."""
    p = result.protocol
    if cfg.task == "rating":
        return _rating_report(result, cfg)
    k = headline_k(cfg.ks)
    methods = result.methods
    label = _sample_label(cfg, p)
    out = [f"# {cfg.name}", "", *protocol_lines(result, cfg)]
    ranking = [c for c in methods[0].ci]
    # all metrics at the headline cutoff, HR/NDCG at the others (the CSV/JSON have everything)
    main = [
        c for c in ranking if f"@{k}" in c.split(" ")[0] and c.split("@")[1].split(" ")[0] == str(k)
    ]
    main += [c for c in ranking if c not in main and c.startswith(("HR@", "NDCG@"))]
    tested = [m for m in methods if m.test]
    ref = next((m.test["reference"] for m in tested), None)
    head = ["method", *main] + ([f"vs {ref}"] if ref else [])

    def verdict(m: Any) -> list[str]:
        if not ref:
            return []
        if m.test.get("is_reference"):
            return ["reference"]
        return ["**significant**" if m.test.get("significant") else "n.s."]

    out += [
        f"## Overall{label}",
        "",
        _table(head, [[m.name, *[_cell(m, c) for c in main], *verdict(m)] for m in methods]),
        "",
    ]
    if ref:
        metric = tested[0].test["metric"]
        rows = [
            [
                m.name,
                f"{m.test['diff']:+.4f}",
                _fmt_p(m.test["p_bootstrap_holm"]),
                _fmt_p(m.test["p_wilcoxon_holm"]),
                "yes" if m.test["significant"] else "no",
            ]
            for m in methods
            if not m.test.get("is_reference")
        ]
        out += [
            f"## Paired tests vs `{ref}` ({metric} per user){label}",
            "",
            f"Reference: {'`stats.reference`' if cfg.stats.reference else 'the best mean'}"
            f" {metric}. Per user, values are averaged over seeds and paired on the same users;"
            " p-values are Holm-corrected over the methods tested. *Significant*: corrected"
            f" paired-bootstrap p < {cfg.stats.alpha:g} ({cfg.stats.n_resamples} resamples;"
            " smallest possible p ="
            f" {1 / (1 + cfg.stats.n_resamples):.4f}); the Wilcoxon signed-rank p (zero"
            " differences dropped) is shown as a check.",
            "",
            _table(
                ["method", f"Δ{metric}", "p bootstrap (Holm)", "p Wilcoxon (Holm)", "significant"],
                rows,
            ),
            "",
        ]
    beyond = [f"Coverage@{k}", f"ARP@{k}", f"APLT@{k}", f"Novelty@{k}"]
    out += [
        f"## Beyond accuracy{label}",
        "",
        "List-level metrics: mean" + (" ± sd over seeds." if len(p["seeds"]) > 1 else "."),
        "",
        _table(["method", *beyond], [[m.name, *[_cell(m, c) for c in beyond]] for m in methods]),
        "",
    ]
    ndcg = next((c for c in main if c.startswith(f"NDCG@{k}")), main[0])
    hr = next((c for c in main if c.startswith(f"HR@{k}")), main[0])
    cohort_names = list(methods[0].cohorts)
    header = ["method"] + [f"{c} {hr} / {ndcg}" for c in cohort_names]
    rows = [
        [
            m.name,
            *[
                f"{_fmt(m.cohorts[c][hr])} / {_fmt(m.cohorts[c][ndcg])}"
                + (f" {fmt_ci(m.cohort_ci[c][ndcg])}" if fmt_ci(m.cohort_ci[c][ndcg]) else "")
                for c in cohort_names
            ],
        ]
        for m in methods
    ]
    sizes = ", ".join(f"{c}: {methods[0].cohorts[c]['users']}" for c in cohort_names)
    out += [
        f"## Cohorts{label}",
        "",
        f"Users per cohort (distinct over seeds): {sizes}. Brackets: the {ndcg} CI.",
        "",
        _table(header, rows),
        "",
    ]
    with_stats = [m for m in methods if m.stats]
    if with_stats:
        cols = _stat_columns(with_stats)
        out += [
            f"## Method statistics{label}",
            "",
            "Generators: rates are over all generated titles (valid = grounded to a catalogue"
            " item; seen = valid but already in the user's history); *without fill* scores only"
            " the items the model produced itself (fallback fills removed). Mean over seeds;"
            " totals are in metrics.json.",
            "",
            _table(
                ["method", *cols],
                [[m.name, *[m.stats.get(c, math.nan) for c in cols]] for m in with_stats],
            ),
            "",
        ]
    out += _timings_table(methods)
    return "\n".join(out)


def _timings_table(methods: list[Any]) -> list[str]:
    tcols = ["fit_s", "recommend_s", "peak_rss_mb"]
    return [
        "## Timings",
        "",
        "Seconds per seed (mean over seeds); peak resident memory of the whole process.",
        "",
        _table(
            ["method", *tcols],
            [[m.name, *[m.timings.get(c, math.nan) for c in tcols]] for m in methods],
        ),
        "",
    ]


def _stat_columns(methods: list[Any]) -> list[str]:
    """Rates and "without fill" metrics of the methods' statistics, in first-seen order."""
    cols: list[str] = []
    for m in methods:
        for key in m.stats:
            if (key.endswith("_rate") or "without fill" in key) and key not in cols:
                cols.append(key)
    return cols


def _rating_report(result: EvalResult, cfg: EvalConfig) -> str:
    p = result.protocol
    methods = result.methods
    cohorts = list(methods[0].cohorts)
    label = _sample_label(cfg, p)
    out = [
        f"# {cfg.name}",
        "",
        *protocol_lines(result, cfg),
        f"## Rating errors{label}",
        "",
        "MAE and RMSE are pooled over the held-out (user, item) pairs; brackets: bootstrap CI"
        " resampling users.",
        "",
        _table(
            ["method", "MAE", "RMSE", *[f"{c} MAE / RMSE" for c in cohorts]],
            [
                [
                    m.name,
                    _cell(m, "MAE"),
                    _cell(m, "RMSE"),
                    *[
                        f"{_fmt(m.cohorts[c]['MAE'])} / {_fmt(m.cohorts[c]['RMSE'])}"
                        for c in cohorts
                    ],
                ]
                for m in methods
            ],
        ),
        "",
        *_timings_table(methods),
    ]
    return "\n".join(out)


def plot_metrics(result: EvalResult, cfg: EvalConfig, path: Path) -> None:
    """Bar chart of HR@k and NDCG@k per method, overall and per populated cohort, with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = headline_k(cfg.ks)
    suffix = metric_suffix(cfg)
    names = [m.name for m in result.methods]
    groups = ["all", "head-target", "tail-target", "cold-item-target", "cold-users"]
    if cfg.task == "rating":
        groups, metrics = ["all", "cold-users", "warm-users"], ("MAE", "RMSE")
    else:
        metrics = (f"HR@{k}{suffix}", f"NDCG@{k}{suffix}")
    first = result.methods[0]
    groups = [g for g in groups if g == "all" or first.cohorts.get(g, {}).get("users")]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(names) + 4), 4.5), sharey=False)
    for ax, metric in zip(axes, metrics, strict=True):
        width = 0.8 / len(groups)
        x = np.arange(len(names))
        for g, group in enumerate(groups):
            vals, err = [], []
            for m in result.methods:
                mean = (m.overall if group == "all" else m.cohorts[group]).get(metric, math.nan)
                ci = (m.ci if group == "all" else m.cohort_ci.get(group, {})).get(metric)
                vals.append(mean)
                lo, hi = ci if ci else (mean, mean)
                err.append((mean - lo, hi - mean))
            yerr = np.nan_to_num(np.asarray(err, dtype=float).T, nan=0.0).clip(min=0)
            ax.bar(x + g * width, vals, width, yerr=yerr, capsize=2, label=group)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=30, ha="right")
        ax.set_title(metric)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{cfg.name}: {result.protocol['ranking']} ranking, "
        f"{result.protocol['users_evaluated']} users"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
