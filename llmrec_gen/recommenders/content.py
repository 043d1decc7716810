"""Content-based baselines: lexical (BM25 over item tokens) and dense (MiniLM text embeddings).

Both build a user profile from the user's most recent training items and score every catalogue
item against it, so they can rank items nobody interacted with (cold items).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import ScoringRecommender
from llmrec_gen.recommenders.item_features import catalog_tokens


class BM25Config(StrictModel):
    """Hyperparameters of :class:`BM25Recommender`."""

    history_len: int = Field(10, ge=1)  # recent items forming the query; 5-20 (older dilute it)
    k1: float = Field(1.2, ge=0)  # term-frequency saturation; 0.5-2
    b: float = Field(0.3, ge=0, le=1)  # document-length normalisation; 0.3-0.75 (short docs)
    epsilon: float = Field(0.25, ge=0)  # idf floor for very common tokens, x mean idf


class BM25Recommender(ScoringRecommender):
    """Lexical content baseline: the user's recent items, as a query, against item documents.

    Documents are :func:`~llmrec_gen.recommenders.item_features.item_tokens` (title words,
    genres, year, decade); the query is the concatenation of the documents of the user's
    ``history_len`` most recent training items. Corpus statistics (idf with rank_bm25's epsilon
    floor, document lengths) come from ``rank_bm25.BM25Okapi``. Scoring is the same Okapi formula
    vectorised: with ``w(t, d) = idf(t) * f(t,d) (k1 + 1) / (f(t,d) + k1 (1 - b + b |d| / avgdl))``
    and ``c(t, q)`` the count of token ``t`` in the query, ``score(q, d) = sum_t c(t, q) w(t, d)``
    — equal to ``BM25Okapi.get_scores(query)`` (tested) but one sparse product for all users.
    """

    name = "bm25"
    config_class = BM25Config

    def _fit(self, train: TrainData) -> None:
        from rank_bm25 import BM25Okapi

        c = self.config
        docs = catalog_tokens(train.catalog)
        bm25 = BM25Okapi(docs, k1=c.k1, b=c.b, epsilon=c.epsilon)
        vocab = {t: n for n, t in enumerate(sorted(bm25.idf))}
        rows, cols, tf = [], [], []
        for d, freqs in enumerate(bm25.doc_freqs):
            for t, f in freqs.items():
                rows.append(d)
                cols.append(vocab[t])
                tf.append(f)
        rows_a, cols_a, tf_a = np.asarray(rows), np.asarray(cols), np.asarray(tf, dtype=np.float64)
        idf = np.array([bm25.idf[t] for t in vocab], dtype=np.float64)
        doc_len = np.asarray(bm25.doc_len, dtype=np.float64)
        denom = tf_a + c.k1 * (1 - c.b + c.b * doc_len[rows_a] / bm25.avgdl)
        weights = idf[cols_a] * tf_a * (c.k1 + 1) / denom
        shape = (train.n_items, len(vocab))
        self.doc_weights_ = sp.csr_matrix((weights, (rows_a, cols_a)), shape=shape)
        doc_counts = sp.csr_matrix((tf_a, (rows_a, cols_a)), shape=shape)
        users, items, _ = train.recent(c.history_len)
        history = sp.csr_matrix(
            (np.ones(len(users)), (users, items)), shape=(train.n_users, train.n_items)
        )
        self.query_counts_ = sp.csr_matrix(history @ doc_counts)  # c(t, q) for every user
        self.vocab_ = vocab

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.query_counts_[user_idx] @ self.doc_weights_.T).toarray()


class EmbeddingConfig(StrictModel):
    """Hyperparameters of :class:`EmbeddingRecommender`."""

    recency_decay: float = Field(0.8, gt=0, le=1)  # weight decay per step back; 0.7-0.9
    history_len: int = Field(20, ge=1)  # most recent items averaged; 5-50
    encoder: str = Field("default", min_length=1)  # "default" (packaged MiniLM) or a model dir
    batch_size: int = Field(64, ge=1)  # texts per encoder forward pass (64 suits CPU)


class EmbeddingRecommender(ScoringRecommender):
    """Dense content baseline: cosine between a user's taste vector and item text embeddings.

    Item vectors embed ``catalog.text`` with all-MiniLM-L6-v2 (:func:`llmrec_gen.embeddings.
    encode`, offline). A user's vector is the recency-weighted mean of their ``history_len``
    most recent items, weight ``recency_decay ** age`` (age 0 = most recent), L2-normalised;
    ``score = cosine(user, item)``. Only the vectors are kept: the encoder is never pickled.
    """

    name = "embedding"
    config_class = EmbeddingConfig

    def _fit(self, train: TrainData) -> None:
        from llmrec_gen.embeddings import encode

        c = self.config
        texts = train.catalog["text"].fillna("").astype(str).tolist()
        item_vecs = encode(texts, batch_size=c.batch_size, name=c.encoder)
        users, items, age = train.recent(c.history_len)
        weights = sp.csr_matrix(
            (c.recency_decay ** age.astype(np.float64), (users, items)),
            shape=(train.n_users, train.n_items),
        )
        profiles = np.asarray(weights @ item_vecs.astype(np.float64))
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        self.user_vectors_ = (profiles / np.maximum(norms, 1e-12)).astype(np.float32)
        self.item_vectors_ = np.ascontiguousarray(item_vecs, dtype=np.float32)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_vectors_[user_idx] @ self.item_vectors_.T
