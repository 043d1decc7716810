"""Recommenders: the one method contract, the traditional baselines and composition.

``base`` (contract, capabilities, records), ``popularity`` / ``neighborhood`` /
``factorization`` / ``content`` (ranking baselines), ``rating`` (rating baselines), ``compose``
(fallback fill, retrieve-then-rerank) and ``item_features`` (content features). Methods are
built by name through :mod:`llmrec_gen.registry`.
"""

from llmrec_gen.recommenders.base import (
    Capability,
    Method,
    Provenance,
    RatingPredictions,
    RatingPredictor,
    Recommendations,
    Recommender,
    ScoringRecommender,
)
from llmrec_gen.recommenders.compose import Fallback, Rerank

__all__ = [
    "Capability",
    "Fallback",
    "Method",
    "Provenance",
    "RatingPredictions",
    "RatingPredictor",
    "Recommendations",
    "Recommender",
    "Rerank",
    "ScoringRecommender",
]
