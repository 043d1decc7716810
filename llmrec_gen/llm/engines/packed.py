"""Packed forward passes of a Hugging Face causal LM over a per-prompt "tree" KV cache.

The machinery under :mod:`~llmrec_gen.llm.engines.trie_beam` (trie-constrained beam search) and
:mod:`~llmrec_gen.llm.engines.greedy` (batched greedy generation):

* :class:`TreeKV` preallocates per-layer KV buffers ``(rows, n_kv, length, head_dim)``, one row
  per prompt in flight: the prompt, then the KV of every token any of its beams was fed,
  appended step by step. A query attends to the columns of its own row that a mask selects (a
  beam: the prompt plus its own ancestors), so reordering beams moves no tensors, and a row
  freed by a finished prompt is handed to the next one.
* :class:`Pass` packs the new tokens of many prompts (prompt tokens in causal blocks, and beam
  tokens) into one ``(1, N)`` forward pass without padding; :func:`tree_attention` (registered
  with ``transformers.AttentionInterface`` while :func:`tree_attention_enabled` is active)
  attends each segment over its own row; query heads that share a KV head are folded into the
  query length (GQA without repeating keys). Logits are computed only where asked
  (``logits_to_keep``).
* :class:`PrefixCache` keeps the KV of a prompt prefix (system prompt, instructions, few-shot
  demonstrations) across calls, so it is encoded once per run, not once per prompt.

Model support: decoder-only models whose attention modules call ``cache.update(...)`` and
``ALL_ATTENTION_FUNCTIONS`` (Llama, Qwen2/3, Mistral, Phi-3, SmolLM, ... in transformers 5.x), with
full attention over the lengths used and no attention soft-capping; :func:`check_model` rejects
the others and :func:`self_test` compares a packed pass with a plain forward pass before a model
is trusted. PEFT-wrapped models work with whatever adapter is active.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

ATTENTION_NAME = "llmrec_tree"
"""Name under which :func:`tree_attention` is registered in transformers."""

MIN_SHARED_PREFIX = 16
"""A shared prefix shorter than this is not worth a separate forward pass."""


# ----------------------------------------------------------------------------------- model shape
@dataclass(frozen=True)
class Geometry:
    """Attention shapes of a model."""

    n_layers: int
    n_heads: int
    n_kv: int
    head_dim: int
    window: int | None  # sliding attention window, if any


def base_model(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or ``model`` itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def geometry(model: Any) -> Geometry:
    """Attention shapes from the model's (text) config.

    Raises:
        ValueError: a model packed passes cannot run (encoder-decoder, attention soft-capping).
    """
    cfg = base_model(model).config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError("packed passes need a decoder-only model")
    if getattr(cfg, "attn_logit_softcapping", None):
        raise ValueError("packed passes do not support attention soft-capping")
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        raise ValueError("packed passes need full attention in every layer")
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    window = getattr(cfg, "sliding_window", None)
    if getattr(cfg, "use_sliding_window", True) is False:
        window = None
    return Geometry(cfg.num_hidden_layers, n_heads, n_kv, head_dim, window)


@functools.lru_cache(maxsize=32)
def _cache_kwarg(cls: type) -> str:
    """KV-cache argument name: ``cache`` (newer transformers 5.x) or ``past_key_values``."""
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# ----------------------------------------------------------------------------------- KV buffers
@dataclass
class Segment:
    """One prompt's query rows ``start:stop`` in a packed forward pass."""

    row: int  # KV buffer row of the prompt
    start: int
    stop: int
    kv_len: int  # keys it sees: columns 0..kv_len of its row (after this pass's writes)
    mask: torch.Tensor | None  # additive (groups * rows, kv_len), rows repeated per query-head
    # group; None for a decode segment, which is attended in the pass's batched call
    visible: torch.Tensor | None = None  # decode segment: bool (rows, kv_len)


@dataclass
class _Batched:
    """All decode segments of a pass as one batched attention call over the KV buffers.

    Query token ``tokens[j]`` (packed index) sits in slot ``slots[j] = row * width + t`` of a
    ``(n_rows, width)`` grid; every buffer row ``0..n_rows`` is read as one batch (a view, no
    copy), with an additive mask that lets each slot see exactly its segment's columns.
    """

    tokens: torch.Tensor  # (m,) packed indices of the batched query tokens
    slots: torch.Tensor  # (m,) their slots in the (n_rows, width) grid
    n_rows: int
    width: int
    kv_len: int
    mask: torch.Tensor  # additive (n_rows, 1, groups * width, kv_len)


@dataclass
class _Plan:
    segments: list[Segment]  # prompt segments, attended one call each
    write_rows: torch.Tensor  # (N,) KV row of each new token
    write_cols: torch.Tensor  # (N,) KV column of each new token
    batched: _Batched | None = None  # the decode segments, attended in one call


@dataclass
class PrefixCache:
    """The KV of one token prefix, kept across calls (see :func:`prepare_prefix`).

    Attributes:
        ids: the prefix's token ids.
        keys: per layer ``(n_kv, len(ids), head_dim)``.
        values: per layer, same shape.
        owner: what the KV was computed with (e.g. the active adapter); a cache whose owner
            differs from the caller's is not used.
    """

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    owner: Any = None

    def match(self, ids: Sequence[int]) -> int:
        """Length of the longest common prefix of ``ids`` and this prefix."""
        return common_prefix([self.ids, ids])


class PrefixStore:
    """The last shared prefix computed per owner (e.g. per adapter), kept across calls."""

    def __init__(self) -> None:  # noqa: D107
        self._by_owner: dict[Any, PrefixCache] = {}

    def get(self, owner: Any) -> PrefixCache | None:
        """The kept prefix of ``owner`` (or ``None``)."""
        return self._by_owner.get(owner)

    def put(self, cache: PrefixCache) -> None:
        """Keep ``cache`` as its owner's prefix (replacing the previous one)."""
        self._by_owner[cache.owner] = cache

    def clear(self) -> None:
        """Forget every kept prefix (e.g. after the model's weights changed)."""
        self._by_owner.clear()


class TreeKV:
    """Per-layer KV buffers ``(rows, n_kv, length, head_dim)``, one row per prompt in flight.

    Passed to the model as its cache: ``update`` writes a pass's new keys/values where the
    current plan says, and :func:`tree_attention` reads them back in place. Only what a decoder
    forward calls is implemented.
    """

    def __init__(
        self,
        geo: Geometry,
        n_rows: int,
        length: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        import torch

        shape = (n_rows, geo.n_kv, length, geo.head_dim)
        # Zeroed, not empty: a batched decode call reads every row up to the longest segment,
        # and a masked column must hold a finite number (NaN + -inf would poison the softmax).
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(geo.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(geo.n_layers)]
        self.device = device
        self.plan: _Plan | None = None
        self._prefix_valid = [0] * n_rows  # leading columns of each row equal to the prefix
        self._prefix: PrefixCache | None = None

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *_: Any,
        **__: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a pass's new keys/values ``(1, n_kv, N, d)`` at the plan's positions."""
        plan = self.plan
        assert plan is not None, "the tree KV cache is only usable inside a packed pass"
        rows, cols = plan.write_rows, plan.write_cols
        self.keys[layer_idx][rows, :, cols] = key_states[0].transpose(0, 1)
        self.values[layer_idx][rows, :, cols] = value_states[0].transpose(0, 1)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Not meaningful for a packed cache (positions are always passed explicitly)."""
        return 0

    def load_prefix(self, row: int, prefix: PrefixCache | None, n: int) -> None:
        """Make the first ``n`` columns of ``row`` hold the prefix's KV (copied unless there)."""
        if prefix is not self._prefix:
            self._prefix = prefix
            self._prefix_valid = [0] * len(self._prefix_valid)
        if n and prefix is not None and self._prefix_valid[row] < n:
            pairs = zip((*self.keys, *self.values), (*prefix.keys, *prefix.values), strict=True)
            for buf, src in pairs:
                buf[row, :, :n] = src[:, :n]
        self._prefix_valid[row] = n  # the prompt writes from column n on

    def prefix(self, row: int, n: int, owner: Any, ids: list[int]) -> PrefixCache:
        """The first ``n`` columns of ``row`` as a :class:`PrefixCache` of ``ids`` (copied)."""
        keys = [k[row, :, :n].clone() for k in self.keys]
        values = [v[row, :, :n].clone() for v in self.values]
        return PrefixCache(list(ids[:n]), keys, values, owner)


# ----------------------------------------------------------------------------------- attention
def tree_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of packed query rows ``(1, H, N, d)``, each segment over its own KV row.

    ``key``/``value`` (the pass's new tokens) are already in the :class:`TreeKV` buffers, which
    are read in place. Returns ``(1, N, H, d)`` as transformers expects.
    """
    import torch.nn.functional as F  # noqa: N812

    kv: TreeKV = kwargs["tree_kv"]
    plan = kv.plan
    assert plan is not None
    keys, values = kv.keys[module.layer_idx], kv.values[module.layer_idx]
    n_heads, n_tokens, head_dim = query.shape[1], query.shape[2], query.shape[3]
    n_kv = keys.shape[1]
    groups = n_heads // n_kv
    out = query.new_empty(n_heads, n_tokens, head_dim)
    for seg in plan.segments:
        n = seg.stop - seg.start
        q = query[0, :, seg.start : seg.stop].reshape(1, n_kv, groups * n, head_dim)
        part = F.scaled_dot_product_attention(
            q,
            keys[seg.row : seg.row + 1, :, : seg.kv_len],
            values[seg.row : seg.row + 1, :, : seg.kv_len],
            attn_mask=seg.mask,
            scale=scaling,
        )
        out[:, seg.start : seg.stop] = part.view(n_heads, n, head_dim)
    b = plan.batched
    if b is not None:
        # heads are kv-major (head h reads kv head h // groups): (H, N, d) -> (n_kv, G, N, d)
        q_all = query[0].reshape(n_kv, groups, n_tokens, head_dim)
        grid = query.new_zeros(n_kv, groups, b.n_rows * b.width, head_dim)
        grid[:, :, b.slots] = q_all[:, :, b.tokens]
        grid = grid.view(n_kv, groups, b.n_rows, b.width, head_dim).permute(2, 0, 1, 3, 4)
        part = F.scaled_dot_product_attention(
            grid.reshape(b.n_rows, n_kv, groups * b.width, head_dim),
            keys[: b.n_rows, :, : b.kv_len],
            values[: b.n_rows, :, : b.kv_len],
            attn_mask=b.mask,
            scale=scaling,
        )
        part = part.view(b.n_rows, n_kv, groups, b.width, head_dim).permute(1, 2, 0, 3, 4)
        part = part.reshape(n_kv, groups, b.n_rows * b.width, head_dim)
        out.view(n_kv, groups, n_tokens, head_dim)[:, :, b.tokens] = part[:, :, b.slots]
    return out.transpose(0, 1).unsqueeze(0), None


@contextlib.contextmanager
def tree_attention_enabled(model: Any) -> Iterator[None]:
    """Switch every config of ``model`` to :func:`tree_attention`, restoring it afterwards."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, tree_attention)
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config")}
    saved = {
        key: cfg._attn_implementation
        for key, cfg in configs.items()
        if getattr(cfg, "_attn_implementation", None) is not None
    }
    try:
        for key in saved:
            configs[key]._attn_implementation = ATTENTION_NAME
        yield
    finally:
        for key, impl in saved.items():
            configs[key]._attn_implementation = impl


# ----------------------------------------------------------------------------------- passes
class Runner:
    """Runs packed forward passes of a model over a :class:`TreeKV`.

    Args:
        model: the (possibly PEFT-wrapped) causal LM, in eval mode.
        kv: the KV buffers.
        geo: the model's attention shapes.
    """

    def __init__(self, model: Any, kv: TreeKV, geo: Geometry) -> None:
        param = next(model.parameters())
        self.model = model
        self.kv = kv
        self.groups = geo.n_heads // geo.n_kv
        self.dtype = param.dtype
        self.device = kv.device
        self.cache_kw = _cache_kwarg(type(base_model(model)))

    def additive(self, mask: torch.Tensor) -> torch.Tensor:
        """Bool ``(rows, keys)`` mask -> additive mask, rows repeated per query-head group.

        Built once per pass and reused by every layer (``scaled_dot_product_attention``
        converts a bool mask on every call, which measured slower).
        """
        import torch

        out = torch.zeros(mask.shape, dtype=self.dtype).masked_fill_(~mask, float("-inf"))
        out = out.repeat(self.groups, 1) if self.groups > 1 else out
        return out.to(self.device)

    def batched(self, segments: list[Segment]) -> _Batched | None:
        """One batched attention call for the decode ``segments`` (one per KV row), or None."""
        import torch

        if not segments:
            return None
        n_rows = max(s.row for s in segments) + 1
        width = max(s.stop - s.start for s in segments)
        kv_len = max(s.kv_len for s in segments)
        visible = torch.zeros(n_rows, width, kv_len, dtype=torch.bool)
        visible[:, :, 0] = True  # padding slots see one column (no all-masked row: no NaN)
        tokens: list[int] = []
        slots: list[int] = []
        for s in segments:
            n = s.stop - s.start
            assert s.visible is not None
            visible[s.row, :n, :] = False
            visible[s.row, :n, : s.kv_len] = s.visible
            tokens.extend(range(s.start, s.stop))
            slots.extend(range(s.row * width, s.row * width + n))
        mask = torch.zeros(visible.shape, dtype=self.dtype).masked_fill_(~visible, float("-inf"))
        if self.groups > 1:
            mask = mask.repeat(1, self.groups, 1)
        dev = self.device
        return _Batched(
            torch.tensor(tokens, device=dev),
            torch.tensor(slots, device=dev),
            n_rows,
            width,
            kv_len,
            mask.unsqueeze(1).to(dev),
        )

    def causal(self, n_query: int, first_pos: int, kv_len: int) -> torch.Tensor:
        """Additive mask of ``n_query`` prompt tokens at ``first_pos..`` over keys ``:kv_len``."""
        import torch

        q = torch.arange(first_pos, first_pos + n_query)[:, None]
        return self.additive(torch.arange(kv_len)[None, :] <= q)

    def forward(self, p: Pass) -> torch.Tensor:
        """Float32 logits ``(len(p.logits_at), vocab)`` of a pass, at its ``logits_at``."""
        import torch

        dev = self.device
        self.kv.plan = _Plan(
            [s for s in p.segments if s.visible is None],
            torch.tensor(p.rows, device=dev),
            torch.tensor(p.cols, device=dev),
            self.batched([s for s in p.segments if s.visible is not None]),
        )
        keep: int | torch.Tensor = 0
        if len(p.logits_at) != len(p.tokens):
            keep = torch.tensor(p.logits_at, device=dev)
        try:
            out = self.model(
                input_ids=torch.tensor([p.tokens], device=dev),
                position_ids=torch.tensor([p.positions], device=dev),
                use_cache=True,
                logits_to_keep=keep,
                tree_kv=self.kv,
                **{self.cache_kw: self.kv},
            )
        finally:
            self.kv.plan = None
        return out.logits[0].float()


@dataclass
class Pass:
    """The packed inputs of one forward pass, built segment by segment.

    Attributes:
        tokens: token ids fed, in packed order.
        positions: their positions (in their own prompt).
        rows: KV row each token is written to.
        cols: KV column each token is written to.
        segments: attention segments.
        logits_at: packed indices whose logits are returned (in this order).
        n_prompt_tokens: prompt tokens in the pass (the rest are decode rows).
    """

    runner: Runner
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    logits_at: list[int] = field(default_factory=list)
    n_prompt_tokens: int = 0

    def add_prompt(self, ids: Sequence[int], row: int, lo: int, block: int) -> int:
        """Prompt tokens ``ids[lo:]`` into KV row ``row``, asking for the last one's logits.

        Returns:
            The index into this pass's logits of the last token's logits.
        """
        self.add_prefix(ids, row, lo, len(ids), block)
        self.logits_at.append(len(self.tokens) - 1)
        return len(self.logits_at) - 1

    def add_prefix(self, ids: Sequence[int], row: int, lo: int, hi: int, block: int) -> None:
        """Prompt tokens ``ids[lo:hi]`` into ``row`` in causal blocks of ``block`` tokens."""
        begin = len(self.tokens)
        self.tokens.extend(ids[lo:hi])
        self.positions.extend(range(lo, hi))
        self.rows.extend([row] * (hi - lo))
        self.cols.extend(range(lo, hi))
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            mask = self.runner.causal(stop - start, start, stop)
            self.segments.append(Segment(row, begin + start - lo, begin + stop - lo, stop, mask))
        self.n_prompt_tokens += hi - lo

    def add_rows(
        self,
        row: int,
        tokens: Sequence[int],
        positions: Sequence[int],
        first_col: int,
        visible: torch.Tensor,
    ) -> list[int]:
        """Decode rows of one prompt: ``tokens[j]`` written to column ``first_col + j`` of
        ``row``; row ``j`` sees the columns where ``visible[j]`` (bool ``(n, kv_len)``) is set.

        Returns:
            The indices into this pass's logits of each row's logits.
        """
        begin = len(self.tokens)
        n = len(tokens)
        self.tokens.extend(tokens)
        self.positions.extend(positions)
        self.rows.extend([row] * n)
        self.cols.extend(range(first_col, first_col + n))
        # Single-token rows (greedy decoding) are attended in the pass's one batched call
        # (measured 11 % faster for 16 prompts); a beam group keeps a call of its own (batching
        # beam groups padded to the widest measured ~20 % slower).
        if n == 1 and not any(s.row == row and s.visible is not None for s in self.segments):
            self.segments.append(Segment(row, begin, begin + n, visible.shape[1], None, visible))
        else:
            mask = self.runner.additive(visible)
            self.segments.append(Segment(row, begin, begin + n, visible.shape[1], mask))
        first = len(self.logits_at)
        self.logits_at.extend(range(begin, begin + n))
        return list(range(first, first + n))

    def run(self) -> torch.Tensor:
        """The pass's logits (float32), one row per ``logits_at`` entry."""
        if not self.logits_at:  # a prefix-only pass: ask for one row, drop it
            self.logits_at = [len(self.tokens) - 1]
        return self.runner.forward(self)


# ----------------------------------------------------------------------------------- prefixes
def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs``."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


def prepare_prefix(
    model: Any,
    geo: Geometry,
    prompt_ids: Sequence[Sequence[int]],
    store: PrefixStore,
    owner: Any,
    block: int,
) -> tuple[PrefixCache | None, list[int], int]:
    """Decide what prefix each prompt reuses, encoding a new shared prefix if it pays.

    The longest prefix all prompts share (at least :data:`MIN_SHARED_PREFIX` tokens, always
    leaving each prompt one token of its own) is encoded once, reusing the part that ``store``
    already holds for ``owner``, and kept there; a kept prefix that already covers it is used as
    it is (so prompts that share more with it, e.g. few-shot demonstrations across calls, reuse
    more, and a single prompt reuses what earlier calls computed).

    Returns:
        ``(prefix, covered, computed)``: the prefix to use (or ``None``), how many leading
        tokens of each prompt it covers, and how many prefix tokens were encoded now.
    """
    n = len(prompt_ids)
    cache = store.get(owner)
    longest = min(len(ids) for ids in prompt_ids) - 1 if n else 0
    shared = min(common_prefix(prompt_ids), longest) if n > 1 else 0
    computed = 0
    if shared >= MIN_SHARED_PREFIX and (cache is None or cache.match(prompt_ids[0]) < shared):
        reuse = cache.match(prompt_ids[0][:shared]) if cache is not None else 0
        reuse = reuse if reuse >= MIN_SHARED_PREFIX else 0
        ids = list(prompt_ids[0][:shared])
        param = next(model.parameters())
        kv = TreeKV(geo, 1, shared, param.dtype, param.device)
        kv.load_prefix(0, cache, reuse)
        step = Pass(Runner(model, kv, geo))
        step.add_prefix(ids, 0, reuse, shared, block)
        step.run()
        cache = kv.prefix(0, shared, owner, ids)
        store.put(cache)
        computed = shared - reuse
    if cache is None:
        return None, [0] * n, computed
    covered = [min(cache.match(ids), len(ids) - 1) for ids in prompt_ids]
    covered = [c if c >= MIN_SHARED_PREFIX else 0 for c in covered]
    return cache, covered, computed


def self_test(model: Any, vocab_size: int) -> float:
    """Max |logit difference| between a packed pass and a plain forward pass on 12 tokens.

    The packed path relies on how transformers models call their cache and attention; a model
    that does not (or a transformers version that changed) shows up here as a large difference.
    """
    import torch

    geo = geometry(model)
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(4, vocab_size), (12,), generator=gen).tolist()
    with torch.inference_mode():
        plain = model(input_ids=torch.tensor([ids], device=param.device)).logits[0].float()
        kv = TreeKV(geo, 2, len(ids), param.dtype, param.device)
        runner = Runner(model, kv, geo)
        with tree_attention_enabled(model):
            first = Pass(runner)  # the first 8 tokens in two blocks, in row 1
            first.add_prefix(ids, 1, 0, 8, 5)
            first.run()
            second = Pass(runner)  # the rest as decode rows that see everything before them
            visible = torch.tril(torch.ones(4, 12, dtype=torch.bool), diagonal=8)
            second.add_rows(1, ids[8:], range(8, 12), 8, visible)
            packed = second.run()
    return float((packed - plain[8:]).abs().max())
