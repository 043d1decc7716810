"""Batched greedy generation over packed forward passes (free, unconstrained decoding).

:func:`packed_greedy` returns the tokens of Hugging Face ``generate(do_sample=False,
num_beams=1)`` without logits processors (first maximum on exact ties, as ``argmax``), but
prompts are packed without padding, the prefix they share is encoded once per run
(:class:`~llmrec_gen.llm.engines.packed.PrefixStore`), a prompt leaves the batch as soon as it
emits EOS or a stop string (``generate`` keeps computing finished rows until the whole batch is
done) and its KV row is handed to the next prompt (continuous batching).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrec_gen.llm.engines.packed import (
    Pass,
    PrefixStore,
    Runner,
    TreeKV,
    geometry,
    prepare_prefix,
    tree_attention_enabled,
)


@dataclass
class GreedyStats:
    """Where the time of :func:`packed_greedy` calls went (seconds, counts)."""

    prefix_s: float = 0.0
    forward_s: float = 0.0
    other_s: float = 0.0
    passes: int = 0
    prefill_tokens: int = 0
    shared_prefix_tokens: int = 0
    generated: int = 0
    rows_per_pass: list[int] = field(default_factory=list)


@dataclass
class _Row:
    index: int
    ids: list[int]
    out: list[int] = field(default_factory=list)
    row: int = -1
    logit_row: int = 0


def packed_greedy(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    eos_ids: Sequence[int],
    *,
    stopped: Callable[[list[int]], bool] | None = None,
    prefixes: PrefixStore | None = None,
    owner: Any = None,
    max_active: int = 16,
    max_pass_tokens: int = 1024,
    prefill_block: int = 128,
    stats: GreedyStats | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt (the EOS included when emitted).

    Args:
        model: a Hugging Face causal LM (see :mod:`~llmrec_gen.llm.engines.packed`).
        prompt_ids: token ids of each prompt.
        max_new_tokens: cap on generated tokens per prompt.
        eos_ids: tokens that end a continuation.
        stopped: ``stopped(tokens)`` is true once a continuation holds a stop string (checked
            after every token; the continuation then ends there).
        prefixes: where shared prompt prefixes are kept across calls.
        owner: what the model's KV depends on besides its weights (the active adapter).
        max_active: prompts decoded at once (one KV row each).
        max_pass_tokens: prompt tokens admitted into one forward pass (decode rows included).
        prefill_block: prompt tokens per causal attention block.
        stats: if given, timings and counts are added to it.

    Returns:
        The generated token ids of each prompt, in input order.
    """
    import torch

    stats = stats if stats is not None else GreedyStats()
    eos = frozenset(int(e) for e in eos_ids)
    rows = [_Row(i, [int(t) for t in ids]) for i, ids in enumerate(prompt_ids)]
    if not rows or max_new_tokens < 1:
        return [[] for _ in rows]
    geo = geometry(model)
    param = next(model.parameters())
    n_rows = min(max_active, len(rows))
    length = max(len(r.ids) for r in rows) + max_new_tokens
    with torch.inference_mode(), tree_attention_enabled(model):
        t0 = time.perf_counter()
        cache, covered, computed = prepare_prefix(
            model, geo, [r.ids for r in rows], prefixes or PrefixStore(), owner, prefill_block
        )
        stats.prefix_s += time.perf_counter() - t0
        stats.prefill_tokens += computed
        stats.shared_prefix_tokens += sum(covered)
        kv = TreeKV(geo, n_rows, length, param.dtype, param.device)
        runner = Runner(model, kv, geo)
        pending = deque(zip(rows, covered, strict=True))
        free = list(range(n_rows - 1, -1, -1))
        active: list[_Row] = []
        while pending or active:
            t0 = time.perf_counter()
            step = Pass(runner)
            for r in active:
                col = len(r.ids) + len(r.out) - 1
                visible = torch.zeros(1, col + 1, dtype=torch.bool)
                visible[0, :] = True  # a single sequence: everything before it, and itself
                r.logit_row = step.add_rows(r.row, [r.out[-1]], [col], col, visible)[0]
            while pending and free:
                nxt, first = pending[0]
                if step.tokens and len(step.tokens) + len(nxt.ids) - first > max_pass_tokens:
                    break
                pending.popleft()
                nxt.row = free.pop()
                kv.load_prefix(nxt.row, cache, first)
                nxt.logit_row = step.add_prompt(nxt.ids, nxt.row, first, prefill_block)
                stats.prefill_tokens += len(nxt.ids) - first
                active.append(nxt)
            t1 = time.perf_counter()
            logits = step.run()
            t2 = time.perf_counter()
            next_tokens = torch.argmax(logits, dim=-1).tolist()  # first maximum, as HF
            still = []
            for r in active:
                tok = next_tokens[r.logit_row]
                r.out.append(tok)
                if (
                    tok in eos
                    or len(r.out) >= max_new_tokens
                    or (stopped is not None and stopped(r.out))
                ):
                    free.append(r.row)
                else:
                    still.append(r)
            stats.generated += len(active)
            stats.rows_per_pass.append(len(active))
            active = still
            stats.passes += 1
            stats.forward_s += t2 - t1
            stats.other_s += (t1 - t0) + (time.perf_counter() - t2)
    return [r.out for r in rows]
