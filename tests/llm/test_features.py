"""Tests of LM item vectors (encoders) and the CF methods built on them (``llm-mf``, ``llm-knn``).

Fast tests use the tiny random Llama of ``tests/llm_fixtures.py`` as the encoder; the packaged
MiniLM and the default LLM are loaded only by tests marked slow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conformance import RecommenderConformance

from llmrec_gen.errors import DataError, ModelNotFoundError
from llmrec_gen.llm import encoders
from llmrec_gen.llm.encoders import EncoderSpec, cache_path, item_texts, item_vectors
from llmrec_gen.llm.features import LLMKNN, LLMMF, LightFMLM, text_vectors
from llmrec_gen.recommenders.base import Capability
from llmrec_gen.recommenders.item_features import lightfm_item_features
from llmrec_gen.registry import build_method


@pytest.fixture(autouse=True)
def _vector_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own empty vector cache (no test reads another's vectors)."""
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_spec(model_dir: Path, **kw: Any) -> dict[str, Any]:
    return {"model": str(model_dir), "num_threads": 1, **kw}


# ---------------------------------------------------------------------------------------------
# Encoders


def test_vectors_are_deterministic_and_cached(
    block_data: Any, tiny_model_dir: Path, _vector_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    catalog = block_data.train.catalog
    spec = EncoderSpec(**tiny_spec(tiny_model_dir, dtype="float32"))
    first = item_vectors(catalog, spec)
    assert first.shape == (len(catalog), 64) and first.dtype == np.float32
    path = cache_path(encoders.resolve_encoder(spec.model), spec, item_texts(catalog, ["text"]))
    assert path.is_file() and path.parent.parent == _vector_cache
    # a fresh computation (other cache) gives the same vectors
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(_vector_cache.parent / "other"))
    np.testing.assert_array_equal(item_vectors(catalog, spec), first)
    # a second fit reads the file: the model is never run again
    monkeypatch.setenv("LLMREC_GEN_CACHE", str(_vector_cache))

    def no_model(*args: Any) -> None:
        raise AssertionError("the encoder ran although its vectors were cached")

    monkeypatch.setattr(encoders, "_run_encoder", no_model)
    np.testing.assert_array_equal(item_vectors(catalog, spec), first)
    # other text or other pooling is another key
    other = EncoderSpec(**tiny_spec(tiny_model_dir, dtype="float32", pooling="last"))
    assert cache_path(encoders.resolve_encoder(other.model), other, ["x"]) != path


def test_mean_and_last_pooling_differ_and_follow_text(block_data: Any, tiny_model_dir: Path):
    catalog = block_data.train.catalog
    mean = item_vectors(catalog, EncoderSpec(**tiny_spec(tiny_model_dir)))
    last = item_vectors(catalog, EncoderSpec(**tiny_spec(tiny_model_dir, pooling="last")))
    assert not np.allclose(mean, last)
    # batching (texts sorted by length, padded) does not change any vector (fp32: bf16 sums
    # differ with the padded width)
    fp32 = EncoderSpec(**tiny_spec(tiny_model_dir, dtype="float32"))
    alone = item_vectors(catalog.iloc[[3]], fp32)
    np.testing.assert_allclose(alone[0], item_vectors(catalog, fp32)[3], rtol=1e-4, atol=1e-5)


def test_item_texts_join_fields(block_data: Any):
    catalog = block_data.train.catalog
    texts = item_texts(catalog.iloc[:1], ["title", "year", "genres"])
    row = catalog.iloc[0]
    assert texts == [f"{row.title} | {int(row.year)} | {row.genres.replace('|', ', ')}"]


def test_missing_text_field_is_one_line_data_error(block_data: Any, tiny_model_dir: Path):
    rec = LLMKNN(encoder=tiny_spec(tiny_model_dir, text_fields=["title", "plot"]))
    with pytest.raises(DataError, match="'plot' not in the catalogue") as err:
        rec.fit(block_data.train)
    assert "\n" not in str(err.value)


def test_encoder_path_that_is_not_a_model(block_data: Any, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    for bad in (tmp_path, tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(ModelNotFoundError) as err:
            LLMKNN(encoder={"model": str(bad)}).fit(block_data.train)
        assert "\n" not in str(err.value) and str(bad.name) in str(err.value)


# ---------------------------------------------------------------------------------------------
# llm-mf and llm-knn


class TestLLMMFConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Path) -> Any:
        spec = tiny_spec(tiny_model_dir)
        return lambda: LLMMF(encoder=spec, epochs=3, factors=16, hidden=32, num_threads=1)


class TestLLMMFResidualBPRConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Path) -> Any:
        spec = tiny_spec(tiny_model_dir)
        return lambda: LLMMF(
            encoder=spec, loss="bpr", id_residual=True, n_layers=0, epochs=3, num_threads=1
        )


class TestLLMKNNConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Path) -> Any:
        return lambda: LLMKNN(encoder=tiny_spec(tiny_model_dir))


class TestLightFMLMConformance(RecommenderConformance):
    @pytest.fixture
    def make_recommender(self, tiny_model_dir: Path) -> Any:
        return lambda: LightFMLM(encoder=tiny_spec(tiny_model_dir), components=8, epochs=5)


def test_lightfm_llm_features_add_to_or_replace_the_content_features(
    block_data: Any, tiny_model_dir: Path
):
    train = block_data.train
    spec = tiny_spec(tiny_model_dir)
    added = LightFMLM(encoder=spec, components=8)._item_features(train)
    replaced = LightFMLM(encoder=spec, components=8, mode="replace")._item_features(train)
    content = lightfm_item_features(train.catalog)
    assert added.shape == (train.n_items, content.shape[1] + 8)
    assert replaced.shape == (train.n_items, train.n_items + 8)
    np.testing.assert_allclose(added[:, -8:].toarray(), replaced[:, -8:].toarray())
    assert np.count_nonzero(added[:, -8:].toarray()) > 0


def test_registry_builds_both_with_a_content_digest(tiny_model_dir: Path):
    for name in ("llm-mf", "llm-knn", "lightfm-llm"):
        rec = build_method({"type": name, "params": {"encoder": tiny_spec(tiny_model_dir)}})
        assert rec.name == name and rec.has(Capability.CONTENT_DIGEST)
        assert rec.content_digest().startswith("tiny-llama")


def test_text_vectors_follow_item_index_not_catalogue_rows(block_data: Any, tiny_model_dir: Path):
    train = block_data.train
    spec = EncoderSpec(**tiny_spec(tiny_model_dir))
    raw = item_vectors(train.catalog, spec)
    ordered = text_vectors(train, spec, center=False)
    item = train.catalog["item_id"].iloc[5]
    v = raw[5] / np.linalg.norm(raw[5])
    np.testing.assert_allclose(ordered[train.item_index[item]], v, rtol=1e-5, atol=1e-6)


def test_llm_knn_user_vector_is_the_weighted_history_mean(block_data: Any, tiny_model_dir: Path):
    train = block_data.train
    rec = LLMKNN(encoder=tiny_spec(tiny_model_dir), recency_decay=0.5, history_len=2).fit(train)
    user = train.user_ids[0]
    last_two = [train.item_index[i] for i in train.history(user)[-2:]]
    expected = 0.5 * rec.item_vectors_[last_two[0]] + rec.item_vectors_[last_two[1]]
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(rec.user_vectors_[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["llm-knn", "llm-mf"])
def test_minilm_methods_rank_the_held_out_item_first(name: str, block_data: Any):
    users = list(block_data.held_out)
    params = {"encoder": {"model": "minilm"}}
    if name == "llm-mf":
        params |= {"epochs": 40, "num_threads": 1}
    rec = build_method({"type": name, "params": params}).fit(block_data.train)
    if name == "llm-knn":  # deterministic: the text neighbours are exact
        top = rec.recommend(users, k=1).item_ids
        assert all(t[0] == block_data.held_out[u] for u, t in zip(users, top, strict=True))
        return
    # llm-mf trains with SGD: its top-1 varies with seed and threads (16-24 of 24 measured), so
    # ask for the block structure well above chance (3 of ~30 unseen items): top 3 for >= 75 %
    top = rec.recommend(users, k=3).item_ids
    hits = sum(block_data.held_out[u] in t for u, t in zip(users, top, strict=True))
    assert hits >= 0.75 * len(users)


@pytest.mark.slow
def test_minilm_llm_mf_ranks_a_cold_item_by_its_text(block_data: Any):
    """The cold block has no interactions; its items score like their theme, not at random."""
    train = block_data.train
    rec = LLMMF(encoder={"model": "minilm"}, epochs=40, num_threads=1).fit(train)
    cold = [train.item_index[i] for i in block_data.block_items[-1]]
    item = rec.item_factors_
    sims = item[cold] @ item[cold].T
    others = np.delete(np.arange(train.n_items), cold)
    assert sims[np.triu_indices(len(cold), 1)].mean() > (item[cold] @ item[others].T).mean()
