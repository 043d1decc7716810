"""Tests for ``llmrec_gen.data.splits``: protocols, seeded tie-breaks, cohorts and no leakage.

The central property (hypothesis, every protocol, both targets): nothing ``fit`` sees
(``split.fit_data(target)``: its interactions, matrix and histories) contains a held-out row at
or after the target's position, and no cold item ever reaches it.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.config import load_yaml_model
from llmrec_gen.data import Dataset, load_dataset
from llmrec_gen.data.splits import (
    Split,
    SplitConfig,
    compute_cohorts,
    order_interactions,
    split_dataset,
)
from llmrec_gen.errors import ConfigError

Row = tuple[int, int, float, int]  # user_id, item_id, rating, timestamp
KEY = ["user_id", "item_id", "timestamp"]
PROTOCOLS = ["leave_last_out", "global_timeline", "random_leave_one_out"]


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
# What fit sees, per target


def test_valid_target_fits_on_the_training_rows() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert split.fit_data("valid") is split.train
    assert split.fit_data("valid").history(1).tolist() == [1, 2]


def test_test_target_fits_on_every_event_before_the_test_item_in_time_order() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    fit = split.fit_data("test")
    assert fit.history(1).tolist() == [1, 2, 3]  # the validation item 3 is the latest
    assert fit.history(2).tolist() == [5]
    assert len(fit.interactions) == len(split.train.interactions) + len(split.valid)


def test_test_target_excludes_the_validation_item_as_seen() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10))
    assert 3 in split.fit_data("test").seen_items(1)
    assert 3 not in split.fit_data("valid").seen_items(1)


def test_global_timeline_test_target_fits_on_everything_before_the_test_cut() -> None:
    split = split_dataset(timeline_dataset(), "global_timeline", valid_frac=0.1, test_frac=0.2)
    assert sorted(split.fit_data("test").interactions["timestamp"]) == list(range(16))


def test_cohorts_come_from_the_fit_data_of_the_target() -> None:
    # item 5 is the validation item of users 1-5: cold for the valid target, not for test
    split = split_dataset(popularity_dataset())
    assert 5 in split.cohorts_for("valid").cold_items
    assert 5 not in split.cohorts_for("test").cold_items
    assert split.cohorts == split.cohorts_for("valid")


def test_targets_need_fit_data_of_their_own_target() -> None:
    # global timeline: user 9 has a validation row and a test row, nothing earlier
    rows: list[Row] = [(1, 0, 4.0, 1), (1, 1, 4.0, 2), (1, 2, 4.0, 3), (9, 3, 4.0, 4)]
    rows += [(1, 4, 4.0, 5), (9, 5, 4.0, 6)]
    split = split_dataset(make_dataset(rows), "global_timeline", valid_frac=1 / 3, test_frac=1 / 3)
    assert 9 not in split.targets("valid")
    assert split.targets("test")[9] == {5}  # fit on its validation row


def test_simulated_cold_users_keep_their_last_interactions_before_each_target() -> None:
    dataset = tied_dataset(n_tied=8)
    split = split_dataset(dataset, seed=2, cold_start_fraction=0.5, cold_start_keep=2)
    base = split_dataset(dataset, seed=2)
    short = [u for u in split.train.user_ids if len(split.fit_data("test").history(u)) == 2]
    assert len(short) == 20
    for user in short:
        assert (
            split.fit_data("test").history(user).tolist()
            == base.fit_data("test").history(user)[-2:].tolist()
        )


def test_unknown_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^target: must be one of"):
        split_dataset(make_dataset(CHRONO_ROWS)).fit_data("train")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# random_leave_one_out


def without_timestamps(dataset: Dataset) -> Dataset:
    """The same data with no timestamp column at all."""
    return Dataset(dataset.name, dataset.interactions.drop(columns="timestamp"), dataset.catalog)


def test_random_leave_one_out_needs_no_timestamps() -> None:
    split = split_dataset(without_timestamps(tied_dataset()), "random_leave_one_out", seed=1)
    assert (len(split.valid), len(split.test)) == (40, 40)
    assert "timestamp" not in split.fit_data("test").interactions.columns


def test_random_leave_one_out_holds_out_one_valid_and_one_test_per_user() -> None:
    split = split_dataset(make_dataset(CHRONO_ROWS, n_items=10), "random_leave_one_out")
    assert sorted(split.test["user_id"]) == [1, 2]
    assert sorted(split.valid["user_id"]) == [1]
    assert split.train.history(3).tolist() == [7]  # one interaction: training only


def test_random_leave_one_out_is_seeded_and_independent_of_row_order() -> None:
    dataset = without_timestamps(tied_dataset())
    a = split_dataset(dataset, "random_leave_one_out", seed=3)
    b = split_dataset(shuffled(dataset, 1), "random_leave_one_out", seed=3)
    assert keys_without_time(a.test) == keys_without_time(b.test)
    assert keys_without_time(a.valid) == keys_without_time(b.valid)
    other = {
        tuple(split_dataset(dataset, "random_leave_one_out", seed=s).test["item_id"])
        for s in range(4)
    }
    assert len(other) > 1


def keys_without_time(frame: pd.DataFrame) -> set[tuple]:
    return set(frame[["user_id", "item_id"]].itertuples(index=False, name=None))


def test_random_leave_one_out_does_not_pick_the_latest_interaction(ml100k: Dataset) -> None:
    rand = split_dataset(ml100k, "random_leave_one_out").test.set_index("user_id")["item_id"]
    last = split_dataset(ml100k).test.set_index("user_id")["item_id"]
    assert (rand != last.reindex(rand.index)).mean() > 0.9


def test_random_leave_one_out_keeps_the_dataset_order_as_history() -> None:
    rows: list[Row] = [(1, i, 4.0, 0) for i in (9, 3, 7, 1, 5, 0)]
    split = split_dataset(make_dataset(rows), "random_leave_one_out", seed=0)
    history = split.fit_data("test").history(1).tolist()
    assert history == [i for i in (9, 3, 7, 1, 5, 0) if i not in set(split.test["item_id"])]


def test_random_leave_one_out_keeps_each_pair_once() -> None:
    rows: list[Row] = [(1, 0, 4.0, 1), (1, 1, 4.0, 2), (1, 0, 4.0, 3), (1, 2, 4.0, 4)]
    split = split_dataset(make_dataset(rows), "random_leave_one_out")
    assert split.protocol["duplicates_dropped"] == 1
    pairs = pd.concat([split.train.interactions, split.valid, split.test])
    assert sorted(pairs["item_id"]) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Cold items and config errors


def test_cold_item_fraction_removes_that_share_of_items_from_fit(ml100k: Dataset) -> None:
    split = split_dataset(ml100k, cold_item_fraction=0.1, seed=0)
    assert len(split.removed_items) == round(0.1 * ml100k.interactions["item_id"].nunique())
    for target in ("valid", "test"):
        assert not split.fit_data(target).interactions["item_id"].isin(split.removed_items).any()
    cold_targets = split.test["item_id"].isin(split.removed_items).sum()
    assert 40 < cold_targets < 200  # ~10 % of users' next items


def test_cold_items_are_seeded() -> None:
    dataset = tied_dataset()
    a = split_dataset(dataset, seed=1, cold_item_fraction=0.3).removed_items
    assert a == split_dataset(dataset, seed=1, cold_item_fraction=0.3).removed_items
    assert a != split_dataset(dataset, seed=2, cold_item_fraction=0.3).removed_items


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_cold_item_fraction_outside_the_open_interval_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"^split\.cold_item_fraction: must be in \(0, 1\)"):
        split_dataset(tied_dataset(), cold_item_fraction=fraction)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"split.seeds": []}, "split.seeds: Value error, needs at least one seed"),
        ({"split.seeds": [1, 1]}, "split.seeds: Value error, seeds must be distinct"),
        ({"split.cold_item_fraction": 1.0}, "split.cold_item_fraction: Value error, must be in"),
        ({"split.protocol": "bogus"}, "split.protocol: Input should be 'leave_last_out', "),
    ],
)
def test_split_config_errors_name_the_field(override: dict, message: str) -> None:
    from llmrec_gen.evaluation.config import EvalConfig

    override = {**override, "methods": [{"type": "popularity"}]}
    with pytest.raises(ConfigError) as err:
        load_yaml_model(EvalConfig, None, override, what="eval config")
    assert str(err.value).startswith(f"eval config: {message}")
    assert "\n" not in str(err.value)


def test_split_config_runs_its_seeds() -> None:
    assert SplitConfig(seed=4).run_seeds() == [4]
    assert SplitConfig(seed=4, seeds=[0, 2]).run_seeds() == [0, 2]
    assert SplitConfig(seeds=[0, 2]).kwargs(2)["seed"] == 2
    assert "seeds" not in SplitConfig(seeds=[0, 2]).kwargs()


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


def test_unknown_protocol_is_a_config_error_listing_the_protocols() -> None:
    with pytest.raises(ConfigError, match=r"^split\.protocol: unknown protocol 'random'") as err:
        split_dataset(timeline_dataset(), "random")  # type: ignore[arg-type]
    assert "leave_last_out, global_timeline, random_leave_one_out" in str(err.value)


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


def held_out_at_or_after(split: Split, target: str) -> pd.DataFrame:
    """The held-out rows ``fit_data(target)`` must never contain: the target's and later ones."""
    return pd.concat([split.valid, split.test]) if target == "valid" else split.test


def assert_no_leakage(dataset: Dataset, split: Split, target: str) -> None:
    """Nothing in ``fit_data(target)`` (rows, matrix, histories) holds a row it must not see."""
    fit = split.fit_data(target)  # type: ignore[arg-type]
    forbidden = held_out_at_or_after(split, target)
    pair_cols = ["user_id", "item_id"]
    # 1. no forbidden (user, item, timestamp) row among the fit rows
    assert not keys(forbidden) & keys(fit.interactions)
    # 2. the matrix holds exactly the fit (user, item) pairs
    rows, cols = fit.matrix.nonzero()
    matrix_pairs = {(fit.user_ids[r], fit.item_ids[c]) for r, c in zip(rows, cols, strict=True)}
    fit_pairs = set(fit.interactions[pair_cols].itertuples(index=False, name=None))
    assert matrix_pairs == fit_pairs
    # 3. histories are exactly the fit rows, per user
    for user, group in fit.interactions.groupby("user_id"):
        assert Counter(fit.history(user).tolist()) == Counter(group["item_id"].tolist())
    # 4. a (user, item) pair that occurs once in the data and is forbidden is not in fit at all
    counts = Counter(dataset.interactions[pair_cols].itertuples(index=False, name=None))
    once = {p for p in forbidden[pair_cols].itertuples(index=False, name=None) if counts[p] == 1}
    assert not once & matrix_pairs
    # 5. fit = exactly the rows before the target: train (+ valid for the test target)
    allowed = keys(split.train.interactions) | (keys(split.valid) if target == "test" else set())
    assert keys(fit.interactions) <= allowed


def assert_fit_precedes_target(dataset: Dataset, split: Split, target: str, seed: int) -> None:
    """Time protocols: every fit row comes before the target in the seeded time order."""
    fit = split.fit_data(target)  # type: ignore[arg-type]
    ordered = order_interactions(dataset.interactions, seed).drop_duplicates(KEY, keep="last")
    position = {k: n for n, k in enumerate(ordered[KEY].itertuples(index=False, name=None))}
    held = split.held_out(target)  # type: ignore[arg-type]
    if split.protocol["protocol"] == "global_timeline":
        # one global cut: compare timestamps, not per-user positions
        if len(held) and len(fit.interactions):
            assert fit.interactions["timestamp"].max() <= held["timestamp"].min()
        return
    target_pos = {r[0]: position[r] for r in held[KEY].itertuples(index=False, name=None)}
    for r in fit.interactions[KEY].itertuples(index=False, name=None):
        if r[0] in target_pos:
            assert position[r] < target_pos[r[0]]


@settings(max_examples=40, deadline=None)
@given(
    rows=ROWS,
    seed=st.integers(0, 3),
    protocol=st.sampled_from(PROTOCOLS),
    target=st.sampled_from(["valid", "test"]),
    cold=st.sampled_from([0.0, 0.5]),
    cold_items=st.sampled_from([None, 0.3]),
)
def test_fit_data_never_holds_the_target_or_later_rows(
    rows: list[Row], seed: int, protocol: str, target: str, cold: float, cold_items: float | None
) -> None:
    dataset = make_dataset(rows, n_items=10)
    split = split_dataset(
        dataset,
        protocol,  # type: ignore[arg-type]
        seed=seed,
        valid_frac=0.2,
        test_frac=0.2,
        cold_start_fraction=cold,
        cold_item_fraction=cold_items,
    )
    assert_no_leakage(dataset, split, target)
    if protocol != "random_leave_one_out":
        assert_fit_precedes_target(dataset, split, target, seed)


@settings(max_examples=30, deadline=None)
@given(
    rows=ROWS,
    seed=st.integers(0, 3),
    protocol=st.sampled_from(PROTOCOLS),
    fraction=st.sampled_from([0.1, 0.3, 0.6]),
)
def test_a_cold_item_never_reaches_fit(
    rows: list[Row], seed: int, protocol: str, fraction: float
) -> None:
    dataset = make_dataset(rows, n_items=10)
    base = split_dataset(dataset, protocol, seed=seed)  # type: ignore[arg-type]
    split = split_dataset(dataset, protocol, seed=seed, cold_item_fraction=fraction)  # type: ignore[arg-type]
    cold = split.removed_items
    assert len(cold) == max(1, round(dataset.interactions["item_id"].nunique() * fraction))
    for target in ("valid", "test"):
        fit = split.fit_data(target)  # type: ignore[arg-type]
        assert not set(fit.interactions["item_id"]) & cold
        assert cold <= split.cohorts_for(target).cold_items  # type: ignore[arg-type]
        # only the cold items' rows leave the fit data; every other fit row stays
        kept = base.fit_data(target).interactions  # type: ignore[arg-type]
        assert keys(fit.interactions) == keys(kept[~kept["item_id"].isin(cold)])
    # held-out targets do not change
    pd.testing.assert_frame_equal(base.test, split.test)
    pd.testing.assert_frame_equal(base.valid, split.valid)


@settings(max_examples=20, deadline=None)
@given(rows=ROWS, seed=st.integers(0, 3), protocol=st.sampled_from(PROTOCOLS))
def test_train_valid_and_test_partition_the_deduplicated_data(
    rows: list[Row], seed: int, protocol: str
) -> None:
    dataset = make_dataset(rows, n_items=10)
    split = split_dataset(dataset, protocol, seed=seed)  # type: ignore[arg-type]
    parts = [split.train.interactions, split.valid, split.test]
    if protocol == "random_leave_one_out":  # no time order: each (user, item) pair once
        pairs = set(dataset.interactions[["user_id", "item_id"]].itertuples(index=False, name=None))
        assert sum(map(len, parts)) == len(pairs)
        assert set().union(*map(keys_without_time, parts)) == pairs
        return
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
