"""Train/validation/test splits without leakage, and cohorts computed on train data only.

Protocols:

* ``leave_last_out`` (default): per user, interactions in time order; the last one is the test
  target and the second-to-last the validation target; the rest is training data. Users with
  two interactions get a test target only; users with one are training-only.
* ``global_timeline``: one cut on the global timeline: the latest ``test_frac`` of interactions
  are test, the preceding ``valid_frac`` validation. Held-out users absent from training cannot be
  scored by anyone and are dropped from evaluation (the count is recorded).

Equal timestamps (MovieLens has many: ratings entered in one session) are ordered by a seeded
hash of ``(user_id, item_id)`` — deterministic for a seed, independent of the file's row order,
and not correlated with item IDs (which in MovieLens follow release order).

Exact duplicate events (same user, item and timestamp) are kept once, so one event cannot be both
trained on and held out; the count is recorded as ``duplicates_dropped``.

Positives: a held-out interaction is a ranking target if ``rating >= min_rating``;
``min_rating=None`` (default) makes every interaction a positive (implicit feedback).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.dataset import Dataset
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError

SplitProtocol = Literal["leave_last_out", "global_timeline"]


class SplitConfig(StrictModel):
    """How to split (the keyword arguments of :func:`split_dataset`)."""

    protocol: SplitProtocol = "leave_last_out"
    seed: int = 0  # seeds the timestamp tie-break and cold-start simulation
    min_rating: float | None = None  # None = every interaction is a positive; 4.0 = liked only
    valid_frac: float = Field(0.1, ge=0, lt=1)  # global_timeline only
    test_frac: float = Field(0.1, gt=0, lt=1)  # global_timeline only
    head_share: float = Field(0.2, gt=0, lt=1)  # head items cover this share of train events
    cold_user_max: int = Field(5, ge=0)  # users with <= this many train interactions are cold
    cold_start_fraction: float = Field(0.0, ge=0, le=1)  # simulate cold users (0 = off)
    cold_start_keep: int = Field(3, ge=1)  # train interactions kept by simulated cold users


@dataclass(frozen=True)
class Cohorts:
    """User and item groups, computed from training data only.

    Attributes:
        head_items: most popular items that together cover ``head_share`` of train interactions.
        tail_items: every other catalog item (including cold items).
        cold_items: items with no training interaction.
        cold_users: users with at most ``cold_user_max`` training interactions.
    """

    head_items: frozenset
    tail_items: frozenset
    cold_items: frozenset
    cold_users: frozenset
    rule: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """The output of a split: what ``fit`` may see, and what is held out.

    Attributes:
        train: training data (the only thing recommenders see).
        valid: held-out validation interactions (one row per target).
        test: held-out test interactions.
        cohorts: groups computed on ``train`` only.
        protocol: description of how the split was made (saved with every result).
    """

    train: TrainData
    valid: pd.DataFrame
    test: pd.DataFrame
    cohorts: Cohorts
    protocol: dict[str, Any]

    def targets(self, which: Literal["valid", "test"]) -> dict[Any, set]:
        """``{user_id: {positive item IDs}}`` for users that can be evaluated on ``which``."""
        frame = self.valid if which == "valid" else self.test
        frame = frame[frame["positive"] & frame["user_id"].isin(self.train.user_index)]
        return {u: set(g.tolist()) for u, g in frame.groupby("user_id", sort=True)["item_id"]}


def tie_break_key(interactions: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A seeded hash of each row's ``(user_id, item_id)``: the order of equal timestamps.

    IDs are hashed as text because pandas ignores ``hash_key`` for integer columns (the seed
    would have no effect on MovieLens); the seed itself is hashed into the 16-byte key.
    """
    hash_key = hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()
    ids = interactions[["user_id", "item_id"]].astype(str)
    return pd.util.hash_pandas_object(ids, index=False, hash_key=hash_key).to_numpy()


def order_interactions(interactions: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Sort by user then time, breaking timestamp ties with a seeded ``(user, item)`` hash."""
    return (
        interactions.assign(_tie=tie_break_key(interactions, seed))
        .sort_values(["user_id", "timestamp", "_tie"], kind="stable")
        .drop(columns="_tie")
        .reset_index(drop=True)
    )


def split_dataset(
    dataset: Dataset,
    protocol: SplitProtocol = "leave_last_out",
    *,
    seed: int = 0,
    min_rating: float | None = None,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
    head_share: float = 0.2,
    cold_user_max: int = 5,
    cold_start_fraction: float = 0.0,
    cold_start_keep: int = 3,
) -> Split:
    """Split ``dataset`` into train/valid/test (see the module docstring for the protocols).

    Args:
        dataset: the data to split.
        protocol: ``"leave_last_out"`` or ``"global_timeline"``.
        seed: seeds the timestamp tie-break and the cold-start user sample.
        min_rating: held-out interactions with a lower rating are not ranking targets.
        valid_frac: global-timeline only: share of interactions held out for validation.
        test_frac: global-timeline only: share held out for test.
        head_share: head items cover this share of train interactions (0.2 = 20 %).
        cold_user_max: users with at most this many train interactions are "cold".
        cold_start_fraction: simulate cold-start users: this share of users keep only their
            last ``cold_start_keep`` training interactions (earlier ones are dropped, never
            moved to test), so cold-start behaviour can be measured on ML-100k too.
        cold_start_keep: training interactions kept for simulated cold-start users.
    """
    if not 0 <= cold_start_fraction <= 1:
        raise ConfigError("split.cold_start_fraction: must be in [0, 1]")
    ordered = order_interactions(dataset.interactions, seed)
    # The same event recorded twice must not land in train and in valid/test at once.
    n_before = len(ordered)
    ordered = ordered.drop_duplicates(["user_id", "item_id", "timestamp"], keep="last")
    ordered = ordered.reset_index(drop=True)
    if protocol == "leave_last_out":
        train, valid, test = _leave_last_out(ordered)
    elif protocol == "global_timeline":
        if not (0 <= valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
            raise ConfigError("split.valid_frac/test_frac: need 0 <= valid, 0 < test, sum < 1")
        train, valid, test = _global_timeline(ordered, valid_frac, test_frac, seed)
    else:
        raise ConfigError(f"split.protocol: unknown protocol {protocol!r}")
    if cold_start_fraction > 0:
        train = _simulate_cold_start(train, cold_start_fraction, cold_start_keep, seed)
    for frame in (valid, test):
        frame["positive"] = True if min_rating is None else frame["rating"] >= min_rating
    train_data = TrainData(train.reset_index(drop=True), dataset.catalog)
    cohorts = compute_cohorts(train_data, head_share=head_share, cold_user_max=cold_user_max)
    info = {
        "protocol": protocol,
        "seed": seed,
        "min_rating": min_rating,
        "tie_break": "seeded hash of (user_id, item_id)",
        "train_interactions": len(train),
        "valid_interactions": len(valid),
        "test_interactions": len(test),
        "cold_start_fraction": cold_start_fraction,
        "cold_start_keep": cold_start_keep,
        "duplicates_dropped": n_before - len(ordered),
        # held-out users with no training interaction: nobody can score them (not evaluated)
        "valid_users_without_train": _users_without_train(valid, train_data),
        "test_users_without_train": _users_without_train(test, train_data),
    }
    if protocol == "global_timeline":
        info.update(valid_frac=valid_frac, test_frac=test_frac)
    return Split(
        train_data, valid.reset_index(drop=True), test.reset_index(drop=True), cohorts, info
    )


def _users_without_train(held_out: pd.DataFrame, train: TrainData) -> int:
    users = held_out["user_id"]
    return int(users[~users.isin(train.user_ids)].nunique())


def _leave_last_out(ordered: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    size = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    pos_from_end = ordered.groupby("user_id").cumcount(ascending=False).to_numpy()
    is_test = (pos_from_end == 0) & (size >= 2)
    is_valid = (pos_from_end == 1) & (size >= 3)
    train = ordered[~(is_test | is_valid)]
    return train, ordered[is_valid].copy(), ordered[is_test].copy()


def _global_timeline(
    ordered: pd.DataFrame, valid_frac: float, test_frac: float, seed: int
) -> tuple[pd.DataFrame, ...]:
    # Equal timestamps at the cut are ordered by the seeded hash, not by user ID.
    tie = tie_break_key(ordered, seed)
    order = np.lexsort((ordered.index.to_numpy(), tie, ordered["timestamp"].to_numpy()))
    n = len(ordered)
    n_test, n_valid = int(round(n * test_frac)), int(round(n * valid_frac))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    is_test = rank >= n - n_test
    is_valid = (rank >= n - n_test - n_valid) & ~is_test
    return ordered[~(is_test | is_valid)], ordered[is_valid].copy(), ordered[is_test].copy()


def _simulate_cold_start(
    train: pd.DataFrame, fraction: float, keep: int, seed: int
) -> pd.DataFrame:
    users = np.sort(train["user_id"].unique())
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(users, size=int(round(len(users) * fraction)), replace=False).tolist())
    pos_from_end = train.groupby("user_id").cumcount(ascending=False)
    drop = train["user_id"].isin(chosen) & (pos_from_end >= keep)
    return train[~drop]


def compute_cohorts(
    train: TrainData, *, head_share: float = 0.2, cold_user_max: int = 5
) -> Cohorts:
    """Head/tail/cold items and cold users from training interactions only.

    Head items are the most popular items (ties by item index) whose cumulative share of train
    interactions first reaches ``head_share``; every other item is tail.
    """
    pop = train.item_popularity
    order = np.argsort(-pop, kind="stable")
    cum = np.cumsum(pop[order]) / max(1, pop.sum())
    n_head = int(np.searchsorted(cum, head_share) + 1) if pop.sum() else 0
    ids = train.item_ids
    head = frozenset(ids[order[:n_head]].tolist())
    counts = train.interactions.groupby("user_id").size()
    return Cohorts(
        head_items=head,
        tail_items=frozenset(ids.tolist()) - head,
        cold_items=frozenset(ids[pop == 0].tolist()),
        cold_users=frozenset(counts.index[counts <= cold_user_max].tolist()),
        rule={"head_share": head_share, "n_head_items": len(head), "cold_user_max": cold_user_max},
    )
