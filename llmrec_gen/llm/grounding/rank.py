"""Full-ranking grounding (BIGRec): a distance from the generated titles to *every* catalogue item.

A generator writes a handful of titles; to get a full ranking out of it, every catalogue item is
placed by its distance to the nearest generated title in a shared embedding space (MiniLM by
default, the grounder's encoder)::

    d_j(i) = 0                               if title j grounds to item i (exact/fuzzy match)
             1 - cos(e(title_j), e(item_i))  otherwise
    D(i)   = min_j [ d_j(i) + rank_penalty * (j - 1) ]        score(i) = -D(i)

so the items the model named come first only if the distances say so (an exact match has
distance 0), the rest of the catalogue follows by similarity, and nothing needs a popularity
fill. ``rank_penalty`` keeps the model's own order among equally close items (0.0-0.05).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import numpy as np

from llmrec_gen.data.titles import split_year
from llmrec_gen.llm.grounding.match import Grounder
from llmrec_gen.llm.grounding.normalize import display_title


def rank_catalogue(
    grounder: Grounder,
    title_lists: Sequence[Sequence[str]],
    excluded: Sequence[Collection[Hashable]],
    allowed: Sequence[Collection[Hashable]] | None = None,
    rank_penalty: float = 0.01,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per user, every rankable catalogue item ordered by ``score = -D`` (best first).

    Args:
        grounder: the grounder over the catalogue (its encoder and lexical matching are used).
        title_lists: per user, the generated titles in the model's order.
        excluded: per user, item IDs never to return (the user's history).
        allowed: per user, the only item IDs to rank (candidates); None: the whole catalogue.
        rank_penalty: distance added per position of the generated title (see module docs).

    Returns:
        Per user, ``(item_ids, scores)``: item IDs (catalogue dtype) and their scores,
        non-increasing. A user with no generated title gets every item at score ``-1.0``
        in catalogue order (no evidence either way).
    """
    ids = np.asarray(grounder.item_ids)
    index = {item: n for n, item in enumerate(grounder.item_ids)}
    flat = [str(t) for titles in title_lists for t in titles]
    matches = grounder.match(flat) if flat else []
    bare = [display_title(split_year(t)[0]) for t in flat]
    vecs = grounder._encode(bare) if flat else np.zeros((0, 1), dtype=np.float32)
    sims = vecs @ grounder.catalog_embeddings.T if flat else np.zeros((0, len(ids)))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    start = 0
    for n, titles in enumerate(title_lists):
        m = len(titles)
        if m:
            dist = 1.0 - sims[start : start + m].astype(np.float64)
            for j, found in enumerate(matches[start : start + m]):
                if found is not None:
                    dist[j, index[found.item_id]] = 0.0
            dist += rank_penalty * np.arange(m)[:, None]
            scores = -dist.min(axis=0)
        else:
            scores = np.full(len(ids), -1.0)
        start += m
        keep = np.ones(len(ids), dtype=bool)
        for item in excluded[n]:
            if item in index:
                keep[index[item]] = False
        if allowed is not None:
            mask = np.zeros(len(ids), dtype=bool)
            mask[[index[i] for i in allowed[n] if i in index]] = True
            keep &= mask
        rows = np.flatnonzero(keep)
        order = rows[np.argsort(-scores[rows], kind="stable")]
        out.append((ids[order], scores[order]))
    return out
