"""Prefix tries over tokenized catalogue titles, for decoding that can only emit an allowed title.

Each title is stored as its token ids followed by the end-of-sequence id, so a decoder that at
every step picks one of :meth:`TitleTrie.allowed` tokens ends with exactly one whole allowed
title (0 % invalid outputs by construction). A trie is built once per catalogue (and tokenization
anchor); :meth:`TitleTrie.view` hides the titles one user may not get (their seen items) in
microseconds per hidden title, and behaves like a trie built from the remaining titles. Both are
engine-agnostic plain Python with a prefix API (``allowed``, ``lookup``) and a node API
(``children``, ``label``; node 0 is the root) that the trie beam search walks.

Example::

    trie = TitleTrie([[5, 6], [5, 7, 8]], eos_token_id=2, labels=["A", "B"])
    trie.allowed([])       # [5]
    trie.allowed([5])      # [6, 7]
    trie.allowed([5, 6])   # [2]
    trie.lookup([5, 6, 2]) # "A"
    trie.view(exclude=["A"]).allowed([5])  # [7]
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

ROOT = 0
"""The root node of every trie and view."""


class TitleTrie:
    """A prefix trie of token sequences, each terminated by the EOS token.

    Duplicate token sequences are stored once; their labels are kept in order and the first one
    (the first one not excluded, in a view) is the one :meth:`lookup` returns. Empty sequences
    are skipped because an empty title is not a title.

    Args:
        sequences: token ids of each title (without EOS).
        eos_token_id: the id appended to every sequence; decoding ends when it is chosen.
        labels: what :meth:`lookup` returns for each sequence (default: its index); hashable.

    Attributes:
        eos_token_id: the terminating token id.
        max_length: the longest stored sequence in tokens, EOS included (0 when empty).
    """

    def __init__(
        self,
        sequences: Iterable[Sequence[int]],
        eos_token_id: int,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        self.eos_token_id = int(eos_token_id)
        self._children: list[dict[int, int]] = [{}]  # node -> {token id: child node}
        self._parent: list[int] = [-1]
        self._count: list[int] = [0]  # distinct sequences in the node's subtree
        self._labels: dict[int, list[Hashable]] = {}  # terminal node (after EOS) -> labels
        self._terminal: dict[Hashable, int] = {}  # label -> terminal node
        self._kids: dict[int, tuple[list[int], list[int]]] = {}
        self.max_length = 0
        for idx, seq in enumerate(sequences):
            if len(seq) == 0:
                continue
            label = labels[idx] if labels is not None else idx
            self._insert([int(t) for t in seq], label)

    def _insert(self, seq: list[int], label: Hashable) -> None:
        if label in self._terminal:  # a label names one title
            return
        node = 0
        path = [0]
        for tok in [*seq, self.eos_token_id]:
            child = self._children[node].get(tok)
            if child is None:
                child = len(self._children)
                self._children.append({})
                self._parent.append(node)
                self._count.append(0)
                self._children[node][tok] = child
            node = child
            path.append(node)
        self._terminal[label] = node
        if node in self._labels:
            self._labels[node].append(label)
            return
        self._labels[node] = [label]
        for n in path:
            self._count[n] += 1
        self.max_length = max(self.max_length, len(seq) + 1)

    @property
    def n_nodes(self) -> int:
        """Number of nodes (root included): the length of a per-node array (e.g. a bias)."""
        return len(self._children)

    def __len__(self) -> int:
        """Number of distinct stored sequences."""
        return self._count[0]

    @property
    def labels(self) -> list[Hashable]:
        """Every label of the base trie, in insertion order (a view's hidden ones included)."""
        return list(self._terminal)

    # -- node API --------------------------------------------------------------------------
    def children(self, node: int) -> tuple[list[int], list[int]]:
        """Tokens allowed after ``node`` (ascending) and the child node each leads to (cached)."""
        kids = self._kids.get(node)
        if kids is None:
            items = sorted(self._children[node].items())
            kids = ([t for t, _ in items], [c for _, c in items])
            self._kids[node] = kids
        return kids

    def label(self, node: int) -> Hashable | None:
        """The label of terminal ``node`` (reached through EOS), or ``None``."""
        labels = self._labels.get(node)
        return labels[0] if labels else None

    def node_of(self, label: Hashable) -> int | None:
        """The terminal node of the title labelled ``label`` (``None`` if unknown)."""
        return self._terminal.get(label)

    def parent(self, node: int) -> int:
        """The parent of ``node`` (-1 for the root)."""
        return self._parent[node]

    # -- prefix API ------------------------------------------------------------------------
    def _walk(self, prefix: Sequence[int]) -> int | None:
        node = 0
        for tok in prefix:
            nxt = self._children[node].get(int(tok))
            if nxt is None or not self._alive(nxt):
                return None
            node = nxt
        return node

    def _alive(self, node: int) -> bool:
        return True

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` so that it stays the prefix of a stored title + EOS.

        Args:
            prefix: the token ids generated so far (prompt excluded).

        Returns:
            Allowed next token ids, ascending; ``[eos_token_id]`` when the prefix is not in the
            trie or is already complete (so a decoder is never left with no legal token).
        """
        node = self._walk(prefix)
        if node is None:
            return [self.eos_token_id]
        return list(self.children(node)[0]) or [self.eos_token_id]

    def lookup(self, ids: Sequence[int]) -> Hashable | None:
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
        return None if node is None else self.label(node)

    def view(self, exclude: Iterable[Hashable] = ()) -> TrieView:
        """This trie without the titles labelled ``exclude`` (unknown labels are ignored)."""
        return TrieView(self, exclude)


class TrieView(TitleTrie):
    """A :class:`TitleTrie` minus some labels (see :meth:`TitleTrie.view`).

    Shares the base trie's nodes (so node ids, and per-node arrays, are the base's); behaves
    exactly like a ``TitleTrie`` built from the remaining titles (same ``allowed``, ``lookup``,
    ``len``, ``children``), except that ``max_length`` stays the base's (an upper bound).

    Attributes:
        base: the full trie.
    """

    def __init__(self, base: TitleTrie, exclude: Iterable[Hashable] = ()) -> None:  # noqa: D107
        self.base = base
        self.eos_token_id = base.eos_token_id
        self.max_length = base.max_length
        self._children = base._children
        self._parent = base._parent
        self._labels = base._labels
        self._terminal = base._terminal
        self._count = base._count
        self._kids = {}
        self._excluded = {label for label in exclude if label in base._terminal}
        removed: dict[int, int] = {}  # node -> excluded sequences in its subtree
        for node in {base._terminal[label] for label in self._excluded}:
            if all(label in self._excluded for label in base._labels[node]):
                n = node
                while n >= 0:
                    removed[n] = removed.get(n, 0) + 1
                    n = base._parent[n]
        self._removed = removed

    def __len__(self) -> int:
        """Number of distinct sequences left."""
        return self._count[0] - self._removed.get(0, 0)

    def _alive(self, node: int) -> bool:
        return self._count[node] > self._removed.get(node, 0)

    def children(self, node: int) -> tuple[list[int], list[int]]:
        """Allowed next tokens at ``node`` (ascending) and their child nodes (cached)."""
        kids = self._kids.get(node)
        if kids is None:
            toks, nodes = self.base.children(node)
            if self._removed:
                pairs = [(t, c) for t, c in zip(toks, nodes, strict=True) if self._alive(c)]
                toks, nodes = [t for t, _ in pairs], [c for _, c in pairs]
            kids = (toks, nodes)
            self._kids[node] = kids
        return kids

    def label(self, node: int) -> Hashable | None:
        """The label of terminal ``node`` (reached through EOS), or ``None`` if hidden."""
        labels = self._labels.get(node)
        if labels is None or not self._alive(node):
            return None
        return next(label for label in labels if label not in self._excluded)

    def view(self, exclude: Iterable[Hashable] = ()) -> TrieView:
        """The base trie without this view's exclusions and ``exclude``."""
        return TrieView(self.base, [*self._excluded, *exclude])


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
