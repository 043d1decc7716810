"""The metrics: known values, a ranx cross-check, properties and errors."""

from __future__ import annotations

import math
import re
from random import Random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrec_gen.evaluation.metrics import (
    METRIC_NAMES,
    RANKING_METRICS,
    RATING_METRICS,
    average_popularity,
    average_precision,
    catalog_coverage,
    format_metric,
    hit_rate,
    mae,
    mean_metrics,
    mrr,
    ndcg,
    novelty,
    parse_metric,
    precision,
    ranking_metrics,
    recall,
    rmse,
    sample_candidates,
    tail_share,
)

SINGLE_USER = {
    "HR": hit_rate,
    "Precision": precision,
    "Recall": recall,
    "NDCG": ndcg,
    "MRR": mrr,
    "MAP": average_precision,
}


def _metrics_at(ranked, relevant, k: int) -> dict[str, float]:
    """All ranking metrics for one user at one cutoff, keyed by bare name."""
    per_user = ranking_metrics([np.asarray(ranked)], [relevant], ks=(k,))
    return {name: float(per_user[f"{name}@{k}"][0]) for name in RANKING_METRICS}


# --------------------------------------------------------------------------------------------
# Hand-computed values
# --------------------------------------------------------------------------------------------


def test_single_hit_at_rank_3_of_10() -> None:
    got = _metrics_at(np.arange(10), {2}, k=10)
    assert got["HR"] == 1.0
    assert got["Precision"] == pytest.approx(0.1)
    assert got["Recall"] == 1.0
    assert got["NDCG"] == pytest.approx(1 / math.log2(4))
    assert got["MRR"] == pytest.approx(1 / 3)
    assert got["MAP"] == pytest.approx(1 / 3)


def test_hit_below_cutoff_scores_zero() -> None:
    assert _metrics_at(np.arange(10), {2}, k=2) == dict.fromkeys(RANKING_METRICS, 0.0)


def test_two_hits_among_three_relevant() -> None:
    # hits at ranks 2 and 4 of 5; item 99 is relevant but not recommended
    got = _metrics_at([10, 11, 12, 13, 14], {11, 13, 99}, k=5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["HR"] == 1.0
    assert got["Precision"] == pytest.approx(2 / 5)
    assert got["Recall"] == pytest.approx(2 / 3)
    assert got["NDCG"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)
    assert got["MRR"] == pytest.approx(1 / 2)
    assert got["MAP"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_precision_divides_by_k_for_a_short_list() -> None:
    got = _metrics_at([9], {9}, k=10)
    assert got["Precision"] == pytest.approx(0.1)
    assert got["HR"] == got["NDCG"] == got["MRR"] == got["MAP"] == got["Recall"] == 1.0


def test_more_relevant_than_k_normalises_ndcg_and_map_by_k() -> None:
    got = _metrics_at([0, 1, 2, 7], {0, 1, 2, 3, 4}, k=3)
    assert got["NDCG"] == pytest.approx(1.0)
    assert got["MAP"] == pytest.approx(1.0)
    assert got["Recall"] == pytest.approx(3 / 5)


def test_empty_ranked_list_scores_zero() -> None:
    assert _metrics_at(np.array([], dtype=np.int64), {1}, k=5) == dict.fromkeys(
        RANKING_METRICS, 0.0
    )


def test_string_item_ids_and_array_relevant() -> None:
    as_set = _metrics_at(np.array(["a", "b", "c"]), {"c"}, k=3)
    as_array = _metrics_at(np.array(["a", "b", "c"]), np.array(["c"]), k=3)
    assert as_set == as_array
    assert as_set["MRR"] == pytest.approx(1 / 3)


def test_ranking_metrics_keys_and_shapes() -> None:
    per_user = ranking_metrics([np.arange(5), np.arange(3)], [{0}, {4}], ks=(10, 5, 5))
    assert list(per_user) == [f"{m}@{k}" for k in (5, 10) for m in RANKING_METRICS]
    assert all(v.shape == (2,) and v.dtype == np.float64 for v in per_user.values())
    assert per_user["HR@5"].tolist() == [1.0, 0.0]


def test_mean_metrics_overall_and_per_cohort() -> None:
    per_user = {"HR@10": np.array([1.0, 0.0, 1.0, 1.0])}
    assert mean_metrics(per_user) == {"HR@10": 0.75}
    assert mean_metrics(per_user, mask=np.array([False, True, True, False])) == {"HR@10": 0.5}
    empty = mean_metrics(per_user, mask=np.zeros(4, dtype=bool))
    assert math.isnan(empty["HR@10"])


def test_catalog_coverage_known_value() -> None:
    lists = [np.array([0, 1]), np.array([1, 2])]
    assert catalog_coverage(lists, n_items=10, k=2) == pytest.approx(0.3)
    assert catalog_coverage(lists, n_items=10, k=1) == pytest.approx(0.2)


def test_average_popularity_known_value_and_input_types() -> None:
    lists = [np.array([0, 1]), np.array([2]), np.array([], dtype=np.int64)]
    pop = {0: 10, 1: 2}  # item 2 is missing: counts as 0; the empty list is skipped
    assert average_popularity(lists, pop, k=2) == pytest.approx((6 + 0) / 2)
    assert average_popularity(lists, pd.Series(pop), k=2) == pytest.approx(3.0)
    assert average_popularity(lists, np.array([10, 2, 0]), k=2) == pytest.approx(3.0)
    assert average_popularity(lists, pop, k=1) == pytest.approx(5.0)


def test_tail_share_known_value() -> None:
    lists = [np.array([0, 1]), np.array([2])]
    assert tail_share(lists, {1, 2}, k=2) == pytest.approx((0.5 + 1.0) / 2)


def test_novelty_known_value_with_zero_popularity_smoothing() -> None:
    lists = [np.array([0, 1]), np.array([2])]
    pop = {0: 16, 1: 4, 2: 0}  # item 2: pop 0 -> 1 -> log2(16) = 4 bits
    assert novelty(lists, pop, n_users=16, k=2) == pytest.approx(((0 + 2) / 2 + 4) / 2)


def test_beyond_accuracy_is_nan_when_every_list_is_empty() -> None:
    lists = [np.array([], dtype=np.int64)]
    assert math.isnan(average_popularity(lists, {0: 1}, k=5))
    assert math.isnan(tail_share(lists, {0}, k=5))
    assert math.isnan(novelty(lists, {0: 1}, n_users=3, k=5))


def test_mae_rmse_known_values() -> None:
    y_true, y_pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 1.0, 4.0])
    assert mae(y_true, y_pred) == pytest.approx(3 / 4)
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt(5 / 4))


# --------------------------------------------------------------------------------------------
# Cross-check against ranx (an independent implementation)
# --------------------------------------------------------------------------------------------


def _random_users(seed: int, n_users: int, n_items: int) -> tuple[list, list]:
    """Random ranked lists (1..25 long) and relevant sets (1..30, part drawn from the list)."""
    rng = np.random.default_rng(seed)
    ranked_lists, relevant = [], []
    for _ in range(n_users):
        ranked = rng.choice(n_items, size=int(rng.integers(1, 26)), replace=False)
        n_rel = int(rng.integers(1, 31))
        from_list = int(rng.integers(0, min(n_rel, ranked.size) + 1))
        outside = np.setdiff1d(np.arange(n_items), ranked)
        rel = set(rng.choice(ranked, size=from_list, replace=False).tolist())
        rel |= set(rng.choice(outside, size=n_rel - from_list, replace=False).tolist())
        ranked_lists.append(ranked)
        relevant.append(rel)
    # edge cases: a single relevant item at rank 1 / last / absent, all relevant, |R| >> K
    ranked_lists += [np.arange(10), np.arange(10), np.arange(10), np.arange(3), np.arange(25)]
    relevant += [{0}, {9}, {99}, {0, 1, 2}, set(range(0, 60, 2))]
    return ranked_lists, relevant


@pytest.mark.filterwarnings("ignore:unsafe cast")  # numba notice from inside ranx
def test_matches_ranx() -> None:
    ranx = pytest.importorskip("ranx")
    ks = (1, 5, 10, 20)
    ranked_lists, relevant = _random_users(seed=7, n_users=400, n_items=80)
    qids = [f"u{u}" for u in range(len(ranked_lists))]
    # Plain dicts, not ranx.Qrels/Run: those sort query ids and take ~50 s more to JIT-compile;
    # with dicts ranx returns per-query scores in insertion order.
    qrels = {q: {str(i): 1 for i in rel} for q, rel in zip(qids, relevant, strict=True)}
    run = {  # strictly decreasing scores, so ranx keeps our order exactly
        q: {str(item): float(len(r) - pos) for pos, item in enumerate(r.tolist())}
        for q, r in zip(qids, ranked_lists, strict=True)
    }
    ranx_names = ("hits", "precision", "recall", "ndcg", "mrr", "map")
    got = ranx.evaluate(qrels, run, [f"{m}@{k}" for m in ranx_names for k in ks], return_mean=False)

    ours = ranking_metrics(ranked_lists, relevant, ks=ks)
    n_rel = np.array([len(rel) for rel in relevant], dtype=np.float64)
    for k in ks:
        np.testing.assert_allclose(ours[f"HR@{k}"], (got[f"hits@{k}"] > 0), rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[f"Precision@{k}"], got[f"precision@{k}"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[f"Recall@{k}"], got[f"recall@{k}"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[f"NDCG@{k}"], got[f"ndcg@{k}"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(ours[f"MRR@{k}"], got[f"mrr@{k}"], rtol=0, atol=1e-9)
        # ranx's AP divides by |R|, ours by min(|R|, K): rescale, and equal where |R| <= K
        rescaled = got[f"map@{k}"] * n_rel / np.minimum(n_rel, k)
        np.testing.assert_allclose(ours[f"MAP@{k}"], rescaled, rtol=0, atol=1e-9)
        small = n_rel <= k
        np.testing.assert_allclose(
            ours[f"MAP@{k}"][small], got[f"map@{k}"][small], rtol=0, atol=1e-9
        )
    # the data must exercise the interesting regimes, or the comparison proves little
    assert 0 < ours["HR@5"].mean() < 1
    assert (n_rel > 20).any() and (n_rel == 1).any()


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@st.composite
def user_cases(draw: st.DrawFn) -> tuple[list[int], set[int], int]:
    """One user: a ranked list of distinct items, a non-empty relevant set and a cutoff."""
    ranked = draw(st.lists(st.integers(0, 40), unique=True, max_size=25))
    relevant = draw(st.sets(st.integers(0, 40), min_size=1, max_size=15))
    k = draw(st.integers(1, 25))
    return ranked, relevant, k


@given(user_cases())
def test_ranking_metrics_lie_in_unit_interval(case: tuple[list[int], set[int], int]) -> None:
    got = _metrics_at(*case)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in got.values()), got


@given(user_cases())
def test_hit_rate_bounds_every_metric(case: tuple[list[int], set[int], int]) -> None:
    got = _metrics_at(*case)
    for name in ("NDCG", "MRR", "Precision", "Recall", "MAP"):
        assert got[name] <= got["HR"]
        assert (got[name] > 0) == (got["HR"] > 0)


@given(user_cases())
def test_single_positive_map_equals_mrr_and_ndcg_bounds_it(
    case: tuple[list[int], set[int], int],
) -> None:
    ranked, relevant, k = case
    got = _metrics_at(ranked, {min(relevant)}, k)
    assert got["MAP"] == pytest.approx(got["MRR"])
    assert got["MRR"] <= got["NDCG"] + 1e-12
    assert got["Recall"] == got["HR"]


@given(user_cases(), st.randoms(use_true_random=False))
def test_permuting_irrelevant_items_changes_nothing(
    case: tuple[list[int], set[int], int], random: Random
) -> None:
    ranked, relevant, k = case
    irrelevant_slots = [i for i, item in enumerate(ranked) if item not in relevant]
    shuffled_items = [ranked[i] for i in irrelevant_slots]
    random.shuffle(shuffled_items)
    permuted = list(ranked)
    for slot, item in zip(irrelevant_slots, shuffled_items, strict=True):
        permuted[slot] = item
    assert _metrics_at(permuted, relevant, k) == _metrics_at(ranked, relevant, k)


@given(user_cases())
def test_hit_rate_recall_and_mrr_never_drop_as_k_grows(
    case: tuple[list[int], set[int], int],
) -> None:
    ranked, relevant, k = case
    small, large = _metrics_at(ranked, relevant, k), _metrics_at(ranked, relevant, k + 1)
    for name in ("HR", "Recall", "MRR"):
        assert small[name] <= large[name]


@given(user_cases())
def test_single_user_functions_match_vectorised(case: tuple[list[int], set[int], int]) -> None:
    ranked, relevant, k = case
    got = _metrics_at(ranked, relevant, k)
    for name, fn in SINGLE_USER.items():
        assert fn(ranked, relevant, k) == got[name]


@given(
    st.lists(st.lists(st.integers(0, 29), unique=True, max_size=12), max_size=20),
    st.integers(1, 12),
)
def test_beyond_accuracy_ranges(lists: list[list[int]], k: int) -> None:
    rng = np.random.default_rng(len(lists))
    pop = {i: int(c) for i, c in enumerate(rng.integers(0, 50, size=30))}
    assert 0.0 <= catalog_coverage(lists, n_items=30, k=k) <= 1.0
    if not any(lists):
        return
    assert min(pop.values()) <= average_popularity(lists, pop, k=k) <= max(pop.values())
    assert 0.0 <= tail_share(lists, {i for i, c in pop.items() if c < 10}, k=k) <= 1.0
    assert 0.0 <= novelty(lists, pop, n_users=50, k=k) <= math.log2(50) + 1e-12


@given(
    st.lists(
        st.tuples(st.floats(-10, 10), st.floats(-10, 10)),
        min_size=1,
        max_size=50,
    )
)
def test_mae_rmse_match_numpy_formulas(pairs: list[tuple[float, float]]) -> None:
    y_true, y_pred = np.array(pairs).T
    assert mae(y_true, y_pred) == pytest.approx(np.abs(y_true - y_pred).mean())
    assert rmse(y_true, y_pred) == pytest.approx(np.sqrt(((y_true - y_pred) ** 2).mean()))
    assert rmse(y_true, y_pred) >= mae(y_true, y_pred) - 1e-12


@settings(max_examples=50)
@given(
    st.integers(0, 2**32 - 1),
    st.sets(st.integers(0, 199), min_size=1, max_size=3),
    st.sets(st.integers(0, 199), max_size=60),
)
def test_sample_candidates_contents_and_determinism(
    seed: int, positives: set[int], exclude: set[int]
) -> None:
    first = sample_candidates(np.random.default_rng(seed), 200, positives, exclude, 100)
    again = sample_candidates(np.random.default_rng(seed), 200, positives, exclude, 100)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.int64
    assert len(first) == len(set(first.tolist())) == len(positives) + 100
    negatives = set(first.tolist()) - positives
    assert positives <= set(first.tolist())
    assert not negatives & exclude


# --------------------------------------------------------------------------------------------
# Metric names and errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [("NDCG@10", ("NDCG", 10)), ("hr@5", ("HR", 5)), (" map@20 ", ("MAP", 20))]
    + [("rmse", ("RMSE", None)), ("Coverage@10", ("Coverage", 10))],
)
def test_parse_metric_accepts_valid_names(label: str, expected: tuple[str, int | None]) -> None:
    assert parse_metric(label) == expected


def test_every_metric_name_round_trips() -> None:
    for name in METRIC_NAMES:
        label = format_metric(name.lower(), None if name in RATING_METRICS else 10)
        parsed = parse_metric(label)
        assert format_metric(*parsed) == label and parsed[0] == name


@pytest.mark.parametrize("label", ["NDGC@10", "NDCG", "NDCG@0", "NDCG@x", "RMSE@10", "", "@10"])
def test_parse_metric_rejects_bad_names_and_quotes_them(label: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(label))):
        parse_metric(label)


def test_empty_relevant_set_raises() -> None:
    with pytest.raises(ValueError, match="user 1: empty relevant set"):
        ranking_metrics([np.arange(3), np.arange(3)], [{1}, set()])


def test_duplicate_items_raise() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        ranking_metrics([np.array([1, 2, 1])], [{1}], ks=(3,))


def test_misaligned_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2 ranked lists but 1 relevant"):
        ranking_metrics([np.arange(3), np.arange(3)], [{1}])


@pytest.mark.parametrize("ks", [(0,), (-1,), (2.5,), (True,), ()])
def test_bad_cutoffs_raise(ks: tuple) -> None:
    with pytest.raises(ValueError):
        ranking_metrics([np.arange(3)], [{1}], ks=ks)


def test_mean_metrics_rejects_bad_masks() -> None:
    per_user = {"HR@10": np.array([1.0, 0.0])}
    with pytest.raises(ValueError, match="boolean"):
        mean_metrics(per_user, mask=np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        mean_metrics(per_user, mask=np.array([True]))


def test_rating_metrics_reject_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        mae(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="at least one"):
        rmse(np.array([]), np.array([]))


def test_novelty_rejects_popularity_above_user_count() -> None:
    with pytest.raises(ValueError, match="n_users=3"):
        novelty([np.array([0])], {0: 5}, n_users=3, k=1)


def test_coverage_rejects_more_items_than_catalog() -> None:
    with pytest.raises(ValueError, match="catalog has only 2"):
        catalog_coverage([np.array([0, 1, 2])], n_items=2, k=3)


def test_sample_candidates_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="only 5 items available"):
        sample_candidates(rng, 10, {0}, {1, 2, 3, 4}, n_negatives=6)
    with pytest.raises(ValueError, match="outside"):
        sample_candidates(rng, 10, {10}, set(), n_negatives=1)
