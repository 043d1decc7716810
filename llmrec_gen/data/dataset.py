"""The canonical in-memory dataset: interactions + catalog, its domain wording, and the item text
content models read.

Canonical form (:class:`Dataset`):

* ``interactions``: DataFrame ``user_id, item_id, rating (float), timestamp (int64, seconds)``,
  sorted by user then time. Data without timestamps has ``timestamp == 0`` everywhere and
  ``has_timestamps=False`` (time-ordered splits refuse it, see :meth:`Dataset.require_timestamps`).
* ``catalog``: DataFrame ``item_id, title, year (Int64, nullable), genres ("|"-joined), text``,
  one row per item; two entries with the same (title, year) are merged into one item by the
  loaders (see :mod:`llmrec_gen.data.loaders`).
* ``domain``: how prompts name the items (:class:`Domain`). It travels with the catalogue
  (``catalog.attrs["domain"]``), so every training view built from it knows its wording.

Loaders (:mod:`llmrec_gen.data.loaders`) produce it; splits (:mod:`llmrec_gen.data.splits`)
consume it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import ConfigDict, Field

from llmrec_gen.config import StrictModel
from llmrec_gen.errors import ConfigError

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CATALOG_COLUMNS = ("item_id", "title", "year", "genres", "text")
DOMAIN_ATTR = "domain"
"""Key of the domain wording in ``catalog.attrs``."""


class Domain(StrictModel):
    """How prompts name the catalogue's items (the ``domain:`` block of ``dataset.yaml``).

    Templates say e.g. "{{ domain.items }} I {{ domain.verb_past }}" ("Books I read") and
    "recommend 10 {{ domain.items }} from {{ domain.catalogue }}".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str = Field("item", min_length=1, max_length=40)  # singular noun: "1 book"
    items: str = Field("items", min_length=1, max_length=40)  # plural noun: "10 books"
    verb: str = Field("interact with", min_length=1, max_length=40)  # base form: "want to read"
    verb_past: str = Field("interacted with", min_length=1, max_length=40)  # past + participle
    catalogue: str = Field("the catalogue", min_length=1, max_length=60)  # "from Goodreads"

    def count(self, n: int) -> str:
        """``"1 movie"`` / ``"10 movies"``: a number with the right noun."""
        return f"{n} {self.item if n == 1 else self.items}"


GENERIC_DOMAIN = Domain()
"""The wording for data that says nothing about itself: "item", "items", "the catalogue"."""
MOVIES_DOMAIN = Domain(
    item="movie", items="movies", verb="watch", verb_past="watched", catalogue="MovieLens"
)
"""The wording of the built-in MovieLens datasets."""


def catalog_domain(catalog: pd.DataFrame) -> Domain:
    """The domain carried by a catalogue frame (the generic one when it carries none)."""
    raw = catalog.attrs.get(DOMAIN_ATTR)
    return GENERIC_DOMAIN if raw is None else Domain(**raw)


@dataclass(frozen=True)
class Dataset:
    """A recommendation dataset in canonical form.

    Attributes:
        name: short name used in reports (e.g. ``"ml-100k"``).
        interactions: ``user_id, item_id, rating, timestamp``, sorted by user then time.
        catalog: ``item_id, title, year, genres, text``, one row per item.
        domain: how prompts name the items (stored on ``catalog.attrs`` too).
        has_timestamps: False when the source had no timestamp column (all timestamps 0).
        merged_items: removed duplicate item ID -> the item ID it was merged into.
        merged_events_dropped: interactions dropped because, after merging, the user already
            had an (earlier) interaction with the kept item.
    """

    name: str
    interactions: pd.DataFrame
    catalog: pd.DataFrame
    domain: Domain = GENERIC_DOMAIN
    has_timestamps: bool = True
    merged_items: Mapping[Any, Any] = field(default_factory=dict)
    merged_events_dropped: int = 0

    def __post_init__(self) -> None:
        """Attach the domain to the catalogue, so views built from it carry the wording."""
        self.catalog.attrs[DOMAIN_ATTR] = self.domain.model_dump()

    def require_timestamps(self, protocol: str) -> None:
        """Refuse a time-ordered split protocol on data without timestamps.

        Raises:
            ConfigError: ``has_timestamps`` is False (one line naming the field and the fix).
        """
        if not self.has_timestamps:
            raise ConfigError(
                f"split.protocol: '{protocol}' orders events by time, but dataset "
                f"'{self.name}' has no timestamps; use split.protocol: random_leave_one_out"
            )

    def info(self) -> dict[str, Any]:
        """Summary statistics: users, items, interactions, density, time range, merges."""
        inter = self.interactions
        n_users = int(inter["user_id"].nunique())
        n_items = len(self.catalog)
        out: dict[str, Any] = {
            "dataset": self.name,
            "users": n_users,
            "items": n_items,
            "items_with_interactions": int(inter["item_id"].nunique()),
            "interactions": len(inter),
            "density": len(inter) / max(1, n_users * n_items),
            "ratings": f"{inter['rating'].min():g}..{inter['rating'].max():g}",
            "has_timestamps": self.has_timestamps,
            "time_from": None,
            "time_to": None,
            "median_interactions_per_user": float(inter.groupby("user_id").size().median()),
            "duplicate_items_merged": len(self.merged_items),
            "duplicate_events_dropped": self.merged_events_dropped,
            "domain": f"{self.domain.item}/{self.domain.items} from {self.domain.catalogue}",
        }
        if self.has_timestamps and len(inter):
            ts = pd.to_datetime(inter["timestamp"], unit="s", utc=True)
            out["time_from"], out["time_to"] = str(ts.min().date()), str(ts.max().date())
        return out


def item_text(title: str, year: Any, genres: str) -> str:
    """The text that describes an item to content models: ``"Title (Year) | Genre, Genre"``."""
    parts = [str(title)]
    if pd.notna(year):
        parts[0] += f" ({int(year)})"
    if genres:
        parts.append(genres.replace("|", ", "))
    return " | ".join(parts)
