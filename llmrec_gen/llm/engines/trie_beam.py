"""Trie-constrained beam search over a model's forward pass, with one KV cache per prompt.

:func:`trie_beam_search` returns the same titles, in the same order and with the same scores,
as Hugging Face ``generate(num_beams=w, num_return_sequences=w, length_penalty=1.0,
early_stopping=False, prefix_allowed_tokens_fn=trie.allowed)`` followed by "drop ``-inf``
beams, deduplicate, sort by score" (greedy search when ``w == 1``, scored as the mean token
log-probability, EOS included). In float64 the scores agree to float32 rounding; in float32 they
differ by the few 1e-6 that any change of batch layout causes. It does far less work:

* Each prompt is encoded once, and the prefix that prompts share (system prompt, few-shot
  demonstrations) is encoded once per run (:mod:`~llmrec_gen.llm.engines.packed`). Prompt
  tokens are packed into forward passes without padding.
* Beams never copy the prompt's KV cache (tree attention over one KV row per prompt), and each
  step runs the model only on the new token of each *live* beam: HF's placeholder beams (the
  first step is one row, not ``w``), beams that cannot reach the output, and prompts whose
  search has stopped are never computed.
* Continuous batching: up to ``max_active`` prompts are searched at once; a finished prompt's KV
  row goes to the next prompt, whose prompt tokens join the next forward pass.
* Full-vocabulary log-softmax per row, then only the trie's allowed tokens are gathered (no
  vocabulary-sized mask); the allowed set of a live beam is never empty (a trie view hides a
  node only when every title below it is hidden).

Why it is the same search. HF scores every allowed continuation of every beam with its
full-vocabulary log-probability, keeps the top ``max(2, 1 + n_eos) * w`` candidates, lets only
the top ``w`` of them finish (finished score = sum / length ** length_penalty), continues with
the best ``w`` unfinished ones, and stops a prompt when its pool of ``w`` finished beams is full
and the best running beam's score is not above the pool's worst (``early_stopping=False``).
Placeholder and masked beams score ``<= -1e9``: they never displace a real candidate, and when
``w <= len(trie)`` at least ``w`` real beams finish, so dropping them is exact. Score arithmetic
is float32, as in HF.

Two hooks for decoding experiments (both exact HF equivalents, tested against ``generate``):

* ``bias``: an additive term on each allowed token's log-probability, per step (HF: a logits
  processor on the log-probabilities): a per-node array (the bias of the edge into each trie
  node; e.g. collaborative-filtering scores pushed up the trie, or minus a content-free
  prompt's log-probabilities for calibration), one array per prompt, or a callable.
* ``score``: the final sequence score, ``"mean"`` (sum / length, HF's ``length_penalty=1``, as
  the recommender ranks today) or ``"sum"`` (summed log-probability, ``length_penalty=0``).
  HF's stopping rule assumes scores do not grow with length, so keep biases <= 0.

Example::

    catalog = TitleTrie(title_token_ids, eos_token_id=eos, labels=titles)  # once
    views = [catalog.view(exclude=seen) for seen in seen_titles]             # per user
    hits = trie_beam_search(model, prompt_ids, views, 10, [eos])
    hits[0][0].label, hits[0][0].score   # best title of the first prompt and its score
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from llmrec_gen.llm.engines.constrained import ROOT, TitleTrie
from llmrec_gen.llm.engines.packed import (
    Pass,
    PrefixStore,
    Runner,
    TreeKV,
    geometry,
    prepare_prefix,
    tree_attention_enabled,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "BiasFn",
    "as_bias_fn",
    "Bias",
    "BeamState",
    "ScoreMode",
    "SearchStats",
    "TitleHit",
    "length_penalty_of",
    "trie_beam_search",
]

_F32 = np.float32

ScoreMode = Literal["mean", "sum"]
"""The final sequence score: mean token log-probability (today) or their sum."""

BiasFn = Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``bias(prompt, parents, children, tokens) -> additive bias per candidate`` (float32).

``prompt`` is the prompt's index in the call; ``parents``/``children`` are the trie nodes
before/after each candidate token and ``tokens`` the token ids (int64 arrays, one entry per
allowed continuation of every running beam of that prompt at this step)."""

Bias = BiasFn | np.ndarray | Sequence[np.ndarray | None] | None
"""A per-node array (bias of the edge into each node, length ``trie.n_nodes``) shared by all
prompts, one such array (or ``None``) per prompt, or a :data:`BiasFn`."""


def length_penalty_of(score: ScoreMode) -> float:
    """HF's ``length_penalty`` for a score mode (``mean`` -> 1.0, ``sum`` -> 0.0)."""
    if score == "mean":
        return 1.0
    if score == "sum":
        return 0.0
    raise ValueError(f"score must be 'mean' or 'sum', got {score!r}")


def as_bias_fn(bias: Bias, n_prompts: int) -> BiasFn | None:
    """The callable form of any :data:`Bias`."""
    if bias is None or callable(bias):
        return bias
    if isinstance(bias, np.ndarray):
        table = np.asarray(bias, dtype=_F32)
        return lambda _i, _parents, children, _tokens: table[children]
    tables = [None if b is None else np.asarray(b, dtype=_F32) for b in bias]
    if len(tables) != n_prompts:
        raise ValueError(f"got {n_prompts} prompts but {len(tables)} bias arrays")

    def per_prompt(i: int, _parents: np.ndarray, children: np.ndarray, _t: np.ndarray):
        table = tables[i]
        return np.zeros(len(children), _F32) if table is None else table[children]

    return per_prompt


# ----------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TitleHit:
    """One returned title.

    Attributes:
        label: the trie's label of the title (e.g. the title string).
        score: the sequence score HF would report: summed (biased) token log-probabilities /
            generated tokens ** length_penalty (EOS included).
        token_ids: the generated tokens, EOS included.
        logprob: the summed token log-probabilities without any bias.
    """

    label: Any
    score: float
    token_ids: tuple[int, ...]
    logprob: float = 0.0


@dataclass
class SearchStats:
    """Where the time of one or more searches went (seconds, counts).

    Attributes:
        prepare_s: prompt encoding and trie views (filled by the engine).
        setup_s: validation, KV buffer allocation.
        prefix_s: encoding shared prompt prefixes.
        prefill_s: forward passes that hold prompt tokens (they may hold beam rows too).
        decode_s: forward passes that hold beam rows only.
        normalise_s: per-row log-softmax over the vocabulary.
        select_s: trie children, candidate gathering, bias, top-k and the beam rules.
        plan_s: building the packed inputs and attention masks of each pass.
        prompts: prompts searched.
        passes: forward passes (shared-prefix passes excluded).
        prefill_tokens: prompt tokens encoded, shared prefixes included when computed.
        shared_prefix_tokens: prompt tokens taken from a shared prefix instead of encoded.
        rows: beam rows computed.
        rows_per_pass: beam rows of each pass, in order.
    """

    prepare_s: float = 0.0
    setup_s: float = 0.0
    prefix_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    normalise_s: float = 0.0
    select_s: float = 0.0
    plan_s: float = 0.0
    prompts: int = 0
    passes: int = 0
    prefill_tokens: int = 0
    shared_prefix_tokens: int = 0
    rows: int = 0
    rows_per_pass: list[int] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        """Sum of the timed phases."""
        return (
            self.prepare_s
            + self.setup_s
            + self.prefix_s
            + self.prefill_s
            + self.decode_s
            + self.normalise_s
            + self.select_s
            + self.plan_s
        )


# ----------------------------------------------------------------------------------- beam rules
@dataclass
class _Beam:
    """A live beam: tokens, float32 score, unbiased log-prob, trie node, KV columns fed."""

    tokens: tuple[int, ...]
    score: float
    logprob: float
    node: int
    cols: tuple[int, ...] = ()


@dataclass
class BeamState:
    """One prompt's search: HF's beam rules (greedy when ``width == 1``), model-agnostic.

    Each step: :meth:`expand` lists every allowed continuation of every running beam; the
    caller gets their full-vocabulary log-probabilities from a model and calls :meth:`advance`.
    Used by the transformers path (:func:`trie_beam_search`) and the vLLM engine.

    Args:
        trie: the titles this prompt may produce (a :class:`TitleTrie` or a view of one).
        width: beams (= titles returned); clipped to ``len(trie)``.
        n_eos: number of end-of-sequence ids (HF keeps ``max(2, 1 + n_eos) * width``
            candidates per step).
        length_penalty: finished score = sum / length ** length_penalty.
        index: the prompt's index in its call (passed to a bias callable).
    """

    trie: TitleTrie
    width: int
    n_eos: int = 1
    length_penalty: float = 1.0
    index: int = 0
    length: int = 0  # tokens generated so far
    running: list[_Beam] = field(default_factory=list)
    finished: list[tuple[float, tuple[int, ...], int, float]] = field(default_factory=list)
    done: bool = False
    _cand: tuple[list[int], list[int], list[int], list[int]] | None = None

    def __post_init__(self) -> None:
        self.width = min(int(self.width), len(self.trie))
        self.max_length = int(self.trie.max_length)
        self.keep = max(2, 1 + self.n_eos) * max(self.width, 1)
        self.running = [_Beam((), 0.0, 0.0, ROOT)] if self.width >= 1 else []
        self.done = self.width < 1
        self._lp_acc: list[float] = []  # greedy: per-token log-probs

    def expand(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Every allowed continuation of every running beam, beams in order, tokens ascending.

        Returns:
            ``(beam_of, tokens, parents, children)``: per candidate, the index of its beam in
            :attr:`running`, its token, and the trie nodes before and after it.
        """
        beam_of: list[int] = []
        toks: list[int] = []
        parents: list[int] = []
        nodes: list[int] = []
        for b, beam in enumerate(self.running):
            t, kids = self.trie.children(beam.node)
            if not t:  # a live node always has a live child; reaching here is a bug
                raise AssertionError(f"empty allowed-token set at trie node {beam.node}")
            beam_of.extend([b] * len(t))
            toks.extend(t)
            parents.extend([beam.node] * len(t))
            nodes.extend(kids)
        self._cand = (beam_of, toks, parents, nodes)
        return self._cand

    def advance(
        self,
        logprobs: np.ndarray,
        eos: frozenset[int],
        bias: np.ndarray | None = None,
        raw: np.ndarray | None = None,
    ) -> None:
        """Apply one step: the candidates of the last :meth:`expand`, scored.

        Args:
            logprobs: float32 full-vocabulary log-probability of each candidate.
            eos: tokens that end a sequence.
            bias: additive float32 bias per candidate (``None``: none).
            raw: the candidates' raw logits; used by greedy search without a bias (HF takes the
                argmax of the masked raw logits; first maximum = lowest token id).
        """
        assert self._cand is not None, "advance() needs expand() first"
        beam_of, toks, _parents, nodes = self._cand
        self._cand = None
        self.length += 1
        lp = np.asarray(logprobs, dtype=_F32)
        step = lp if bias is None else (lp + np.asarray(bias, dtype=_F32)).astype(_F32)
        if self.width == 1:
            self._advance_greedy(lp, step, raw if bias is None else None, toks, nodes, eos)
        else:
            self._advance_beams(lp, step, beam_of, toks, nodes, eos)

    def _denominator(self) -> float:
        return float(self.length) ** self.length_penalty

    def _advance_beams(
        self,
        lp: np.ndarray,
        step: np.ndarray,
        beam_of: list[int],
        toks: list[int],
        nodes: list[int],
        eos: frozenset[int],
    ) -> None:
        """One HF beam step (``transformers.generation.utils.GenerationMixin._beam_search``)."""
        width = self.width
        idx = np.asarray(beam_of)
        base = np.asarray([b.score for b in self.running], dtype=_F32)
        scores = (base[idx] + step).astype(_F32)  # float32 accumulation, as HF
        base_lp = np.asarray([b.logprob for b in self.running], dtype=_F32)
        plain = (base_lp[idx] + lp).astype(_F32)
        n_keep = min(self.keep, len(scores))
        if n_keep < len(scores):
            top = np.argpartition(-scores, n_keep - 1)[:n_keep]
            order = top[np.argsort(-scores[top], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")
        at_max = self.length >= self.max_length
        denom = _F32(self._denominator())
        running: list[_Beam] = []
        new_finished = []
        for rank, j in enumerate(order.tolist()):
            tok = toks[j]
            parent = self.running[beam_of[j]]
            value = scores[j]
            if at_max or tok in eos:
                if rank < width:  # only the top `width` candidates may finish
                    score = float(_F32(value) / denom)
                    new_finished.append((score, (*parent.tokens, tok), nodes[j], float(plain[j])))
            elif len(running) < width:
                tokens = (*parent.tokens, tok)
                running.append(_Beam(tokens, float(value), float(plain[j]), nodes[j], parent.cols))
        if new_finished:
            merged = [*self.finished, *new_finished]
            self.finished = sorted(merged, key=lambda f: -f[0])[:width]
        self.running = running
        if not running:
            self.done = True
        elif len(self.finished) == width and _F32(running[0].score) / denom <= _F32(
            self.finished[-1][0]
        ):
            self.done = True  # HF's early_stopping=False heuristic: no running beam can improve

    def _advance_greedy(
        self,
        lp: np.ndarray,
        step: np.ndarray,
        raw: np.ndarray | None,
        toks: list[int],
        nodes: list[int],
        eos: frozenset[int],
    ) -> None:
        """One greedy step (``width == 1``)."""
        beam = self.running[0]
        pick = raw if raw is not None else step
        j = int(np.argmax(pick)) if len(toks) > 1 else 0
        tok = toks[j]
        self._lp_acc.append(float(step[j]))
        tokens = (*beam.tokens, tok)
        plain = float(_F32(beam.logprob) + lp[j])
        if tok in eos or self.length >= self.max_length:
            total = np.asarray(self._lp_acc, dtype=_F32).sum(dtype=_F32)
            score = float(_F32(total) / _F32(self._denominator()))
            self.finished = [(score, tokens, nodes[j], plain)]
            self.running = []
            self.done = True
        else:
            self.running = [_Beam(tokens, 0.0, plain, nodes[j], beam.cols)]

    def results(self) -> list[TitleHit]:
        """The finished beams as hits: best first, one per label, ``-inf`` dropped."""
        hits: list[TitleHit] = []
        seen: set[Any] = set()
        for score, tokens, node, plain in sorted(self.finished, key=lambda f: -f[0]):
            label = self.trie.label(node)
            if label is None or label in seen or score == float("-inf"):
                continue
            seen.add(label)
            hits.append(TitleHit(label, score, tokens, plain))
        return hits


# ----------------------------------------------------------------------------------- search
@dataclass
class _Prompt:
    """A prompt in flight: its search and where its KV lives."""

    ids: list[int]
    state: BeamState
    row: int = -1
    next_col: int = 0  # first free KV column of its row
    logit_rows: list[int] = field(default_factory=list)  # logits row of each running beam


def _add_beams(step: Pass, p: _Prompt) -> None:
    """Each running beam's last token, written after the row's columns so far; a beam sees
    the prompt, its ancestors and itself."""
    import torch

    running = p.state.running
    n = len(running)
    kv_len = p.next_col + n
    visible = torch.zeros(n, kv_len, dtype=torch.bool)
    visible[:, : len(p.ids)] = True
    rows: list[int] = []
    cols: list[int] = []
    for b, beam in enumerate(running):
        beam.cols = (*beam.cols, p.next_col + b)
        rows.extend([b] * len(beam.cols))
        cols.extend(beam.cols)
    visible[rows, cols] = True
    positions = [len(p.ids) + len(beam.tokens) - 1 for beam in running]
    tokens = [beam.tokens[-1] for beam in running]
    p.logit_rows = step.add_rows(p.row, tokens, positions, p.next_col, visible)
    p.next_col = kv_len


def _select(
    prompts: list[_Prompt],
    logits: torch.Tensor,
    logprobs: torch.Tensor,
    eos: frozenset[int],
    bias: BiasFn | None,
) -> None:
    """Score every allowed continuation of every running beam of ``prompts``; one step each.

    The allowed tokens of all beams are gathered in one indexing op (then moved to the CPU).
    """
    import torch

    flat_rows: list[int] = []
    flat_toks: list[int] = []
    spans = []
    for p in prompts:
        beam_of, toks, parents, nodes = p.state.expand()
        begin = len(flat_toks)
        flat_rows.extend(p.logit_rows[b] for b in beam_of)
        flat_toks.extend(toks)
        spans.append((p, begin, len(flat_toks), parents, nodes, toks))
    rows = torch.tensor(flat_rows, device=logits.device)
    cols = torch.tensor(flat_toks, device=logits.device)
    lp = logprobs[rows, cols].cpu().numpy()
    need_raw = bias is None and any(p.state.width == 1 for p in prompts)
    raw = logits[rows, cols].cpu().numpy() if need_raw else None
    for p, begin, end, parents, nodes, toks in spans:
        extra = None
        if bias is not None:
            extra = bias(
                p.state.index,
                np.asarray(parents, dtype=np.int64),
                np.asarray(nodes, dtype=np.int64),
                np.asarray(toks, dtype=np.int64),
            )
        p.state.advance(lp[begin:end], eos, extra, None if raw is None else raw[begin:end])


def trie_beam_search(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    tries: Sequence[TitleTrie],
    width: int | Sequence[int],
    eos_ids: Sequence[int],
    *,
    bias: Bias = None,
    score: ScoreMode = "mean",
    prefixes: PrefixStore | None = None,
    owner: Any = None,
    max_active: int = 8,
    max_pass_tokens: int = 1024,
    prefill_block: int = 128,
    stats: SearchStats | None = None,
) -> list[list[TitleHit]]:
    """Beam search over each prompt's title trie; the best ``width`` titles per prompt.

    Equivalent to HF beam search with ``num_beams = num_return_sequences = min(width,
    len(trie))``, ``length_penalty`` from ``score``, ``early_stopping=False`` and the trie as
    ``prefix_allowed_tokens_fn`` (greedy search when that is 1), see the module docstring. Pass
    all prompts at once: ``max_active`` of them are searched together and the rest stream in as
    rows free up; each prompt's result does not depend on the others.

    Args:
        model: a Hugging Face causal LM (or a PEFT model wrapping one) in eval mode, on one
            device (see :mod:`~llmrec_gen.llm.engines.packed` for the models it supports).
        prompt_ids: token ids of each prompt, exactly as the model sees them.
        tries: per prompt, the titles it may produce (a :class:`TitleTrie` or a view of one),
            each ending with EOS.
        width: beam width = titles wanted, for all prompts or per prompt; a prompt gets
            ``min(width, len(trie))`` beams, and an empty result when that is 0.
        eos_ids: the tokens that end a sequence (their number sets how many candidates HF
            keeps per step, ``max(2, 1 + len(eos_ids)) * width``).
        bias: additive log-probability bias per allowed token and step (see :data:`Bias`).
        score: ``"mean"`` (sum / length, the default) or ``"sum"`` of token log-probabilities.
        prefixes: where shared prompt prefixes are kept across calls (``None``: only within
            this call).
        owner: what the model's current KV depends on besides its weights (the active
            adapter); a kept prefix of another owner is not reused.
        max_active: prompts searched at once (KV memory: one row of ``prompt + width *
            max_length`` positions each; ~30 MB per row for SmolLM2-135M in float32).
        max_pass_tokens: prompt tokens admitted into one forward pass, beam rows included
            (a prompt longer than that still gets a pass of its own).
        prefill_block: prompt tokens per attention block in the prefill (a block skips the
            keys after its last token, i.e. most of the causal triangle).
        stats: if given, timings and counts are added to it.

    Returns:
        Per prompt, its hits, best first (score descending).

    Raises:
        ValueError: mismatched argument lengths, an empty prompt, empty ``eos_ids``, a model
            the search cannot run, or prompt + titles longer than a sliding attention window.
    """
    import torch

    stats = stats if stats is not None else SearchStats()
    t0 = time.perf_counter()
    n = len(prompt_ids)
    if len(tries) != n:
        raise ValueError(f"got {n} prompts but {len(tries)} tries")
    widths = [int(width)] * n if isinstance(width, int) else [int(w) for w in width]
    if len(widths) != n:
        raise ValueError(f"got {n} prompts but {len(widths)} widths")
    eos = frozenset(int(e) for e in eos_ids)
    if not eos:
        raise ValueError("eos_ids is empty")
    if max_active < 1 or max_pass_tokens < 1 or prefill_block < 1:
        raise ValueError("max_active, max_pass_tokens and prefill_block must be >= 1")
    penalty = length_penalty_of(score)
    bias_fn = as_bias_fn(bias, n)
    results: list[list[TitleHit]] = [[] for _ in range(n)]

    prompts: list[_Prompt] = []
    for i, (ids, trie, w) in enumerate(zip(prompt_ids, tries, widths, strict=True)):
        if not len(ids):
            raise ValueError(f"prompt {i} is empty")
        state = BeamState(trie, w, len(eos), penalty, i)
        if not state.done:
            prompts.append(_Prompt([int(t) for t in ids], state))
    if not prompts:
        return results
    stats.prompts += len(prompts)

    geo = geometry(model)
    length = max(len(p.ids) + p.state.width * max(p.state.max_length - 1, 0) for p in prompts)
    if geo.window is not None and length > geo.window:
        raise ValueError(f"prompt + titles exceed the sliding attention window ({geo.window})")
    param = next(model.parameters())
    n_rows = min(max_active, len(prompts))
    stats.setup_s += time.perf_counter() - t0

    with torch.inference_mode(), tree_attention_enabled(model):
        t0 = time.perf_counter()
        store = prefixes if prefixes is not None else PrefixStore()
        cache, covered, computed = prepare_prefix(
            model, geo, [p.ids for p in prompts], store, owner, prefill_block
        )
        stats.prefix_s += time.perf_counter() - t0
        stats.prefill_tokens += computed
        stats.shared_prefix_tokens += sum(covered)
        kv = TreeKV(geo, n_rows, length, param.dtype, param.device)
        runner = Runner(model, kv, geo)

        pending = deque(zip(prompts, covered, strict=True))
        free = list(range(n_rows - 1, -1, -1))
        active: list[_Prompt] = []
        while pending or active:
            t0 = time.perf_counter()
            step = Pass(runner)
            for p in active:
                _add_beams(step, p)
            while pending and free:
                m = len(pending[0][0].ids) - pending[0][1]
                if step.tokens and len(step.tokens) + m > max_pass_tokens:
                    break
                p, first = pending.popleft()
                p.row = free.pop()
                kv.load_prefix(p.row, cache, first)
                p.logit_rows = [step.add_prompt(p.ids, p.row, first, prefill_block)]
                p.next_col = len(p.ids)
                active.append(p)
            t1 = time.perf_counter()
            logits = step.run()
            t2 = time.perf_counter()
            logprobs = torch.log_softmax(logits, dim=-1)
            t3 = time.perf_counter()
            _select(active, logits, logprobs, eos, bias_fn)
            still = []
            for p in active:
                if p.state.done:
                    results[p.state.index] = p.state.results()
                    free.append(p.row)
                else:
                    still.append(p)
            active = still
            t4 = time.perf_counter()
            stats.plan_s += t1 - t0
            if step.n_prompt_tokens:
                stats.prefill_s += t2 - t1
            else:
                stats.decode_s += t2 - t1
            stats.normalise_s += t3 - t2
            stats.select_s += t4 - t3
            stats.passes += 1
            stats.prefill_tokens += step.n_prompt_tokens
            n_beam_rows = len(step.tokens) - step.n_prompt_tokens
            stats.rows += n_beam_rows
            stats.rows_per_pass.append(n_beam_rows)
    return results
