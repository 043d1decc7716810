"""The method registry: one line per method (name -> class), and building methods from specs.

A new method is one class (with its ``config_class`` and ``capabilities``) plus one line in
:data:`METHODS` (or a call to :func:`register`). Classes are imported only when a method is
built, so this module is cheap to import. Code above the methods (evaluator, CLI) builds them
from a :class:`MethodSpec` and then asks for capabilities, never for names::

    spec = MethodSpec(type="llm", params={"decoding": {"mode": "constrained"}},
                      fallback="popularity")
    rec = build_method(spec)          # Fallback(LLMRecommender(...), PopularityRecommender())
    rec.has(Capability.RANK)          # True
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from llmrec_gen.config import StrictModel, validate
from llmrec_gen.errors import ConfigError
from llmrec_gen.recommenders.base import Capability, Method

METHODS: dict[str, str | type[Method]] = {
    "random": "llmrec_gen.recommenders.popularity:RandomRecommender",
    "popularity": "llmrec_gen.recommenders.popularity:PopularityRecommender",
    "itemknn": "llmrec_gen.recommenders.neighborhood:ItemKNN",
    "userknn": "llmrec_gen.recommenders.neighborhood:UserKNN",
    "als": "llmrec_gen.recommenders.factorization:ALSRecommender",
    "bpr": "llmrec_gen.recommenders.factorization:BPRRecommender",
    "lightfm": "llmrec_gen.recommenders.factorization:LightFMRecommender",
    "lightfm-hybrid": "llmrec_gen.recommenders.factorization:LightFMHybridRecommender",
    "bm25": "llmrec_gen.recommenders.content:BM25Recommender",
    "embedding": "llmrec_gen.recommenders.content:EmbeddingRecommender",
    "ease": "llmrec_gen.recommenders.linear:EASE",
    "sasrec": "llmrec_gen.recommenders.sequential:SASRec",
    "id-mf": "llmrec_gen.recommenders.neural:TwoTowerMF",
    "global-mean": "llmrec_gen.recommenders.rating:GlobalMean",
    "user-mean": "llmrec_gen.recommenders.rating:UserMean",
    "item-mean": "llmrec_gen.recommenders.rating:ItemMean",
    "svd": "llmrec_gen.recommenders.rating:BiasedSVD",
    "llm": "llmrec_gen.llm.recommender:LLMRecommender",
    "llm-ranker": "llmrec_gen.llm.ranker:LLMRanker",
    "llm-mf": "llmrec_gen.llm.features:LLMMF",
    "llm-knn": "llmrec_gen.llm.features:LLMKNN",
    "lightfm-llm": "llmrec_gen.llm.features:LightFMLM",
    "llm-rating": "llmrec_gen.llm.rating_encoder:LLMRatingRegressor",
}
"""Method name -> ``"module:Class"`` (imported on first use) or the class itself."""


def register(name: str, target: str | type[Method]) -> None:
    """Add (or replace) a method: ``register("mine", MyRecommender)`` or a ``"module:Class"``."""
    METHODS[name] = target


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the known names).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    target = METHODS[name]
    if isinstance(target, str):
        module, _, cls_name = target.partition(":")
        target = getattr(importlib.import_module(module), cls_name)
    cls = target
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"registry entry {name!r} -> {METHODS[name]} is not a Method")
    return cls


def names(capability: Capability | None = None) -> list[str]:
    """Registered method names, optionally only those declaring ``capability``."""
    if capability is None:
        return list(METHODS)
    return [n for n in METHODS if capability in method_class(n).capabilities]


class FusionSpec(StrictModel):
    """Fuse a full-ranking method with popularity or a CF method (see ``compose.Fuse``)."""

    mode: Literal["popularity", "scores"] = "popularity"  # BIGRec adjust_pda / CF mixing
    weight: float = Field(0.0, ge=0)  # gamma or mixing weight; choose on the validation target
    other: str | MethodSpec | None = None  # mode "scores": the CF method mixed in


class MethodSpec(StrictModel):
    """One method to build: a registered ``type`` with ``params``, optionally composed.

    ``fallback`` fills short lists from another method; ``retriever`` makes a two-stage method in
    which this one re-ranks the retriever's top ``n_candidates``. Both take a method name or a
    nested spec.
    """

    name: str | None = None  # label in reports; defaults to type
    type: str  # a registered method name (llmrec_gen.registry.METHODS)
    params: dict[str, Any] = Field(default_factory=dict)  # the method's config fields
    fallback: str | MethodSpec | None = None  # fill lists shorter than k from this method
    retriever: str | MethodSpec | None = None  # re-rank this method's candidates (two-stage)
    n_candidates: int = Field(20, ge=1)  # with retriever: candidates per user; 10-50
    fusion: FusionSpec | None = None  # re-weight a full ranking by popularity or a CF model
    prior: str | MethodSpec | None = None  # a CF method whose scores bias constrained decoding
    # (D3 logit bias; its weight is the LLM's decoding.prior_weight)
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # `llmrec-gen tune` searches these
    # params (dotted keys; "fusion.weight" for the fusion block) on the validation target;
    # `evaluate` ignores it and runs `params`

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid '{key}': give at least one value")
        return value

    @property
    def label(self) -> str:
        """Name shown in reports."""
        return self.name or self.type


def _spec(value: str | Mapping[str, Any] | MethodSpec) -> MethodSpec:
    if isinstance(value, MethodSpec):
        return value
    if isinstance(value, str):
        return MethodSpec(type=value)
    return validate(MethodSpec, value, "method")


def build_method(spec: str | Mapping[str, Any] | MethodSpec, where: str = "method") -> Method:
    """Build the (unfitted) method described by ``spec``.

    Args:
        spec: a method name, a mapping or a :class:`MethodSpec`.
        where: prefix for error messages (e.g. ``"methods[3] (llm-free)"``).

    Raises:
        ConfigError: unknown method, invalid parameter, or a composition whose parts cannot do
            what it needs (the message starts with ``where``).
    """
    from llmrec_gen.recommenders.compose import Fallback, Fuse, Rerank

    try:
        s = _spec(spec)
        method: Method = method_class(s.type)(s.params)
        if s.prior is not None:
            if not hasattr(method, "with_prior"):
                raise ConfigError(f"prior: method '{s.type}' does not take a decoding prior")
            method = method.with_prior(build_method(s.prior, f"{where}.prior"))  # type: ignore[attr-defined]
        if s.retriever is not None:
            retriever = build_method(s.retriever, f"{where}.retriever")
            method = Rerank(retriever, method, s.n_candidates)  # type: ignore[arg-type]
        if s.fusion is not None:
            f = s.fusion
            other = build_method(f.other, f"{where}.fusion.other") if f.other else None
            method = Fuse(method, other, f.mode, f.weight)  # type: ignore[arg-type]
        if s.fallback is not None:
            fallback = build_method(s.fallback, f"{where}.fallback")
            method = Fallback(method, fallback)  # type: ignore[arg-type]
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None
    return method
