"""Tests for ``llmrec_gen.evaluation.significance``: bootstrap CIs, paired tests, Holm.

Properties (hypothesis) plus cross-checks against independent computations: scipy's Wilcoxon,
an exact signed-rank null distribution enumerated by hand, and a Holm example from the paper.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from llmrec_gen.evaluation import significance as S

# per-user metric values: in [0, 1] with many exact zeros, like HR/NDCG
VALUES = st.lists(
    st.one_of(st.just(0.0), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=80
)
LEVELS = st.floats(0.5, 0.99)


# ---------------------------------------------------------------------------------------------
# Bootstrap CIs


@settings(max_examples=60, deadline=None)
@given(values=VALUES, level=LEVELS, seed=st.integers(0, 5))
def test_ci_contains_the_mean(values: list[float], level: float, seed: int) -> None:
    x = np.asarray(values)
    lo, hi = S.bootstrap_ci(x, level, n_resamples=300, seed=seed)
    assert lo - 1e-12 <= x.mean() <= hi + 1e-12


@settings(max_examples=40, deadline=None)
@given(values=VALUES, seed=st.integers(0, 5))
def test_a_higher_level_gives_a_wider_interval(values: list[float], seed: int) -> None:
    x = np.asarray(values)
    lo80, hi80 = S.bootstrap_ci(x, 0.8, n_resamples=300, seed=seed)
    lo95, hi95 = S.bootstrap_ci(x, 0.95, n_resamples=300, seed=seed)
    assert lo95 <= lo80 <= hi80 <= hi95


def test_constant_values_give_a_zero_width_interval() -> None:
    assert S.bootstrap_ci(np.full(50, 0.25)) == pytest.approx((0.25, 0.25))


def test_ci_is_seeded() -> None:
    x = np.random.default_rng(0).random(100)
    assert S.bootstrap_ci(x, seed=3) == S.bootstrap_ci(x, seed=3)
    assert S.bootstrap_ci(x, seed=3) != S.bootstrap_ci(x, seed=4)


def test_ci_of_a_binary_metric_matches_the_normal_approximation() -> None:
    # 1000 users, hit rate 0.1: the 95 % interval is about 0.1 ± 1.96 * sqrt(0.09 / 1000)
    x = np.zeros(1000)
    x[:100] = 1.0
    lo, hi = S.bootstrap_ci(x, 0.95, n_resamples=4000, seed=0)
    half = 1.96 * np.sqrt(0.1 * 0.9 / 1000)
    assert lo == pytest.approx(0.1 - half, abs=0.004)
    assert hi == pytest.approx(0.1 + half, abs=0.004)


def test_columns_are_resampled_with_the_same_users() -> None:
    x = np.random.default_rng(1).random((60, 1))
    both = S.bootstrap_ci(np.hstack([x, x]), seed=2)
    assert both[:, 0].tolist() == both[:, 1].tolist()
    assert both[:, 0].tolist() == pytest.approx(S.bootstrap_ci(x[:, 0], seed=2), abs=1e-12)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 95])
def test_a_level_outside_the_open_unit_interval_is_rejected(level: float) -> None:
    with pytest.raises(ValueError, match=r"confidence level must be in \(0, 1\)"):
        S.bootstrap_ci(np.ones(3), level)


def test_ratio_ci_contains_the_pooled_ratio() -> None:
    rng = np.random.default_rng(0)
    pairs = rng.integers(1, 20, 200).astype(float)
    abs_err = pairs * rng.random(200)
    lo, hi = S.ratio_bootstrap_ci(abs_err, pairs, seed=0)
    assert lo < abs_err.sum() / pairs.sum() < hi


# ---------------------------------------------------------------------------------------------
# Paired tests


@settings(max_examples=40, deadline=None)
@given(values=VALUES)
def test_identical_inputs_give_p_one(values: list[float]) -> None:
    x = np.asarray(values)
    assert S.paired_bootstrap_p(x, x.copy()) == 1.0
    assert S.wilcoxon_p(x, x.copy()) == 1.0


@settings(max_examples=40, deadline=None)
@given(values=VALUES, shift=st.floats(-0.5, 0.5), seed=st.integers(0, 3))
def test_paired_bootstrap_p_is_a_probability_and_symmetric(
    values: list[float], shift: float, seed: int
) -> None:
    x = np.asarray(values)
    y = np.clip(x + shift * np.random.default_rng(seed).random(len(x)), 0, 1)
    p = S.paired_bootstrap_p(x, y, 200, seed)
    assert 1 / 201 <= p <= 1.0
    assert p == S.paired_bootstrap_p(y, x, 200, seed)


def test_a_clear_difference_gets_the_smallest_p() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300)
    assert S.paired_bootstrap_p(y + 0.2, y, 500) == pytest.approx(1 / 501)


def test_paired_bootstrap_agrees_with_a_paired_t_test_on_normal_data() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=400)
    x = y + rng.normal(0.1, 1.0, size=400)
    p_t = stats.ttest_rel(x, y).pvalue
    assert S.paired_bootstrap_p(x, y, 4000, seed=1) == pytest.approx(p_t, abs=0.02)


@pytest.mark.parametrize("seed", range(5))
def test_wilcoxon_equals_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(120) < 0.3) * rng.random(120)  # NDCG-like: many zeros, ties
    x = (rng.random(120) < 0.35) * rng.random(120)
    assert S.wilcoxon_p(x, y) == stats.wilcoxon(x - y).pvalue


def test_wilcoxon_matches_the_exact_signed_rank_distribution() -> None:
    # an independent exact computation: enumerate all 2^n sign patterns (n = 10, no ties)
    d = np.array([0.3, -0.1, 0.45, 0.2, -0.05, 0.6, 0.15, -0.25, 0.5, 0.35])
    ranks = stats.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    null = np.array(
        [ranks[np.array(s, dtype=bool)].sum() for s in itertools.product([0, 1], repeat=len(d))]
    )
    exact = min(1.0, 2 * min((null <= w_plus).mean(), (null >= w_plus).mean()))
    assert S.wilcoxon_p(d, np.zeros_like(d)) == pytest.approx(exact)


# ---------------------------------------------------------------------------------------------
# Holm


@settings(max_examples=80, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_is_at_least_the_raw_p_and_at_most_one(p: list[float]) -> None:
    adj = S.holm(p)
    assert np.all(adj >= np.asarray(p) - 1e-15)
    assert np.all(adj <= 1.0)


@settings(max_examples=80, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_preserves_the_order_of_the_raw_p_values(p: list[float]) -> None:
    raw, adj = np.asarray(p), S.holm(p)
    for i, j in itertools.product(range(len(p)), repeat=2):
        if raw[i] < raw[j]:
            assert adj[i] <= adj[j]


def test_holm_known_example() -> None:
    # Holm (1979): m = 4; p = 0.01, 0.04, 0.03, 0.005 -> 0.03, 0.06, 0.06, 0.02
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_of_one_p_value_is_that_p_value_and_nan_is_skipped() -> None:
    assert S.holm([0.2]).tolist() == [0.2]
    adj = S.holm([0.01, float("nan"), 0.02])
    assert np.isnan(adj[1]) and adj[[0, 2]].tolist() == pytest.approx([0.02, 0.02])
