"""Memorization probes: has the language model seen this MovieLens catalogue and its users?

LLMs pretrained on web text may have memorized MovieLens (Di Palma et al., SIGIR 2025), and
then a "recommendation" can be recall. Three probes, each a rate over a seeded sample with a
95 % bootstrap CI:

* ``id->title``: the model continues a raw catalogue-file line ``"<item_id>|"`` (ML-100k's
  ``u.item``; ``"<item_id>::"`` for ML-1M's ``movies.dat``) after three real example lines;
  a hit is an exact (case-insensitive) completion of ``Title (Year)``. Chance is ~0.
* ``prefix->title``: the line holds the id and the first half of the title's words; a hit
  completes the rest of the title and the year exactly.
* ``user next item``: after a user's ten earliest items (fewer if they have fewer), the summed
  log-probability of their real next item's title is compared with that of 19 random
  catalogue titles they never interacted with; the rate is how often the real one ranks
  first (chance 0.05).

Only fit data is read (the user probe uses each user's own earliest training events), so a
probe never touches a held-out item.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import DataError
from llmrec_gen.llm.prompting import format_title


@dataclass(frozen=True)
class ProbeResult:
    """One probe's hit rate with its bootstrap CI, over ``n`` cases."""

    probe: str
    rate: float
    ci: tuple[float, float]
    n: int
    chance: float
    examples: list[dict[str, str]]


def bootstrap_ci(hits: np.ndarray, seed: int = 0, n: int = 1000) -> tuple[float, float]:
    """95 % percentile bootstrap CI of the mean of ``hits``."""
    if len(hits) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = rng.choice(hits, size=(n, len(hits)), replace=True).mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _line(dataset: str, item_id: Any, rest: str) -> str:
    sep = "::" if "1m" in dataset.lower() else "|"
    return f"{item_id}{sep}{rest}"


def catalogue_prompts(
    train: TrainData, dataset: str, n_items: int, seed: int = 0, prefix: bool = False
) -> tuple[list[str], list[str], list[Any]]:
    """Plain-text prompts of the item probes, their expected completions and the item IDs."""
    cat = train.catalog.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cat))
    shots, sample = order[:3], order[3 : 3 + n_items]
    file = "movies.dat" if "1m" in dataset.lower() else "u.item"
    head = f"Lines of the MovieLens {dataset} file {file}:\n" + "".join(
        _line(dataset, cat.item_id[i], format_title(cat.title[i], cat.year[i])) + "\n"
        for i in shots
    )
    prompts, expected, ids = [], [], []
    for i in sample:
        full = format_title(cat.title[i], cat.year[i])
        words = str(cat.title[i]).split()
        start = " ".join(words[: len(words) // 2]) if prefix else ""
        if prefix and not start:
            continue
        prompts.append(head + _line(dataset, cat.item_id[i], start + (" " if start else "")))
        expected.append(full[len(start) :].strip() if prefix else full)
        ids.append(cat.item_id[i])
    return prompts, expected, ids


def item_probe(
    engine: Any,
    train: TrainData,
    dataset: str,
    n_items: int,
    *,
    prefix: bool,
    seed: int = 0,
    adapter: Any = None,
) -> ProbeResult:
    """The ``id->title`` (or ``prefix->title``) probe with greedy decoding on ``engine``."""
    from llmrec_gen.llm.engines.base import GenerationParams

    prompts, expected, ids = catalogue_prompts(train, dataset, n_items, seed, prefix)
    params = GenerationParams(max_new_tokens=24, stop=("\n",), seed=seed)
    outs = []
    for start in range(0, len(prompts), 8):
        outs += engine.generate(prompts[start : start + 8], params, adapter=adapter)
    texts = [o.text.split("|")[0].split("::")[0].strip() for o in outs]
    hits = np.array([_norm(t).startswith(_norm(e)) for t, e in zip(texts, expected, strict=True)])
    examples = [
        {"item_id": str(i), "expected": e, "generated": t}
        for i, e, t in list(zip(ids, expected, texts, strict=True))[:5]
    ]
    name = "prefix->title" if prefix else "id->title"
    return ProbeResult(name, float(hits.mean()), bootstrap_ci(hits, seed), len(hits), 0.0, examples)


def continuation_logprobs(
    model: Any, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]], device: str
) -> np.ndarray:
    """Summed log-probability of each continuation after ``prompt_ids`` (one prompt pass, its
    KV cache repeated over the batch; right padding never influences earlier positions)."""
    import torch

    from llmrec_gen.llm.engines.packed import _cache_kwarg, base_model

    cache_arg = _cache_kwarg(type(base_model(model)))
    with torch.inference_mode():
        first = model(input_ids=torch.tensor([list(prompt_ids)], device=device), use_cache=True)
        last = torch.log_softmax(first.logits[0, -1].float(), -1)
        width = max(len(c) for c in continuations)
        x = torch.tensor(
            [list(c) + [c[-1]] * (width - len(c)) for c in continuations], device=device
        )
        past = copy.deepcopy(first.past_key_values)
        past.batch_repeat_interleave(len(continuations))
        lp = torch.log_softmax(model(input_ids=x, **{cache_arg: past}).logits.float(), -1)
        out = np.zeros(len(continuations))
        for row, c in enumerate(continuations):
            total = float(last[c[0]])
            if len(c) > 1:
                idx = torch.tensor(list(c[1:]), device=device)[:, None]
                total += float(lp[row, : len(c) - 1].gather(-1, idx).sum())
            out[row] = total
    return out


def user_probe(
    engine: Any, train: TrainData, n_users: int, *, n_negatives: int = 19, seed: int = 0
) -> ProbeResult:
    """The ``user next item`` probe on a transformers ``engine`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    inter = train.interactions
    sort = ["user_id", "timestamp"] if "timestamp" in inter.columns else ["user_id"]
    inter = inter.sort_values(sort, kind="stable")
    groups = [g for _, g in inter.groupby("user_id", sort=True) if len(g) >= 2]
    if not groups:
        raise DataError("probe: no user has two training interactions")
    chosen = rng.permutation(len(groups))[:n_users]
    cat = train.catalog.set_index("item_id")
    title = {i: format_title(r.title, r.year) for i, r in cat.iterrows()}
    all_items = np.asarray(list(title))
    hits, examples = [], []
    for g in (groups[i] for i in chosen):
        items = g["item_id"].tolist()
        cut = min(10, len(items) - 1)
        history, nxt = items[:cut], items[cut]
        seen = set(g["item_id"])
        pool = [i for i in rng.permutation(all_items)[: n_negatives * 3] if i not in seen]
        cands = [nxt, *pool[:n_negatives]]
        prompt = "A MovieLens user rated these movies, in order:\n" + "".join(
            f"- {title[i]}\n" for i in history
        )
        prompt_ids = engine.tokenizer(prompt + "-").input_ids
        conts = [
            engine.tokenizer(" " + title[i] + "\n", add_special_tokens=False).input_ids
            for i in cands
        ]
        scores = continuation_logprobs(engine._model, prompt_ids, conts, engine.device)
        hits.append(bool(np.argmax(scores) == 0))
        if len(examples) < 5:
            examples.append({"next": title[nxt], "best": title[cands[int(np.argmax(scores))]]})
    h = np.array(hits, dtype=float)
    chance = 1.0 / (n_negatives + 1)
    return ProbeResult(
        "user next item", float(h.mean()), bootstrap_ci(h, seed), len(h), chance, examples
    )
