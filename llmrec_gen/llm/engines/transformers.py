"""In-process inference with Hugging Face transformers (CPU or one GPU), batched.

Build once, then call in batches (same contract as the vLLM engine)::

    from llmrec_gen.llm.engines import GenerationParams, make_engine
    engine = make_engine("transformers", model="default", batch_size=8)
    outs = engine.generate([[{"role": "user", "content": "Recommend 3 movies."}]],
                           GenerationParams(max_new_tokens=64))
    recs = engine.generate_constrained(prompts, allowed=[catalog_titles], k=10)

Constrained decoding and greedy generation run on packed forward passes over a per-prompt KV
cache (:mod:`~llmrec_gen.llm.engines.trie_beam`, :mod:`~llmrec_gen.llm.engines.greedy`): the
same results as Hugging Face ``generate`` at a fraction of the work, and the prompt prefix all
users share is encoded once per run. Beam search and sampling use ``generate``, in batches
left-padded and sorted by prompt length; so do models the packed passes cannot run (checked
once per engine, see :func:`~llmrec_gen.llm.engines.packed.self_test`). Only our own generation
settings apply: a model's shipped ``generation_config`` (sampling, top-k, penalties, suppressed
tokens) is replaced at load. Chat-message prompts go through the model's chat template with the
generation prompt appended. LoRA adapters are loaded with PEFT on first use and cached by path;
``adapter=None`` runs the base model (adapters disabled), unless the engine was built with a
default ``adapter``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.adapters import AdapterRef, check_targets
from llmrec_gen.llm.engines.base import ConstrainedGeneration, Generation, GenerationParams, Prompt
from llmrec_gen.llm.engines.constrained import ROOT, TitleTrie
from llmrec_gen.llm.engines.greedy import GreedyStats, packed_greedy
from llmrec_gen.llm.engines.local import LocalEngine
from llmrec_gen.llm.engines.packed import PrefixStore, self_test
from llmrec_gen.llm.engines.trie_beam import (
    Bias,
    ScoreMode,
    SearchStats,
    as_bias_fn,
    length_penalty_of,
    trie_beam_search,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

logger = logging.getLogger(__name__)

_SELF_TEST_TOLERANCE = 1e-3  # max |logit difference| of a packed pass vs a plain forward pass
# Prompts decoded together on packed passes when a call brings more than ``batch_size``: more rows
# per pass read the weights once for more tokens (decoding on CPU is memory-bound). Measured on
# 2 cores: constrained top-10 0.99 s/user with 8 prompts in flight, 0.80-0.90 with 32; greedy
# lists 1.8 s/user with 16. A beam-search row holds ~30 MB of KV (SmolLM2-135M, fp32), a greedy
# row ~10 MB.
BEAM_ROWS = 32
GREEDY_ROWS = 64


class TransformersEngine(LocalEngine):
    """Hugging Face ``generate`` behind the :class:`~llmrec_gen.llm.engines.base.Engine` contract.

    Args:
        model: ``"default"`` (SmolLM2-135M-Instruct), a local HF model directory or a Hub id
            (resolved by :func:`llmrec_gen.llm.models.resolve_model`).
        device: ``"auto"`` (CUDA if available, else CPU) or a torch device string.
        dtype: ``"auto"`` (fp32 on CPU, bf16/fp16 on CUDA) or ``float32``/``bfloat16``/``float16``.
        batch_size: prompts per forward batch (beam search multiplies the rows by the beam
            width); 8 is a good CPU default, 32-128 on a GPU.
        adapter: LoRA adapter directory used whenever a call passes ``adapter=None``; with the
            default ``None`` such calls run the base model.

    Attributes:
        model_path: the resolved model directory.
        device: the torch device string in use.
        dtype: the torch dtype in use.
        tokenizer: the Hugging Face tokenizer (left padding).
    """

    name = "transformers"

    def __init__(
        self,
        model: str = "default",
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        adapter: str | AdapterRef | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        from transformers import AutoModelForCausalLM

        from llmrec_gen.llm.models import pick_device, pick_dtype, quiet_transformers

        super().__init__(model, adapter)
        self.device: str = pick_device(device)
        self.dtype: torch.dtype = pick_dtype(self.device, dtype)
        self.batch_size = int(batch_size)
        with quiet_transformers():
            base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        self._base = base.to(self.device).eval()
        # Our settings only: generate() fills every unset field from the model's config.
        self._base.generation_config = self._generation_config()
        self._model: Any = self._base  # becomes a PeftModel once an adapter is loaded
        self._adapters: dict[str, str] = {}  # resolved adapter dir -> PEFT adapter name
        self._owner: str | None = None  # the active adapter's directory (what the KV depends on)
        self._stop_ids: dict[tuple[str, ...], tuple[int, ...]] = {}  # stop strings -> token ids
        self._packed: bool | None = None  # packed passes work for this model (checked once)
        self._prefixes = PrefixStore()  # shared prompt prefixes, kept across calls
        self.search_stats = SearchStats()  # constrained decoding, all calls added up
        self.greedy_stats = GreedyStats()  # packed greedy generation, all calls added up
        if self.default_adapter is not None:
            self._load_adapter(self.default_adapter)
        logger.info(
            "transformers engine: %s on %s (%s), batch_size=%d",
            self.model_path,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.batch_size,
        )

    def _pad_left(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device)}

    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Index batches, longest prompts first (less padding; memory errors show up at once)."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    # ------------------------------------------------------------------ adapters
    def _load_adapter(self, adapter: AdapterRef) -> str:
        """Load a LoRA adapter once (cached by path) and return its PEFT name."""
        assert adapter.path is not None
        key = str(adapter.path)
        name = self._adapters.get(key)
        if name is not None:
            return name
        from peft import PeftModel

        check_targets(adapter, {n.rsplit(".", 1)[-1] for n, _ in self._base.named_modules()})
        name = f"adapter_{len(self._adapters)}"
        from llmrec_gen.llm.models import quiet_transformers

        if not self._adapters:
            with quiet_transformers():
                self._model = PeftModel.from_pretrained(self._base, key, adapter_name=name)
        else:
            self._model.load_adapter(key, adapter_name=name)
        self._model.eval()
        self._adapters[key] = name
        logger.info("loaded LoRA adapter %s", key)
        return name

    @contextlib.contextmanager
    def _use_adapter(self, adapter: AdapterRef | None) -> Iterator[None]:
        """Activate ``adapter`` (or the default one), or disable all adapters when none."""
        adapter = self._local_adapter(adapter)
        if adapter is not None:
            name = self._load_adapter(adapter)  # first: it may replace self._model by a PeftModel
            self._model.set_adapter(name)
            self._owner = str(adapter.path)
            yield
        elif self._adapters:
            self._owner = None
            with self._model.disable_adapter():
                yield
        else:
            self._owner = None
            yield

    def packed_ok(self) -> bool:
        """Whether packed forward passes reproduce this model's forward pass (checked once)."""
        if self._packed is None:
            try:
                diff = self_test(self._base, len(self.tokenizer))
                self._packed = diff < _SELF_TEST_TOLERANCE
                reason = f"max logit difference {diff:.2g}"
            except (ValueError, TypeError, AttributeError, KeyError, RuntimeError) as err:
                self._packed, reason = False, f"{type(err).__name__}: {err}"
            if not self._packed:
                logger.warning(
                    "packed passes do not fit %s (%s): using transformers generate (slower)",
                    self.model_path,
                    reason,
                )
        return self._packed

    # ------------------------------------------------------------------ generation
    def _generation_config(self, extra_eos: Sequence[int] = (), **kwargs: Any) -> Any:
        """A fresh config, so a model's own sampling defaults never leak into our runs."""
        from transformers import GenerationConfig

        return GenerationConfig(
            eos_token_id=[*self._eos_ids, *extra_eos],
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            **kwargs,
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        adapter: AdapterRef | None = None,
    ) -> list[Generation]:
        """Generate one continuation per prompt, batched; output order = input order.

        Greedy when ``temperature == 0`` and ``num_beams == 1``; beam search when
        ``num_beams > 1`` (the ``params.n`` best beams go to ``Generation.texts``); sampling
        (``temperature``, ``top_p``, no top-k; ``params.n`` samples) when ``temperature > 0``.
        Sampling is seeded with ``params.seed`` once per call, so the same prompts, params and
        ``batch_size`` give the same texts; the global torch RNG is left untouched. With beams,
        tokens holding a stop string end a beam (so a beam is, e.g., exactly one list line).

        Args:
            prompts: plain strings or chat-message lists.
            params: generation parameters (defaults when ``None``).
            adapter: LoRA adapter directory (``None``: the engine's default adapter, if any,
                else the base model).

        Returns:
            One :class:`Generation` per prompt; text cut before the first stop string.

        Raises:
            ConfigError: invalid generation parameters.
            ModelNotFoundError: the adapter directory does not exist.
        """
        import torch

        params = params or GenerationParams()
        if not prompts:
            return []
        encoded = [self.encode(p)[1] for p in prompts]
        plain_greedy = (
            params.temperature == 0
            and params.num_beams == 1
            and params.n == 1
            and params.repetition_penalty == 1.0
        )
        if plain_greedy and self.packed_ok():
            return self._generate_packed(encoded, params, adapter)
        sampling = params.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sampling,
            "num_beams": params.num_beams,
        }
        if sampling:
            options.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            options["stop_strings"] = list(params.stop)
        if params.repetition_penalty != 1.0:
            options["repetition_penalty"] = params.repetition_penalty
        if params.n > 1:
            options["num_return_sequences"] = params.n
        # Beam search ignores stop strings when it ranks finished hypotheses: a beam that wrote
        # "\n" would live on into the next line. Tokens holding a stop string end beams instead.
        stop_ids = self._stop_token_ids(params.stop) if params.num_beams > 1 else ()
        config = self._generation_config(stop_ids, **options)
        extra = {"tokenizer": self.tokenizer} if params.stop else {}

        results: list[Generation | None] = [None] * len(prompts)
        with self._use_adapter(adapter), torch.inference_mode(), self._seeded(params.seed):
            for idx in self._batches([len(ids) for ids in encoded]):
                inputs = self._pad_left([encoded[i] for i in idx])
                prefilled = self._prefill(inputs, params.num_beams) if params.num_beams > 1 else {}
                out = self._model.generate(**inputs, **prefilled, generation_config=config, **extra)
                new_tokens = out[:, inputs["input_ids"].shape[1] :].tolist()
                for row, i in enumerate(idx):  # generate groups the n sequences of each prompt
                    rows = new_tokens[row * params.n : (row + 1) * params.n]
                    decoded = [self.decode(tokens, params.stop) for tokens in rows]
                    texts = [text for text, _ in decoded]
                    results[i] = Generation.of(texts, len(encoded[i]), decoded[0][1])
        return [r for r in results if r is not None]

    def _generate_packed(
        self, encoded: list[list[int]], params: GenerationParams, adapter: AdapterRef | None
    ) -> list[Generation]:
        """Greedy generation on packed passes (same tokens as ``generate``, see the module)."""
        stop = [s for s in params.stop if s]
        stopped = None
        if stop:
            window = max(len(s.encode()) for s in stop) + 1  # tokens that can hold a stop string

            def stopped(tokens: list[int]) -> bool:
                text = self.tokenizer.decode(tokens[-window:], skip_special_tokens=True)
                return any(s in text for s in stop)

        with self._use_adapter(adapter):
            outs = packed_greedy(
                self._model,
                encoded,
                params.max_new_tokens,
                self._eos_ids,
                stopped=stopped,
                prefixes=self._prefixes,
                owner=self._owner,
                max_active=max(self.batch_size, min(len(encoded), GREEDY_ROWS)),
                stats=self.greedy_stats,
            )
        results = []
        for ids, tokens in zip(encoded, outs, strict=True):
            text, n_generated = self.decode(tokens, params.stop)
            results.append(Generation.of([text], len(ids), n_generated))
        return results

    def _prefill(self, inputs: dict[str, torch.Tensor], expand: int) -> dict[str, Any]:
        """Run the prompts once and copy their KV cache to every beam.

        ``generate`` with ``num_beams=n`` repeats each prompt n times before its first forward
        pass, so the prompt is encoded n times; encoding it once and repeating the cache gives
        the same beams (scores equal to ~1e-6) and made k=10 constrained decoding ~4x faster on
        CPU. The last prompt token is left for ``generate`` to process, as it expects.

        Returns:
            Extra ``generate`` keyword arguments holding the filled cache (empty if not useful).
        """
        from transformers import DynamicCache

        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if ids.shape[1] < 2:
            return {}
        cache = DynamicCache(config=self._base.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        key = self._cache_kwarg
        self._model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            **{key: cache},
        )
        cache.batch_repeat_interleave(expand)
        return {key: cache}

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """KV-cache argument name: ``cache`` (newer transformers 5.x) or ``past_key_values``."""
        params = inspect.signature(self._base.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    @contextlib.contextmanager
    def _seeded(self, seed: int) -> Iterator[None]:
        """Seed torch's RNG for this call and restore the caller's RNG state afterwards."""
        import torch

        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def _stop_token_ids(self, stop: Sequence[str]) -> tuple[int, ...]:
        """Vocabulary tokens whose text contains one of the ``stop`` strings (cached)."""
        key = tuple(s for s in stop if s)
        if key not in self._stop_ids:
            vocab = self.tokenizer.get_vocab()
            texts = {i: self.tokenizer.convert_tokens_to_string([t]) for t, i in vocab.items()}
            hits = [i for i, text in texts.items() if any(s in text for s in key)]
            self._stop_ids[key] = tuple(sorted(i for i in hits if i not in self._eos_ids))
        return self._stop_ids[key]

    # ------------------------------------------------------------------ constrained decoding
    def _content_free_logprobs(
        self, prompt_ids: Sequence[int], trie: TitleTrie, adapter: AdapterRef | None
    ) -> np.ndarray:
        """Content-free edge log-probabilities (:mod:`~llmrec_gen.llm.engines.calibration`)."""
        from llmrec_gen.llm.engines.calibration import (
            content_free_logprobs,
            packed_content_free_logprobs,
        )

        with self._use_adapter(adapter):
            if self.packed_ok():
                return packed_content_free_logprobs(self._model, prompt_ids, trie)
            return content_free_logprobs(self._model, prompt_ids, trie, device=self.device)

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

        Each prompt searches a view of one catalogue
        :class:`~llmrec_gen.llm.engines.constrained.TitleTrie` (built once per catalogue and
        kept) that hides the titles it may not produce, with HF's beam rules and
        ``num_beams = num_return_sequences = k`` (greedy when that is 1); so every returned
        title is one of the allowed titles, and titles are distinct. Pass many prompts per call:
        they are searched together (continuous batching).

        Args:
            prompts: plain strings or chat-message lists.
            allowed: per prompt, the titles it may produce (e.g. the catalog minus seen items).
            k: titles to return per prompt (fewer only if fewer titles are allowed).
            adapter: LoRA adapter directory (``None``: the default adapter or the base model).
            bias: additive bias on the allowed tokens' log-probabilities, per step (see
                :data:`~llmrec_gen.llm.engines.trie_beam.Bias`; per-node arrays index the
                nodes of ``self.title_tries(...)[1][i]``).
            score: ``"mean"`` token log-probability (sum / generated tokens, EOS included; the
                default) or their ``"sum"``.

        Returns:
            One :class:`ConstrainedGeneration` per prompt, best title first.

        Raises:
            ConfigError: ``k < 1``, ``allowed`` does not match ``prompts`` in length, or an
                unknown ``score``.
            ModelNotFoundError: the adapter directory does not exist.
        """
        if score not in ("mean", "sum"):
            raise ConfigError(f"score must be 'mean' or 'sum', got {score!r}")
        start = time.perf_counter()
        encoded, tries = self.title_tries(prompts, allowed, k)
        self.search_stats.prepare_s += time.perf_counter() - start
        with self._use_adapter(adapter):
            if self.packed_ok():
                hits = trie_beam_search(
                    self._model,
                    encoded,
                    tries,
                    k,
                    self._eos_ids,
                    bias=bias,
                    score=score,
                    prefixes=self._prefixes,
                    owner=self._owner,
                    max_active=max(self.batch_size, min(len(encoded), BEAM_ROWS)),
                    stats=self.search_stats,
                )
                return [
                    ConstrainedGeneration([str(h.label) for h in hs], [h.score for h in hs])
                    for hs in hits
                ]
            return self._constrained_generate(encoded, tries, k, bias, score)

    def _constrained_generate(
        self,
        encoded: list[list[int]],
        tries: Sequence[TitleTrie],
        k: int,
        bias: Bias = None,
        score: ScoreMode = "mean",
    ) -> list[ConstrainedGeneration]:
        """The same search with Hugging Face ``generate`` and ``prefix_allowed_tokens_fn``.

        The fallback for models packed passes cannot run, and the reference the packed search
        is tested against. A bias is a logits processor on the log-probabilities (beam search)
        or the logits (greedy search: the same argmax); the adapter must already be active.
        """
        import torch

        bias_fn = as_bias_fn(bias, len(encoded))
        results = [ConstrainedGeneration([], []) for _ in encoded]
        with torch.inference_mode():
            # Prompts that allow the same number of results share a beam width, so a batch too.
            by_width: dict[int, list[int]] = {}
            for i, trie in enumerate(tries):
                if len(trie):
                    by_width.setdefault(min(k, len(trie)), []).append(i)
            for width, members in by_width.items():
                lengths = [len(encoded[i]) for i in members]
                for idx in self._batches(lengths):
                    chunk = [members[j] for j in idx]
                    outs = self._constrained_batch(
                        [encoded[i] for i in chunk],
                        [tries[i] for i in chunk],
                        width,
                        length_penalty_of(score),
                        None if bias_fn is None else (bias_fn, chunk),
                    )
                    for i, out in zip(chunk, outs, strict=True):
                        results[i] = out
        return results

    def _constrained_batch(
        self,
        batch: list[list[int]],
        tries: list[TitleTrie],
        width: int,
        length_penalty: float = 1.0,
        bias: tuple[Any, list[int]] | None = None,
    ) -> list[ConstrainedGeneration]:
        """One beam-search ``generate`` call for a batch of prompts sharing beam width ``width``."""
        inputs = self._pad_left(batch)
        prompt_len = inputs["input_ids"].shape[1]

        def allowed_tokens(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            return tries[batch_id].allowed(input_ids[prompt_len:].tolist())

        config = self._generation_config(
            max_new_tokens=max(t.max_length for t in tries),
            do_sample=False,
            num_beams=width,
            num_return_sequences=width,
            length_penalty=length_penalty,
            early_stopping=False,
            output_scores=True,
            output_logits=width == 1,
            return_dict_in_generate=True,
        )
        extra: dict[str, Any] = {}
        if bias is not None:
            from transformers import LogitsProcessorList

            fn, indices = bias
            extra["logits_processor"] = LogitsProcessorList(
                [_TrieBias(fn, [indices[b] for b in range(len(tries))], tries, width, prompt_len)]
            )
        out = self._model.generate(
            **inputs,
            **self._prefill(inputs, width),
            generation_config=config,
            prefix_allowed_tokens_fn=allowed_tokens,
            **extra,
        )
        sequences = out.sequences[:, prompt_len:].tolist()
        if width == 1:  # HF runs plain greedy search: no beam scores, so score like a beam
            scores = self._greedy_scores(out, prompt_len, length_penalty)
        else:
            scores = out.sequences_scores.tolist()
        results = []
        for b, trie in enumerate(tries):
            titles: list[str] = []
            title_scores: list[float] = []
            for row in range(b * width, (b + 1) * width):
                title = trie.lookup(sequences[row])
                # Beams the trie starved (fewer live paths than beams) end with -inf scores.
                if title is None or title in titles or scores[row] == float("-inf"):
                    continue
                titles.append(str(title))
                title_scores.append(float(scores[row]))
            order = sorted(range(len(titles)), key=lambda j: -title_scores[j])
            results.append(
                ConstrainedGeneration([titles[j] for j in order], [title_scores[j] for j in order])
            )
        return results

    def _greedy_scores(self, out: Any, prompt_len: int, length_penalty: float = 1.0) -> list[float]:
        """Sum of token log-probabilities / generated tokens ** length_penalty (EOS included),
        as beam search scores; a logits processor's bias on the chosen tokens is added."""
        import torch

        gen = out.sequences[:, prompt_len:]
        logprobs = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in out.logits], dim=1)
        token_lp = logprobs.gather(2, gen.unsqueeze(-1)).squeeze(-1)
        raw = torch.stack([x.float() for x in out.logits], dim=1).gather(2, gen.unsqueeze(-1))
        processed = torch.stack([x.float() for x in out.scores], dim=1).gather(2, gen.unsqueeze(-1))
        token_lp = token_lp + (processed - raw).squeeze(-1)  # 0 unless a bias was applied
        is_eos = torch.zeros_like(gen, dtype=torch.bool)
        for eos in self._eos_ids:
            is_eos |= gen == eos
        # keep tokens up to and including the first EOS (padding follows it)
        after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
        keep = (~after_eos).float()
        length = keep.sum(dim=1).clamp(min=1) ** length_penalty
        return ((token_lp * keep).sum(dim=1) / length).tolist()

    def close(self) -> None:
        """Drop the model and free accelerator memory. Safe to call twice."""
        self._model = None
        self._base = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


class _TrieBias:
    """A logits processor adding a trie bias to the allowed tokens of every beam (HF path)."""

    def __init__(
        self, bias: Any, indices: list[int], tries: list[TitleTrie], width: int, prompt_len: int
    ) -> None:
        self.bias, self.indices, self.tries = bias, indices, tries
        self.width, self.prompt_len = width, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Add the bias of each row's allowed continuations to ``scores`` (in place)."""
        import numpy as np
        import torch

        for row, ids in enumerate(input_ids[:, self.prompt_len :].tolist()):
            b = row // self.width
            trie = self.tries[b]
            node: int | None = ROOT
            for tok in ids:
                kids = dict(zip(*trie.children(node), strict=True))
                node = kids.get(tok)
                if node is None:
                    break
            if node is None:
                continue
            toks, nodes = trie.children(node)
            if not toks:
                continue
            extra = self.bias(
                self.indices[b],
                np.full(len(toks), node, dtype=np.int64),
                np.asarray(nodes, dtype=np.int64),
                np.asarray(toks, dtype=np.int64),
            )
            scores[row, torch.tensor(toks)] += torch.as_tensor(extra, dtype=scores.dtype)
        return scores
