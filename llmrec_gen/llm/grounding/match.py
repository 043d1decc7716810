"""Grounding generated titles to catalogue item IDs (exact -> fuzzy -> embedding).

An LLM recommender answers with text; this module turns that text into ranked catalog IDs::

    titles = parse_list(generated_text, max_items=20)  # "1. **Heat** (1995) - ..." -> "Heat (1995)"
    grounder = Grounder(catalog)                        # catalog: item_id, title, year, ...
    items = grounder.ground(titles, seen=user_history, k=10)
    lists, stats = grounder.ground_batch(per_user_titles, seens, k=10)   # stats: batch totals
    lists, per_user = grounder.ground_each(per_user_titles, seens, k=10)  # one stats per user

Each title is tried in order (first hit wins):

1. **exact**: equal after :func:`normalize_title` (case, accents, punctuation, article position and
   a trailing year do not matter). Catalog titles are also indexed by their parts, so
   "Seven (Se7en)" answers to "Seven" and to "Se7en". When several items share the title, the one
   whose year equals the generated year (else within one year) wins, else the first in the catalog.
2. **fuzzy**: rapidfuzz similarity (0-100) between normalized titles with a leading English
   article dropped, best candidate at or above ``fuzzy_threshold`` (titles shorter than 5
   characters are not fuzzy-matched). The score is ``max(token_sort_ratio, ratio)``, not
   ``WRatio``: WRatio scores substrings highly (partial_ratio), so "Star Wars" would match
   "Star Wars: Episode V - The Empire Strikes Back" and "Heat" would match "Heathers" at ~90;
   token_sort_ratio tolerates typos and word-order changes but penalises extra or missing words,
   and plain ratio covers a merged or split word ("Golden Eye" vs "GoldenEye", 95), which token
   sorting scatters. Failing that, a *subtitle match*:
   when the generated title has a year, a catalog item of exactly that year whose whole title
   appears inside the generated one ("Star Wars: Episode IV - A New Hope (1977)" ->
   "Star Wars (1977)"); the score is then the share of the generated title it covers.
3. **embedding**: cosine similarity of all-MiniLM-L6-v2 embeddings of the generated title and every
   catalog title (encoded once, lazily, and kept on the grounder), nearest at or above
   ``embedding_threshold``. All the titles of a batch that reach this step are encoded in one call.

Two guards apply to fuzzy and embedding matches. Sequels: the numbers in the two titles (digits,
roman numerals II-XX, number words) must be the same set, so "Toy Story 3" never grounds to
"Toy Story" and "Godfather: Part II" never to "The Godfather". Years: when the generated title has
a year, the item's must be within 2 years, so "Jurassic World (2015)" does not ground to
"Jurassic Park (1993)" (cosine 0.92) nor "Batman Begins (2005)" to "Batman (1989)".

Titles are data, never instructions: they are only ever compared as strings. A grounded item that is
in the user's ``seen`` set, or was already returned for this user, is dropped, as is a title that
grounds to nothing (a hallucination); :class:`GroundingStats` counts each outcome. ``seen`` holds
catalog ``item_id`` values of the same type as the catalog's (``5`` never equals ``"5"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from rapidfuzz import fuzz, process

from llmrec_gen.config import StrictModel, validate
from llmrec_gen.data.titles import split_year
from llmrec_gen.errors import DataError
from llmrec_gen.llm.grounding.normalize import (
    display_title,
    drop_leading_article,
    normalize_title,
    numbers,
    title_keys,
)
from llmrec_gen.llm.grounding.parse import MAX_ITEM_CHARS
from llmrec_gen.llm.grounding.stats import GroundingStats

logger = logging.getLogger(__name__)


class GroundingConfig(StrictModel):
    """How generated titles are matched to the catalogue (see :class:`Grounder`)."""

    fuzzy_threshold: float = Field(85.0, ge=0, le=100)  # rapidfuzz score a fuzzy match needs; 80-95
    embedding_threshold: float = Field(0.75, ge=-1, le=1)  # cosine a MiniLM match needs; 0.7-0.9
    use_embeddings: bool = True  # try the MiniLM embedding step (needs sentence-transformers)
    encoder: str = "default"  # sentence encoder: "default" (packaged MiniLM) or a local dir
    full_ranking: bool = False  # rank every catalogue item by distance to the titles (BIGRec)
    rank_penalty: float = Field(0.01, ge=0)  # full ranking: distance added per list position


EncodeFn = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class GroundedTitle:
    """One generated title grounded to a catalog item.

    Attributes:
        generated: the generated title as given to the grounder.
        item_id: the catalog ``item_id`` it grounds to.
        method: ``"exact"``, ``"fuzzy"`` or ``"embedding"``.
        score: 1.0 for exact; rapidfuzz ``max(token_sort_ratio, ratio) / 100`` for fuzzy (for a
            same-year subtitle match, the share of the generated title covered); cosine
            similarity for embedding.
    """

    generated: str
    item_id: Any
    method: str
    score: float


# Approximate matches must be within this many years of a generated year (release-date slack):
# "Jurassic World (2015)" is not "Jurassic Park (1993)", however close the embeddings.
_YEAR_TOLERANCE = 2
_MIN_FUZZY_LEN = 5  # one edit between 3-4 letter titles ("Hat"/"Heat") scores ~86: not evidence
_SEQUEL_WORDS = frozenset({"part", "chapter", "vol", "volume"})
_MIN_SUBTITLE_KEY = 4  # shorter catalog titles ("It", "Big") are too common inside other titles


@dataclass(frozen=True)
class _Match:
    row: int
    method: str
    score: float


class Grounder:
    """Ground generated titles to catalog item IDs (exact -> fuzzy -> embedding).

    Build it once per catalog; it keeps the title indexes, a per-title match cache and (on first
    need) the catalog title embeddings.

    Args:
        catalog: DataFrame with ``item_id`` (unique) and ``title``; ``year`` (nullable) is used to
            choose between items that share a title (when absent or NA, a ``(year)`` at the end
            of the title is used). Other columns are ignored.
        config: a :class:`GroundingConfig` (or mapping). ``fuzzy_threshold`` 85 accepts typos
            and a missing article ("Usual Suspects" ~ 88) but not different films sharing
            words; ``embedding_threshold`` 0.75 is where near-synonymous titles still pass
            (lower grounds hallucinations to look-alikes).
        encode_fn: optional ``list[str] -> (n, d)`` L2-normalised embedding function replacing
            :func:`llmrec_gen.embeddings.encode` (for tests or another encoder).
        **overrides: config fields given as keywords.

    Raises:
        ConfigError: an invalid config field (named in the message).
        DataError: the catalog lacks ``item_id``/``title`` or has duplicate item IDs.
        ModelNotFoundError: ``use_embeddings`` is set, no ``encode_fn`` is given and the encoder
            package is not installed (checked here, loaded only when first needed).
    """

    _FUZZY_CANDIDATES = 10  # best fuzzy/embedding candidates checked against the sequel guard

    def __init__(
        self,
        catalog: pd.DataFrame,
        config: GroundingConfig | Mapping[str, Any] | None = None,
        *,
        encode_fn: EncodeFn | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(config, GroundingConfig):
            config = config.model_dump()
        cfg = validate(GroundingConfig, {**(config or {}), **overrides}, "grounding")
        missing = {"item_id", "title"} - set(catalog.columns)
        if missing:
            raise DataError(f"catalog lacks column(s) {sorted(missing)} needed for grounding")
        if catalog["item_id"].duplicated().any():
            dupes = catalog.loc[catalog["item_id"].duplicated(), "item_id"].head(3).tolist()
            raise DataError(f"catalog has duplicate item_id values, e.g. {dupes}")
        if cfg.use_embeddings and encode_fn is None:
            from llmrec_gen.embeddings import resolve_encoder_dir

            resolve_encoder_dir(cfg.encoder)  # fail now, not at the first unmatched title

        self.config = cfg
        self.fuzzy_threshold = cfg.fuzzy_threshold
        self.embedding_threshold = cfg.embedding_threshold
        self.use_embeddings = cfg.use_embeddings
        self._encode_fn = encode_fn
        self._encoder_name = cfg.encoder

        self.item_ids: list[Any] = catalog["item_id"].tolist()
        self.titles: list[str] = [str(t) for t in catalog["title"].tolist()]
        raw_years = catalog["year"].tolist() if "year" in catalog.columns else [None] * len(catalog)
        self._years: list[int | None] = []
        for title, year in zip(self.titles, raw_years, strict=True):
            if year is None or pd.isna(year):
                year = split_year(title)[1]
            self._years.append(None if year is None else int(year))

        self._exact: dict[str, list[int]] = {}
        self._alias: dict[str, list[int]] = {}
        fuzzy_rows: dict[str, list[int]] = {}
        self._row_numbers: list[frozenset[str]] = []
        self._row_keys: list[list[str]] = []  # article-dropped keys, for subtitle matches
        self._by_year: dict[int, list[int]] = {}
        for row, title in enumerate(self.titles):
            full, aliases = title_keys(title)
            self._row_numbers.append(numbers(full))
            self._row_keys.append([drop_leading_article(a) for a in (full, *aliases) if a])
            if self._years[row] is not None:
                self._by_year.setdefault(self._years[row], []).append(row)
            if full:
                self._exact.setdefault(full, []).append(row)
            for alias in aliases:
                self._alias.setdefault(alias, []).append(row)
            for key in (full, *aliases):
                if key:
                    rows = fuzzy_rows.setdefault(drop_leading_article(key), [])
                    if row not in rows:
                        rows.append(row)
        self._fuzzy_keys: list[str] = list(fuzzy_rows)
        self._fuzzy_rows: list[list[int]] = list(fuzzy_rows.values())
        self._cache: dict[tuple[str, int | None], _Match | None] = {}
        self._catalog_vecs: np.ndarray | None = None

    def __len__(self) -> int:
        """Number of catalog items."""
        return len(self.item_ids)

    # -- matching ------------------------------------------------------------------------------

    def _pick(self, rows: Sequence[int], year: int | None) -> int:
        """Among rows sharing a title prefer the generated year, then +-1 year, then the first."""
        if year is not None and len(rows) > 1:
            for tolerance in (0, 1):
                for row in rows:
                    if self._years[row] is not None and abs(self._years[row] - year) <= tolerance:
                        return row
        return rows[0]

    def _plausible(self, row: int, nums: frozenset[str], year: int | None) -> bool:
        """Guards for approximate matches: same sequel numbers, and a close year when known."""
        if self._row_numbers[row] != nums:
            return False
        row_year = self._years[row]
        return year is None or row_year is None or abs(row_year - year) <= _YEAR_TOLERANCE

    def _match_lexical(self, key: str, year: int | None) -> _Match | None:
        """Exact, then fuzzy match of one normalized title."""
        rows = self._exact.get(key) or self._alias.get(key)
        if rows:
            return _Match(self._pick(rows, year), "exact", 1.0)
        query = drop_leading_article(key)
        if len(query) < _MIN_FUZZY_LEN:
            return self._match_subtitle(query, year)
        nums = numbers(key)
        scores: dict[int, float] = {}
        # token_sort_ratio forgives word order; plain ratio forgives a merged or split word
        # ("GoldenEye" / "Golden Eye"), which token sorting turns into a large difference.
        for scorer in (fuzz.token_sort_ratio, fuzz.ratio):
            for choice, score, index in process.extract(
                query,
                self._fuzzy_keys,
                scorer=scorer,
                processor=None,
                limit=self._FUZZY_CANDIDATES,
                score_cutoff=self.fuzzy_threshold,
            ):
                if len(choice) >= _MIN_FUZZY_LEN:
                    scores[index] = max(score, scores.get(index, 0.0))
        passing = [
            (score, [r for r in self._fuzzy_rows[index] if self._plausible(r, nums, year)])
            for index, score in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        passing = [(score, rows) for score, rows in passing if rows]
        if not passing:
            return self._match_subtitle(query, year)
        top = passing[0][0]
        tied = [r for score, rows in passing if score == top for r in rows]
        return _Match(self._pick(tied, year), "fuzzy", float(top) / 100.0)

    def _match_subtitle(self, query: str, year: int | None) -> _Match | None:
        """Same-year item whose whole title appears inside the generated one.

        "Star Wars: Episode IV - A New Hope (1977)" -> "Star Wars (1977)". Only with a generated
        year equal to the item's: the year, not the words, says it is the same film; but a number
        or "Part" right after the contained title ("Toy Story 2 (1995)") still marks a sequel. The
        longest contained title wins; the score is the share of the generated title it covers.
        """
        if year is None or not query:
            return None
        padded = f" {query} "
        best: tuple[int, int] | None = None  # (key length, row)
        for row in self._by_year.get(year, ()):
            for key in self._row_keys[row]:
                at = padded.find(f" {key} ")
                if len(key) < _MIN_SUBTITLE_KEY or key == query or at < 0:
                    continue
                following = padded[at + len(key) + 2 :].split()[:1]
                if following and (numbers(following[0]) or following[0] in _SEQUEL_WORDS):
                    continue
                if best is None or len(key) > best[0]:
                    best = (len(key), row)
        if best is None:
            return None
        return _Match(best[1], "fuzzy", best[0] / len(query))

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encode_fn is not None:
            vecs = np.asarray(self._encode_fn(texts), dtype=np.float32)
        else:
            from llmrec_gen.embeddings import encode

            vecs = encode(texts, name=self._encoder_name)
        if vecs.shape[0] != len(texts):
            raise ValueError(f"encoder returned {vecs.shape[0]} vectors for {len(texts)} texts")
        return vecs

    @property
    def catalog_embeddings(self) -> np.ndarray:
        """L2-normalised embeddings of the catalog titles (display form), computed on first use."""
        if self._catalog_vecs is None:
            logger.info("encoding %d catalog titles for embedding grounding", len(self.titles))
            self._catalog_vecs = self._encode([display_title(t) for t in self.titles])
        return self._catalog_vecs

    def _match_embeddings(self, queries: list[tuple[str, str, int | None]]) -> list[_Match | None]:
        """Embedding match for (text, normalized key, year) queries, in one encoder call."""
        if not queries or not self.item_ids:
            return [None] * len(queries)
        sims = self._encode([text for text, _, _ in queries]) @ self.catalog_embeddings.T
        top = min(self._FUZZY_CANDIDATES, sims.shape[1])
        best = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        out: list[_Match | None] = []
        for i, (_, key, year) in enumerate(queries):
            order = best[i][np.lexsort((best[i], -sims[i, best[i]]))]  # by score, then row
            nums = numbers(key)
            match = None
            for row in order:
                score = float(sims[i, row])
                if score < self.embedding_threshold:
                    break
                if self._plausible(int(row), nums, year):
                    same = [int(r) for r in order if float(sims[i, r]) >= score - 1e-6]
                    same = [r for r in same if self._plausible(r, nums, year)]
                    match = _Match(self._pick(same, year), "embedding", score)
                    break
            out.append(match)
        return out

    def match(self, titles: Sequence[str]) -> list[GroundedTitle | None]:
        """Ground each title independently (no seen/duplicate filtering, no cut-off).

        Args:
            titles: generated titles, e.g. from :func:`parse_list`.

        Returns:
            Per title, its :class:`GroundedTitle` or None when nothing matches.
        """
        queries: list[tuple[str, str, int | None]] = []  # (bare title, normalized, year)
        for title in titles:
            bare, year = split_year(str(title)[:MAX_ITEM_CHARS])
            queries.append((bare, normalize_title(bare), year))
        pending: dict[tuple[str, int | None], str] = {}
        for bare, key, year in queries:
            cache_key = (key, year)
            if cache_key in self._cache or cache_key in pending:
                continue
            if not key:
                self._cache[cache_key] = None
                continue
            found = self._match_lexical(key, year)
            if found is not None or not self.use_embeddings:
                self._cache[cache_key] = found
            else:
                pending[cache_key] = bare
        if pending:
            batch = [(display_title(text), key, year) for (key, year), text in pending.items()]
            for cache_key, found in zip(pending, self._match_embeddings(batch), strict=True):
                self._cache[cache_key] = found
        out: list[GroundedTitle | None] = []
        for title, (_, key, year) in zip(titles, queries, strict=True):
            found = self._cache[(key, year)]
            out.append(
                None
                if found is None
                else GroundedTitle(str(title), self.item_ids[found.row], found.method, found.score)
            )
        return out

    def ground_each(
        self,
        title_lists: Sequence[Sequence[str]],
        seens: Sequence[Collection[Hashable]] | None = None,
        k: int | None = None,
        allowed: Sequence[Collection[Hashable]] | None = None,
    ) -> tuple[list[list[GroundedTitle]], list[GroundingStats]]:
        """Like :meth:`ground_batch`, with the counts of each list kept apart (per-user stats).

        Args:
            title_lists: per user, the generated titles in rank order.
            seens: per user, item IDs to exclude (e.g. the training history); None: nothing.
            k: per user, return at most this many items (None: all that ground).
            allowed: per user, the only item IDs that may be returned (a candidate list);
                None: any catalogue item.

        Returns:
            Per user, the grounded items and that user's :class:`GroundingStats`.

        Raises:
            ValueError: ``seens``/``allowed`` and ``title_lists`` differ in length, or ``k`` is
                negative.
        """
        for name, per_user in (("seen sets", seens), ("allowed sets", allowed)):
            if per_user is not None and len(per_user) != len(title_lists):
                raise ValueError(f"{len(per_user)} {name} for {len(title_lists)} title lists")
        if k is not None and k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        # One match call for the whole batch: embedding lookups are encoded together.
        matches = iter(self.match([str(t) for titles in title_lists for t in titles]))
        results: list[list[GroundedTitle]] = []
        stats: list[GroundingStats] = []
        for i, titles in enumerate(title_lists):
            seen = _as_set(seens[i]) if seens is not None else frozenset()
            ok = _as_set(allowed[i]) if allowed is not None else None
            counts = dict.fromkeys(GroundingStats().as_dict(), 0)
            kept: list[GroundedTitle] = []
            kept_ids: set[Hashable] = set()
            for _ in titles:
                found = next(matches)
                counts["generated"] += 1
                if found is None:
                    counts["invalid"] += 1
                    continue
                counts["valid"] += 1
                counts[found.method] += 1
                if found.item_id in seen:
                    counts["seen"] += 1
                elif found.item_id in kept_ids:
                    counts["duplicate"] += 1
                elif ok is not None and found.item_id not in ok:
                    counts["outside"] += 1
                elif k is not None and len(kept) >= k:
                    counts["beyond_k"] += 1
                else:
                    kept.append(found)
                    kept_ids.add(found.item_id)
            counts["returned"] = len(kept)
            results.append(kept)
            stats.append(GroundingStats(**counts))
        return results, stats

    def ground_batch(
        self,
        title_lists: Sequence[Sequence[str]],
        seens: Sequence[Collection[Hashable]] | None = None,
        k: int | None = None,
    ) -> tuple[list[list[GroundedTitle]], GroundingStats]:
        """Ground many users' generated lists at once (embedding lookups batched across users).

        Args:
            title_lists: per user, the generated titles in rank order.
            seens: per user, item IDs to exclude (e.g. the training history); None: nothing.
            k: per user, return at most this many items (None: all that ground).

        Returns:
            Per user, the grounded items in generated order (unseen, no duplicate item IDs, at
            most ``k``), and the counts summed over the batch.

        Raises:
            ValueError: ``seens`` and ``title_lists`` differ in length, or ``k`` is negative.
        """
        results, per_list = self.ground_each(title_lists, seens, k)
        return results, sum(per_list, GroundingStats())

    def ground(
        self,
        titles: Sequence[str],
        seen: Collection[Hashable] = frozenset(),
        k: int | None = None,
    ) -> list[GroundedTitle]:
        """Ground one generated list.

        Args:
            titles: generated titles in rank order (e.g. from :func:`parse_list`).
            seen: item IDs to exclude (the user's history).
            k: return at most this many items (None: all that ground).

        Returns:
            The grounded items in generated order: unseen, without duplicate item IDs, at most
            ``k``. Titles that ground to nothing are dropped (use :meth:`ground_batch` for counts).
        """
        lists, _ = self.ground_batch([titles], [seen], k)
        return lists[0]


def _as_set(values: Collection[Hashable]) -> Collection[Hashable]:
    """``values`` as a set (numpy arrays become sets of Python scalars)."""
    if isinstance(values, set | frozenset):
        return values
    if isinstance(values, np.ndarray):
        return set(values.tolist())
    return set(values)
