"""Share of digit-leading titles in constrained top-10 lists, per beam scoring, vs the catalogue.

Constrained decoding with the raw sequence likelihood favours titles that start with digits
("2001: A Space Odyssey", "101 Dalmatians"): SmolLM2 splits numbers into single digits, and the
digits after the first are near-certain, so such titles collect many cheap tokens. This script
measures that share for the length-normalised score (`mean`, the default), the summed score
(`sum`, D3) and the summed score calibrated by domain-conditional PMI (`calibration: 1.0`), on
the first N users of the validation item (fit on train only), default model, zeroshot-v2,
history 20, k = 10, and prints the validation HR@10 of each (tiny at small N: indicative only).

    python benchmarks/bench_digit_bias.py --users 12
"""

from __future__ import annotations

import argparse
import time

import numpy as np

VARIANTS = {
    "mean": {},
    "sum": {"score": "sum"},
    "sum+pmi": {"score": "sum", "calibration": 1.0},
}


def main() -> None:
    """Run every variant on the same users and print one line each."""
    from llmrec_gen.data import load_dataset, split_dataset
    from llmrec_gen.llm.recommender import LLMRecommender

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=12)
    args = parser.parse_args()
    split = split_dataset(load_dataset("ml-100k"))
    train = split.fit_data("valid")
    users = list(split.valid["user_id"].unique()[: args.users])
    cat = train.catalog
    title = dict(zip(cat["item_id"], cat["title"], strict=True))
    print(f"catalogue digit share {np.mean([str(t)[:1].isdigit() for t in cat['title']]):.4f}")
    targets = split.valid.groupby("user_id")["item_id"].apply(set)
    for name, decoding in VARIANTS.items():
        start = time.time()
        rec = LLMRecommender(
            engine="transformers",
            prompt={"template": "zeroshot-v2", "history_len": 20},
            decoding={"mode": "constrained", **decoding},
        ).fit(train)
        out = rec.recommend(users, k=10)
        ids = np.concatenate(out.item_ids)
        share = np.mean([str(title[i])[:1].isdigit() for i in ids])
        pairs = zip(users, out.item_ids, strict=True)
        hr = np.mean([bool(targets[u] & set(o.tolist())) for u, o in pairs])
        print(f"{name} digit share {share:.3f} HR@10 {hr:.3f} {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
