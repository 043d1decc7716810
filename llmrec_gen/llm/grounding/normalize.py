"""Title normalization for matching: case, accents, punctuation, articles, years, numbers.

``normalize_title("Usual Suspects, The (1995)") == normalize_title("the usual suspects")``; the
number guard (:func:`numbers`) keeps sequels apart ("Toy Story 3" is not "Toy Story").
"""

from __future__ import annotations

import re
import unicodedata

from llmrec_gen.data.titles import split_year

ARTICLES: tuple[str, ...] = (
    "the", "a", "an",  # English
    "le", "la", "les", "l'", "un", "une",  # French
    "il", "lo", "gli", "uno",  # Italian
    "el", "los", "las", "una",  # Spanish
    "das", "der", "die", "den", "ein", "eine",  # German
    "det", "het", "een",  # Scandinavian / Dutch
)  # fmt: skip
"""Articles that MovieLens moves behind a comma ("Usual Suspects, The", "Postino, Il")."""

ARTICLE_ALT = "|".join(sorted((re.escape(a) for a in ARTICLES), key=len, reverse=True))
# "Usual Suspects, The" and "City of Lost Children, The (Cité des enfants perdus, La)".
# Punctuation around the article is tolerated ("Close Shave, A!", "Shave,- A").
_TRAILING_ARTICLE = re.compile(
    rf"^(?P<body>.+?)\s*,[^\w()]*(?P<art>{ARTICLE_ALT})(?!\w)[^\w()']*(?P<paren>\(.*\))?[^\w()]*$",
    re.IGNORECASE,
)
# Dropped before fuzzy matching; English only, so "Die Hard" does not become "hard".
_LEADING_ARTICLE = re.compile(r"^(?:the|an|a)\s+")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`\u00b4]")
_NON_WORD = re.compile(r"[^\w]+|_+")
_PARENS = re.compile(r"\(([^()]*)\)")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def move_article(title: str) -> str:
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
    text = move_article(text)
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
    return move_article(text)


def drop_leading_article(normalized: str) -> str:
    """A normalized title without a leading English article ("the heat" -> "heat")."""
    stripped = _LEADING_ARTICLE.sub("", normalized, count=1)
    return stripped or normalized


def title_keys(title: str) -> tuple[str, list[str]]:
    """Return (full key, alias keys) for a catalog title.

    "Seven (Se7en)" -> ("seven se7en", ["seven", "se7en"]); "City of Lost Children, The
    (Cité des enfants perdus, La)" -> (..., ["the city of lost children", "la cite des enfants
    perdus"]).
    """
    bare, _ = split_year(str(title))
    full = normalize_title(bare)
    aliases: list[str] = []
    if "(" in bare:
        moved = move_article(bare)
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


def numbers(normalized: str) -> frozenset[str]:
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
