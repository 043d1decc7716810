"""One forward pass per prompt: the log-probabilities of chosen next tokens (LLM-as-ranker).

A verbalizer ranker labels its candidates "A", "B", ... in the prompt and reads the model's
next-token distribution at the answer position: no decoding, just the prompt's prefill. The
log-probabilities are the full-vocabulary ``log_softmax`` of the last position's logits, gathered
at the given token ids, exactly what a plain ``model(input_ids).logits`` gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmrec_gen.errors import EngineUnavailableError
from llmrec_gen.llm.adapters import AdapterRef
from llmrec_gen.llm.engines.base import Engine, Prompt


def next_token_logprobs(
    engine: Engine,
    prompts: Sequence[Prompt],
    token_ids: Sequence[int],
    adapter: AdapterRef | None = None,
    batch_size: int = 8,
) -> np.ndarray:
    """``(len(prompts), len(token_ids))`` log-probabilities of each token right after each prompt.

    Raises:
        EngineUnavailableError: the engine cannot score next tokens (e.g. a remote server).
    """
    if not prompts:
        return np.zeros((0, len(token_ids)))
    if engine.name == "transformers":
        return _transformers(engine, prompts, token_ids, adapter, batch_size)
    if engine.name == "vllm":
        return _vllm(engine, prompts, token_ids, adapter)
    raise EngineUnavailableError(
        f"engine '{engine.name}' cannot score next tokens: use transformers or vllm"
    )


def _transformers(
    engine: Any, prompts: Sequence[Prompt], token_ids: Sequence[int], adapter: Any, batch: int
) -> np.ndarray:
    import torch

    encoded = [engine.encode(p)[1] for p in prompts]
    ids = torch.tensor(list(token_ids), dtype=torch.long)
    out = np.zeros((len(prompts), len(token_ids)))
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    with engine._use_adapter(adapter), torch.inference_mode():
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            inputs = engine._pad_left([encoded[i] for i in idx])
            positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = engine._model(**inputs, position_ids=positions, logits_to_keep=1).logits
            logprobs = torch.log_softmax(logits[:, -1].float(), dim=-1)
            out[idx] = logprobs[:, ids.to(logprobs.device)].cpu().numpy()
    return out


def _vllm(engine: Any, prompts: Sequence[Prompt], token_ids: Sequence[int], adapter: Any):
    from vllm import SamplingParams

    inputs = [{"prompt_token_ids": engine.encode(p)[1]} for p in prompts]
    params = SamplingParams(
        max_tokens=1, temperature=0.0, logprob_token_ids=list(token_ids), detokenize=False
    )
    lora = engine._lora_request(adapter)
    outs = engine.llm.generate(inputs, params, lora_request=lora, use_tqdm=False)
    return np.asarray(
        [[o.outputs[0].logprobs[0][t].logprob for t in token_ids] for o in outs], dtype=np.float64
    )
