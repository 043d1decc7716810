"""Training throughput of the CPU LoRA SFT recipe: tokens/s and share of the matmul ceiling,
float32 against bfloat16 (only where the CPU runs bf16 natively), in one run.

Runs ``train_sft`` (TRL ``SFTTrainer`` + PEFT LoRA) of ``finetune/configs/ml100k-smollm2-lora``
for ``--steps`` optimizer steps per dtype into a temporary directory, times every step after the
first (warm-up), and prints per dtype: s/step, training tokens/s, the model GFLOP/s it achieves
(forward ``2·N·T`` + backward through frozen weights ``2·N·T`` = ``4·N·T`` for LoRA; full
fine-tuning would be ``6·N·T``) against the 2048² matmul GFLOP/s of that dtype measured in the
same run, and the training loss of each step (bf16 must track fp32). The last line is the ratio
``bf16_speedup=<fp32 s/step ÷ bf16 s/step>``::

    python benchmarks/bench_sft.py --steps 4          # ~5-10 min on 2 cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_llm_recommend import matmul_gflops  # same folder: the one ceiling measurement


def run(dtype: str, steps: int, out: Path) -> dict[str, Any]:
    """Train ``steps`` steps in ``dtype``; step times, tokens and losses."""
    from transformers import TrainerCallback

    from llmrec_gen.llm.finetune.config import load_finetune_config
    from llmrec_gen.llm.finetune.train import train_sft

    times: list[float] = []
    tokens: list[int] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            self.seen = state.num_input_tokens_seen

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            times.append(time.perf_counter() - self.t0)
            tokens.append(state.num_input_tokens_seen - self.seen)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    config = load_finetune_config(
        "finetune/configs/ml100k-smollm2-lora.yaml",
        {
            "dtype": dtype,
            "output_dir": str(out / dtype),
            "eval_on_start": False,
            "max_eval_samples": 1,
            "training.max_steps": steps,
            "training.logging_steps": 1,
            "training.save_steps": 10_000,
            "training.include_num_input_tokens_seen": True,
        },
    )
    train_sft(config, callbacks=[Clock()])
    return {"times": times, "tokens": tokens, "losses": losses}


def main() -> None:
    """Run both dtypes (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per dtype (>= 2)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from llmrec_gen.llm.models import cpu_features, resolve_model

    n_params = AutoModelForCausalLM.from_pretrained(resolve_model("default")).num_parameters()
    feats = cpu_features()
    dtypes = ["float32"] + (["bfloat16"] if feats.native_bf16 else [])
    print(f"CPU {feats.capability}; flags {' '.join(sorted(feats.flags))}; dtypes {dtypes}")
    per_step: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            ceiling = matmul_gflops(dtype=dtype)
            r = run(dtype, max(2, args.steps), Path(tmp))
            t = r["times"][1:] or r["times"]
            n_tok = r["tokens"][1:] or r["tokens"]
            s_step = sum(t) / len(t)
            tok_s = sum(n_tok) / sum(t)
            achieved = 4 * n_params * tok_s / 1e9
            per_step[dtype] = s_step
            print(
                f"{dtype}: {s_step:.2f} s/step, {tok_s:.0f} tokens/s, {achieved:.0f} GFLOP/s "
                f"(4·N·T) = {100 * achieved / ceiling:.0f} % of the {ceiling:.0f} GFLOP/s {dtype} "
                f"matmul ceiling; losses {[round(x, 4) for x in r['losses']]}"
            )
    if "bfloat16" in per_step:
        print(f"bf16_speedup={per_step['float32'] / per_step['bfloat16']:.2f}")
    else:
        print("bf16_speedup=n/a (no native bf16 on this CPU)")


if __name__ == "__main__":
    main()
