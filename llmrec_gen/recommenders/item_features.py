"""Content features of catalogue items: word tokens and the LightFM hybrid feature matrix.

Shared by the lexical (BM25) and hybrid (LightFM) baselines, so both read items the same way.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

_TOKEN = re.compile(r"[0-9a-z]+(?:['\-][0-9a-z]+)*")


def words(text: str) -> list[str]:
    """Lower-case word tokens (apostrophes and hyphens kept inside words)."""
    return _TOKEN.findall(text.lower())


def item_tokens(title: str, year: Any, genres: str) -> list[str]:
    """Content tokens of one item: title words, genres (one token each), year and decade.

    Example: ``item_tokens("Toy Story", 1995, "Animation|Children's")`` ->
    ``["toy", "story", "animation", "children's", "1995", "1990s"]``.
    """
    tokens = words(str(title))
    tokens += [g.strip().lower().replace(" ", "-") for g in str(genres).split("|") if g.strip()]
    if pd.notna(year):
        tokens += [str(int(year)), f"{int(year) // 10 * 10}s"]
    return tokens


def catalog_tokens(catalog: pd.DataFrame) -> list[list[str]]:
    """:func:`item_tokens` of every catalogue row, in catalogue order."""
    return [
        item_tokens(t, y, g)
        for t, y, g in zip(catalog["title"], catalog["year"], catalog["genres"], strict=True)
    ]


def lightfm_item_features(catalog: pd.DataFrame, min_title_count: int = 2) -> sp.csr_matrix:
    """Hybrid item features: identity + genres + decade + title words, rows summing to 1.

    Title words seen in fewer than ``min_title_count`` items are dropped: a word unique to one
    item carries no more than its identity feature does.
    """
    n = len(catalog)
    rows, cols = list(range(n)), list(range(n))  # identity features first
    vocab: dict[str, int] = {}
    per_item: list[list[str]] = []
    title_counts: dict[str, int] = {}
    for title in catalog["title"]:
        for w in set(words(str(title))):
            title_counts[w] = title_counts.get(w, 0) + 1
    for title, year, genres in zip(
        catalog["title"], catalog["year"], catalog["genres"], strict=True
    ):
        feats = [f"genre:{g}" for g in str(genres).split("|") if g.strip()]
        if pd.notna(year):
            feats.append(f"decade:{int(year) // 10 * 10}")
        feats += [
            f"title:{w}"
            for w in sorted(set(words(str(title))))
            if title_counts[w] >= min_title_count
        ]
        per_item.append(feats)
    for i, feats in enumerate(per_item):
        for f in feats:
            rows.append(i)
            cols.append(n + vocab.setdefault(f, len(vocab)))
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n + len(vocab))
    )
    m.sum_duplicates()
    row_sums = np.asarray(m.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / row_sums) @ m, dtype=np.float32)
