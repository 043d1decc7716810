"""The generative LLM recommender: prompt -> generated titles -> grounded catalogue IDs.

:class:`LLMRecommender` implements the one method contract:

1. ``fit(train)`` keeps the training data and draws few-shot demonstrations from it (and from it
   only). The engine is loaded lazily, once per process, and shared by LLM methods.
2. ``recommend(users, k, items=None)`` renders one prompt per user, generates in batches and
   grounds the answer to catalogue IDs, dropping seen items, duplicates and (with ``items``)
   non-candidates. Three decodings (``decoding.mode``):

   * ``list``: one numbered list, parsed and grounded exact -> fuzzy -> embedding;
   * ``title_beams``: the answer is opened with "1." and a beam search writes one title per beam
     (BIGRec-style), each grounded like a list entry;
   * ``constrained``: beam search over a trie of the allowed titles, so nothing is invented.

   Lists may come back shorter than ``k``; compose with
   :class:`~llmrec_gen.recommenders.compose.Fallback` to fill them.

Per-user :class:`~llmrec_gen.llm.grounding.stats.GroundingStats` travel in
``Recommendations.stats``; :meth:`LLMRecommender.summarize_stats` turns them into valid-title
(hallucination) and seen rates.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines.base import Engine, Generation, GenerationParams, Prompt
from llmrec_gen.llm.grounding.match import GroundedTitle, GroundingConfig
from llmrec_gen.llm.grounding.stats import GroundingStats
from llmrec_gen.llm.prompting import (
    EXPLAIN_TEMPLATE,
    RATING_TEMPLATE,
    Demonstration,
    PromptBuilder,
    PromptConfig,
    format_title,
)
from llmrec_gen.recommenders.base import (
    RANKER,
    Capability,
    Provenance,
    RatingPredictions,
    Recommendations,
    Recommender,
    check_k,
)

log = logging.getLogger(__name__)

_GENERATIONS: OrderedDict[tuple, Generation] = OrderedDict()
"""Deterministic generations of this process (see ``LLMRecommender._generate``)."""
_MEMO_SIZE = 50_000

_TITLE_TOKENS = 40  # one title line: the longest ML-100k title + year is ~30 SmolLM2 tokens


class DecodingConfig(StrictModel):
    """How the model's answer is decoded (see the module docstring for the three modes)."""

    mode: Literal["list", "constrained", "title_beams"] = "list"  # see the module docstring
    title_beams: int = Field(20, ge=1)  # title_beams mode: beams = titles per user; 10-50
    max_new_tokens: int = Field(160, ge=1)  # list mode cap; ~12 tokens per title (k=10: ~150)
    temperature: float = Field(0.0, ge=0)  # list mode: 0 = greedy; > 0 samples with `seed`
    num_beams: int = Field(1, ge=1)  # list mode beam width (1 = greedy)
    repetition_penalty: float = Field(1.0, gt=0)  # > 1 discourages looping on one title
    n_titles: int | None = Field(None, ge=1)  # titles to generate (None: k); with full-ranking
    # grounding a fixed 10-20 keeps the cost independent of how deep the ranking is read
    score: Literal["mean", "sum"] = "sum"  # constrained beam score: "sum" of token log-probs
    # (D3: no length normalisation) or "mean" (length-normalised; the old default, which favours
    # titles whose later tokens are near-certain, e.g. digit-leading ones)
    prior_weight: float = Field(0.0, ge=0)  # constrained: weight of the CF prior (D3 logit
    # bias, set with `prior:` in a method spec); choose on the validation target, 1-8
    calibration: float = Field(1.0, ge=0)  # constrained: λ of domain-conditional PMI, score -
    # λ · log p(title | content-free prompt); 1 = PMI (default: without it 55 % of zero-shot
    # top-10 titles start with a digit against 0.7 % of the catalogue), 0 = off


class LLMConfig(StrictModel):
    """A decoder LLM as a recommender: which model, how to prompt, decode and ground."""

    model: str = "default"  # "default" (bundled SmolLM2-135M-Instruct), a local HF dir or Hub id
    adapter: str | None = None  # LoRA: a PEFT dir, "bundled:<dataset>", or a served name (openai)
    engine: Literal["auto", "transformers", "vllm", "openai"] = "auto"  # inference backend
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # engine options (base_url, ...)
    batch_size: int = Field(32, ge=1)  # users per generate call (and per evaluator checkpoint);
    # on packed CPU passes up to 32 (beams) or 64 (greedy) of them are decoded together
    seed: int = 0  # seeds demonstrations and sampling
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    grounding: GroundingConfig = Field(default_factory=GroundingConfig)

    @model_validator(mode="after")
    def _server_decoding(self) -> LLMConfig:
        """An OpenAI-compatible server decodes constrained answers itself (a structured choice):
        it gives no token log-probabilities to calibrate or sum, so unless ``decoding.score`` /
        ``decoding.calibration`` are set explicitly they default to ``mean`` / ``0`` there."""
        if self.engine == "openai":
            d = self.decoding
            update = {
                name: value
                for name, value in (("score", "mean"), ("calibration", 0.0))
                if name not in d.model_fields_set
            }
            if update:
                object.__setattr__(self, "decoding", d.model_copy(update=update))
        return self


def parse_rating(text: str) -> float | None:
    """The first digit 1-5 in a generated answer (``"I'd say 4/5"`` -> 4.0), else None."""
    match = re.search(r"[1-5]", text)
    return float(match.group()) if match else None


def _open_answer(prompts: list[Prompt]) -> list[Prompt]:
    """Each chat prompt with its answer opened as "1.", so the model continues at a title."""
    return [[*p, {"role": "assistant", "content": "1."}] for p in prompts]  # type: ignore[misc]


class LLMRecommender(Recommender):
    """Zero-/few-shot or fine-tuned decoder LLM that writes a ranked list of titles.

    Args:
        config: an :class:`LLMConfig` (or mapping); keyword overrides are applied over it, e.g.
            ``LLMRecommender(prompt={"template": "fewshot-v2", "n_demos": 2})``.

    Raises:
        ConfigError: an invalid field (named), before any model is loaded.
        ModelNotFoundError: a missing or broken adapter.
        TemplateError: an unknown or broken template.
    """

    name = "llm"
    config_class = LLMConfig
    capabilities = RANKER | {
        Capability.PREDICT_RATINGS,
        Capability.GENERATION_STATS,
        Capability.CONTENT_DIGEST,
    }

    def __init__(self, config: LLMConfig | Mapping[str, Any] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        c: LLMConfig = self.config
        self.adapter = resolve_adapter(c.adapter, remote=c.engine == "openai")
        self.builder = PromptBuilder(c.prompt)
        self.users_per_call = c.batch_size
        self.demos_: list[Demonstration] = []
        self.prior: Recommender | None = None
        self._memo_key: tuple | None = None
        self._prior_paths: dict[int, Any] = {}
        self._titles: dict[str, Any] | None = None
        self._grounder: Any = None

    # -- contract ----------------------------------------------------------------------------

    def fit(self, train: TrainData) -> LLMRecommender:
        """Keep ``train`` and draw the few-shot demonstrations from it only."""
        self.train_ = train
        self.demos_ = self.builder.demonstrations(train, seed=self.config.seed)
        if self.prior is not None:
            self.prior.fit(train)
        self._titles = None
        self._grounder = None
        return self

    def recommend(
        self,
        user_ids: Sequence[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        items: Sequence[Sequence[Any]] | None = None,
    ) -> Recommendations:
        """Generate and ground top-``k`` lists for ``user_ids`` (see the module docstring)."""
        train = self._check_fitted()
        k = check_k(k)
        train.user_indices(user_ids)  # unknown users fail before any generation
        users = list(user_ids)
        if items is not None and len(items) != len(users):
            raise ConfigError(f"items: got {len(items)} candidate lists for {len(users)} users")
        n_titles = self.config.decoding.n_titles or k
        prompts = self.prompts(users, n_titles, items=items)
        seen = [train.seen_items(u) if exclude_seen else frozenset() for u in users]
        allowed = [frozenset(c) for c in items] if items is not None else None
        mode = self.config.decoding.mode
        if mode == "constrained":
            grounded, stats, texts = self._constrained(users, prompts, seen, allowed, n_titles)
            titles = [[g.generated for g in gs] for gs in grounded]
        else:
            titles, texts = self._generate_titles(prompts, beams=mode == "title_beams")
            grounded, stats = self.grounder.ground_each(titles, seen, n_titles, allowed=allowed)
        if self.config.grounding.full_ranking:
            return self._full_ranking(users, titles, grounded, stats, texts, seen, allowed, k)
        item_out, score_out, details = [], [], []
        for g in grounded:
            ids = [x.item_id for x in g][:k]
            item_out.append(np.asarray(ids, dtype=train.item_ids.dtype))
            score_out.append(1.0 / np.arange(1, len(ids) + 1))  # rank-based: higher is better
            details.append([Provenance(x.method, float(x.score), x.generated) for x in g][:k])
        return Recommendations(
            users, item_out, score_out, details, [s.as_dict() for s in stats], texts
        )

    def _full_ranking(
        self,
        users: list[Any],
        titles: list[list[str]],
        grounded: list[list[GroundedTitle]],
        stats: list[GroundingStats],
        texts: list[str],
        seen: list[frozenset],
        allowed: list[frozenset] | None,
        k: int,
    ) -> Recommendations:
        """Every rankable item by distance to all generated titles (BIGRec full ranking).

        Every generated title counts, valid or not: an invented title still points somewhere in
        the embedding space.
        """
        from llmrec_gen.llm.grounding.rank import rank_catalogue

        ranked = rank_catalogue(
            self.grounder, titles, seen, allowed, self.config.grounding.rank_penalty
        )
        item_out = [ids[:k] for ids, _ in ranked]
        score_out = [scores[:k] for _, scores in ranked]
        details = []
        for gs, ids in zip(grounded, item_out, strict=True):
            own = {g.item_id: g for g in gs}
            details.append(
                [
                    Provenance(own[i].method, float(own[i].score), own[i].generated)
                    if i in own
                    else Provenance("distance", 0.0)
                    for i in ids.tolist()
                ]
            )
        return Recommendations(
            users, item_out, score_out, details, [s.as_dict() for s in stats], texts
        )

    def summarize_stats(self, stats: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """Totals and rates of the per-user grounding counts (see :class:`GroundingStats`)."""
        return GroundingStats.summarize(stats)

    def content_digest(self) -> str | None:
        """The adapter's weight digest: a retrained adapter never reuses saved lists."""
        return self.adapter.digest() if self.adapter is not None else None

    # -- prompts -----------------------------------------------------------------------------

    def prompts(
        self, user_ids: Sequence[Any], k: int = 10, *, items: Sequence[Sequence[Any]] | None = None
    ) -> list[Prompt]:
        """The chat prompt of each user (what the model is asked), from training data only.

        Raises:
            ConfigError: the template shows candidates but ``items`` is not given.
        """
        train = self._check_fitted()
        if self.builder.uses("candidates") and items is None:
            raise ConfigError(
                f"prompt.template: '{self.builder.template_id}' shows candidates: use it as the "
                "ranker of a two-stage method (retriever + ranker)"
            )
        shown = items if items is not None and self.builder.uses("candidates") else None
        return [
            self.builder.build(
                train, u, demos=self.demos_, candidates=shown[n] if shown else (), k=k
            )
            for n, u in enumerate(user_ids)
        ]

    # -- generation --------------------------------------------------------------------------

    @property
    def engine_(self) -> Engine:
        """The (shared, lazily built) inference engine."""
        from llmrec_gen.llm.engines import shared_engine

        c = self.config
        return shared_engine(c.engine, c.model, **c.engine_kwargs)

    def _generate(self, prompts: list[Prompt], params: GenerationParams) -> list[Generation]:
        """Engine generations for ``prompts``, ``batch_size`` at a time, in input order.

        Deterministic generations (``temperature == 0``) are remembered per process, keyed by
        engine, model, adapter weights, parameters and prompt, so methods that differ only
        after generation (full-ranking fusions, grid points of a fusion weight) generate once.
        """
        c = self.config
        memo = params.temperature == 0
        if memo and self._memo_key is None:
            digest = self.adapter.digest() if self.adapter is not None else None
            kwargs = json.dumps(c.engine_kwargs, sort_keys=True, default=str)
            self._memo_key = (c.engine, c.model, kwargs, digest)
        keys = [
            (self._memo_key, repr(params), json.dumps(p, sort_keys=True)) if memo else None
            for p in prompts
        ]
        done = {i: _GENERATIONS[k] for i, k in enumerate(keys) if k in _GENERATIONS}
        todo = [i for i in range(len(prompts)) if i not in done]
        step = c.batch_size
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            outs = self.engine_.generate([prompts[i] for i in chunk], params, adapter=self.adapter)
            for i, out in zip(chunk, outs, strict=True):
                done[i] = out
                if keys[i] is not None:
                    _GENERATIONS[keys[i]] = out
                    while len(_GENERATIONS) > _MEMO_SIZE:
                        _GENERATIONS.popitem(last=False)
        return [done[i] for i in range(len(prompts))]

    def _generate_titles(
        self, prompts: list[Prompt], *, beams: bool
    ) -> tuple[list[list[str]], list[str]]:
        """Generated titles per prompt (a parsed list, or one title per beam) and the raw text."""
        from llmrec_gen.llm.grounding.parse import parse_list

        d, seed = self.config.decoding, self.config.seed
        if not beams:
            params = GenerationParams(
                max_new_tokens=d.max_new_tokens,
                temperature=d.temperature,
                num_beams=d.num_beams,
                seed=seed,
                repetition_penalty=d.repetition_penalty,
            )
            outs = self._generate(prompts, params)
            return [parse_list(o.text) for o in outs], [o.text for o in outs]
        params = GenerationParams(
            max_new_tokens=min(d.max_new_tokens, _TITLE_TOKENS),
            num_beams=d.title_beams,
            n=d.title_beams,
            stop=("\n",),
            seed=seed,
        )
        outs = self._generate(_open_answer(prompts), params)
        titles = [[t for text in o.all_texts for t in parse_list(text, max_items=1)] for o in outs]
        return titles, ["\n".join(t) for t in titles]

    def with_prior(self, prior: Recommender) -> LLMRecommender:
        """Bias constrained decoding with ``prior``'s scores (D3's logit bias, weighted by
        ``decoding.prior_weight``; see :mod:`llmrec_gen.llm.grounding.prior`). ``prior`` is
        fitted with this method."""
        if self.config.decoding.mode != "constrained":
            raise ConfigError("prior: a decoding prior needs decoding.mode 'constrained'")
        self.prior = prior
        return self

    def _content_free_bias(self, k: int) -> Any:
        """``-λ`` times the content-free log-probability of every catalogue trie edge."""
        lam = self.config.decoding.calibration
        if lam == 0:
            return None
        engine = self.engine_
        if not hasattr(engine, "content_free_bias"):
            raise ConfigError(
                f"decoding.calibration: engine '{engine.name}' cannot calibrate constrained "
                "decoding (use the transformers engine)"
            )
        train = self._check_fitted()
        opened = _open_answer([self.builder.content_free(train, k)])[0]
        titles = [" " + t for t in self.title_index()]
        base, values = engine.content_free_bias(opened, titles, k, adapter=self.adapter)
        return base, -lam * values

    def _prior_bias(
        self, users: list[Any], opened: list[Prompt], titles: list[list[str]], k: int
    ) -> list[Any] | None:
        """Per-prompt per-node bias arrays of the CF prior (``None`` without a prior)."""
        weight = self.config.decoding.prior_weight
        if self.prior is None or weight == 0:
            return None
        from llmrec_gen.llm.grounding.prior import bias_arrays

        engine = self.engine_
        if not hasattr(engine, "title_tries"):
            raise ConfigError(f"prior: engine '{engine.name}' cannot bias constrained decoding")
        _, tries = engine.title_tries(opened, titles, k)
        n_items = self._check_fitted().n_items
        recs = self.prior.recommend(users, k=n_items, exclude_seen=True)
        title_of = {i: " " + t for t, i in self.title_index().items()}
        scores = [
            {title_of[i]: float(s) for i, s in zip(ids.tolist(), sc, strict=True) if i in title_of}
            for ids, sc in zip(recs.item_ids, recs.scores, strict=True)
        ]
        return bias_arrays(tries, scores, weight, self._prior_paths)

    def _constrained(
        self,
        users: list[Any],
        prompts: list[Prompt],
        seen: list[frozenset],
        allowed: list[frozenset] | None,
        k: int,
    ) -> tuple[list[list[GroundedTitle]], list[GroundingStats], list[str]]:
        by_title = self.title_index()
        # The answer is opened with "1." (an open assistant turn the model continues), so the
        # model is at a title position, not about to write list numbering; titles therefore
        # start with a space, as they would after "1." in free text.
        titles = [
            [
                " " + t
                for t, i in by_title.items()
                if i not in s and (allowed is None or i in allowed[n])
            ]
            for n, s in enumerate(seen)
        ]
        opened = _open_answer(prompts)
        grounded, stats, texts = [], [], []
        step = self.config.batch_size
        d = self.config.decoding
        calibration = self._content_free_bias(k)
        for start in range(0, len(prompts), step):
            chunk = slice(start, start + step)
            extra: dict[str, Any] = {}
            bias = self._prior_bias(users[chunk], opened[chunk], titles[chunk], k)
            if calibration is not None:
                base, cal = calibration
                _, tries = self.engine_.title_tries(opened[chunk], titles[chunk], k)
                if any(t.base is not base for t in tries):
                    raise ConfigError(
                        "decoding.calibration: the prompts do not end like the content-free "
                        "prompt (the template must end with the answer)"
                    )
                bias = [cal] * len(tries) if bias is None else [b + cal for b in bias]
            if bias is not None:
                extra["bias"] = bias
            if d.score != "mean":
                extra["score"] = d.score
            unsupported = set(extra) - set(
                inspect.signature(self.engine_.generate_constrained).parameters
            )
            if unsupported:
                raise ConfigError(
                    f"decoding: engine '{self.engine_.name}' does not support "
                    f"{' or '.join(sorted(unsupported))} in constrained decoding"
                )
            outs = self.engine_.generate_constrained(
                opened[chunk], titles[chunk], k, adapter=self.adapter, **extra
            )
            for out in outs:
                picked = [t[1:] for t in out.titles]
                grounded.append([GroundedTitle(t, by_title[t], "constrained", 1.0) for t in picked])
                n = len(picked)
                stats.append(GroundingStats(generated=n, valid=n, constrained=n, returned=n))
                texts.append("\n".join(picked))
        return grounded, stats, texts

    def title_index(self) -> dict[str, Any]:
        """Formatted title -> item ID over the catalogue (first item wins when two share one)."""
        if self._titles is None:
            cat = self._check_fitted().catalog
            index: dict[str, Any] = {}
            for t, y, i in zip(cat["title"], cat["year"], cat["item_id"], strict=True):
                index.setdefault(format_title(t, y), i)
            self._titles = index
        return self._titles

    @property
    def grounder(self) -> Any:
        """Grounder over the training catalogue (built lazily; embeddings encoded on first use)."""
        from llmrec_gen.llm.grounding.match import Grounder

        if self._grounder is None:
            self._grounder = Grounder(self._check_fitted().catalog, self.config.grounding)
        return self._grounder

    # -- other tasks -------------------------------------------------------------------------

    def explain(self, user_id: Any, item_ids: Sequence[Any], max_new_tokens: int = 48) -> list[str]:
        """One short model-written reason per recommended item (``explain-v2`` template)."""
        train = self._check_fitted()
        builder = PromptBuilder(self.config.prompt, template=EXPLAIN_TEMPLATE)
        prompts: list[Prompt] = [builder.build(train, user_id, target=i) for i in item_ids]
        params = GenerationParams(
            max_new_tokens=max_new_tokens, seed=self.config.seed, stop=("\n",)
        )
        return [" ".join(o.text.split()) for o in self._generate(prompts, params)]

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> RatingPredictions:
        """Predict 1-5 ratings for ``(user, item)`` pairs with the ``rating-v2`` template.

        Unparsable answers fall back to the user's mean training rating (counted as
        ``stats["unparsed"]``).
        """
        train = self._check_fitted()
        builder = PromptBuilder(
            self.config.prompt, template=RATING_TEMPLATE, fields=("title", "year", "rating")
        )
        prompts: list[Prompt] = [builder.build(train, u, target=i) for u, i in pairs]
        outs = self._generate(prompts, GenerationParams(max_new_tokens=4, seed=self.config.seed))
        preds, unparsed = [], 0
        for (u, _), o in zip(pairs, outs, strict=True):
            value = parse_rating(o.text)
            if value is None:
                unparsed += 1
                value = float(np.mean(train.history_ratings(u)))
            preds.append(value)
        stats = {"pairs": len(pairs), "unparsed": unparsed}
        return RatingPredictions(np.asarray(preds), stats, [o.text for o in outs])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_grounder"] = None  # holds an encoder; rebuilt lazily
        return state
