"""What every in-process engine shares: tokenizer, prompt rendering, encoding and decoding, the
end-of-sequence tokens, title tokenization for constrained decoding, and adapter bookkeeping.

:class:`~llmrec_gen.llm.engines.transformers.TransformersEngine` and
:class:`~llmrec_gen.llm.engines.vllm.VLLMEngine` subclass :class:`LocalEngine`, so both see
exactly the same token ids for the same prompt and the same titles (which is what makes their
outputs agree token for token).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec_gen.errors import ConfigError, ModelNotFoundError
from llmrec_gen.llm.adapters import AdapterRef, resolve_adapter
from llmrec_gen.llm.engines.base import Engine, Prompt, render_prompt
from llmrec_gen.llm.engines.constrained import TitleTrie, TrieView, tokenize_titles

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

ANCHOR_CHARS = 16
"""How much of the rendered prompt's end is prepended when tokenizing titles in context."""
CATALOGUE_TRIES = 4
"""Catalogue tries kept per engine (one per catalogue and anchor; ~1,700 titles: a few MB)."""


def eos_token_ids(model_path: Path, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids: the tokenizer's first, then the generation config's.

    Raises:
        ModelNotFoundError: the model defines no end-of-sequence token.
    """
    from transformers import AutoConfig, GenerationConfig

    ids: list[int] = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the model config's EOS, as transformers does
        eos = getattr(AutoConfig.from_pretrained(model_path), "eos_token_id", None)
    eos_list = eos if isinstance(eos, list | tuple) else [eos]
    ids += [int(e) for e in eos_list if e is not None]
    if not ids:
        raise ModelNotFoundError(f"model '{model_path}' defines no end-of-sequence token")
    return list(dict.fromkeys(ids))


class LocalEngine(Engine):
    """Base of the in-process engines (see the module docstring).

    Args:
        model: ``"default"`` (SmolLM2-135M-Instruct), a local HF model directory or a Hub id
            (resolved by :func:`llmrec_gen.llm.models.resolve_model`).
        adapter: a LoRA adapter used whenever a call passes ``adapter=None``; with the default
            ``None`` such calls run the base model.

    Attributes:
        model_path: the resolved model directory.
        tokenizer: the Hugging Face tokenizer (left padding).
        default_adapter: the resolved default adapter, or None.
    """

    def __init__(self, model: str = "default", adapter: str | AdapterRef | None = None) -> None:
        from transformers import AutoTokenizer

        from llmrec_gen.llm.models import quiet_transformers, resolve_model

        self.model_path: Path = resolve_model(model)
        self.default_adapter = resolve_adapter(adapter)
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(self.model_path)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self._eos_ids: list[int] = eos_token_ids(self.model_path, tok)
        self._title_ids: dict[tuple[str, str], tuple[int, ...]] = {}  # (anchor, title) -> ids
        self._tries: dict[tuple[str, int], TitleTrie] = {}  # (anchor, id) -> trie, LRU
        self._content_free: dict[tuple, tuple[TitleTrie, np.ndarray]] = {}

    # ------------------------------------------------------------------ prompts
    def render(self, prompt: Prompt) -> str:
        """Return the exact text the model sees for ``prompt`` (see :func:`render_prompt`)."""
        return render_prompt(self.tokenizer, prompt)

    def encode(self, prompt: Prompt) -> tuple[str, list[int]]:
        """The rendered text of ``prompt`` and its token ids.

        A rendered chat template already holds its special tokens; plain text gets the
        tokenizer's usual ones (e.g. BOS for Llama-style tokenizers).

        Raises:
            ConfigError: the prompt renders to no tokens.
        """
        text = self.render(prompt)
        ids = self.tokenizer(text, add_special_tokens=isinstance(prompt, str)).input_ids
        if not ids:
            raise ConfigError("empty prompt: nothing to condition generation on")
        return text, list(ids)

    def decode(self, tokens: Sequence[int], stop: Sequence[str]) -> tuple[str, int]:
        """Text up to the first EOS (then cut before the first stop string) and its token count.

        Trailing padding (rows of a batch that finished early) is not counted.
        """
        tokens = list(tokens)
        end = next((j for j, t in enumerate(tokens) if t in self._eos_ids), None)
        if end is not None:
            n_generated, tokens = end + 1, tokens[:end]
        else:
            pad = self.tokenizer.pad_token_id
            while tokens and tokens[-1] == pad:
                tokens = tokens[:-1]
            n_generated = len(tokens)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cuts = [pos for pos in (text.find(s) for s in stop if s) if pos >= 0]
        return (text[: min(cuts)] if cuts else text), n_generated

    # ------------------------------------------------------------------ constrained decoding
    def title_token_ids(self, titles: Sequence[str], anchor: str = "") -> list[tuple[int, ...]]:
        """Token ids of each title as the model would produce them right after ``anchor``.

        A title must be tokenized the way it appears in context: after SmolLM2's chat template
        the answer starts on a fresh line (``"<|im_start|>assistant\\n"``), so ``"Toy Story"``
        is ``["T", "oy", " Story"]``, not the ``" Toy"`` token that ``" " + title`` would give
        (and sentencepiece tokenizers add a word-start marker to a bare title). So each title is
        tokenized as ``anchor + title`` and the anchor's tokens are dropped; the anchor is the
        end of the rendered prompt. If the two merge into a token across the boundary (a
        prompt ending in a space), the title is tokenized alone. Cached per (anchor, title).

        Args:
            titles: catalogue titles.
            anchor: the text right before the answer (the end of the rendered prompt).

        Returns:
            One tuple of token ids per title (without EOS).
        """
        return tokenize_titles(self.tokenizer, titles, anchor, self._title_ids)

    def title_tries(
        self, prompts: Sequence[Prompt], allowed: Sequence[Sequence[str]], k: int
    ) -> tuple[list[list[int]], list[TrieView]]:
        """Encode each prompt and get the trie of its allowed titles (each ended by EOS).

        One :class:`~llmrec_gen.llm.engines.constrained.TitleTrie` is built per catalogue (the
        union of the call's allowed lists) and tokenization anchor, and kept for later calls
        (the last :data:`CATALOGUE_TRIES`); each prompt gets a view of it that hides the
        catalogue titles it may not produce.

        Raises:
            ConfigError: ``k < 1`` or ``allowed`` does not match ``prompts`` in length.
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if len(allowed) != len(prompts):
            raise ConfigError(f"got {len(prompts)} prompts but {len(allowed)} allowed-title lists")
        encoded = [self.encode(prompt) for prompt in prompts]
        anchors = [text[-ANCHOR_CHARS:] for text, _ in encoded]
        pooled: dict[str, list[str]] = {}
        for anchor, titles in zip(anchors, allowed, strict=True):
            pooled.setdefault(anchor, []).extend(titles)
        catalogues = {anchor: self.catalogue_trie(ts, anchor) for anchor, ts in pooled.items()}
        tries: list[TrieView] = []
        for anchor, titles in zip(anchors, allowed, strict=True):
            trie = catalogues[anchor]
            mine = set(titles)
            tries.append(trie.view(exclude=[t for t in trie.labels if t not in mine]))
        return [ids for _, ids in encoded], tries

    def catalogue_trie(self, titles: Sequence[str], anchor: str) -> TitleTrie:
        """A trie holding every title of ``titles`` tokenized after ``anchor``.

        A kept trie for the same anchor that holds them all is reused (e.g. the whole
        catalogue, when a call's users have all seen some title); otherwise one is built from
        ``titles`` and kept (the last :data:`CATALOGUE_TRIES`).
        """
        wanted = list(dict.fromkeys(titles))
        for key, trie in reversed(self._tries.items()):
            if key[0] == anchor and all(trie.node_of(t) is not None for t in wanted):
                self._tries[key] = self._tries.pop(key)  # most recently used last
                return trie
        trie = TitleTrie(self.title_token_ids(wanted, anchor=anchor), self._eos_ids[0], wanted)
        self._tries[(anchor, id(trie))] = trie
        while len(self._tries) > CATALOGUE_TRIES:
            self._tries.pop(next(iter(self._tries)))
        return trie

    def content_free_bias(
        self,
        prompt: Prompt,
        allowed: Sequence[str],
        k: int,
        adapter: AdapterRef | None = None,
    ) -> tuple[TitleTrie, np.ndarray]:
        """The catalogue trie and the per-node log-probabilities of its edges after a
        content-free ``prompt`` (see :mod:`~llmrec_gen.llm.engines.calibration`).

        The trie is the one :meth:`title_tries` gives prompts that end like ``prompt`` (same
        tokenization anchor) with these ``allowed`` titles. The values are computed once per
        model, dtype, adapter weights, prompt and trie, kept in memory and on disk under the
        cache directory (``content-free/``; computing them costs about one forward pass per
        title, ~1-2 min for ML-100k on 2 CPU cores).
        """
        import numpy as np

        from llmrec_gen.io import atomic_write_bytes
        from llmrec_gen.llm.models import cache_root

        encoded, tries = self.title_tries([prompt], [allowed], k)
        base = tries[0].base
        adapter = self._local_adapter(adapter)
        key = (id(base), tuple(encoded[0]), adapter)
        hit = self._content_free.get(key)
        if hit is not None and hit[0] is base:
            return hit
        h = hashlib.sha256()
        digest = adapter.digest() if adapter is not None else None
        parts = (self.name, self.model_path.resolve(), self.dtype_name, digest)
        h.update(repr(parts).encode())
        h.update(np.asarray(encoded[0], dtype=np.int64).tobytes())
        h.update(repr([sorted(c.items()) for c in base._children]).encode())  # the trie
        h.update(repr(sorted(base._terminal.items(), key=repr)).encode())  # its labels
        path = cache_root() / "content-free" / f"{h.hexdigest()[:24]}.npy"
        values = None
        if path.is_file():
            try:
                values = np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a torn or foreign file: recompute it
                values = None
            if values is not None and values.shape != (base.n_nodes,):
                values = None
        if values is None:
            logger.info(
                "calibrating constrained decoding: content-free log-probabilities of %d titles "
                "(once per model, adapter and catalogue; cached in %s)",
                len(base),
                path.parent,
            )
            values = np.asarray(self._content_free_logprobs(encoded[0], base, adapter))
            try:
                buf = io.BytesIO()
                np.save(buf, values.astype(np.float32), allow_pickle=False)
                atomic_write_bytes(path, buf.getvalue())
            except OSError as err:  # an unwritable cache only costs the recomputation
                logger.warning("could not cache content-free log-probabilities: %s", err)
        hit = self._content_free[key] = (base, values.astype(np.float32))
        return hit

    def _content_free_logprobs(
        self, prompt_ids: Sequence[int], trie: TitleTrie, adapter: AdapterRef | None
    ) -> np.ndarray:
        """log p(edge token | prompt, prefix) for every node of ``trie`` (engine-specific)."""
        raise ConfigError(f"engine '{self.name}' cannot compute content-free log-probabilities")

    @property
    def dtype_name(self) -> str:
        """The model's dtype as a name (part of cache keys)."""
        return str(getattr(self, "dtype", "auto")).removeprefix("torch.")

    # ------------------------------------------------------------------ adapters
    def _local_adapter(self, adapter: AdapterRef | None) -> AdapterRef | None:
        """The adapter a call runs with (``None``: the default one), which must be local."""
        adapter = adapter if adapter is not None else self.default_adapter
        if adapter is not None and adapter.path is None:
            raise ModelNotFoundError(
                f"adapter '{adapter.name}' is a served name, not a local directory: in-process "
                "engines need a PEFT adapter directory"
            )
        return adapter
