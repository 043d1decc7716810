"""Train/validation/test splits without leakage, the data ``fit`` sees per target, and cohorts.

Protocols (``split.protocol``):

* ``leave_last_out`` (default): per user, interactions in time order; the last one is the test
  target and the second-to-last the validation target; the rest is training data. Users with
  two interactions get a test target only; users with one are training-only.
* ``global_timeline``: one cut on the global timeline: the latest ``test_frac`` of interactions
  are test, the preceding ``valid_frac`` validation. Held-out users absent from the fit data
  cannot be scored by anyone and are dropped from evaluation (the count is recorded).
* ``random_leave_one_out``: per user, a seeded random interaction is the test target and another
  one the validation target (same size rules as leave-last-out). It never reads the
  ``timestamp`` column, so it works on data without timestamps. Each ``(user, item)`` pair is
  kept once (with no time order a repeat would put the target itself in the history). History
  order then carries no time information: it is the dataset's own row order per user (for the
  built-in loaders time order; for a file without timestamps, the file's order).

What ``fit`` sees depends on the target (:meth:`Split.fit_data`), as in the standard
leave-one-out protocol (RecBole, SASRec, BIGRec): for ``valid``, the training rows; for
``test``, the training rows *and* the validation rows, i.e. every event before the test item
(for ``global_timeline``: everything before the test cut). Those rows are also the history
prompts are built from and the seen items excluded from the ranking. Hyperparameters chosen on
``valid`` are applied unchanged on ``test``. Cohorts (:meth:`Split.cohorts_for`) are computed
from the same fit data, never from the targets.

Cold items (``cold_item_fraction``): a seeded share of the items that have interactions is
removed from the fit data entirely (all their interactions, for both targets); held-out targets
are unchanged, so a user whose next interaction is with such an item is a ``cold-item-target``
user and every other user a ``warm-item-target`` user. Collaborative models without item
features cannot score cold items; content models can. Interactions with cold items are not in
the fit data, so they are not excluded from the ranking as seen items.

Simulated cold-start users (``cold_start_fraction``): a seeded share of users keep only their
last ``cold_start_keep`` interactions of the fit data (earlier ones are dropped, never moved to
a target), for each target.

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
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from llmrec_gen.config import StrictModel
from llmrec_gen.data.dataset import Dataset
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError

SplitProtocol = Literal["leave_last_out", "global_timeline", "random_leave_one_out"]
PROTOCOLS: tuple[str, ...] = get_args(SplitProtocol)
"""Every split protocol (see the module docstring)."""

Target = Literal["valid", "test"]
TARGETS: tuple[str, ...] = get_args(Target)

FIT_ON: dict[str, str] = {"valid": "train", "test": "train + valid"}
"""What ``fit`` sees for each target (:meth:`Split.fit_data`), as reports state it."""


def describe_fit(protocol: str, target: str) -> str:
    """What ``fit`` sees for ``target`` under ``protocol``, in words (reports state it)."""
    before = {
        "leave_last_out": "every interaction before the {t} item",
        "global_timeline": "everything before the {t} cut",
        "random_leave_one_out": "every interaction but the held-out ones (no time order)",
    }[protocol]
    if target == "valid":
        return "train (" + before.format(t="validation") + ")"
    return "train + valid (" + before.format(t="test") + ")"


class SplitConfig(StrictModel):
    """How to split (the keyword arguments of :func:`split_dataset`, plus ``seeds``)."""

    protocol: SplitProtocol = "leave_last_out"
    seed: int = 0  # seeds the tie-break, random_leave_one_out and the cold user/item samples
    seeds: list[int] | None = None  # evaluate once per seed (replaces seed), e.g. [0, 1, 2, 3, 4]
    min_rating: float | None = None  # None = every interaction is a positive; 4.0 = liked only
    valid_frac: float = Field(0.1, ge=0, lt=1)  # global_timeline only
    test_frac: float = Field(0.1, gt=0, lt=1)  # global_timeline only
    head_share: float = Field(0.2, gt=0, lt=1)  # head items cover this share of fit events
    cold_user_max: int = Field(5, ge=0)  # users with <= this many fit interactions are cold
    cold_start_fraction: float = Field(0.0, ge=0, le=1)  # simulate cold users (0 = off)
    cold_start_keep: int = Field(3, ge=1)  # fit interactions kept by simulated cold users
    cold_item_fraction: float | None = None  # cold-item protocol: share of items never fit (0.1)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            if not value:
                raise ValueError("needs at least one seed (or null to use 'seed')")
            if len(set(value)) != len(value):
                raise ValueError(f"seeds must be distinct, got {value}")
        return value

    @field_validator("cold_item_fraction")
    @classmethod
    def _cold_items(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError(f"must be in (0, 1) (null = off), got {value}")
        return value

    def run_seeds(self) -> list[int]:
        """The split seeds an evaluation runs: ``seeds``, else ``[seed]``."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def kwargs(self, seed: int | None = None) -> dict[str, Any]:
        """Keyword arguments of :func:`split_dataset` (for ``seed``, default ``self.seed``)."""
        out = self.model_dump(exclude={"seeds"})
        if seed is not None:
            out["seed"] = seed
        return out


@dataclass(frozen=True)
class Cohorts:
    """User and item groups, computed from the fit data only.

    Attributes:
        head_items: most popular items that together cover ``head_share`` of fit interactions.
        tail_items: every other catalog item (including cold items).
        cold_items: items with no fit interaction.
        cold_users: users with at most ``cold_user_max`` fit interactions.
    """

    head_items: frozenset
    tail_items: frozenset
    cold_items: frozenset
    cold_users: frozenset
    rule: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """The output of a split: what ``fit`` may see per target, and what is held out.

    Attributes:
        train: the training rows (what ``fit`` sees for the ``valid`` target).
        valid: held-out validation interactions (one row per target).
        test: held-out test interactions.
        protocol: description of how the split was made (saved with every result).
        fit: target -> the fit data for it (use :meth:`fit_data`).
        cohort_rule: ``head_share`` and ``cold_user_max`` for :meth:`cohorts_for`.
        removed_items: the cold-item protocol's items, absent from every fit data (else empty).
    """

    train: TrainData
    valid: pd.DataFrame
    test: pd.DataFrame
    protocol: dict[str, Any]
    fit: dict[str, TrainData] = field(repr=False)
    cohort_rule: dict[str, Any] = field(default_factory=dict)
    removed_items: frozenset = frozenset()
    _cohorts: dict[str, Cohorts] = field(default_factory=dict, repr=False, compare=False)

    def fit_data(self, target: Target) -> TrainData:
        """What ``fit`` sees when ranking ``target``: every event before it, chronological.

        ``valid``: the training rows. ``test``: the training rows plus the validation rows (for
        ``global_timeline``: everything before the test cut). Cold items are never in it.
        """
        if target not in self.fit:
            raise ConfigError(f"target: must be one of {list(TARGETS)}, got {target!r}")
        return self.fit[target]

    def cohorts_for(self, target: Target) -> Cohorts:
        """Head/tail/cold items and cold users from ``fit_data(target)`` (cached)."""
        if target not in self._cohorts:
            self._cohorts[target] = compute_cohorts(self.fit_data(target), **self.cohort_rule)
        return self._cohorts[target]

    @property
    def cohorts(self) -> Cohorts:
        """Cohorts of the training rows (``cohorts_for("valid")``)."""
        return self.cohorts_for("valid")

    def held_out(self, target: Target) -> pd.DataFrame:
        """The held-out rows of ``target`` (``valid`` or ``test``)."""
        self.fit_data(target)
        return self.valid if target == "valid" else self.test

    def targets(self, which: Target) -> dict[Any, set]:
        """``{user_id: {positive item IDs}}`` for users that can be evaluated on ``which``
        (a positive held-out row and at least one fit interaction)."""
        frame = self.held_out(which)
        frame = frame[frame["positive"] & frame["user_id"].isin(self.fit_data(which).user_index)]
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
    cold_item_fraction: float | None = None,
) -> Split:
    """Split ``dataset`` into train/valid/test (see the module docstring for the protocols).

    Args:
        dataset: the data to split.
        protocol: one of :data:`PROTOCOLS`.
        seed: seeds the timestamp tie-break, the random protocol and the cold samples.
        min_rating: held-out interactions with a lower rating are not ranking targets.
        valid_frac: global-timeline only: share of interactions held out for validation.
        test_frac: global-timeline only: share held out for test.
        head_share: head items cover this share of fit interactions (0.2 = 20 %).
        cold_user_max: users with at most this many fit interactions are "cold".
        cold_start_fraction: simulate cold-start users: this share of users keep only their
            last ``cold_start_keep`` fit interactions (earlier ones are dropped, never moved to
            a target), so cold-start behaviour can be measured on ML-100k too.
        cold_start_keep: fit interactions kept for simulated cold-start users.
        cold_item_fraction: cold-item protocol: this share of the items with interactions is
            removed from the fit data entirely (``None`` = off).

    Raises:
        ConfigError: unknown protocol or a fraction out of range (the message names the field).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"split.protocol: unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})"
        )
    if not 0 <= cold_start_fraction <= 1:
        raise ConfigError("split.cold_start_fraction: must be in [0, 1]")
    if cold_item_fraction is not None and not 0 < cold_item_fraction < 1:
        raise ConfigError(f"split.cold_item_fraction: must be in (0, 1), got {cold_item_fraction}")
    n_before = len(dataset.interactions)
    if protocol == "random_leave_one_out":
        # no time order: the dataset's own row order per user; each (user, item) pair once
        ordered = dataset.interactions.sort_values("user_id", kind="stable")
        ordered = ordered.drop_duplicates(["user_id", "item_id"], keep="last")
        ordered = ordered.reset_index(drop=True)
        train, valid, test = _random_leave_one_out(ordered, seed)
    else:
        ordered = order_interactions(dataset.interactions, seed)
        # The same event recorded twice must not land in train and in valid/test at once.
        ordered = ordered.drop_duplicates(["user_id", "item_id", "timestamp"], keep="last")
        ordered = ordered.reset_index(drop=True)
        if protocol == "leave_last_out":
            train, valid, test = _leave_last_out(ordered)
        else:
            if not (0 <= valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
                raise ConfigError("split.valid_frac/test_frac: need 0 <= valid, 0 < test, sum < 1")
            train, valid, test = _global_timeline(ordered, valid_frac, test_frac, seed)
    # fit frames keep ``ordered``'s index, so sorting by it restores per-user chronology
    fit_frames = {"valid": train, "test": pd.concat([train, valid]).sort_index()}
    cold_items: list = []
    if cold_item_fraction is not None:
        cold_items = _sample_cold_items(ordered, cold_item_fraction, seed)
        fit_frames = {t: f[~f["item_id"].isin(cold_items)] for t, f in fit_frames.items()}
    if cold_start_fraction > 0:
        users = np.sort(ordered["user_id"].unique())
        rng = np.random.default_rng(seed)
        size = int(round(len(users) * cold_start_fraction))
        chosen = set(rng.choice(users, size=size, replace=False).tolist())
        fit_frames = {
            t: _simulate_cold_start(f, chosen, cold_start_keep) for t, f in fit_frames.items()
        }
    for frame in (valid, test):
        frame["positive"] = True if min_rating is None else frame["rating"] >= min_rating
    fit = {t: TrainData(f.reset_index(drop=True), dataset.catalog) for t, f in fit_frames.items()}
    info = {
        "protocol": protocol,
        "seed": seed,
        "min_rating": min_rating,
        "tie_break": (
            "seeded hash of (user_id, item_id) picks the held-out rows; no time order"
            if protocol == "random_leave_one_out"
            else "seeded hash of (user_id, item_id)"
        ),
        "fit_on": dict(FIT_ON),
        "train_interactions": len(fit["valid"].interactions),
        "valid_interactions": len(valid),
        "test_interactions": len(test),
        "cold_start_fraction": cold_start_fraction,
        "cold_start_keep": cold_start_keep,
        "cold_item_fraction": cold_item_fraction,
        "cold_items_removed": len(cold_items),
        "duplicates_dropped": n_before - len(ordered),
        # held-out users with no fit interaction: nobody can score them (not evaluated)
        "valid_users_without_train": _users_without_fit(valid, fit["valid"]),
        "test_users_without_train": _users_without_fit(test, fit["test"]),
    }
    if protocol == "global_timeline":
        info.update(valid_frac=valid_frac, test_frac=test_frac)
    return Split(
        train=fit["valid"],
        valid=valid.reset_index(drop=True),
        test=test.reset_index(drop=True),
        protocol=info,
        fit=fit,
        cohort_rule={"head_share": head_share, "cold_user_max": cold_user_max},
        removed_items=frozenset(cold_items),
    )


def _users_without_fit(held_out: pd.DataFrame, fit: TrainData) -> int:
    users = held_out["user_id"]
    return int(users[~users.isin(fit.user_ids)].nunique())


def _holdout_last_two(position_from_end: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, ...]:
    """Masks of the test (position 0) and validation (position 1) rows under leave-one-out."""
    is_test = (position_from_end == 0) & (size >= 2)
    is_valid = (position_from_end == 1) & (size >= 3)
    return is_test, is_valid


def _leave_last_out(ordered: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    size = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    pos_from_end = ordered.groupby("user_id").cumcount(ascending=False).to_numpy()
    is_test, is_valid = _holdout_last_two(pos_from_end, size)
    train = ordered[~(is_test | is_valid)]
    return train, ordered[is_valid].copy(), ordered[is_test].copy()


def _random_leave_one_out(ordered: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, ...]:
    # The seeded (user, item) hash ranks each user's rows at random (independent of row order);
    # rank 0 is the test target, rank 1 the validation target.
    ranked = ordered[["user_id"]].assign(_key=tie_break_key(ordered, seed))
    ranked = ranked.sort_values(["user_id", "_key"], kind="stable")
    rank = ranked.groupby("user_id").cumcount().reindex(ordered.index).to_numpy()
    size = ordered.groupby("user_id")["item_id"].transform("size").to_numpy()
    is_test, is_valid = _holdout_last_two(rank, size)
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


def _sample_cold_items(ordered: pd.DataFrame, fraction: float, seed: int) -> list:
    """A seeded ``fraction`` (at least one) of the items that have interactions."""
    items = np.sort(ordered["item_id"].unique())
    if not len(items):
        return []
    rng = np.random.default_rng([seed, 0xC01D])  # its own stream: independent of cold users
    size = min(len(items), max(1, int(round(len(items) * fraction))))
    return rng.choice(items, size=size, replace=False).tolist()


def _simulate_cold_start(fit: pd.DataFrame, chosen: set, keep: int) -> pd.DataFrame:
    pos_from_end = fit.groupby("user_id").cumcount(ascending=False)
    drop = fit["user_id"].isin(chosen) & (pos_from_end >= keep)
    return fit[~drop]


def compute_cohorts(
    train: TrainData, *, head_share: float = 0.2, cold_user_max: int = 5
) -> Cohorts:
    """Head/tail/cold items and cold users from fit interactions only.

    Head items are the most popular items (ties by item index) whose cumulative share of fit
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
