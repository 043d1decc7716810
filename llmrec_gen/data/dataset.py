"""The canonical in-memory dataset: interactions + catalog, and the item text content models read.

Canonical form (:class:`Dataset`):

* ``interactions``: DataFrame ``user_id, item_id, rating (float), timestamp (int64, seconds)``,
  sorted by user then time.
* ``catalog``: DataFrame ``item_id, title, year (Int64, nullable), genres ("|"-joined), text``,
  one row per item.

Loaders (:mod:`llmrec_gen.data.loaders`) produce it; splits (:mod:`llmrec_gen.data.splits`)
consume it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
CATALOG_COLUMNS = ("item_id", "title", "year", "genres", "text")


@dataclass(frozen=True)
class Dataset:
    """A recommendation dataset in canonical form.

    Attributes:
        name: short name used in reports (e.g. ``"ml-100k"``).
        interactions: ``user_id, item_id, rating, timestamp``, sorted by user then time.
        catalog: ``item_id, title, year, genres, text``, one row per item.
    """

    name: str
    interactions: pd.DataFrame
    catalog: pd.DataFrame

    def info(self) -> dict[str, Any]:
        """Summary statistics: users, items, interactions, density and time range."""
        inter = self.interactions
        n_users = int(inter["user_id"].nunique())
        n_items = len(self.catalog)
        ts = pd.to_datetime(inter["timestamp"], unit="s", utc=True)
        return {
            "dataset": self.name,
            "users": n_users,
            "items": n_items,
            "items_with_interactions": int(inter["item_id"].nunique()),
            "interactions": len(inter),
            "density": len(inter) / max(1, n_users * n_items),
            "ratings": f"{inter['rating'].min():g}..{inter['rating'].max():g}",
            "time_from": str(ts.min().date()) if len(ts) else "",
            "time_to": str(ts.max().date()) if len(ts) else "",
            "median_interactions_per_user": float(inter.groupby("user_id").size().median()),
        }


def item_text(title: str, year: Any, genres: str) -> str:
    """The text that describes an item to content models: ``"Title (Year) | Genre, Genre"``."""
    parts = [str(title)]
    if pd.notna(year):
        parts[0] += f" ({int(year)})"
    if genres:
        parts.append(genres.replace("|", ", "))
    return " | ".join(parts)
