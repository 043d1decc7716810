"""SASRec (full-catalogue CE) on leave-last-out: epochs, minutes per epoch, HR@10 / NDCG@10.

The protocol of the evaluator: for ``--target test`` the model is fitted on train + each user's
validation item and ranks the full catalogue after the full history (history items excluded);
early stopping uses each user's last *fitted* item (carved inside ``fit``), never the target.
Per-epoch records (loss, internal validation NDCG@10, seconds) are printed and saved::

    python benchmarks/bench_sasrec.py --dataset ml-100k
    python benchmarks/bench_sasrec.py --dataset ml-1m --set lr=0.002 --set warmup_steps=200 \
        --set max_minutes=20 --out sasrec-ml1m.json

``--out F.json`` also draws the learning curve (internal validation NDCG@10 and loss per epoch)
into ``F.png``; ``--replot F.json`` redraws it from a saved result without training.
``--set key=value`` sets any :class:`~llmrec_gen.recommenders.sequential.SASRecConfig` field
(YAML-typed). Torch runs with ``num_threads`` (default 2) threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import families_data
import numpy as np

from llmrec_gen.config import parse_overrides
from llmrec_gen.data import split_dataset
from llmrec_gen.evaluation.metrics import mean_metrics, ranking_metrics
from llmrec_gen.recommenders.sequential import SASRec


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--target", choices=("valid", "test"), default="test")
    parser.add_argument("--set", action="append", default=[], help="SASRecConfig field=value")
    parser.add_argument("--out", default=None, help="write the result as JSON here (+ .png)")
    parser.add_argument("--replot", default=None, help="redraw the PNG of a saved JSON result")
    args = parser.parse_args()
    if args.replot:
        with open(args.replot) as fh:
            plot_history(json.load(fh), os.path.splitext(args.replot)[0] + ".png")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    split = split_dataset(families_data.load(args.dataset), "leave_last_out", seed=0)
    train = families_data.fit_data(split, args.target)
    targets = split.targets(args.target)
    rec = SASRec(parse_overrides(args.set))
    t0 = time.perf_counter()
    rec.fit(train)
    fit_min = (time.perf_counter() - t0) / 60
    users = sorted(targets)
    t1 = time.perf_counter()
    recs = rec.recommend(users, k=10)
    rec_s = time.perf_counter() - t1
    per_user = ranking_metrics(recs.item_ids, [targets[u] for u in users], ks=(10,))
    means = mean_metrics(per_user)
    hist = rec.history_
    best = max(hist, key=lambda r: r.get("valid_ndcg@10", -1.0))
    result = {
        "dataset": args.dataset,
        "target": args.target,
        "config": rec.get_params(),
        "epochs_run": len(hist),
        "best_epoch": best["epoch"],
        "fit_min": round(fit_min, 2),
        "min_per_epoch": round(float(np.mean([r["epoch_s"] for r in hist])) / 60, 3),
        "recommend_s": round(rec_s, 1),
        "HR@10": round(means["HR@10"], 4),
        "NDCG@10": round(means["NDCG@10"], 4),
        "users": len(users),
        "history": hist,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
        plot_history(result, os.path.splitext(args.out)[0] + ".png")


def plot_history(result: dict, path: str) -> None:
    """Internal validation NDCG@10 and training loss per epoch, with the test result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    epochs = [r["epoch"] for r in hist]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["valid_ndcg@10"] for r in hist], label="internal validation NDCG@10")
    ax.axhline(result["NDCG@10"], ls="--", c="gray", label=f"test NDCG@10 {result['NDCG@10']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NDCG@10")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["loss"] for r in hist], c="tab:red", alpha=0.5, label="train loss")
    ax2.set_ylabel("loss")
    runs = f"{result['epochs_run']} epochs, {result['fit_min']} min"
    ax.set_title(f"SASRec on {result['dataset']}: {runs}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
