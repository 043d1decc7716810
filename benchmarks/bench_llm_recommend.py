"""Seconds per user of the LLM recommender (constrained and free top-10) on ML-100k, and where
they go, against the matmul ceiling measured in the same run.

Run (default model, zero-shot prompt, history 20, k = 10, 8 seeded users after a warm-up user;
~1-3 min on 2 cores; ``--compare-hf`` adds the old ``generate`` path, ~1 min more)::

    python benchmarks/bench_llm_recommend.py
    python benchmarks/bench_llm_recommend.py --compare-hf --free      # ratios to the old path
    python benchmarks/bench_llm_recommend.py --template fewshot-v1 --n-demos 2
    python benchmarks/bench_llm_recommend.py --adapter bundled:ml-100k --threads 1

Everything goes through ``LLMRecommender.recommend`` on the leave-last-out train split, as in an
evaluation. Printed: s/user, the breakdown of the constrained path (prompt encoding and trie
views, shared-prefix and prompt passes, beam-only passes, log-softmax, trie/top-k/beam rules,
pass plans and masks, grounding and the rest of ``recommend``), the model FLOPs done per user
and the 2048x2048 fp32 matmul GFLOP/s (mean of a measurement before and after). The last line
is ``seconds_per_user=<x> ceiling_gflops=<y> gflop_equiv_per_user=<x*y>`` for constrained top-10:
seconds x ceiling, comparable across loaded and quiet machines of different speeds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

import numpy as np


def matmul_gflops(n: int = 2048, reps: int = 5, dtype: str = "float32") -> float:
    """GFLOP/s of an ``n x n`` matmul with the current torch threads."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, dtype=getattr(torch, dtype))
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def cpu_description() -> str:
    """Torch's CPU capability and the SIMD/AMX flags that matter for dtype choice."""
    from llmrec_gen.llm.models import cpu_features

    f = cpu_features()
    return f"{f.capability}; flags: {' '.join(sorted(f.flags)) or 'none'}; model: {f.model}"


def model_flops(engine: Any, prompt_tokens: int, logit_rows: int, decode_rows: int) -> float:
    """Model GFLOP of the forward passes: 2 x weights x tokens (+ the LM head where logits
    are computed); attention over the context is small at these lengths and left out."""
    cfg = engine._base.config
    embed = cfg.vocab_size * cfg.hidden_size
    n_params = sum(p.numel() for p in engine._base.parameters())
    body = n_params - embed * (1 if cfg.tie_word_embeddings else 2)
    return 2 * (body * (prompt_tokens + decode_rows) + embed * (logit_rows + decode_rows)) / 1e9


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="timed users (seeded)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--template", default="zeroshot-v1")
    parser.add_argument("--n-demos", type=int, default=0, help="few-shot demonstrations")
    parser.add_argument("--history-len", type=int, default=20)
    parser.add_argument("--adapter", default=None, help="e.g. bundled:ml-100k")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--free", action="store_true", help="also free list (greedy) top-10")
    parser.add_argument("--compare-hf", action="store_true", help="also the old generate path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from llmrec_gen.data import load_dataset, split_dataset
    from llmrec_gen.llm.recommender import _GENERATIONS, LLMRecommender

    if args.threads:
        torch.set_num_threads(args.threads)
    train = split_dataset(load_dataset("ml-100k")).train
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(np.asarray(train.user_ids), args.users + 1, replace=False).tolist()
    warm, users = picked[:1], picked[1:]
    prompt = {"template": args.template, "history_len": args.history_len, "n_demos": args.n_demos}
    params: dict[str, Any] = {
        "engine": "transformers",
        "adapter": args.adapter,
        "prompt": prompt,
        "batch_size": args.users,
        "engine_kwargs": {"dtype": args.dtype, "batch_size": args.users},
    }
    rec = LLMRecommender(params, decoding={"mode": "constrained"}).fit(train)
    engine = rec.engine_
    print(
        f"load {os.getloadavg()[0]:.2f}; torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, {engine.dtype}; CPU {cpu_description()}"
    )
    print(
        f"{args.users} ML-100k users, {args.template} (history {args.history_len}, demos "
        f"{args.n_demos}), adapter {args.adapter}, k={args.k}"
    )
    ceil_before = matmul_gflops()
    rec.recommend(warm, args.k)  # warm-up: tokenizes the catalogue, builds its trie
    engine.search_stats.__init__()
    new, wall = timed(rec.recommend, users, args.k)
    stats = engine.search_stats
    ceiling = (ceil_before + matmul_gflops()) / 2
    n = len(users)
    per_user = wall / n
    ms = 1e3 / n
    engine_s = stats.total_s
    print(f"constrained top-{args.k}: {per_user:.3f} s/user")
    print(
        "  per user (ms): prompt encoding + trie views "
        f"{stats.prepare_s * ms:.0f}, shared prefix {stats.prefix_s * ms:.0f}, "
        f"prompt passes {stats.prefill_s * ms:.0f} "
        f"({stats.prefill_tokens / n:.0f} tok/user encoded, "
        f"{stats.shared_prefix_tokens / n:.0f} from the shared prefix), beam-only passes "
        f"{stats.decode_s * ms:.0f} ({stats.rows / n:.0f} beam rows/user), log-softmax "
        f"{stats.normalise_s * ms:.0f}, trie/top-k/beam rules {stats.select_s * ms:.0f}, "
        f"pass plans + masks {stats.plan_s * ms:.0f}, grounding + recommend + other "
        f"{(wall - engine_s) * ms:.0f}"
    )
    gflop = model_flops(engine, stats.prefill_tokens, stats.prompts, stats.rows) / n
    print(
        f"  model work {gflop:.0f} GFLOP/user = {gflop / ceiling:.2f} s at the ceiling "
        f"({100 * gflop / ceiling / per_user:.0f} % of it); {stats.passes} passes, "
        f"rows per pass {stats.rows_per_pass}"
    )
    if args.compare_hf:
        engine._packed = False
        try:
            old, old_wall = timed(rec.recommend, users, args.k)
        finally:
            engine._packed = None
        same = sum(
            a.tolist() == b.tolist() for a, b in zip(old.item_ids, new.item_ids, strict=True)
        )
        print(
            f"old generate path: {old_wall / n:.3f} s/user; speed-up {old_wall / wall:.2f}x; "
            f"identical top-{args.k} lists {same}/{n}"
        )
    if args.free:
        free = LLMRecommender(params, decoding={"mode": "list"}).fit(train)
        free.recommend(warm, args.k)
        _GENERATIONS.clear()  # greedy generations are memoised per process: time real work
        out, free_wall = timed(free.recommend, users, args.k)
        print(f"free list top-{args.k}: {free_wall / n:.3f} s/user (greedy, packed)")
        if args.compare_hf:
            engine._packed = False
            _GENERATIONS.clear()
            try:
                old_free, old_free_wall = timed(free.recommend, users, args.k)
            finally:
                engine._packed = None
            same = sum(a == b for a, b in zip(old_free.texts, out.texts, strict=True))
            print(
                f"free list, old generate path: {old_free_wall / n:.3f} s/user; speed-up "
                f"{old_free_wall / free_wall:.2f}x; identical texts {same}/{n}"
            )
    print(
        f"seconds_per_user={per_user:.3f} ceiling_gflops={ceiling:.0f} "
        f"gflop_equiv_per_user={per_user * ceiling:.0f}"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
