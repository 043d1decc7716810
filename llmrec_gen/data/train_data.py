"""The training view every recommender's ``fit`` receives: interactions indexed against the catalog.

:class:`TrainData` holds the training interactions (chronological per user) and the *full*
catalog, so every method ranks the whole catalog; it derives the user x item CSR matrix, item
popularity and per-user histories once (cached).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_gen.data.dataset import Domain, catalog_domain
from llmrec_gen.errors import DataError, UnknownUserError

_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


@dataclass(frozen=True, eq=False)
class TrainData:
    """Training interactions indexed against the *full* catalog (what ``fit`` receives).

    Attributes:
        interactions: training rows ``user_id, item_id, rating, timestamp`` in chronological
            order per user (ties already ordered by the split's tie-break).
        catalog: every catalog item, including items with no training interactions, so that
            recommenders rank the full catalog.
    """

    interactions: pd.DataFrame
    catalog: pd.DataFrame

    @cached_property
    def domain(self) -> Domain:
        """How prompts name the items (carried by the catalogue; generic when it carries none)."""
        return catalog_domain(self.catalog)

    @cached_property
    def item_ids(self) -> np.ndarray:
        """Catalog item IDs; position = item index used in score matrices."""
        return self.catalog["item_id"].to_numpy()

    @cached_property
    def user_ids(self) -> np.ndarray:
        """Training user IDs (sorted); position = user index."""
        return np.sort(self.interactions["user_id"].unique())

    @cached_property
    def item_index(self) -> dict[Any, int]:
        """Map item ID -> item index."""
        return {i: n for n, i in enumerate(self.item_ids.tolist())}

    @cached_property
    def user_index(self) -> dict[Any, int]:
        """Map user ID -> user index."""
        return {u: n for n, u in enumerate(self.user_ids.tolist())}

    @property
    def n_users(self) -> int:
        """Number of training users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of catalog items (full catalog)."""
        return len(self.item_ids)

    @cached_property
    def matrix(self) -> sp.csr_matrix:
        """Binary user x item CSR matrix of training interactions (float32)."""
        rows = self.interactions["user_id"].map(self.user_index).to_numpy()
        cols = self.interactions["item_id"].map(self.item_index).to_numpy()
        m = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(self.n_users, self.n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Number of training interactions per item index."""
        return np.bincount(
            self.interactions["item_id"].map(self.item_index).to_numpy(), minlength=self.n_items
        )

    @cached_property
    def _histories(self) -> dict[Any, np.ndarray]:
        grouped = self.interactions.groupby("user_id", sort=False)["item_id"]
        return {u: g.to_numpy() for u, g in grouped}

    @cached_property
    def _rating_histories(self) -> dict[Any, np.ndarray]:
        grouped = self.interactions.groupby("user_id", sort=False)["rating"]
        return {u: g.to_numpy() for u, g in grouped}

    def history_ratings(self, user_id: Any) -> np.ndarray:
        """Ratings aligned with :meth:`history`."""
        self.check_user(user_id)
        return self._rating_histories[self.coerce_user(user_id)]

    def history(self, user_id: Any) -> np.ndarray:
        """A user's training items in chronological order (oldest first).

        Raises:
            UnknownUserError: the user has no training interactions.
        """
        self.check_user(user_id)
        return self._histories[self.coerce_user(user_id)]

    def user_indices(self, user_ids: Iterable[Any]) -> np.ndarray:
        """Map user IDs to indices; raise :class:`UnknownUserError` for unknown users."""
        out = []
        for u in user_ids:
            self.check_user(u)
            out.append(self.user_index[self.coerce_user(u)])
        return np.asarray(out, dtype=np.int64)

    def check_user(self, user_id: Any) -> None:
        """Raise :class:`UnknownUserError` unless ``user_id`` has training interactions."""
        if self.coerce_user(user_id) not in self.user_index:
            raise UnknownUserError(
                f"unknown user {user_id!r}: not in the training data "
                f"({self.n_users} users, IDs {self.user_ids[0]}..{self.user_ids[-1]})"
            )

    def coerce_user(self, user_id: Any) -> Any:
        """The training-data form of a user ID: ``"42"``, ``42`` and ``np.int64(42)`` are one user.

        A string maps to an integer ID only when it is the integer's canonical decimal spelling
        (so ``"+42"``, ``"4_2"`` or full-width digits are not user 42).
        """
        if isinstance(user_id, np.generic):
            user_id = user_id.item()
        if self.user_ids.dtype.kind in "iu" and isinstance(user_id, str):
            return int(user_id) if _CANONICAL_INT.fullmatch(user_id) else user_id
        if self.user_ids.dtype.kind in "OUS" and not isinstance(user_id, str):
            return str(user_id)
        return user_id

    def coerce_item(self, item_id: Any) -> Any:
        """The catalogue form of an item ID given as text or a number.

        Raises:
            DataError: no such item in the catalogue.
        """
        if isinstance(item_id, np.generic):
            item_id = item_id.item()
        if self.item_ids.dtype.kind in "iu" and isinstance(item_id, str):
            item_id = int(item_id) if _CANONICAL_INT.fullmatch(item_id) else item_id
        elif self.item_ids.dtype.kind in "OUS" and not isinstance(item_id, str):
            item_id = str(item_id)
        if item_id not in self.item_index:
            raise DataError(f"unknown item {item_id!r}: not in the catalogue")
        return item_id

    def seen_mask(self, user_idx: np.ndarray) -> np.ndarray:
        """Boolean ``(len(user_idx), n_items)`` mask of items each user interacted with."""
        return self.matrix[user_idx].toarray() > 0

    def seen_items(self, user_id: Any) -> frozenset:
        """The set of item IDs a user interacted with in training."""
        return frozenset(self.history(user_id).tolist())

    def items(self, item_ids: Sequence[Any]) -> pd.DataFrame:
        """Catalog rows for ``item_ids``, in the given order."""
        idx = [self.item_index[i] for i in item_ids]
        return self.catalog.iloc[idx]

    def recent(self, history_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``history_len`` training items of every user.

        Returns:
            ``(user_idx, item_idx, age)`` arrays, one entry per kept interaction; ``age`` is 0 for
            a user's most recent item, 1 for the one before, and so on.
        """
        inter = self.interactions
        age = inter.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
        keep = age < history_len
        users = inter["user_id"].map(self.user_index).to_numpy()[keep]
        items = inter["item_id"].map(self.item_index).to_numpy()[keep]
        return users.astype(np.int64), items.astype(np.int64), age[keep]
