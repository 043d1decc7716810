"""The LLM as a ranker of a retriever's candidates (LlamaRec / TALLRec-style verbalizer).

The prompt shows the user's history and N candidates labelled "A", "B", ...; the model's
next-token log-probabilities of the labels at the answer position score every candidate in one
forward pass (no decoding: it costs the prompt's prefill). Candidates are shuffled into the prompt
with a seed per user, because the retriever's order would otherwise leak its ranking through the
position. Use it as the second stage of a two-stage method::

    Rerank(ALSRecommender(), LLMRanker(), n_candidates=20)   # or, in a config:
    # - {type: llm-ranker, retriever: als, n_candidates: 20}

so the final list is the candidates re-ordered, then the retriever's order for the rest.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines.base import Engine, Prompt
from llmrec_gen.llm.prompting import PromptBuilder, PromptConfig
from llmrec_gen.recommenders.base import (
    Capability,
    Provenance,
    Recommendations,
    Recommender,
    check_k,
)

LABELS = tuple(string.ascii_uppercase)
"""Candidate labels, in prompt order (at most 26 candidates)."""


class RankerPromptConfig(PromptConfig):
    """The ranker's prompt: :class:`PromptConfig` with the labelled-candidates template."""

    template: str = "rank-v1"  # must show labelled candidates (`candidates` and `labels` slots)


class RankerConfig(StrictModel):
    """A decoder LLM that scores a candidate list by the probabilities of its labels."""

    model: str = "default"  # "default" (bundled SmolLM2-135M-Instruct), a local HF dir or Hub id
    adapter: str | None = None  # LoRA: a PEFT dir or "bundled:<name>" (e.g. a tuned ranker)
    engine: Literal["auto", "transformers", "vllm"] = "auto"  # in-process engines only
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # engine options
    batch_size: int = Field(8, ge=1)  # prompts per forward pass (and per evaluator checkpoint)
    seed: int = 0  # seeds the candidate order shown in each prompt
    shuffle: bool = (
        True  # shuffle candidates in the prompt (their order would leak the retriever's)
    )
    prompt: RankerPromptConfig = Field(default_factory=RankerPromptConfig)


class LLMRanker(Recommender):
    """Scores given candidates with one forward pass per user (see the module docstring).

    Raises:
        ConfigError: the template shows no labelled candidates (before any model is loaded).
    """

    name = "llm-ranker"
    config_class = RankerConfig
    capabilities = frozenset({Capability.RANK_CANDIDATES, Capability.CONTENT_DIGEST})

    def __init__(self, config: RankerConfig | Mapping[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        c: RankerConfig = self.config
        self.builder = PromptBuilder(c.prompt)
        for variable in ("candidates", "labels"):
            if not self.builder.uses(variable):
                raise ConfigError(
                    f"llm-ranker: prompt.template: '{self.builder.template_id}' has no "
                    f"'{variable}' slot (use rank-v1 or a template that shows labelled candidates)"
                )
        self.adapter = resolve_adapter(c.adapter)
        self.users_per_call = c.batch_size
        self._label_ids: list[int] | None = None

    def fit(self, train: TrainData) -> LLMRanker:
        """Keep ``train`` (the history source); the model itself is not trained here."""
        self.train_ = train
        return self

    def content_digest(self) -> str | None:
        """The adapter's weight digest (a retrained adapter never reuses saved lists)."""
        return self.adapter.digest() if self.adapter is not None else None

    @property
    def engine_(self) -> Engine:
        """The (shared, lazily built) inference engine."""
        from llmrec_gen.llm.engines import shared_engine

        c = self.config
        return shared_engine(c.engine, c.model, **c.engine_kwargs)

    def shown_order(self, user: Any, candidates: Sequence[Any]) -> list[Any]:
        """The candidates in the order the prompt shows them (seeded per user when shuffled)."""
        shown = list(candidates)
        if self.config.shuffle:
            train = self._check_fitted()
            user_idx = int(train.user_indices([user])[0])
            np.random.default_rng([self.config.seed, user_idx]).shuffle(shown)
        return shown

    def prompts(self, user_ids: Sequence[Any], shown: Sequence[Sequence[Any]]) -> list[Prompt]:
        """The prompt of each user, with ``shown[n]`` as its labelled candidates."""
        train = self._check_fitted()
        return [
            self.builder.build(
                train, u, candidates=cands, k=1, extra={"labels": LABELS[: len(cands)]}
            )
            for u, cands in zip(user_ids, shown, strict=True)
        ]

    def label_token_ids(self, prompt: Prompt) -> list[int]:
        """The token of each label as the model would write it first in its answer.

        Raises:
            ConfigError: a label is not one token, or two labels share a token.
        """
        if self._label_ids is None:
            engine = self.engine_
            text = engine.render(prompt)  # type: ignore[attr-defined]
            seqs = engine.title_token_ids(LABELS, anchor=text[-16:])  # type: ignore[attr-defined]
            if any(len(s) != 1 for s in seqs) or len({s[0] for s in seqs}) != len(LABELS):
                raise ConfigError(
                    "llm-ranker: the model's tokenizer does not write each label A-Z as one "
                    "distinct token"
                )
            self._label_ids = [s[0] for s in seqs]
        return self._label_ids

    def score_candidates(
        self, user_ids: Sequence[Any], shown: Sequence[Sequence[Any]]
    ) -> list[np.ndarray]:
        """Per user, the log-probability of each shown candidate's label (prompt order)."""
        from llmrec_gen.llm.engines.scoring import next_token_logprobs

        prompts = self.prompts(user_ids, shown)
        if not prompts:
            return []
        label_ids = self.label_token_ids(prompts[0])
        logprobs = next_token_logprobs(
            self.engine_, prompts, label_ids, self.adapter, self.config.batch_size
        )
        return [row[: len(c)] for row, c in zip(logprobs, shown, strict=True)]

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Order each user's candidates by label probability (ties: the given order).

        Raises:
            ConfigError: no candidates given, or more than 26 for a user.
        """
        train = self._check_fitted()
        k = check_k(k)
        users = list(user_ids)
        train.user_indices(users)
        if items is None:
            raise ConfigError(
                "llm-ranker ranks given candidates: use it with a retriever (retriever: als)"
            )
        if len(items) != len(users):
            raise ConfigError(f"items: got {len(items)} candidate lists for {len(users)} users")
        given = []
        for user, cands in zip(users, items, strict=True):
            seen = train.seen_items(user) if exclude_seen else frozenset()
            cands = [i for i in dict.fromkeys(cands) if i not in seen]
            if len(cands) > len(LABELS):
                raise ConfigError(f"n_candidates: at most {len(LABELS)} for the ranker")
            given.append(cands)
        shown = [self.shown_order(u, c) for u, c in zip(users, given, strict=True)]
        scores = self.score_candidates(users, shown)
        out_items, out_scores, details = [], [], []
        for cands, order_shown, s in zip(given, shown, scores, strict=True):
            by_item = dict(zip(order_shown, s.tolist(), strict=True))
            ranked = sorted(cands, key=lambda i: -by_item[i])[:k]  # stable: ties keep given order
            out_items.append(np.asarray(ranked, dtype=train.item_ids.dtype))
            out_scores.append(np.asarray([by_item[i] for i in ranked]))
            details.append([Provenance("ranker", float(np.exp(by_item[i]))) for i in ranked])
        return Recommendations(users, out_items, out_scores, details)
