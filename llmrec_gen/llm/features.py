"""Language models as item-feature extractors for collaborative filtering.

Each item's text goes through a language model once (:mod:`llmrec_gen.llm.encoders`, cached on
disk); the vectors then feed a CF model that learns the users:

- ``llm-mf`` (:class:`LLMMF`): the two-tower model of :mod:`llmrec_gen.recommenders.neural`
  with item factor ``MLP(LM vector)`` (+ an optional ID residual), user factors learned, trained
  with full-catalogue softmax or BPR, optionally over a LightGCN graph (AlphaRec-lite, Sheng et
  al., ICLR 2025). Its ID twin is ``id-mf``: same trainer, same hyperparameters, ID embeddings
  instead of the MLP, so the difference between the two is what the text contributes.
- ``llm-knn`` (:class:`LLMKNN`): no training; a user's vector is the recency-weighted mean of
  their history's item vectors and ``score = cosine(user, item)`` (the ``embedding`` baseline
  generalised to any encoder).
- ``lightfm-llm`` (:class:`LightFMLM`): LightFM WARP whose item features are the LM vectors
  (reduced by PCA), added to ``lightfm-hybrid``'s genre/decade/title-word features or replacing
  them (the item identity feature is kept either way); ``lightfm-hybrid`` is its twin.

Decoder hidden states share a large common direction, so vectors are centred on the catalogue
mean and scaled to unit length before use (``center``; off keeps only the unit scaling). Items
without interactions still get a text vector, so both methods rank cold items.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.llm.encoders import (
    EncoderSpec,
    item_texts,
    item_vectors,
    model_fingerprint,
    resolve_encoder,
    standardize,
)
from llmrec_gen.recommenders.base import RANKER, Capability, ScoringRecommender
from llmrec_gen.recommenders.factorization import LightFMHybridConfig, LightFMHybridRecommender
from llmrec_gen.recommenders.item_features import lightfm_item_features
from llmrec_gen.recommenders.neural import TwoTowerConfig, TwoTowerMF

FEATURE_CAPABILITIES = RANKER | {Capability.CONTENT_DIGEST}
"""Rankers whose results also depend on the encoder's files (``content_digest``)."""


def _encoder_digest(spec: EncoderSpec) -> str:
    resolved = resolve_encoder(spec.model)
    return f"{resolved.label}:{model_fingerprint(resolved.path)}"


def text_vectors(train: TrainData, spec: EncoderSpec, center: bool) -> np.ndarray:
    """Standardised item vectors in ``train``'s item-index order (module docstring)."""
    item_texts(train.catalog, spec.text_fields)  # a missing text field fails before any model
    vecs = item_vectors(train.catalog, spec)
    # catalogue row order -> item index order
    rows = train.catalog["item_id"].map(train.item_index).to_numpy()
    ordered = np.empty_like(vecs)
    ordered[rows] = vecs
    return standardize(ordered, center=center)


class LLMMFConfig(TwoTowerConfig):
    """Hyperparameters of :class:`LLMMF`: those of ``id-mf`` plus the encoder."""

    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # which LM turns text into vectors
    center: bool = True  # subtract the catalogue-mean vector before the MLP (decoders: needed)


class LLMMF(TwoTowerMF):
    """Two-tower CF whose item tower is ``MLP(LM vector)`` (module docstring); ``id-mf``'s twin."""

    name = "llm-mf"
    config_class = LLMMFConfig
    capabilities = FEATURE_CAPABILITIES

    def _item_features(self, train: TrainData) -> np.ndarray:
        return text_vectors(train, self.config.encoder, self.config.center)

    def content_digest(self) -> str:
        """The encoder's file fingerprint (a changed model never reuses saved lists)."""
        return _encoder_digest(self.config.encoder)


class LLMKNNConfig(StrictModel):
    """Hyperparameters of :class:`LLMKNN`."""

    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # which LM turns text into vectors
    center: bool = True  # subtract the catalogue-mean vector (decoder states: needed)
    recency_decay: float = Field(0.9, gt=0, le=1)  # weight per step back in the history; 0.7-1
    history_len: int = Field(50, ge=1)  # most recent items averaged; 10-200


class LLMKNN(ScoringRecommender):
    """Cosine between a user's mean history vector and every item's LM vector (module docstring).

    A user's vector is ``sum_t decay**age_t * v_t`` over the ``history_len`` most recent items
    (age 0 = most recent), L2-normalised. Only the vectors are kept after ``fit``.
    """

    name = "llm-knn"
    config_class = LLMKNNConfig
    capabilities = FEATURE_CAPABILITIES

    def _fit(self, train: TrainData) -> None:
        c = self.config
        item_vecs = text_vectors(train, c.encoder, c.center)
        users, items, age = train.recent(c.history_len)
        weights = sp.csr_matrix(
            (c.recency_decay ** age.astype(np.float64), (users, items)),
            shape=(train.n_users, train.n_items),
        )
        profiles = np.asarray(weights @ item_vecs.astype(np.float64))
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        self.user_vectors_ = (profiles / np.maximum(norms, 1e-12)).astype(np.float32)
        self.item_vectors_ = item_vecs

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_vectors_[user_idx] @ self.item_vectors_.T

    def content_digest(self) -> str:
        """The encoder's file fingerprint (a changed model never reuses saved lists)."""
        return _encoder_digest(self.config.encoder)


class LightFMLMConfig(LightFMHybridConfig):
    """Hyperparameters of :class:`LightFMLM`: those of ``lightfm-hybrid`` plus the LM features."""

    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # which LM turns text into vectors
    mode: Literal["add", "replace"] = "add"  # LM features next to the genre/decade/title-word
    # features, or instead of them (the identity feature stays)
    components: int = Field(32, ge=1)  # PCA dimensions kept; 16-64 (each costs LightFM time)
    weight: float = Field(1.0, gt=0)  # scale of the LM features (L2 norm weight/√components per
    # item; the other features of an item sum to 1); 0.5-4


class LightFMLM(LightFMHybridRecommender):
    """LightFM with LM item vectors as item features (module docstring)."""

    name = "lightfm-llm"
    config_class = LightFMLMConfig
    capabilities = FEATURE_CAPABILITIES

    def content_digest(self) -> str:
        """The encoder's files (a replaced model gives other vectors)."""
        return _encoder_digest(self.config.encoder)

    def _item_features(self, train: TrainData) -> sp.csr_matrix:
        c = self.config
        vecs = text_vectors(train, c.encoder, center=True)
        k = min(c.components, *vecs.shape)
        _, _, vt = np.linalg.svd(vecs - vecs.mean(axis=0), full_matrices=False)
        lm = vecs @ vt[:k].T
        lm /= np.maximum(np.linalg.norm(lm, axis=1, keepdims=True), 1e-12)
        lm = sp.csr_matrix(c.weight * lm / np.sqrt(k), dtype=np.float32)
        if c.mode == "add":
            others = lightfm_item_features(train.catalog)
        else:
            others = sp.identity(train.n_items, dtype=np.float32, format="csr")
        return sp.csr_matrix(sp.hstack([others, lm]), dtype=np.float32)
