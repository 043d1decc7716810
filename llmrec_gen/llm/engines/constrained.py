"""Prefix trie over tokenized catalog titles, for decoding that can only emit an allowed title.

Each title is stored as its token ids followed by the end-of-sequence id, so a decoder that at
every step picks one of :meth:`TitleTrie.allowed` tokens ends with exactly one whole allowed
title (0 % invalid outputs by construction). The trie is engine-agnostic (plain Python): the
transformers engine plugs it into ``prefix_allowed_tokens_fn``; another engine can use it from a
logits processor.

Example::

    trie = TitleTrie([[5, 6], [5, 7, 8]], eos_token_id=2, labels=["A", "B"])
    trie.allowed([])       # [5]
    trie.allowed([5])      # [6, 7]
    trie.allowed([5, 6])   # [2]
    trie.lookup([5, 6, 2]) # "A"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class TitleTrie:
    """A prefix trie of token sequences, each terminated by the EOS token.

    Duplicate token sequences are stored once (the first label wins); empty sequences are
    skipped because an empty title is not a title.

    Args:
        sequences: token ids of each title (without EOS).
        eos_token_id: the id appended to every sequence; decoding ends when it is chosen.
        labels: what :meth:`lookup` returns for each sequence (default: its index).

    Attributes:
        eos_token_id: the terminating token id.
        max_length: the longest stored sequence in tokens, EOS included (0 when empty).
    """

    def __init__(
        self,
        sequences: Iterable[Sequence[int]],
        eos_token_id: int,
        labels: Sequence[object] | None = None,
    ) -> None:
        self.eos_token_id = int(eos_token_id)
        self._children: list[dict[int, int]] = [{}]  # node -> {token id: child node}
        self._labels: dict[int, object] = {}  # terminal node (reached via EOS) -> label
        self._allowed_cache: dict[int, list[int]] = {}
        self.max_length = 0
        for idx, seq in enumerate(sequences):
            if len(seq) == 0:
                continue
            label = labels[idx] if labels is not None else idx
            self._insert([int(t) for t in seq], label)

    def _insert(self, seq: list[int], label: object) -> None:
        node = 0
        for tok in [*seq, self.eos_token_id]:
            child = self._children[node].get(tok)
            if child is None:
                child = len(self._children)
                self._children.append({})
                self._children[node][tok] = child
            node = child
        if node not in self._labels:
            self._labels[node] = label
            self.max_length = max(self.max_length, len(seq) + 1)

    def __len__(self) -> int:
        """Number of distinct stored sequences."""
        return len(self._labels)

    def _walk(self, prefix: Sequence[int]) -> int | None:
        node = 0
        for tok in prefix:
            nxt = self._children[node].get(int(tok))
            if nxt is None:
                return None
            node = nxt
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` so that it stays the prefix of a stored title + EOS.

        Args:
            prefix: the token ids generated so far (prompt excluded).

        Returns:
            Allowed next token ids; ``[eos_token_id]`` when the prefix is not in the trie or is
            already complete (so a decoder is never left with no legal token).
        """
        node = self._walk(prefix)
        if node is None:
            return [self.eos_token_id]
        cached = self._allowed_cache.get(node)
        if cached is None:
            cached = list(self._children[node]) or [self.eos_token_id]
            self._allowed_cache[node] = cached
        return cached

    def lookup(self, ids: Sequence[int]) -> object | None:
        """Return the label of the title that ``ids`` spells.

        Args:
            ids: generated token ids; everything after the first EOS is ignored, and the EOS may
                be missing (then the ids must spell a whole title).

        Returns:
            The label, or ``None`` if ``ids`` is not exactly one stored title.
        """
        seq = [int(t) for t in ids]
        if self.eos_token_id in seq:
            seq = seq[: seq.index(self.eos_token_id)]
        node = self._walk([*seq, self.eos_token_id])
        return None if node is None else self._labels.get(node)


def tokenize_titles(
    tokenizer: Any,
    titles: Sequence[str],
    anchor: str,
    cache: dict[tuple[str, str], tuple[int, ...]],
) -> list[tuple[int, ...]]:
    """Token ids of each title as a model produces it right after ``anchor`` (shared by engines).

    Each title is tokenized as ``anchor + title`` and the anchor's tokens are dropped; if the two
    merge into a token across the boundary, the title is tokenized alone. Results are cached in
    ``cache`` per (anchor, title).
    """
    missing = [t for t in dict.fromkeys(titles) if (anchor, t) not in cache]
    if missing:
        anchor_ids = tokenizer(anchor, add_special_tokens=False).input_ids if anchor else []
        joined = tokenizer([anchor + t for t in missing], add_special_tokens=False).input_ids
        alone = None
        for j, (title, ids) in enumerate(zip(missing, joined, strict=True)):
            if ids[: len(anchor_ids)] == anchor_ids:
                seq = tuple(ids[len(anchor_ids) :])
            else:
                if alone is None:
                    alone = tokenizer(missing, add_special_tokens=False).input_ids
                seq = tuple(alone[j])
            cache[(anchor, title)] = seq
    return [cache[(anchor, t)] for t in titles]
