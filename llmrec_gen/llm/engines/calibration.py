"""Content-free log-probabilities of every edge of a title trie, for calibrated title scores.

Domain-conditional PMI (Holtzman et al., 2021, "Surface Form Competition"): a title's score is
its log-probability after the user's prompt minus ``λ`` times its log-probability after a
*content-free* prompt (the same instructions, no history). Titles whose tokens are cheap for any
context — digit runs such as ``" 1", "0", "1"`` after a space — stop winning on form alone.

:func:`content_free_logprobs` teacher-forces every catalogue title (each with its EOS) after the
content-free prompt with a Hugging Face causal LM: the prompt is encoded once, its KV cache
repeated over a batch of titles, and each title's token log-probabilities are written to the
trie nodes they lead to (a node's value depends only on its prefix, so titles that share a
prefix agree). Computed once per catalogue trie and content-free prompt.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmrec_gen.llm.engines.constrained import TitleTrie


def title_token_paths(trie: TitleTrie) -> list[tuple[list[int], list[int]]]:
    """Per label of the base trie: its token ids (EOS included) and the node each leads to."""
    base = getattr(trie, "base", trie)
    token_of = np.zeros(base.n_nodes, dtype=np.int64)
    for children in base._children:
        for tok, child in children.items():
            token_of[child] = tok
    out = []
    for label in base.labels:
        nodes = []
        n = base.node_of(label)
        while n is not None and n > 0:
            nodes.append(n)
            n = base.parent(n)
        nodes.reverse()
        out.append(([int(token_of[n]) for n in nodes], nodes))
    return out


def content_free_logprobs(
    model: Any,
    prompt_ids: Sequence[int],
    trie: TitleTrie,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """log p(edge token | content-free prompt, prefix) for every node of ``trie``'s base.

    Args:
        model: a transformers causal LM (PEFT-wrapped or not), in eval mode.
        prompt_ids: the content-free prompt, tokenized exactly as real prompts are (its end is
            the anchor the trie was tokenized after).
        trie: a title trie or view (values are per base node).
        batch_size: titles per forward pass.
        device: the model's device.

    Returns:
        float32 array of length ``n_nodes`` (0 at the root).
    """
    import torch

    from llmrec_gen.llm.engines.packed import _cache_kwarg, base_model

    cache_arg = _cache_kwarg(type(base_model(model)))
    base = getattr(trie, "base", trie)
    out = np.zeros(base.n_nodes, dtype=np.float32)
    paths = [p for p in title_token_paths(base) if p[0]]
    with torch.inference_mode():
        ids = torch.tensor([list(prompt_ids)], device=device)
        first = model(input_ids=ids, use_cache=True)
        cache = first.past_key_values
        last = torch.log_softmax(first.logits[0, -1].float(), -1)
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            width = max(len(toks) for toks, _ in chunk)
            pad = chunk[0][0][-1]  # right padding never influences earlier positions
            x = torch.tensor(
                [toks + [pad] * (width - len(toks)) for toks, _ in chunk], device=device
            )
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(chunk))
            logits = model(input_ids=x, use_cache=True, **{cache_arg: past}).logits
            lp = torch.log_softmax(logits.float(), -1)
            for row, (toks, nodes) in enumerate(chunk):
                out[nodes[0]] = float(last[toks[0]])
                if len(toks) > 1:
                    tail = lp[row, : len(toks) - 1].gather(
                        -1, torch.tensor(toks[1:], device=device)[:, None]
                    )
                    out[nodes[1:]] = tail[:, 0].cpu().numpy()
    return out
