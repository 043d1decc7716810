"""Reports of a finished evaluation: metrics.json, metrics.csv, report.md and metrics.png.

Tables are rendered from the results generically: whatever metrics, cohorts and method
statistics the run holds (the method's own summary, e.g. valid-title rates, lands in the
"Method statistics" table).
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


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(result: EvalResult, cfg: EvalConfig) -> str:
    """Methods x metrics tables: overall, per cohort, LLM grounding, timings."""
    p = result.protocol
    if cfg.task == "rating":
        return _rating_report(result, cfg)
    k = headline_k(cfg.ks)
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
    with_stats = [m for m in methods if m.stats]
    if with_stats:
        cols = _stat_columns(with_stats)
        out += [
            "## Method statistics",
            "",
            "Generators: rates are over all generated titles (valid = grounded to a catalogue"
            " item; seen = valid but already in the user's history); *without fill* scores only"
            " the items the model produced itself (fallback fills removed). Totals are in"
            " metrics.json.",
            "",
            _table(
                ["method", *cols],
                [[m.name, *[m.stats.get(c, math.nan) for c in cols]] for m in with_stats],
            ),
            "",
        ]
    tcols = ["fit_s", "recommend_s", "peak_rss_mb"]
    out += [
        "## Timings",
        "",
        _table(
            ["method", *tcols],
            [[m.name, *[m.timings.get(c, math.nan) for c in tcols]] for m in methods],
        ),
        "",
    ]
    return "\n".join(out)


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

    k = headline_k(cfg.ks)
    suffix = metric_suffix(cfg)
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
