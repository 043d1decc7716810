"""Tests for ``llmrec_gen.data.splits``: protocols, seeded tie-breaks, cohorts and no leakage.

The central property (hypothesis, both protocols): nothing ``fit`` sees (``split.train``: its
interactions, matrix and histories) contains a validation or test interaction.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.data import Dataset, load_dataset
from llmrec_gen.data.splits import Split, compute_cohorts, order_interactions, split_dataset
from llmrec_gen.errors import ConfigError

Row = tuple[int, int, float, int]  # user_id, item_id, rating, timestamp
KEY = ["user_id", "item_id", "timestamp"]
PROTOCOLS = ["leave_last_out", "global_timeline"]


def make_dataset(rows: list[Row], n_items: int | None = None) -> Dataset:
    """A dataset from ``rows`` with a catalog of items ``0..n_items-1`` (all items by default)."""
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter = inter.astype({"user_id": "int64", "item_id": "int64", "rating": "float64"})
    inter = inter.astype({"timestamp": "int64"})
    n = n_items if n_items is not None else int(inter["item_id"].max()) + 1
    return Dataset("toy", inter, make_catalog(n))


@lru_cache(maxsize=8)
def make_catalog(n: int) -> pd.DataFrame:
    """Items ``0..n-1`` titled ``Item <id>`` (shared between tests; nothing mutates it)."""
    return pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "title": [f"Item {i}" for i in range(n)],
            "year": pd.array([pd.NA] * n, dtype="Int64"),
            "genres": [""] * n,
            "text": [f"Item {i}" for i in range(n)],
        }
    )


def shuffled(dataset: Dataset, seed: int) -> Dataset:
    """The same dataset with its interaction rows in another order."""
    inter = dataset.interactions.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return Dataset(dataset.name, inter, dataset.catalog)


def keys(frame: pd.DataFrame) -> set[tuple]:
    """The ``(user, item, timestamp)`` rows of a frame."""
    return set(frame[KEY].itertuples(index=False, name=None))


def tied_dataset(n_users: int = 40, n_tied: int = 6) -> Dataset:
    """Every user rates ``n_tied`` items at one timestamp after one earlier item."""
    rows: list[Row] = []
    for u in range(n_users):
        rows.append((u, 0, 3.0, 10))
        rows += [(u, 1 + (u + j) % 20, 4.0, 20) for j in range(n_tied)]
    return make_dataset(rows, n_items=21)


# Distinct timestamps; file order differs from time order on purpose.
CHRONO_ROWS: list[Row] = [
    (1, 3, 5.0, 300),
    (1, 1, 4.0, 100),
    (1, 4, 2.0, 400),
    (1, 2, 3.0, 200),
    (2, 5, 5.0, 50),
    (2, 6, 1.0, 60),  # two interactions: test only
    (3, 7, 4.0, 70),  # one interaction: train only
]


# ---------------------------------------------------------------------------------------------
# leave_last_out


def test_leave_last_out_tests_on_the_latest_interaction() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.test.set_index("user_id").loc[1, "item_id"] == 4


def test_leave_last_out_validates_on_the_second_latest_interaction() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.valid.set_index("user_id").loc[1, "item_id"] == 3


def test_leave_last_out_trains_on_the_rest_in_time_order() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.train.history(1).tolist() == [1, 2]


def test_user_with_two_interactions_gets_a_test_target_only() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.test.set_index("user_id").loc[2, "item_id"] == 6
    assert 2 not in split.valid["user_id"].tolist()
    assert split.train.history(2).tolist() == [5]


def test_user_with_one_interaction_is_training_only() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert 3 not in split.test["user_id"].tolist() + split.valid["user_id"].tolist()
    assert split.train.history(3).tolist() == [7]


def test_train_keeps_the_full_catalog() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.train.n_items == 10
    assert split.train.matrix.shape == (3, 10)


def test_protocol_is_recorded() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10), seed=4, min_rating=4.0)
    assert split.protocol["protocol"] == "leave_last_out"
    assert (split.protocol["seed"], split.protocol["min_rating"]) == (4, 4.0)
    counts = [split.protocol[f"{w}_interactions"] for w in ("train", "valid", "test")]
    assert counts == [4, 1, 2]


# ---------------------------------------------------------------------------------------------
# Timestamp ties: seeded hash


def test_tie_break_is_deterministic_for_a_seed() -> None:
    a = split_dataset(tied_dataset(), seed=7)
    b = split_dataset(tied_dataset(), seed=7)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train.interactions, b.train.interactions)


@pytest.mark.parametrize("protocol", ["leave_last_out", "global_timeline"])
@pytest.mark.parametrize("row_order", [1, 2, 3])
def test_split_is_independent_of_input_row_order(protocol: str, row_order: int) -> None:
    dataset = tied_dataset()
    a = split_dataset(dataset, protocol, seed=5)  # type: ignore[arg-type]
    b = split_dataset(shuffled(dataset, row_order), protocol, seed=5)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.valid, b.valid)
    pd.testing.assert_frame_equal(a.train.interactions, b.train.interactions)


def test_different_seeds_choose_different_tied_targets() -> None:
    targets = {tuple(split_dataset(tied_dataset(), seed=seed).test["item_id"]) for seed in range(5)}
    assert len(targets) > 1


def test_tie_break_is_not_item_id_order() -> None:
    dataset = tied_dataset()
    tests = split_dataset(dataset, seed=0).test.set_index("user_id")["item_id"]
    tied = dataset.interactions[dataset.interactions["timestamp"] == 20].groupby("user_id")
    by_max_id = tied["item_id"].max()
    by_min_id = tied["item_id"].min()
    assert not tests.equals(by_max_id)
    assert not tests.equals(by_min_id)


def test_order_interactions_sorts_by_user_then_time() -> None:
    ordered = order_interactions(make_dataset(CHRONO_ROWS).interactions)
    assert ordered["user_id"].is_monotonic_increasing
    assert all(g.is_monotonic_increasing for _, g in ordered.groupby("user_id")["timestamp"])


def test_seed_changes_targets_on_ml100k(ml100k: Dataset) -> None:
    a = split_dataset(ml100k, seed=0).test["item_id"].to_numpy()
    b = split_dataset(ml100k, seed=1).test["item_id"].to_numpy()
    assert (a != b).any()


# ---------------------------------------------------------------------------------------------
# global_timeline


def timeline_dataset() -> Dataset:
    """20 interactions with distinct timestamps 0..19 over 4 users."""
    return make_dataset([(t % 4, t % 7, 4.0, t) for t in range(20)], n_items=7)


def test_global_timeline_tests_on_the_latest_share() -> None:
    split = split_dataset(timeline_dataset(), "global_timeline", valid_frac=0.1, test_frac=0.2)
    assert sorted(split.test["timestamp"]) == [16, 17, 18, 19]


def test_global_timeline_validates_on_the_share_before_test() -> None:
    split = split_dataset(timeline_dataset(), "global_timeline", valid_frac=0.1, test_frac=0.2)
    assert sorted(split.valid["timestamp"]) == [14, 15]


def test_global_timeline_trains_only_before_the_cut() -> None:
    split = split_dataset(timeline_dataset(), "global_timeline", valid_frac=0.1, test_frac=0.2)
    assert split.train.interactions["timestamp"].max() == 13
    assert len(split.train.interactions) == 14


def test_global_timeline_ties_at_the_cut_are_not_broken_by_user_id() -> None:
    rows: list[Row] = [(u, u % 5, 4.0, 0) for u in range(60)]
    split = split_dataset(make_dataset(rows), "global_timeline", valid_frac=0.0, test_frac=0.5)
    assert sorted(split.test["user_id"]) != list(range(30, 60))


def test_global_timeline_counts_held_out_users_without_training_data() -> None:
    rows: list[Row] = [(1, 0, 4.0, 1), (1, 1, 4.0, 2), (2, 2, 4.0, 3), (2, 3, 4.0, 4)]
    rows += [(9, 4, 4.0, 5)]  # user 9's only interaction is the test target
    split = split_dataset(make_dataset(rows), "global_timeline", valid_frac=0.0, test_frac=0.2)
    assert split.protocol["test_users_without_train"] == 1
    assert 9 not in split.targets("test")


@pytest.mark.parametrize(("valid_frac", "test_frac"), [(0.5, 0.5), (0.1, 0.0), (-0.1, 0.2)])
def test_global_timeline_rejects_bad_fractions(valid_frac: float, test_frac: float) -> None:
    with pytest.raises(ConfigError, match=r"^split\.valid_frac/test_frac"):
        split_dataset(
            timeline_dataset(), "global_timeline", valid_frac=valid_frac, test_frac=test_frac
        )


def test_unknown_protocol_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^split\.protocol: unknown protocol 'random'"):
        split_dataset(timeline_dataset(), "random")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Positives


def test_min_rating_marks_low_rated_targets_negative() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10), min_rating=4.0)
    positive = split.test.set_index("user_id")["positive"].to_dict()
    assert positive == {1: False, 2: False}  # ratings 2.0 and 1.0
    assert split.valid["positive"].tolist() == [True]  # rating 5.0


def test_targets_keep_only_positives() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10), min_rating=4.0)
    assert split.targets("test") == {}
    assert split.targets("valid") == {1: {3}}


def test_without_min_rating_every_held_out_interaction_is_positive() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.targets("test") == {1: {4}, 2: {6}}


# ---------------------------------------------------------------------------------------------
# Cohorts (train only)


def popularity_dataset() -> Dataset:
    """Train popularity of items 0..4 is 6, 3, 2, 1, 0 (item 5 only ever held out)."""
    rows: list[Row] = []
    t = 0
    for user in range(6):
        items = (
            [0] + ([1] if user < 3 else []) + ([2] if user < 2 else []) + ([3] if user < 1 else [])
        )
        for item in items:
            rows.append((user, item, 4.0, t))
            t += 1
        rows += [(user, 5, 4.0, 1000 + user), (user, 4 if user == 0 else 5, 4.0, 2000 + user)]
    return make_dataset(rows, n_items=7)


def test_cohorts_use_training_interactions_only() -> None:
    split = split_dataset(popularity_dataset())
    assert split.train.item_popularity.tolist() == [6, 3, 2, 1, 0, 0, 0]


def test_head_items_cover_head_share_of_train_interactions() -> None:
    split = split_dataset(popularity_dataset(), head_share=0.6)
    pop = dict(
        zip(split.train.item_ids.tolist(), split.train.item_popularity.tolist(), strict=True)
    )
    covered = sum(pop[i] for i in split.cohorts.head_items) / sum(pop.values())
    assert covered >= 0.6


def test_head_items_are_the_most_popular_and_no_more_than_needed() -> None:
    split = split_dataset(popularity_dataset(), head_share=0.6)
    assert split.cohorts.head_items == frozenset({0, 1})  # 9/12 >= 0.6 > 6/12


def test_tail_items_are_every_other_catalog_item() -> None:
    split = split_dataset(popularity_dataset(), head_share=0.6)
    cohorts = split.cohorts
    assert cohorts.head_items | cohorts.tail_items == frozenset(range(7))
    assert not cohorts.head_items & cohorts.tail_items


def test_cold_items_have_no_training_interactions() -> None:
    # item 4 and 5 occur only in held-out rows, item 6 nowhere
    assert split_dataset(popularity_dataset()).cohorts.cold_items == frozenset({4, 5, 6})


def test_cold_users_have_at_most_cold_user_max_training_interactions() -> None:
    split = split_dataset(popularity_dataset(), cold_user_max=2)
    # train sizes: user 0: 4, user 1: 3, user 2: 2, users 3-5: 1 (held-out rows do not count)
    assert split.cohorts.cold_users == frozenset({2, 3, 4, 5})


def test_cohort_rule_is_recorded() -> None:
    cohorts = split_dataset(popularity_dataset(), head_share=0.6, cold_user_max=2).cohorts
    assert cohorts.rule == {"head_share": 0.6, "n_head_items": 2, "cold_user_max": 2}


def test_compute_cohorts_on_ml100k_train(ml100k_split: Split) -> None:
    cohorts = compute_cohorts(ml100k_split.train, head_share=0.2)
    pop = ml100k_split.train.item_popularity
    head = np.isin(ml100k_split.train.item_ids, list(cohorts.head_items))
    assert pop[head].sum() / pop.sum() >= 0.2
    assert pop[head].min() >= pop[~head].max()


# ---------------------------------------------------------------------------------------------
# Simulated cold-start users


def test_cold_start_simulation_never_changes_valid_or_test() -> None:
    dataset = tied_dataset(n_tied=8)
    base = split_dataset(dataset, seed=2)
    cold = split_dataset(dataset, seed=2, cold_start_fraction=0.5, cold_start_keep=2)
    pd.testing.assert_frame_equal(base.valid, cold.valid)
    pd.testing.assert_frame_equal(base.test, cold.test)


def test_cold_start_simulation_only_removes_train_rows() -> None:
    dataset = tied_dataset(n_tied=8)
    base = split_dataset(dataset, seed=2)
    cold = split_dataset(dataset, seed=2, cold_start_fraction=0.5, cold_start_keep=2)
    assert keys(cold.train.interactions) < keys(base.train.interactions)


def test_cold_start_users_keep_their_latest_training_interactions() -> None:
    dataset = tied_dataset(n_tied=8)
    base = split_dataset(dataset, seed=2)
    cold = split_dataset(dataset, seed=2, cold_start_fraction=0.5, cold_start_keep=2)
    shortened = [u for u in cold.train.user_ids if len(cold.train.history(u)) == 2]
    assert len(shortened) == 20  # half of 40 users
    for user in shortened:
        assert cold.train.history(user).tolist() == base.train.history(user)[-2:].tolist()


def test_cold_start_fraction_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^split\.cold_start_fraction: must be in \[0, 1\]"):
        split_dataset(tied_dataset(), cold_start_fraction=1.5)


# ---------------------------------------------------------------------------------------------
# Duplicates and leakage


def test_exact_duplicate_events_are_dropped_and_counted() -> None:
    rows: list[Row] = [(1, 0, 4.0, 1), (1, 1, 4.0, 2), (1, 2, 4.0, 3), (1, 2, 4.0, 3)]
    split = split_dataset(make_dataset(rows))
    assert split.protocol["duplicates_dropped"] == 1
    assert (1, 2, 3) not in keys(split.train.interactions)


def assert_no_leakage(dataset: Dataset, split: Split) -> None:
    """Nothing in ``split.train`` (rows, matrix, histories) contains a held-out interaction."""
    train = split.train
    held_out = pd.concat([split.valid, split.test])
    # 1. no held-out (user, item, timestamp) row among the training rows
    assert not keys(held_out) & keys(train.interactions)
    # 2. the matrix holds exactly the training (user, item) pairs
    rows, cols = train.matrix.nonzero()
    matrix_pairs = {(train.user_ids[r], train.item_ids[c]) for r, c in zip(rows, cols, strict=True)}
    train_pairs = set(train.interactions[["user_id", "item_id"]].itertuples(index=False, name=None))
    assert matrix_pairs == train_pairs
    # 3. histories are exactly the training rows, per user
    for user, group in train.interactions.groupby("user_id"):
        assert Counter(train.history(user).tolist()) == Counter(group["item_id"].tolist())
    # 4. a (user, item) pair that occurs once in the data and is held out is not in train at all
    counts = Counter(
        dataset.interactions[["user_id", "item_id"]].itertuples(index=False, name=None)
    )
    once = {
        p
        for p in held_out[["user_id", "item_id"]].itertuples(index=False, name=None)
        if counts[p] == 1
    }
    assert not once & matrix_pairs


ROWS = st.lists(
    st.tuples(
        st.integers(0, 6),  # user: few users, so many interactions each
        st.integers(0, 9),  # item: repeats and re-consumption happen
        st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
        st.integers(0, 5),  # timestamp: many ties
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3), cold=st.sampled_from([0.0, 0.5]))
def test_leave_last_out_never_leaks_held_out_interactions(
    rows: list[Row], seed: int, cold: float
) -> None:
    dataset = make_dataset(rows, n_items=10)
    split = split_dataset(dataset, "leave_last_out", seed=seed, cold_start_fraction=cold)
    assert_no_leakage(dataset, split)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3), cold=st.sampled_from([0.0, 0.5]))
def test_global_timeline_never_leaks_held_out_interactions(
    rows: list[Row], seed: int, cold: float
) -> None:
    dataset = make_dataset(rows, n_items=10)
    split = split_dataset(
        dataset,
        "global_timeline",
        seed=seed,
        valid_frac=0.2,
        test_frac=0.2,
        cold_start_fraction=cold,
    )
    assert_no_leakage(dataset, split)


@settings(max_examples=20, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3), protocol=st.sampled_from(PROTOCOLS))
def test_train_valid_and_test_partition_the_deduplicated_data(
    rows: list[Row], seed: int, protocol: str
) -> None:
    dataset = make_dataset(rows, n_items=10)
    split = split_dataset(dataset, protocol, seed=seed)  # type: ignore[arg-type]
    parts = [split.train.interactions, split.valid, split.test]
    assert sum(map(len, parts)) == len(dataset.interactions.drop_duplicates(KEY))
    assert set().union(*map(keys, parts)) == keys(dataset.interactions)


@settings(max_examples=20, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3), protocol=st.sampled_from(PROTOCOLS))
def test_cold_start_simulation_only_drops_training_rows(
    rows: list[Row], seed: int, protocol: str
) -> None:
    dataset = make_dataset(rows, n_items=10)
    base = split_dataset(dataset, protocol, seed=seed)  # type: ignore[arg-type]
    cold = split_dataset(dataset, protocol, seed=seed, cold_start_fraction=0.5)  # type: ignore[arg-type]
    assert keys(cold.train.interactions) <= keys(base.train.interactions)
    pd.testing.assert_frame_equal(base.test, cold.test)
    pd.testing.assert_frame_equal(base.valid, cold.valid)


@settings(max_examples=20, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3))
def test_global_timeline_trains_no_later_than_held_out(rows: list[Row], seed: int) -> None:
    split = split_dataset(
        make_dataset(rows, n_items=10), "global_timeline", seed=seed, valid_frac=0.2, test_frac=0.2
    )
    held_out = pd.concat([split.valid, split.test])
    if len(held_out) and len(split.train.interactions):
        assert split.train.interactions["timestamp"].max() <= held_out["timestamp"].min()


# ---------------------------------------------------------------------------------------------
# ML-100k


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k")


@pytest.fixture(scope="module")
def ml100k_split(ml100k: Dataset) -> Split:
    return split_dataset(ml100k)


def test_ml100k_leave_last_out_holds_out_one_valid_and_one_test_per_user(
    ml100k_split: Split,
) -> None:
    assert (len(ml100k_split.valid), len(ml100k_split.test)) == (943, 943)
    # 18 duplicate titles merged at load: 1664 items, 307 repeated events dropped
    assert len(ml100k_split.train.interactions) == 100000 - 307 - 2 * 943
    assert ml100k_split.train.matrix.shape == (943, 1664)


def test_ml100k_targets_are_never_in_the_training_matrix(ml100k_split: Split) -> None:
    train = ml100k_split.train
    users = train.user_indices(ml100k_split.test["user_id"])
    items = ml100k_split.test["item_id"].map(train.item_index).to_numpy()
    assert train.matrix[users, items].sum() == 0
