"""Fit every baseline on ML-100k leave-last-out and rank the full catalog for all users.

Prints, per method, the fit and recommend wall-clock seconds, their CPU seconds (summed over
threads, so less sensitive to other load) and NDCG@10 / HR@10 on the held-out test item (the
validation item with ``--target valid``, which the defaults were tuned on), then the totals.
Every baseline uses its documented defaults::

    python benchmarks/bench_baselines.py                      # all baselines, test target
    python benchmarks/bench_baselines.py --target valid       # the tuning target
    python benchmarks/bench_baselines.py --methods als,lightfm --k 20

Timings are wall-clock on whatever else the machine is doing; the 1-minute load average is
printed first so that a slow run on a busy machine can be recognised as such.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from llmrec_gen.data import load_dataset, split_dataset
from llmrec_gen.evaluation.metrics import mean_metrics, ranking_metrics
from llmrec_gen.recommenders.base import Capability
from llmrec_gen.registry import build_method, names

BASELINES = [n for n in names(Capability.RANK) if n != "llm"]


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", help="built-in name or path")
    parser.add_argument("--methods", default=",".join(BASELINES), help="comma-separated names")
    parser.add_argument("--target", choices=("test", "valid"), default="test")
    parser.add_argument("--k", type=int, default=10, help="cut-off for NDCG/HR")
    parser.add_argument("--seed", type=int, default=0, help="split seed (timestamp tie-break)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    start = time.perf_counter()
    split = split_dataset(load_dataset(args.dataset), "leave_last_out", seed=args.seed)
    train = split.fit_data(args.target)  # train (+ valid for the test target)
    targets = split.targets(args.target)
    users = train.user_ids.tolist()
    prep = time.perf_counter() - start
    print(
        f"{args.dataset}: {train.n_users} users x {train.n_items} items, "
        f"{len(train.interactions)} train interactions, {len(targets)} {args.target} targets "
        f"(load + split {prep:.1f}s)"
    )
    at = f"@{args.k}"
    header = f"{'method':<15}{'fit s':>8}{'rec s':>8}{'cpu s':>8}{'NDCG' + at:>10}{'HR' + at:>9}"
    print(header)
    print("-" * len(header))
    total_fit = total_rec = total_cpu = 0.0
    for name in names:
        c0, t0 = time.process_time(), time.perf_counter()
        rec = build_method(name).fit(train)
        t1 = time.perf_counter()
        recs = rec.recommend(users, k=args.k)
        t2, cpu = time.perf_counter(), time.process_time() - c0
        ranked = dict(zip(recs.user_ids, recs.item_ids, strict=True))
        evaluated = sorted(targets)
        per_user = ranking_metrics(
            [ranked[u] for u in evaluated], [targets[u] for u in evaluated], ks=(args.k,)
        )
        means = mean_metrics(per_user)
        total_fit, total_rec, total_cpu = total_fit + t1 - t0, total_rec + t2 - t1, total_cpu + cpu
        print(
            f"{name:<15}{t1 - t0:>8.2f}{t2 - t1:>8.2f}{cpu:>8.2f}"
            f"{means['NDCG' + at]:>10.4f}{means['HR' + at]:>9.4f}",
            flush=True,
        )
    print("-" * len(header))
    print(
        f"{'total':<15}{total_fit:>8.2f}{total_rec:>8.2f}{total_cpu:>8.2f}   "
        f"fit + recommend = {total_fit + total_rec:.1f}s wall for {len(names)} methods"
    )


if __name__ == "__main__":
    main()
