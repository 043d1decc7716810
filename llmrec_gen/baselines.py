"""Traditional recommenders that every LLM method is compared against, on one contract.

Every baseline is a :class:`~llmrec_gen.base.ScoringRecommender`: ``fit(train)`` learns from the
training interactions only, ``_score`` rates the *full* catalog for a batch of users, and the base
class masks seen items and takes the top ``k``. Build one by name::

    from llmrec_gen.baselines import make_baseline
    from llmrec_gen.data import load_dataset
    from llmrec_gen.splits import split_dataset

    split = split_dataset(load_dataset("ml-100k"))
    rec = make_baseline("als", factors=64).fit(split.train)
    recs = rec.recommend(split.train.user_ids, k=10)

Names (see :data:`BASELINES`): ``random``, ``popularity``, ``itemknn``, ``userknn``, ``als``,
``bpr``, ``lightfm``, ``lightfm-hybrid``, ``bm25``, ``embedding``. Defaults were tuned on the
ML-100k leave-last-out *validation* target (never on test); ``benchmarks/bench_baselines.py``
fits them all and prints timings and NDCG@10/HR@10::

    python benchmarks/bench_baselines.py

Fitted models keep plain numpy/scipy arrays only (factors, similarity matrices, vectors), so a
saved baseline loads without ``implicit``, ``lightfm`` or ``torch``. Heavy libraries are imported
inside ``fit``.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import typing
from abc import abstractmethod
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_gen.base import ScoringRecommender
from llmrec_gen.data import TrainData
from llmrec_gen.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "ALSRecommender",
    "Baseline",
    "BM25Recommender",
    "BPRRecommender",
    "EmbeddingRecommender",
    "ItemKNN",
    "LightFMHybridRecommender",
    "LightFMRecommender",
    "PopularityRecommender",
    "RandomRecommender",
    "UserKNN",
    "baseline_params",
    "item_tokens",
    "lightfm_item_features",
    "make_baseline",
]


# ---------------------------------------------------------------------------------------------
# Shared machinery


class Baseline(ScoringRecommender):
    """Common base of the baselines: hyperparameters are the constructor's arguments.

    Subclasses implement ``_fit(train)`` (store plain arrays only) and ``_score(user_idx)``;
    :meth:`fit` times the fit and sets ``train_`` only once fitting succeeded.
    """

    def fit(self, train: TrainData) -> Baseline:
        """Learn from ``train`` (training interactions only) and return ``self``."""
        self.train_ = None
        start = time.perf_counter()
        self._fit(train)
        self.train_ = train
        log.info("%s: fitted in %.2fs", self.name, time.perf_counter() - start)
        return self

    @abstractmethod
    def _fit(self, train: TrainData) -> None:
        """Learn the model's arrays from ``train``."""

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (hyperparameters and run options), e.g. for reports."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _fail(owner: str, name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{owner}: parameter '{name}' must be {expected}, got {value!r}")


def _int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(owner, name, "an integer", value)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _fail(owner, name, f"an integer {bounds}", value)
    return int(value)


def _float(
    owner: str,
    name: str,
    value: Any,
    low: float,
    high: float | None = None,
    *,
    open_low: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _fail(owner, name, "a number", value)
    value = float(value)
    too_low = value <= low if open_low else value < low
    if not np.isfinite(value) or too_low or (high is not None and value > high):
        lo = f"> {low}" if open_low else f">= {low}"
        bounds = lo if high is None else f"{lo} and <= {high}"
        raise _fail(owner, name, f"a number {bounds}", value)
    return value


def _choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(owner, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return str(value)


def _bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise _fail(owner, name, "true or false", value)
    return bool(value)


def _recent_items(train: TrainData, history_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``history_len`` training items of every user.

    Returns:
        ``(user_idx, item_idx, age)`` arrays, one entry per kept interaction; ``age`` is 0 for a
        user's most recent item, 1 for the one before, and so on.
    """
    inter = train.interactions
    age = inter.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    keep = age < history_len
    users = inter["user_id"].map(train.user_index).to_numpy()[keep]
    items = inter["item_id"].map(train.item_index).to_numpy()[keep]
    return users.astype(np.int64), items.astype(np.int64), age[keep]


def _cosine_top_k(rows: sp.csr_matrix, k: int, shrink: float) -> sp.csr_matrix:
    """Row ``i`` holds the ``k`` rows most cosine-similar to row ``i`` (itself excluded).

    ``sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)``; the shrink term damps similarities
    that rest on few co-occurrences. Computed in row blocks so memory stays bounded.
    """
    rows = sp.csr_matrix(rows, dtype=np.float32)
    n = rows.shape[0]
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1), dtype=np.float64).ravel())
    k = min(k, n - 1)
    if k <= 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rows_t = rows.T.tocsc()
    block = max(1, 2**23 // max(1, n))  # rows per block: <= 64 MB per float64 array
    coo_r, coo_c, coo_v = [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        dots = (rows[start:stop] @ rows_t).toarray().astype(np.float64)
        sims = dots / (norms[start:stop, None] * norms[None, :] + shrink + 1e-9)
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sims, top, axis=1)
        keep = vals > 0
        coo_r.append(np.nonzero(keep)[0] + start)
        coo_c.append(top[keep])
        coo_v.append(vals[keep])
    return sp.csr_matrix(
        (np.concatenate(coo_v), (np.concatenate(coo_r), np.concatenate(coo_c))),
        shape=(n, n),
        dtype=np.float32,
    )


def _limit_blas_threads() -> Any:
    """Context manager: BLAS single-threaded (what implicit recommends; avoids its warning)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


# ---------------------------------------------------------------------------------------------
# Non-personalised floors


class RandomRecommender(Baseline):
    """Uniformly random ranking of the unseen catalog: the sanity floor every method must beat.

    A user's scores depend only on ``seed`` and the user's index in the training data, so
    ``recommend`` is repeatable, independent of batching, and survives save/load.
    """

    name = "random"

    def __init__(
        self,
        seed: int = 0,  # any integer >= 0; different seeds give independent rankings
    ) -> None:
        self.seed = _int(self.name, "seed", seed, 0)

    def _fit(self, train: TrainData) -> None:
        self.n_items_ = train.n_items

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.random.default_rng([self.seed, int(u)]).random(self.n_items_) for u in user_idx]
        )


class PopularityRecommender(Baseline):
    """Most popular unseen items first (training interaction counts); ties by catalog order."""

    name = "popularity"

    def __init__(self) -> None:
        pass

    def _fit(self, train: TrainData) -> None:
        self.popularity_ = train.item_popularity.astype(np.float64)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(user_idx), len(self.popularity_)))


# ---------------------------------------------------------------------------------------------
# Neighbourhood models


class ItemKNN(Baseline):
    """Item-based kNN on the binary matrix (cosine with shrinkage, top-k neighbours per item).

    ``score(u, j) = sum_{i in I_u, i in N_k(j)} sim(i, j)``: each target item ``j`` keeps its
    ``k_neighbors`` most similar items (the ItemKNN-CF of Dacrema et al., RecSys 2019).
    """

    name = "itemknn"

    def __init__(
        self,
        k_neighbors: int = 200,  # neighbours per item; 50-400 all within noise on ML-100k valid
        shrink: float = 10.0,  # damps similarities resting on few co-raters; 0-50
    ) -> None:
        self.k_neighbors = _int(self.name, "k_neighbors", k_neighbors, 1)
        self.shrink = _float(self.name, "shrink", shrink, 0.0)

    def _fit(self, train: TrainData) -> None:
        sim = _cosine_top_k(train.matrix.T.tocsr(), self.k_neighbors, self.shrink)
        self.similarity_ = sim.T.tocsr()  # column j = neighbours of target item j
        self.matrix_ = train.matrix

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.matrix_[user_idx] @ self.similarity_).toarray()


class UserKNN(Baseline):
    """User-based kNN: ``score(u, j) = sum_{v in N_k(u)} sim(u, v) * x_vj`` (cosine + shrink)."""

    name = "userknn"

    def __init__(
        self,
        k_neighbors: int = 30,  # neighbours per user; 20-50 best on ML-100k valid, >100 worse
        shrink: float = 10.0,  # damps similarities resting on few shared items; 0-50
    ) -> None:
        self.k_neighbors = _int(self.name, "k_neighbors", k_neighbors, 1)
        self.shrink = _float(self.name, "shrink", shrink, 0.0)

    def _fit(self, train: TrainData) -> None:
        self.similarity_ = _cosine_top_k(train.matrix, self.k_neighbors, self.shrink)
        self.matrix_ = train.matrix

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.similarity_[user_idx] @ self.matrix_).toarray()


# ---------------------------------------------------------------------------------------------
# Matrix factorisation (implicit)


class _FactorModel(Baseline):
    """Scores are ``user_factors @ item_factors.T`` (+ optional item biases)."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    item_bias_: np.ndarray | None = None

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self.user_factors_[user_idx] @ self.item_factors_.T
        if self.item_bias_ is not None:
            scores += self.item_bias_[None, :]
        return scores

    def _store(self, train: TrainData, user_factors: Any, item_factors: Any) -> None:
        user_factors, item_factors = np.asarray(user_factors), np.asarray(item_factors)
        if user_factors.shape[0] != train.n_users or item_factors.shape[0] != train.n_items:
            raise RuntimeError(  # a bug (matrix orientation), not a user error
                f"{self.name}: factor shapes {user_factors.shape}/{item_factors.shape} do not "
                f"match {train.n_users} users x {train.n_items} items"
            )
        self.user_factors_ = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)


class ALSRecommender(_FactorModel):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) from ``implicit``, on the CPU.

    Confidence is ``1 + alpha`` for observed items and 1 otherwise. Each user's least-squares
    solve is independent, so results do not depend on ``num_threads``.
    """

    name = "als"

    def __init__(
        self,
        factors: int = 32,  # latent dimension; 32-64 on ML-100k (128 overfits)
        regularization: float = 1.0,  # L2 on factors; 0.01-5 flat, >= 30 underfits
        alpha: float = 1.0,  # confidence of an observed item; 0.5-2 (>= 5 worse on binary data)
        iterations: int = 15,  # ALS sweeps; 10-30 (converges in ~15)
        num_threads: int = 1,  # 0 = all cores; ML-100k fits in <0.5 s on 1, more only add overhead
        seed: int = 0,  # factor initialisation
    ) -> None:
        self.factors = _int(self.name, "factors", factors, 1)
        self.regularization = _float(self.name, "regularization", regularization, 0.0)
        self.alpha = _float(self.name, "alpha", alpha, 0.0, open_low=True)
        self.iterations = _int(self.name, "iterations", iterations, 1)
        self.num_threads = _int(self.name, "num_threads", num_threads, 0)
        self.seed = _int(self.name, "seed", seed, 0)

    def _fit(self, train: TrainData) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with _limit_blas_threads():  # implicit warns at construction otherwise
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(train.matrix, show_progress=False)  # implicit >= 0.5: users x items
        self._store(train, model.user_factors, model.item_factors)


class BPRRecommender(_FactorModel):
    """Bayesian Personalized Ranking (Rendle et al. 2009) from ``implicit``, on the CPU.

    implicit appends an item-bias column to the item factors (and a constant 1 to the user
    factors), so the dot product includes the bias. ``num_threads=1`` keeps SGD reproducible;
    more threads are faster but lock-free (Hogwild) and so not bit-for-bit repeatable.
    """

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,  # latent dimension; 32-128
        learning_rate: float = 0.01,  # SGD step; 0.005-0.01 (0.05 diverges towards popularity)
        regularization: float = 0.01,  # L2 on factors; 0.001-0.05
        iterations: int = 100,  # epochs over the positives; 100-200 (implicit's default)
        num_threads: int = 1,  # 1 = deterministic; more is faster but not repeatable
        seed: int = 0,  # initialisation and negative sampling
    ) -> None:
        self.factors = _int(self.name, "factors", factors, 1)
        self.learning_rate = _float(self.name, "learning_rate", learning_rate, 0.0, open_low=True)
        self.regularization = _float(self.name, "regularization", regularization, 0.0)
        self.iterations = _int(self.name, "iterations", iterations, 1)
        self.num_threads = _int(self.name, "num_threads", num_threads, 0)
        self.seed = _int(self.name, "seed", seed, 0)

    def _fit(self, train: TrainData) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with _limit_blas_threads():  # implicit warns at construction otherwise
            model = BayesianPersonalizedRanking(
                factors=self.factors,
                learning_rate=self.learning_rate,
                regularization=self.regularization,
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(train.matrix, show_progress=False)
        self._store(train, model.user_factors, model.item_factors)


# ---------------------------------------------------------------------------------------------
# LightFM (pure CF and hybrid)

_TOKEN = re.compile(r"[0-9a-z]+(?:['\-][0-9a-z]+)*")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def item_tokens(title: str, year: Any, genres: str) -> list[str]:
    """Content tokens of one item: title words, genres (one token each), year and decade.

    Example: ``item_tokens("Toy Story", 1995, "Animation|Children's")`` ->
    ``["toy", "story", "animation", "children's", "1995", "1990s"]``.
    """
    tokens = _words(str(title))
    tokens += [g.strip().lower().replace(" ", "-") for g in str(genres).split("|") if g.strip()]
    if pd.notna(year):
        tokens += [str(int(year)), f"{int(year) // 10 * 10}s"]
    return tokens


def _catalog_tokens(catalog: pd.DataFrame) -> list[list[str]]:
    return [
        item_tokens(t, y, g)
        for t, y, g in zip(catalog["title"], catalog["year"], catalog["genres"], strict=True)
    ]


def lightfm_item_features(catalog: pd.DataFrame, min_title_count: int = 2) -> sp.csr_matrix:
    """Hybrid item features: identity + genres + decade + title words, rows summing to 1.

    Title words seen in fewer than ``min_title_count`` items are dropped: a word unique to one
    item carries no more than its identity feature does.
    """
    n = len(catalog)
    rows, cols = list(range(n)), list(range(n))  # identity features first
    vocab: dict[str, int] = {}
    per_item: list[list[str]] = []
    title_counts: dict[str, int] = {}
    for title in catalog["title"]:
        for w in set(_words(str(title))):
            title_counts[w] = title_counts.get(w, 0) + 1
    for title, year, genres in zip(
        catalog["title"], catalog["year"], catalog["genres"], strict=True
    ):
        feats = [f"genre:{g}" for g in str(genres).split("|") if g.strip()]
        if pd.notna(year):
            feats.append(f"decade:{int(year) // 10 * 10}")
        feats += [
            f"title:{w}"
            for w in sorted(set(_words(str(title))))
            if title_counts[w] >= min_title_count
        ]
        per_item.append(feats)
    for i, feats in enumerate(per_item):
        for f in feats:
            rows.append(i)
            cols.append(n + vocab.setdefault(f, len(vocab)))
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n + len(vocab))
    )
    m.sum_duplicates()
    row_sums = np.asarray(m.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / row_sums) @ m, dtype=np.float32)


_LIGHTFM_LOSSES = ("warp", "bpr", "warp-kos", "logistic")


class LightFMRecommender(_FactorModel):
    """LightFM (Kula 2015): pure collaborative filtering, or hybrid with item content features.

    With ``hybrid=True`` an item is the sum of embeddings of its features: identity, genres,
    decade and title words (built from ``train.catalog`` by :func:`lightfm_item_features`), so
    items with few or no interactions still get a content-based representation. Scores are
    ``user_repr @ item_repr.T + item_bias``. ``num_threads=1`` keeps training reproducible.
    """

    name = "lightfm"

    def __init__(
        self,
        loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp",  # warp: top-k ranking
        no_components: int = 64,  # latent dimension; 32-128 (32 clearly worse)
        epochs: int = 30,  # passes over the data; 20-30 (50 overfits on ML-100k)
        learning_rate: float = 0.05,  # adagrad step; 0.02-0.1 (0.05 best)
        item_alpha: float = 0.0,  # L2 on item features; 0-1e-6 (1e-5 hurts here)
        user_alpha: float = 0.0,  # L2 on user embeddings; 0-1e-6
        max_sampled: int = 10,  # WARP negatives tried per positive; 10-30 (more = slower)
        hybrid: bool = False,  # True: item features from the catalog (see class docstring)
        num_threads: int = 1,  # 1 = deterministic; 2 is faster but not repeatable
        seed: int = 0,  # initialisation and sampling
    ) -> None:
        owner = "lightfm-hybrid" if hybrid else "lightfm"
        self.name = owner
        self.loss = _choice(owner, "loss", loss, _LIGHTFM_LOSSES)
        self.no_components = _int(owner, "no_components", no_components, 1)
        self.epochs = _int(owner, "epochs", epochs, 1)
        self.learning_rate = _float(owner, "learning_rate", learning_rate, 0.0, open_low=True)
        self.item_alpha = _float(owner, "item_alpha", item_alpha, 0.0)
        self.user_alpha = _float(owner, "user_alpha", user_alpha, 0.0)
        self.max_sampled = _int(owner, "max_sampled", max_sampled, 1)
        self.hybrid = _bool(owner, "hybrid", hybrid)
        self.num_threads = _int(owner, "num_threads", num_threads, 1)
        self.seed = _int(owner, "seed", seed, 0)

    def _fit(self, train: TrainData) -> None:
        from lightfm import LightFM

        model = LightFM(
            no_components=self.no_components,
            loss=self.loss,
            learning_rate=self.learning_rate,
            item_alpha=self.item_alpha,
            user_alpha=self.user_alpha,
            max_sampled=self.max_sampled,
            random_state=self.seed,
        )
        features = lightfm_item_features(train.catalog) if self.hybrid else None
        model.fit(
            train.matrix.tocoo(),
            item_features=features,
            epochs=self.epochs,
            num_threads=self.num_threads,
        )
        item_bias, item_repr = model.get_item_representations(features)
        _, user_repr = model.get_user_representations()  # user bias does not change a ranking
        self._store(train, user_repr, item_repr)
        self.item_bias_ = np.asarray(item_bias, dtype=np.float32)


class LightFMHybridRecommender(LightFMRecommender):
    """:class:`LightFMRecommender` with ``hybrid=True`` (registry name ``lightfm-hybrid``)."""

    name = "lightfm-hybrid"

    def __init__(
        self,
        loss: Literal["warp", "bpr", "warp-kos", "logistic"] = "warp",  # warp: top-k ranking
        no_components: int = 64,  # latent dimension; 32-128 (32 clearly worse)
        epochs: int = 20,  # passes; 20-30 (each costs ~3x pure CF: ~6 features/item)
        learning_rate: float = 0.05,  # adagrad step; 0.02-0.1 (0.05 best)
        item_alpha: float = 0.0,  # L2 on item features; 0-1e-6 (1e-5 hurts here)
        user_alpha: float = 0.0,  # L2 on user embeddings; 0-1e-6
        max_sampled: int = 10,  # WARP negatives tried per positive; 10-30 (more = slower)
        num_threads: int = 1,  # 1 = deterministic; 2 is faster but not repeatable
        seed: int = 0,  # initialisation and sampling
    ) -> None:
        super().__init__(
            loss=loss,
            no_components=no_components,
            epochs=epochs,
            learning_rate=learning_rate,
            item_alpha=item_alpha,
            user_alpha=user_alpha,
            max_sampled=max_sampled,
            hybrid=True,
            num_threads=num_threads,
            seed=seed,
        )


# ---------------------------------------------------------------------------------------------
# Content-based


class BM25Recommender(Baseline):
    """Lexical content baseline: the user's recent items, as a query, against item documents.

    Documents are :func:`item_tokens` (title words, genres, year, decade); the query is the
    concatenation of the documents of the user's ``history_len`` most recent training items.
    Corpus statistics (idf with rank_bm25's epsilon floor, document lengths) come from
    ``rank_bm25.BM25Okapi``. Scoring is the same Okapi formula vectorised: with ``w(t, d) =
    idf(t) * f(t,d) (k1 + 1) / (f(t,d) + k1 (1 - b + b |d| / avgdl))`` and ``c(t, q)`` the count
    of token ``t`` in the query, ``score(q, d) = sum_t c(t, q) w(t, d)`` — equal to
    ``BM25Okapi.get_scores(query)`` (tested) but one sparse product for all users instead of a
    Python loop per query token.
    """

    name = "bm25"

    def __init__(
        self,
        history_len: int = 10,  # recent items forming the query; 5-20 (older ones dilute it)
        k1: float = 1.2,  # term-frequency saturation; 0.5-2
        b: float = 0.3,  # document-length normalisation; 0.3-0.75 (short docs: keep low)
        epsilon: float = 0.25,  # idf floor for very common tokens, x mean idf (rank_bm25)
    ) -> None:
        self.history_len = _int(self.name, "history_len", history_len, 1)
        self.k1 = _float(self.name, "k1", k1, 0.0)
        self.b = _float(self.name, "b", b, 0.0, 1.0)
        self.epsilon = _float(self.name, "epsilon", epsilon, 0.0)

    def _fit(self, train: TrainData) -> None:
        from rank_bm25 import BM25Okapi

        docs = _catalog_tokens(train.catalog)
        bm25 = BM25Okapi(docs, k1=self.k1, b=self.b, epsilon=self.epsilon)
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
        denom = tf_a + self.k1 * (1 - self.b + self.b * doc_len[rows_a] / bm25.avgdl)
        weights = idf[cols_a] * tf_a * (self.k1 + 1) / denom
        shape = (train.n_items, len(vocab))
        self.doc_weights_ = sp.csr_matrix((weights, (rows_a, cols_a)), shape=shape)
        doc_counts = sp.csr_matrix((tf_a, (rows_a, cols_a)), shape=shape)
        users, items, _ = _recent_items(train, self.history_len)
        history = sp.csr_matrix(
            (np.ones(len(users)), (users, items)), shape=(train.n_users, train.n_items)
        )
        self.query_counts_ = sp.csr_matrix(history @ doc_counts)  # c(t, q) for every user
        self.vocab_ = vocab

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return (self.query_counts_[user_idx] @ self.doc_weights_.T).toarray()


class EmbeddingRecommender(Baseline):
    """Dense content baseline: cosine between a user's taste vector and item text embeddings.

    Item vectors embed ``catalog.text`` with all-MiniLM-L6-v2 (:func:`llmrec_gen.embeddings.
    encode`, offline). A user's vector is the recency-weighted mean of their ``history_len``
    most recent items, weight ``recency_decay ** age`` (age 0 = most recent), L2-normalised;
    ``score = cosine(user, item)``. Only the vectors are kept: the encoder is never pickled.
    """

    name = "embedding"

    def __init__(
        self,
        recency_decay: float = 0.8,  # weight decay per step back; 0.7-0.9 (1 = plain mean, worse)
        history_len: int = 20,  # most recent items averaged; 5-50 (little weight beyond 20)
        encoder: str = "default",  # "default" (packaged MiniLM) or a local model directory
        batch_size: int = 64,  # texts per encoder forward pass (64 suits CPU)
    ) -> None:
        self.recency_decay = _float(
            self.name, "recency_decay", recency_decay, 0.0, 1.0, open_low=True
        )
        self.history_len = _int(self.name, "history_len", history_len, 1)
        if not isinstance(encoder, str) or not encoder:
            raise _fail(self.name, "encoder", "a model name or directory", encoder)
        self.encoder = encoder
        self.batch_size = _int(self.name, "batch_size", batch_size, 1)

    def _fit(self, train: TrainData) -> None:
        from llmrec_gen.embeddings import encode

        texts = train.catalog["text"].fillna("").astype(str).tolist()
        item_vecs = encode(texts, batch_size=self.batch_size, name=self.encoder)
        users, items, age = _recent_items(train, self.history_len)
        weights = sp.csr_matrix(
            (self.recency_decay ** age.astype(np.float64), (users, items)),
            shape=(train.n_users, train.n_items),
        )
        profiles = np.asarray(weights @ item_vecs.astype(np.float64))
        norms = np.linalg.norm(profiles, axis=1, keepdims=True)
        self.user_vectors_ = (profiles / np.maximum(norms, 1e-12)).astype(np.float32)
        self.item_vectors_ = np.ascontiguousarray(item_vecs, dtype=np.float32)

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_vectors_[user_idx] @ self.item_vectors_.T


# ---------------------------------------------------------------------------------------------
# Registry

BASELINES: dict[str, type[Baseline]] = {
    "random": RandomRecommender,
    "popularity": PopularityRecommender,
    "itemknn": ItemKNN,
    "userknn": UserKNN,
    "als": ALSRecommender,
    "bpr": BPRRecommender,
    "lightfm": LightFMRecommender,
    "lightfm-hybrid": LightFMHybridRecommender,
    "bm25": BM25Recommender,
    "embedding": EmbeddingRecommender,
}
"""Baseline name -> class; each class's constructor arguments are its parameters."""


def baseline_params(name: str) -> dict[str, Any]:
    """The parameters of baseline ``name`` with their defaults.

    Raises:
        ConfigError: ``name`` is not a known baseline.
    """
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.name != "self"}


def make_baseline(name: str, **params: Any) -> Baseline:
    """Build an unfitted baseline by registry name.

    String values are converted to the parameter's type (``"64"`` -> 64, ``"true"`` -> True),
    so CLI overrides can be passed through unchanged.

    Args:
        name: a key of :data:`BASELINES`, e.g. ``"als"`` or ``"lightfm-hybrid"``.
        **params: constructor arguments; anything not given keeps its documented default.

    Raises:
        ConfigError: unknown ``name``, unknown parameter, or an invalid value (the message names
            the baseline and the parameter).
    """
    cls = _lookup(name)
    allowed = baseline_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) or "(none)"
        raise ConfigError(
            f"{name}: unknown parameter(s) {', '.join(map(repr, unknown))}; valid: {valid}"
        )
    hints = typing.get_type_hints(cls.__init__)
    coerced = {k: _coerce(name, k, v, hints.get(k)) for k, v in params.items()}
    return cls(**coerced)


def _lookup(name: str) -> type[Baseline]:
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}")
    return BASELINES[name]


def _coerce(owner: str, param: str, value: Any, hint: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        raise _fail(owner, param, expected, value) from None
    return value
