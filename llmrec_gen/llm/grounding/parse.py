"""Parsing an LLM's generated text into a clean list of titles (``parse_list``).

Handles numbering, bullets, quotes and bold, commentary after the title, one-line comma lists,
JSON lists, chatter lines, code fences and markdown headers; keeps a trailing year in the
canonical form ``"Title (1995)"``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmrec_gen.data.titles import YEAR, YEAR_IN_BRACKETS, split_year
from llmrec_gen.llm.grounding.normalize import ARTICLE_ALT, normalize_title

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
_YEAR_ANY = YEAR_IN_BRACKETS
_BARE_YEAR = re.compile(rf"^[,\s]*({YEAR})\b")
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
MAX_ITEM_CHARS = 300  # longer list entries are cut (bounds regex work on runaway generations)
_MAX_TITLE_WORDS = 15  # longer unmarked lines are prose (the longest common titles have ~12)
_MAX_TAIL_WORDS = 12  # a subtitle after ":" / " - " longer than this is taken to be prose
_TRAILING_BRACKETS = re.compile(r"(?<=\S)\s*\[[^\[\]]*\]\s*$")
_TRAILING_BARE_YEAR = re.compile(rf"(?:,|\s[-\u2013\u2014])\s*({YEAR})\s*$")


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
    item = raw.strip()[:MAX_ITEM_CHARS]
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
_ARTICLE_PIECE = re.compile(rf"^(?:{ARTICLE_ALT})\s*(?:\(.*)?$", re.IGNORECASE)


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
