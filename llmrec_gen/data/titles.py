"""The one definition of a year in a title: ``"Heat (1995)"`` -> ``("Heat", 1995)``.

Loaders use it to split MovieLens titles into title + year; grounding uses it to read the year a
model wrote. A year is a four-digit 1800-2099 number in round or square brackets, optionally
followed by "film" (``"Heat [1995 film]"``).
"""

from __future__ import annotations

import re

YEAR = r"(?:18|19|20)\d\d"
"""A plausible release year (1800-2099), as a regex fragment."""
YEAR_IN_BRACKETS = re.compile(rf"[(\[]\s*({YEAR})(?:\s*film)?\s*[)\]]", re.IGNORECASE)
"""A bracketed year anywhere in a text; group 1 is the year."""
_YEAR_SUFFIX = re.compile(rf"\s*{YEAR_IN_BRACKETS.pattern}[^\w()\[\]]*$", re.IGNORECASE)


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
