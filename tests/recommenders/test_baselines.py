"""Tests of the traditional baselines: contract, known answers, registry and the maths."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conformance import RecommenderConformance

from llmrec_gen.errors import ConfigError
from llmrec_gen.recommenders.base import Capability
from llmrec_gen.recommenders.content import BM25Recommender, EmbeddingRecommender
from llmrec_gen.recommenders.factorization import ALSRecommender
from llmrec_gen.recommenders.item_features import item_tokens, lightfm_item_features
from llmrec_gen.recommenders.neighborhood import cosine_top_k
from llmrec_gen.recommenders.popularity import PopularityRecommender, RandomRecommender
from llmrec_gen.registry import build_method, method_class, names

SLOW = {"embedding"}  # loads the real all-MiniLM-L6-v2 (once per session)
# llm*: tests/llm; sasrec trains a transformer: its contract runs in test_families.py, small;
# lightfm-llm needs an LM encoder: its contract runs in tests/llm/test_features.py (tiny model)
OWN_TESTS = {"sasrec", "lightfm-llm"}
BASELINES = [n for n in names(Capability.RANK) if not n.startswith("llm") and n not in OWN_TESTS]


def make_baseline(name: str, **params: Any) -> Any:
    """A baseline built through the registry, as configs build it."""
    return build_method({"type": name, "params": params})


def _param(name: str) -> Any:
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


# ---------------------------------------------------------------------------------------------
# The shared contract, for every baseline


@pytest.fixture(params=[_param(n) for n in BASELINES])
def baseline_name(request: pytest.FixtureRequest) -> str:
    return request.param


class TestBaselineConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, baseline_name: str) -> Any:
        return lambda: make_baseline(baseline_name)

    def test_name_is_the_registry_name(self, baseline_name: str):
        assert make_baseline(baseline_name).name == baseline_name


# ---------------------------------------------------------------------------------------------
# Known answers on the block dataset (tests/conftest.py)

# Random and popularity are not personalised, so "the held-out item ranks first" is not their
# right answer; they have their own known-answer tests below.
PERSONALISED = [_param(n) for n in BASELINES if n not in ("random", "popularity")]
# The block data has 168 interactions, ~600x fewer than ML-100k; the defaults suit ML-100k.
KNOWN_ANSWER_PARAMS: dict[str, dict[str, Any]] = {
    # 100 epochs at lr 0.01 are only ~17k SGD steps here: too few to separate the blocks.
    "bpr": {"learning_rate": 0.05},
    # WARP samples a user's held-out item as a negative; after ~30 epochs on so little data it
    # starts to memorise the training items and pushes the held-out one down (seen for 4 of 24
    # data/model seeds at 30 epochs, none at 10 or 20).
    "lightfm": {"epochs": 10},
}


@pytest.mark.parametrize("name", PERSONALISED)
def test_held_out_item_ranks_first_for_every_user(name: str, block_data: Any):
    users = list(block_data.held_out)
    rec = make_baseline(name, **KNOWN_ANSWER_PARAMS.get(name, {}))
    recs = rec.fit(block_data.train).recommend(users, k=3)
    for user, items, scores in zip(users, recs.item_ids, recs.scores, strict=True):
        assert items[0] == block_data.held_out[user], f"{name}: user {user}"
        assert scores[0] > scores[1], f"{name}: user {user}: no margin"


def test_popularity_ranks_by_training_count_then_catalog_order(block_data: Any):
    train = block_data.train
    counts = train.interactions["item_id"].value_counts()
    pop = train.catalog["item_id"].map(counts).fillna(0).to_numpy()
    expected_order = train.item_ids[np.argsort(-pop, kind="stable")]
    rec = PopularityRecommender().fit(train)
    for user in block_data.held_out:
        unseen = [i for i in expected_order if i not in train.seen_items(user)]
        for k in (1, 5, 9, len(unseen)):  # cut-offs that fall inside groups of tied counts
            assert rec.recommend([user], k=k).item_ids[0].tolist() == unseen[:k]


def test_random_depends_on_seed_and_user_only(block_data: Any):
    train = block_data.train
    users = list(block_data.held_out)[:4]
    a = RandomRecommender(seed=1).fit(train).recommend(users, k=10).item_ids
    b = RandomRecommender(seed=2).fit(train).recommend(users, k=10).item_ids
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])  # users get different rankings


def test_random_top_item_is_uniform_over_unseen_items(block_data: Any):
    train = block_data.train
    user = next(iter(block_data.held_out))
    unseen = set(train.item_ids.tolist()) - train.seen_items(user)
    draws = 40 * len(unseen)
    firsts = [
        RandomRecommender(seed=s).fit(train).recommend([user], k=1).item_ids[0][0]
        for s in range(draws)
    ]
    counts = pd.Series(firsts).value_counts()
    assert set(counts.index) == unseen
    expected = draws / len(unseen)
    chi2 = float((((counts - expected) ** 2) / expected).sum())
    assert chi2 < 2.5 * len(unseen)  # dof = |unseen| - 1; a skewed sampler is far above


# ---------------------------------------------------------------------------------------------
# The maths of individual baselines


def test_cosine_top_k_matches_dense_computation(rng: np.random.Generator):
    x = (rng.random((30, 12)) < 0.3).astype(np.float32)
    x[3] = 0  # an empty row has no neighbours
    k, shrink = 4, 2.0
    got = cosine_top_k(sp.csr_matrix(x), k, shrink).toarray()
    norms = np.linalg.norm(x, axis=1)
    dense = (x @ x.T) / (norms[:, None] * norms[None, :] + shrink + 1e-9)
    np.fill_diagonal(dense, 0)
    for i in range(len(x)):
        kept = np.flatnonzero(got[i])
        assert len(kept) <= k
        np.testing.assert_allclose(got[i, kept], dense[i, kept], rtol=1e-5)
        if len(kept):  # every kept neighbour is at least as similar as every dropped one
            dropped = np.setdiff1d(np.arange(len(x)), np.append(kept, i))
            assert dense[i, kept].min() >= dense[i, dropped].max() - 1e-6
    assert not got[3].any() and not got[:, 3].any()


@pytest.mark.parametrize("history_len", [1, 3, 100])
def test_bm25_scores_equal_rank_bm25(block_data: Any, history_len: int):
    from rank_bm25 import BM25Okapi

    train = block_data.train
    rec = BM25Recommender(history_len=history_len, k1=1.2, b=0.5).fit(train)
    columns = train.catalog[["title", "year", "genres"]].itertuples(index=False)
    docs = [item_tokens(t, y, g) for t, y, g in columns]
    reference = BM25Okapi(docs, k1=1.2, b=0.5)
    for user in list(block_data.held_out)[::5]:
        recent = train.history(user)[-history_len:]
        query = [tok for item in recent for tok in docs[train.item_index[item]]]
        mine = rec._score(train.user_indices([user]))[0]
        np.testing.assert_allclose(mine, reference.get_scores(query), rtol=1e-9, atol=1e-12)


def test_item_tokens():
    assert item_tokens("Toy Story", 1995, "Animation|Children's") == [
        "toy", "story", "animation", "children's", "1995", "1990s",
    ]  # fmt: skip
    assert item_tokens("Sci-Fi Flick!", pd.NA, "") == ["sci-fi", "flick"]


def test_embedding_profile_is_recency_weighted_mean(block_data: Any, monkeypatch: Any):
    train = block_data.train
    fake = np.random.default_rng(0).normal(size=(train.n_items, 8)).astype(np.float32)
    fake /= np.linalg.norm(fake, axis=1, keepdims=True)
    seen_texts: list[list[str]] = []

    def fake_encode(texts: list[str], **_: Any) -> np.ndarray:
        seen_texts.append(list(texts))
        return fake

    monkeypatch.setattr("llmrec_gen.embeddings.encode", fake_encode)
    rec = EmbeddingRecommender(recency_decay=0.5, history_len=3).fit(train)
    assert seen_texts == [train.catalog["text"].tolist()]
    user = next(iter(block_data.held_out))
    recent = train.history(user)[-3:]  # oldest first
    profile = sum(0.5**age * fake[train.item_index[item]] for age, item in enumerate(recent[::-1]))
    expected = fake @ (profile / np.linalg.norm(profile))
    np.testing.assert_allclose(rec._score(train.user_indices([user]))[0], expected, rtol=1e-5)
    assert not any("embeddings" in type(v).__module__ for v in vars(rec).values())


@pytest.mark.slow
def test_embedding_pickle_holds_vectors_not_the_encoder(block_data: Any):
    rec = EmbeddingRecommender().fit(block_data.train)
    blob = pickle.dumps(rec)
    assert b"sentence_transformers" not in blob and b"torch" not in blob
    assert rec.item_vectors_.shape == (block_data.train.n_items, 384)


def test_lightfm_item_features(block_data: Any):
    train = block_data.train
    feats = lightfm_item_features(train.catalog)
    n = train.n_items
    assert feats.shape[0] == n and feats.shape[1] > n
    np.testing.assert_allclose(np.asarray(feats.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert np.all(feats[:, :n].diagonal() > 0)  # identity features come first
    content = (feats[:, n:] > 0).astype(int)
    shared = (content @ content.T).toarray()
    for block in block_data.block_items:  # same theme -> shared genre and decade features
        idx = [train.item_index[i] for i in block]
        assert shared[np.ix_(idx, idx)].min() >= 2


def test_lightfm_hybrid_differs_from_pure_cf(block_data: Any):
    pure = make_baseline("lightfm", epochs=5).fit(block_data.train)
    hybrid = make_baseline("lightfm-hybrid", epochs=5).fit(block_data.train)
    assert hybrid.hybrid and not pure.hybrid
    assert not np.allclose(pure.item_factors_, hybrid.item_factors_)


def test_implicit_models_do_not_warn_about_blas_threads(block_data: Any):
    import implicit.utils

    implicit.utils._checked_blas_config = False  # the check runs once per process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_baseline("als", iterations=2).fit(block_data.train)
        make_baseline("bpr", iterations=2).fit(block_data.train)


def test_factor_models_score_with_dot_products(block_data: Any):
    rec = make_baseline("als").fit(block_data.train)
    idx = np.array([0, 3])
    expected = rec.user_factors_[idx] @ rec.item_factors_.T
    np.testing.assert_allclose(rec._score(idx), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Registry and configuration


def test_registry_names_and_defaults():
    assert BASELINES == [
        "random", "popularity", "itemknn", "userknn", "als", "bpr",
        "lightfm", "lightfm-hybrid", "bm25", "embedding", "ease", "id-mf",
    ]  # fmt: skip
    for name in BASELINES:
        cls = method_class(name)
        rec = make_baseline(name)
        assert isinstance(rec, cls) and rec.name == name
        assert rec.get_params() == cls.config_class().model_dump()
        assert cls.__doc__ and cls.config_class.__doc__


def test_make_baseline_passes_parameters():
    rec = make_baseline("als", factors=16, regularization=0.5)
    assert (rec.config.factors, rec.config.regularization) == (16, 0.5)


def test_string_parameters_are_converted():
    rec = make_baseline("lightfm", no_components="8", learning_rate="0.1")
    assert (rec.config.no_components, rec.config.learning_rate) == (8, 0.1)


def test_unknown_method_is_a_config_error():
    with pytest.raises(ConfigError, match="'nosuch'.*choose one of: random"):
        make_baseline("nosuch")


def test_unknown_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="als: factorz: unknown field"):
        make_baseline("als", factorz=10)
    with pytest.raises(ConfigError, match="hybrid: unknown field"):  # the class fixes it
        make_baseline("lightfm-hybrid", hybrid=False)


@pytest.mark.parametrize(
    ("name", "params", "bad"),
    [
        ("random", {"seed": -1}, "seed"),
        ("itemknn", {"k_neighbors": 0}, "k_neighbors"),
        ("userknn", {"shrink": -1.0}, "shrink"),
        ("als", {"factors": 2.5}, "factors"),
        ("als", {"factors": "many"}, "factors"),
        ("als", {"alpha": 0}, "alpha"),
        ("bpr", {"learning_rate": float("nan")}, "learning_rate"),
        ("lightfm", {"loss": "hinge"}, "loss"),
        ("lightfm-hybrid", {"num_threads": 0}, "num_threads"),
        ("bm25", {"b": 1.5}, "b"),
        ("embedding", {"recency_decay": 0.0}, "recency_decay"),
    ],
)
def test_invalid_parameter_is_a_config_error(name: str, params: dict, bad: str):
    with pytest.raises(ConfigError, match=f"{name}: {bad}: "):
        make_baseline(name, **params)


def test_constructors_validate_too():
    with pytest.raises(ConfigError, match="factors"):
        ALSRecommender(factors=0)


def test_import_does_not_load_heavy_libraries(tmp_path):
    code = (
        "import sys, llmrec_gen.registry as r\n"
        "[r.method_class(n) for n in r.names()]\n"
        "heavy = {'implicit', 'lightfm', 'torch', 'sentence_transformers', 'rank_bm25'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_items_without_training_interactions_are_ranked_too(block_data: Any):
    """Cold items (no training interaction) stay in the ranking: full-catalog protocol."""
    train = block_data.train
    cold = set(block_data.block_items[-1])
    rec = make_baseline("als").fit(train)
    user = next(iter(block_data.held_out))
    items = rec.recommend([user], k=train.n_items).item_ids[0]
    assert cold <= set(items.tolist())
