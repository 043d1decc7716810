"""Grounding statistics: the one list of per-user title counts, and the rates derived from them.

A generative recommender returns one :class:`GroundingStats` per user (as a plain dict in
``Recommendations.stats``); :meth:`GroundingStats.summarize` turns many users' counts into the
totals and rates a report shows (valid-title / hallucination rate, and so on). Nothing else
defines these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

SOURCES = ("exact", "fuzzy", "embedding", "constrained")
"""How a valid title was grounded (the counts of these sum to ``valid``)."""


@dataclass(frozen=True)
class GroundingStats:
    """What happened to every title a model generated for one user.

    Every title is classified, including those past the ``k`` cut-off, so the rates describe the
    whole generated list. Identities: ``generated = valid + invalid``;
    ``valid = exact + fuzzy + embedding + constrained
    = seen + duplicate + outside + returned + beyond_k``.

    Attributes:
        generated: generated titles.
        valid: titles grounded to some catalogue item.
        exact: valid titles grounded by exact match.
        fuzzy: valid titles grounded by fuzzy match.
        embedding: valid titles grounded by embedding similarity.
        constrained: valid titles produced by decoding constrained to catalogue titles.
        seen: valid titles dropped because the item is in the user's history.
        duplicate: valid titles dropped because the item was already in the user's list.
        outside: valid titles dropped because the item is not among the given candidates.
        returned: grounded items returned.
        beyond_k: new, unseen items dropped because ``k`` items had already been returned.
        invalid: titles grounded to nothing (hallucinated or unparseable).
    """

    generated: int = 0
    valid: int = 0
    exact: int = 0
    fuzzy: int = 0
    embedding: int = 0
    constrained: int = 0
    seen: int = 0
    duplicate: int = 0
    outside: int = 0
    returned: int = 0
    beyond_k: int = 0
    invalid: int = 0

    def __add__(self, other: GroundingStats) -> GroundingStats:
        """Sum two users' (or batches') counts."""
        if not isinstance(other, GroundingStats):
            return NotImplemented
        return GroundingStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        """The counts, for ``Recommendations.stats``."""
        return asdict(self)

    @property
    def valid_rate(self) -> float:
        """Share of generated titles that ground to a catalogue item (0.0 when none)."""
        return self.valid / self.generated if self.generated else 0.0

    @property
    def hallucination_rate(self) -> float:
        """Share of generated titles that ground to nothing (0.0 when none)."""
        return self.invalid / self.generated if self.generated else 0.0

    @classmethod
    def summarize(cls, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """Totals over users, then rates over all generated titles.

        ``valid_title_rate = valid / generated``; ``hallucination_rate = invalid / generated``;
        ``seen_rate = seen / generated`` (valid, but the user's own history: useless as a
        recommendation); ``<source>_rate = <source> / generated`` for each grounding source.
        Keys of other components (e.g. a fallback's ``filled``) are ignored here.
        """
        names = [f.name for f in fields(cls)]
        totals = {n: float(sum(float(s.get(n, 0)) for s in stats)) for n in names}
        out: dict[str, float] = dict(totals)
        generated = totals["generated"]
        if generated:
            out["valid_title_rate"] = totals["valid"] / generated
            out["hallucination_rate"] = totals["invalid"] / generated
            out["seen_rate"] = totals["seen"] / generated
            for source in SOURCES:
                out[f"{source}_rate"] = totals[source] / generated
        return out
