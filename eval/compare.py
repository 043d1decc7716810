"""Paired comparison of any two methods of a finished run, recomputed from its per_user.csv.

A run's report tests every method against one reference; this script tests any pair, e.g. an
LLM fusion against its CF part alone, with the evaluator's own statistics (per-user values
averaged over split seeds, 95 % percentile bootstrap CI of the mean difference and the
two-sided paired-bootstrap p, 10 000 user resamples, seed 0; its smallest value is
1/10 001) and prints a Markdown table:

    python eval/compare.py runs/ml100k-generative-c8633715 --metric NDCG@10 [--cohort tail-target] \
        "llm-free (full ranking + ALS)|als" "llm-ranker over ALS top-20 (zero-shot)|als"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from llmrec_gen.evaluation.significance import bootstrap_ci, paired_bootstrap_p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("pairs", nargs="+", help='"method A|method B" (tests A - B)')
    ap.add_argument("--metric", default="NDCG@10")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--cohort", help="only the users of this cohort (e.g. cold-item-target)")
    args = ap.parse_args(argv)
    path = args.run_dir / "per_user.csv"
    if not path.is_file():
        print(f"error: {path} not found (a finished run directory has it)", file=sys.stderr)
        return 2
    per_user = pd.read_csv(path)
    if args.metric not in per_user.columns:
        print(f"error: no metric {args.metric!r} in {path}", file=sys.stderr)
        return 2
    if args.cohort:
        column = f"cohort:{args.cohort}"
        if column not in per_user.columns:
            print(f"error: no cohort {args.cohort!r} in {path}", file=sys.stderr)
            return 2
        per_user = per_user[per_user[column].astype(bool)]
    table = per_user.groupby(["method", "user"])[args.metric].mean().unstack(0)
    print(f"| method | vs | Δ {args.metric} | 95 % CI | p (paired bootstrap) | users |")
    print("|---|---|---|---|---|---|")
    for pair in args.pairs:
        a, sep, b = pair.partition("|")
        missing = [m for m in (a, b) if m not in table.columns]
        if not sep or missing:
            print(f"error: {pair!r}: need 'A|B' with methods of the run {missing}", file=sys.stderr)
            return 2
        both = table[[a, b]].dropna()
        diff = (both[a] - both[b]).to_numpy()
        lo, hi = bootstrap_ci(diff, n_resamples=args.resamples)
        p = paired_bootstrap_p(both[a].to_numpy(), both[b].to_numpy(), args.resamples)
        ci = f"[{lo:+.4f}, {hi:+.4f}]"
        print(f"| {a} | {b} | {diff.mean():+.4f} | {ci} | {p:.2g} | {len(diff)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
