"""The generative LLM recommender: prompt -> generated titles -> grounded catalog IDs.

:class:`LLMRecommender` implements the same ``fit``/``recommend`` contract as the baselines:

1. ``fit(train)`` keeps the training data, draws few-shot demonstrations from training data
   only, fits the fallback recommender (used to fill lists the model leaves short) and, for the
   re-ranking template, the candidate retriever. The engine is loaded lazily, once per process.
2. ``recommend(users, k)`` renders one prompt per user, generates in batches, parses the list,
   grounds each title to a catalog ID (exact -> fuzzy -> embedding), drops seen items and
   duplicates, and fills up to ``k`` from the fallback. In constrained mode decoding is restricted
   to the titles of unseen catalog items (beam search over a title trie), so nothing is invented.

Per-user grounding counts travel in ``Recommendations.extras`` (the evaluator sums numeric
extras generically), so every LLM run reports its valid-title (hallucination) and fill rates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from llmrec_gen.base import Recommendations, RecommendedItem, Recommender
from llmrec_gen.data import TrainData
from llmrec_gen.engines.base import Engine, GenerationParams
from llmrec_gen.errors import ConfigError
from llmrec_gen.prompting import PromptBuilder, draw_demonstrations, format_title

log = logging.getLogger(__name__)

_ENGINES: dict[tuple, Engine] = {}
_TITLE_TOKENS = 40  # one title line: the longest ML-100k title + year is ~30 SmolLM2 tokens


def shared_engine(engine: str, model: str, **kwargs: Any) -> Engine:
    """Build an engine once per process and share it (several LLM methods, one loaded model)."""
    from llmrec_gen.engines import make_engine

    key = (engine, model, tuple(sorted(kwargs.items())))
    if key not in _ENGINES:
        _ENGINES[key] = make_engine(engine, model=model, **kwargs)
    return _ENGINES[key]


def _open_answer(prompts: list) -> list:
    """Each chat prompt with its answer opened as "1.", so the model continues at a title."""
    return [[*p, {"role": "assistant", "content": "1."}] for p in prompts]


class LLMRecommender(Recommender):
    """Zero-/few-shot or fine-tuned decoder LLM that writes a ranked list of titles.

    Args:
        model: "default" (bundled SmolLM2-135M-Instruct), a local HF dir or a Hub id.
        adapter: optional LoRA adapter: a PEFT directory, ``"bundled:ml-100k"`` (the adapter
            shipped in the package), or for the OpenAI engine the served adapter name.
        engine: "auto", "transformers", "vllm" or "openai".
        engine_kwargs: extra engine constructor arguments (e.g. base_url, batch_size).
        template: prompt template id (``llmrec-gen prompt list``).
        history_len: most recent training items shown to the model (10-50).
        fields: item fields in the prompt: title, year, genres, rating.
        n_demos: few-shot demonstrations from other users' training data (0 = zero-shot).
        demo_history_len: history items shown in each demonstration (5-20).
        demo_answer_len: answer items in each demonstration (3-10).
        constrained: decode only catalog titles (trie beam search): 0 % invalid by construction.
        title_beams: > 0 decodes free text BIGRec-style: the answer is opened with "1." and a
            beam search of this width writes one title per beam (each beam ends at the line
            break); the beams, best first, are grounded like a list. Greedy lists from small
            models loop on one title; beams cannot repeat. 0 = decode one numbered list.
        max_new_tokens: generation cap; ~12 tokens per title, so k=10 needs ~150.
        temperature: 0 = greedy (deterministic); > 0 samples with ``seed``.
        num_beams: beam width for free generation.
        repetition_penalty: > 1 discourages the model from looping on one title (1.0 = off).
        batch_size: prompts per generate call.
        fallback: baseline used to fill short lists (e.g. popularity, bm25).
        fuzzy_threshold: rapidfuzz score (0-100) a fuzzy match needs.
        embedding_threshold: cosine a MiniLM nearest neighbour needs (0-1).
        use_embeddings: allow the embedding grounding step.
        candidates_from: retriever for the ``rerank`` template (baseline name).
        n_candidates: candidates shown to the model for re-ranking (10-50).
        seed: seeds demonstrations and sampling.
    """

    name = "llm"

    def __init__(
        self,
        model: str = "default",
        adapter: str | None = None,
        engine: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
        template: str = "zeroshot-v1",
        history_len: int = 20,
        fields: Sequence[str] = ("title", "year"),
        n_demos: int = 0,
        demo_history_len: int = 10,
        demo_answer_len: int = 5,
        constrained: bool = False,
        title_beams: int = 0,
        max_new_tokens: int = 160,
        temperature: float = 0.0,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
        batch_size: int = 8,
        fallback: str = "popularity",
        fuzzy_threshold: float = 85.0,
        embedding_threshold: float = 0.75,
        use_embeddings: bool = True,
        candidates_from: str | None = None,
        n_candidates: int = 20,
        seed: int = 0,
    ) -> None:
        if "rerank" in template and not candidates_from:
            raise ConfigError("llm.candidates_from: the rerank template needs a retriever")
        if title_beams < 0 or (title_beams and constrained):
            raise ConfigError(
                f"llm.title_beams: must be >= 0 and 0 with constrained decoding, got {title_beams}"
            )
        from llmrec_gen.models import resolve_adapter

        if engine == "openai":  # the adapter is a served model name, not a local directory
            self.adapter = adapter
        else:
            self.adapter = resolve_adapter(adapter)
        self.model, self.engine = model, engine
        self.engine_kwargs = dict(engine_kwargs or {})
        self.template, self.history_len, self.fields = template, history_len, tuple(fields)
        self.n_demos, self.constrained, self.title_beams = n_demos, constrained, title_beams
        self.demo_history_len, self.demo_answer_len = demo_history_len, demo_answer_len
        self.max_new_tokens, self.temperature, self.num_beams = (
            max_new_tokens,
            temperature,
            num_beams,
        )
        self.repetition_penalty = repetition_penalty
        self.batch_size, self.fallback = batch_size, fallback
        self.fuzzy_threshold, self.embedding_threshold = fuzzy_threshold, embedding_threshold
        self.use_embeddings = use_embeddings
        self.candidates_from, self.n_candidates, self.seed = candidates_from, n_candidates, seed
        self.builder = PromptBuilder(template, history_len, self.fields, n_demos=n_demos)
        self.demos_: list = []
        self.fallback_: Recommender | None = None
        self.retriever_: Recommender | None = None
        self._grounder = None

    # -- contract ----------------------------------------------------------------------------

    def fit(self, train: TrainData) -> LLMRecommender:
        """Keep ``train``; draw demonstrations and fit fallback/retriever from it only."""
        from llmrec_gen.baselines import make_baseline

        self.train_ = train
        self.demos_ = draw_demonstrations(
            train,
            self.n_demos,
            history_len=self.demo_history_len,
            n_answer=self.demo_answer_len,
            fields=self.fields,
            seed=self.seed,
        )
        self.fallback_ = make_baseline(self.fallback).fit(train) if self.fallback else None
        if self.candidates_from:
            self.retriever_ = make_baseline(self.candidates_from).fit(train)
        self._grounder = None
        return self

    def recommend(
        self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True
    ) -> Recommendations:
        """Generate, ground and fill top-``k`` lists for ``user_ids`` (batched)."""
        train = self._check_fitted()
        train.user_indices(user_ids)  # unknown users fail before any generation
        users = list(user_ids)
        prompts = [self._prompt(u, k) for u in users]
        seen = [train.seen_items(u) if exclude_seen else frozenset() for u in users]
        if self.constrained:
            grounded, extras = self._constrained(prompts, seen, k)
        elif self.title_beams:
            grounded, extras = self._beams(prompts, seen, k)
        else:
            grounded, extras = self._free(prompts, seen, k)
        return self._finish(users, grounded, extras, k, exclude_seen)

    # -- generation paths --------------------------------------------------------------------

    @property
    def engine_(self) -> Engine:
        """The (shared, lazily built) inference engine."""
        return shared_engine(self.engine, self.model, **self.engine_kwargs)

    def _prompt(self, user: Any, k: int) -> list[dict[str, str]]:
        assert self.train_ is not None
        candidates: list[Any] = []
        if self.retriever_ is not None:
            candidates = self.retriever_.recommend([user], self.n_candidates).item_ids[0].tolist()
        return self.builder.build(self.train_, user, demos=self.demos_, candidates=candidates, k=k)

    def _params(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            num_beams=self.num_beams,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
        )

    def _generate(self, prompts: list, params: GenerationParams) -> list:
        """Engine generations for ``prompts``, ``batch_size`` at a time, in input order."""
        outs = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            outs.extend(self.engine_.generate(batch, params, adapter=self.adapter))
        return outs

    def _free(self, prompts: list, seen: list[frozenset], k: int) -> tuple[list, list[dict]]:
        from llmrec_gen.grounding import parse_list

        outs = self._generate(prompts, self._params())
        titles = [parse_list(o.text) for o in outs]
        grounded, stats = self.grounder.ground_each(titles, seen, k)
        extras = [{"text": o.text, **s.counts()} for o, s in zip(outs, stats, strict=True)]
        return grounded, extras

    def _beams(self, prompts: list, seen: list[frozenset], k: int) -> tuple[list, list[dict]]:
        from llmrec_gen.grounding import parse_list

        params = GenerationParams(
            max_new_tokens=min(self.max_new_tokens, _TITLE_TOKENS),
            num_beams=self.title_beams,
            n=self.title_beams,
            stop=("\n",),
            seed=self.seed,
        )
        outs = self._generate(_open_answer(prompts), params)
        titles = [[t for text in o.all_texts for t in parse_list(text, max_items=1)] for o in outs]
        grounded, stats = self.grounder.ground_each(titles, seen, k)
        extras = [{"text": "\n".join(t), **s.counts()} for t, s in zip(titles, stats, strict=True)]
        return grounded, extras

    def _constrained(self, prompts: list, seen: list[frozenset], k: int) -> tuple[list, list[dict]]:
        from llmrec_gen.grounding import GroundedTitle

        assert self.train_ is not None
        by_title = self._title_index()
        # The answer is opened with "1." (an open assistant turn the model continues), so the
        # model is at a title position, not about to write list numbering; titles therefore
        # start with a space, as they would after "1." in free text.
        allowed = [[" " + t for t, i in by_title.items() if i not in s] for s in seen]
        opened = _open_answer(prompts)
        grounded, extras = [], []
        for start in range(0, len(prompts), self.batch_size):
            outs = self.engine_.generate_constrained(
                opened[start : start + self.batch_size],
                allowed[start : start + self.batch_size],
                k,
                adapter=self.adapter,
            )
            for out in outs:
                titles = [t[1:] for t in out.titles]
                items = [GroundedTitle(t, by_title[t], "constrained", 1.0) for t in titles]
                grounded.append(items)
                n = len(out.titles)
                extras.append(
                    {
                        "text": "\n".join(titles),
                        "generated": n,
                        "valid": n,
                        "constrained": n,
                        "returned": n,
                    }
                )
        return grounded, extras

    def _title_index(self) -> dict[str, Any]:
        """Formatted title -> item ID (first item wins when two share title and year)."""
        assert self.train_ is not None
        index: dict[str, Any] = {}
        cat = self.train_.catalog
        for t, y, i in zip(cat["title"], cat["year"], cat["item_id"], strict=True):
            index.setdefault(format_title(t, y), i)
        return index

    @property
    def grounder(self) -> Any:
        """Grounder over the training catalog (built lazily; embeddings encoded on first use)."""
        from llmrec_gen.grounding import Grounder

        if self._grounder is None:
            assert self.train_ is not None
            self._grounder = Grounder(
                self.train_.catalog,
                fuzzy_threshold=self.fuzzy_threshold,
                embedding_threshold=self.embedding_threshold,
                use_embeddings=self.use_embeddings,
            )
        return self._grounder

    def _finish(
        self, users: list, grounded: list, extras: list[dict], k: int, exclude_seen: bool
    ) -> Recommendations:
        fills = (
            self.fallback_.recommend(users, k + k, exclude_seen=exclude_seen)
            if self.fallback_ is not None
            else None
        )
        items_out, scores_out, details_out = [], [], []
        for n, (g, extra) in enumerate(zip(grounded, extras, strict=True)):
            ids = [x.item_id for x in g][:k]
            details = [RecommendedItem(x.method, float(x.score), x.generated) for x in g][:k]
            if fills is not None and len(ids) < k:
                taken = set(ids)
                for item in fills.item_ids[n]:
                    if len(ids) == k:
                        break
                    if item not in taken:
                        ids.append(item)
                        taken.add(item)
                        details.append(RecommendedItem("fill", 0.0))
            extra["filled"] = sum(d.method == "fill" for d in details)
            extra["template"] = self.builder.template_id
            items_out.append(np.asarray(ids, dtype=self._check_fitted().item_ids.dtype))
            scores_out.append(1.0 / np.arange(1, len(ids) + 1))  # rank-based: higher is better
            details_out.append(details)
        return Recommendations(users, items_out, scores_out, details_out, extras)

    # -- extras ------------------------------------------------------------------------------

    def explain(self, user_id: Any, item_ids: Sequence[Any], max_new_tokens: int = 48) -> list[str]:
        """One short model-written reason per recommended item (``explain-v1`` template)."""
        train = self._check_fitted()
        builder = PromptBuilder("explain-v1", self.history_len, self.fields)
        prompts = [builder.build(train, user_id, target=i) for i in item_ids]
        params = GenerationParams(max_new_tokens=max_new_tokens, seed=self.seed, stop=("\n",))
        outs = self._generate(prompts, params)
        return [" ".join(o.text.split()) for o in outs]

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> np.ndarray:
        """Predict 1-5 ratings for ``(user, item)`` pairs with the ``rating-v1`` template.

        Unparsable answers fall back to the user's mean training rating (counted in
        ``self.rating_fallbacks_``).
        """
        train = self._check_fitted()
        builder = PromptBuilder("rating-v1", self.history_len, ("title", "year", "rating"))
        prompts = [builder.build(train, u, target=i) for u, i in pairs]
        params = GenerationParams(max_new_tokens=4, seed=self.seed)
        outs = self._generate(prompts, params)
        preds, self.rating_fallbacks_ = [], 0
        for (u, _), o in zip(pairs, outs, strict=True):
            m = re.search(r"[1-5]", o.text)
            if m:
                preds.append(float(m.group()))
            else:
                self.rating_fallbacks_ += 1
                preds.append(float(np.mean(train.history_ratings(u))))
        return np.asarray(preds)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_grounder"] = None  # holds an encoder; rebuilt lazily
        return state
