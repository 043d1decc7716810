"""A collaborative prior on constrained decoding (D3, Bao et al., EMNLP 2024): CF scores as
per-token log-probability biases over the catalogue trie.

A CF model's scores over a user's allowed items become a distribution ``p`` (softmax of the
per-user z-scored scores). Each trie node gets the probability mass of the titles below it,
``M(node)``; the bias of the edge into ``node`` is ``weight * (log M(node) - log M(parent))``.
Along a whole title the biases telescope to ``weight * log p(item)``, so the decoder's score of
a finished title is its language-model log-probability plus ``weight`` times the CF
log-probability, and every step already sees how much CF mass its token leads to. All biases
are <= 0, as the beam search's stopping rule requires.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from llmrec_gen.llm.engines.constrained import TitleTrie


def title_paths(trie: TitleTrie) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """Every label of ``trie``'s base, the nodes on its root-to-terminal path (root excluded)
    concatenated, and the path lengths (so that ``np.repeat(values, lengths)`` lines up)."""
    base = getattr(trie, "base", trie)
    labels = base.labels
    nodes: list[int] = []
    lengths = np.zeros(len(labels), dtype=np.int64)
    for i, label in enumerate(labels):
        n = base.node_of(label)
        count = 0
        while n is not None and n > 0:
            nodes.append(n)
            count += 1
            n = base.parent(n)
        lengths[i] = count
    return labels, np.asarray(nodes, dtype=np.int64), lengths


def cf_distribution(scores: np.ndarray) -> np.ndarray:
    """Softmax of the z-scored ``scores`` (a flat score vector gives the uniform distribution)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s
    sd = s.std()
    z = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    e = np.exp(z - z.max())
    return e / e.sum()


def prior_bias(
    trie: TitleTrie,
    paths: tuple[list[Hashable], np.ndarray, np.ndarray],
    label_scores: Mapping[Hashable, float],
    weight: float,
) -> np.ndarray:
    """The per-node bias array (length ``trie.n_nodes``) for one user.

    Args:
        trie: the user's trie view (or the base trie); its node ids index the result.
        paths: :func:`title_paths` of the same base trie (computed once per catalogue).
        label_scores: CF score per allowed label; labels without a score get no mass.
        weight: the prior's weight (0 gives all zeros).

    Returns:
        float32 biases, ``weight * (log M(node) - log M(parent))`` where both masses are
        positive, 0 elsewhere (nodes without mass are hidden by the view anyway).
    """
    base = getattr(trie, "base", trie)
    n_nodes = base.n_nodes
    if weight == 0 or not label_scores:
        return np.zeros(n_nodes, dtype=np.float32)
    labels, nodes, lengths = paths
    known = [lab for lab in labels if lab in label_scores]
    p = dict(zip(known, cf_distribution(np.array([label_scores[x] for x in known])), strict=True))
    per_label = np.array([p.get(lab, 0.0) for lab in labels], dtype=np.float64)
    mass = np.bincount(nodes, weights=np.repeat(per_label, lengths), minlength=n_nodes)
    mass[0] = per_label.sum()
    parents = np.asarray(base._parent, dtype=np.int64)
    parent_mass = mass[np.maximum(parents, 0)]
    ok = (mass > 0) & (parent_mass > 0)
    ok[0] = False
    bias = np.zeros(n_nodes, dtype=np.float64)
    bias[ok] = weight * (np.log(mass[ok]) - np.log(parent_mass[ok]))
    return np.minimum(bias, 0.0).astype(np.float32)


def bias_arrays(
    tries: Sequence[TitleTrie],
    label_scores: Sequence[Mapping[Hashable, float]],
    weight: float,
    cache: dict[int, tuple[TitleTrie, tuple[list[Hashable], np.ndarray, np.ndarray]]] | None = None,
) -> list[np.ndarray]:
    """:func:`prior_bias` for each prompt's trie (paths cached per base trie in ``cache``)."""
    cache = {} if cache is None else cache
    out = []
    for trie, scores in zip(tries, label_scores, strict=True):
        base = getattr(trie, "base", trie)
        hit = cache.get(id(base))
        if hit is None or hit[0] is not base:  # the id of a dropped trie can be reused
            hit = cache[id(base)] = (base, title_paths(base))
        out.append(prior_bias(trie, hit[1], scores, weight))
    return out
