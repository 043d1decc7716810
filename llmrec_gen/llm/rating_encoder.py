"""The language model as a feature extractor, fine-tuned end to end for rating regression.

``llm-rating`` predicts ``r(u, i) = mu + b_u + b_i + (W · M_θ(x_i)) · v_u``: ``x_i`` is item
``i``'s text (title, year, genres...), ``M_θ`` the pooled hidden state of a language model whose
LoRA weights ``θ`` are trained, ``W`` a linear map to ``factors`` dimensions, ``v_u`` and the
biases learned per user and item. LoRA, ``W``, user vectors and biases are trained together on
the training ratings with a mean squared error (plus L2 on the per-user/item parameters), in
plain torch with PEFT's LoRA (TRL's trainers are built for token-level language modelling).

Training runs over *items*: each step encodes a batch of item texts with gradients and takes
the loss over every training rating of those items, so the language model sees each item once
per epoch (ML-100k: 1,682 texts, ~100k ratings). After training every item is encoded once;
predictions and rankings then need no language model. An item without training ratings gets
``b_i = 0`` and its text vector, so the text is what ranks it; an unknown user gets the item
terms only. Ranking (``recommend``) orders items by predicted rating.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import ConfigError
from llmrec_gen.llm.encoders import (
    EncoderSpec,
    item_texts,
    load_hf_encoder,
    model_fingerprint,
    pooled_hidden_states,
    resolve_encoder,
)
from llmrec_gen.recommenders.base import (
    RANKER,
    Capability,
    RatingPredictions,
    ScoringRecommender,
)

log = logging.getLogger(__name__)


class LLMRatingConfig(StrictModel):
    """Hyperparameters (then run options) of :class:`LLMRatingRegressor`."""

    encoder: EncoderSpec = Field(default_factory=EncoderSpec)  # the LM and the item text
    factors: int = Field(32, ge=1)  # width of W·M(x) and v_u; 16-64
    lora_r: int = Field(8, ge=1)  # LoRA rank of the LM's attention projections; 4-16
    lora_alpha: int = Field(16, ge=1)  # LoRA scale numerator; usually 2 * lora_r
    lora_dropout: float = Field(0.05, ge=0, lt=1)  # on the LoRA input; 0-0.1
    lr: float = Field(2e-3, gt=0)  # AdamW step for LoRA and W; 5e-4-5e-3
    embedding_lr: float = Field(2e-2, gt=0)  # AdamW step for v_u and the biases; 5e-3-5e-2
    l2: float = Field(1e-4, ge=0)  # L2 on v_u and the biases (per rating); 0-1e-3
    epochs: int = Field(2, ge=1)  # passes over the items; 1-5
    items_per_step: int = Field(64, ge=1)  # item texts encoded per step (with their ratings)
    max_minutes: float | None = Field(None, gt=0)  # wall-time budget (run option)
    seed: int = Field(0, ge=0)  # initialisation and item order
    num_threads: int = Field(2, ge=1)  # torch CPU threads (run option)


def _lora_targets(model: Any) -> list[str]:
    """Attention projections LoRA adapts: Llama-style ``q_proj``/``v_proj`` or BERT's."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for pair in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"]):
        if set(pair) <= names:
            return pair
    raise ConfigError("llm-rating: encoder: found no attention projections to adapt with LoRA")


class LLMRatingRegressor(ScoringRecommender):
    """``mu + b_u + b_i + (W·M_θ(text_i))·v_u``, the LM tuned with LoRA (module docstring).

    After ``fit``: ``item_vectors_`` (``W·M_θ(x_i)`` per item index), ``user_factors_``,
    ``user_bias_``, ``item_bias_``, ``mu_`` and ``history_`` (per-epoch training MSE).
    """

    name = "llm-rating"
    config_class = LLMRatingConfig
    capabilities = RANKER | {Capability.PREDICT_RATINGS, Capability.CONTENT_DIGEST}

    def content_digest(self) -> str:
        """The encoder's files (a replaced model gives other results)."""
        resolved = resolve_encoder(self.config.encoder.model)
        return f"{resolved.label}:{model_fingerprint(resolved.path)}"

    def _fit(self, train: TrainData) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        from llmrec_gen.llm.models import quiet_transformers
        from llmrec_gen.recommenders.sequential import torch_threads

        cfg = self.config
        spec = cfg.encoder.model_copy(update={"dtype": "float32"})  # gradients in fp32
        texts = item_texts(train.catalog, spec.text_fields)  # fails before any model loads
        resolved = resolve_encoder(spec.model)
        rows = train.catalog["item_id"].map(train.item_index).to_numpy()
        by_index = [""] * train.n_items
        for row, text in zip(rows, texts, strict=True):
            by_index[int(row)] = text
        inter = train.interactions
        users = inter["user_id"].map(train.user_index).to_numpy(dtype=np.int64)
        items = inter["item_id"].map(train.item_index).to_numpy(dtype=np.int64)
        ratings = inter["rating"].to_numpy(dtype=np.float32)
        self.mu_ = float(ratings.mean()) if len(ratings) else 3.0
        order = np.argsort(items, kind="stable")
        starts = np.searchsorted(items[order], np.arange(train.n_items + 1))
        rated = np.flatnonzero(np.diff(starts) > 0)

        with torch_threads(cfg.num_threads):
            torch.manual_seed(cfg.seed)
            base, tokenizer = load_hf_encoder(resolved.path, spec)
            lora = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=_lora_targets(base),
            )
            with quiet_transformers():
                model = get_peft_model(base, lora)
            width = int(getattr(base.config, "hidden_size", 0) or base.config.d_model)
            proj = torch.nn.Linear(width, cfg.factors, bias=False)
            torch.nn.init.normal_(proj.weight, std=1.0 / math.sqrt(width))
            user_f = torch.nn.Embedding(train.n_users, cfg.factors)
            torch.nn.init.normal_(user_f.weight, std=0.01)
            user_b = torch.nn.Embedding(train.n_users, 1)
            item_b = torch.nn.Embedding(train.n_items, 1)
            torch.nn.init.zeros_(user_b.weight)
            torch.nn.init.zeros_(item_b.weight)
            lm_params = [p for p in model.parameters() if p.requires_grad] + list(proj.parameters())
            emb_params = [*user_f.parameters(), *user_b.parameters(), *item_b.parameters()]
            opt = torch.optim.AdamW(
                [
                    {"params": lm_params, "lr": cfg.lr},
                    {"params": emb_params, "lr": cfg.embedding_lr, "weight_decay": 0.0},
                ]
            )
            rng = np.random.default_rng(cfg.seed)
            start, self.history_ = time.perf_counter(), []
            for epoch in range(1, cfg.epochs + 1):
                model.train()
                total, count = 0.0, 0
                for batch in np.array_split(
                    rng.permutation(rated), max(1, math.ceil(len(rated) / cfg.items_per_step))
                ):
                    pooled = pooled_hidden_states(
                        model, tokenizer, [by_index[i] for i in batch], spec, grad=True
                    )
                    z = proj(pooled)  # (B, factors)
                    pos = np.concatenate([order[starts[i] : starts[i + 1]] for i in batch])
                    local = np.repeat(np.arange(len(batch)), np.diff(starts)[batch])
                    u = torch.as_tensor(users[pos])
                    i = torch.as_tensor(items[pos])
                    pred = (
                        self.mu_
                        + user_b(u).squeeze(1)
                        + item_b(i).squeeze(1)
                        + (z[torch.as_tensor(local)] * user_f(u)).sum(1)
                    )
                    target = torch.as_tensor(ratings[pos])
                    mse = torch.mean((pred - target) ** 2)
                    reg = (
                        cfg.l2
                        * (
                            user_f(u).pow(2).sum(1) + user_b(u).pow(2).squeeze(1) + item_b(i).pow(2)
                        ).mean()
                    )
                    opt.zero_grad(set_to_none=True)
                    (mse + reg).backward()
                    opt.step()
                    total, count = total + float(mse.detach()) * len(pos), count + len(pos)
                    over = cfg.max_minutes and time.perf_counter() - start > 60 * cfg.max_minutes
                    if over:
                        break
                record = {
                    "epoch": epoch,
                    "train_mse": total / max(count, 1),
                    "seconds": time.perf_counter() - start,
                }
                self.history_.append(record)
                log.info("llm-rating: epoch %d, train MSE %.4f", epoch, record["train_mse"])
                if over:
                    log.info("llm-rating: max_minutes reached after epoch %d", epoch)
                    break
            model.eval()
            with torch.inference_mode():
                pooled = pooled_hidden_states(model, tokenizer, by_index, spec, grad=False)
                vectors = proj(torch.as_tensor(pooled)).numpy()
            self.item_vectors_ = np.ascontiguousarray(vectors, dtype=np.float32)
            self.user_factors_ = user_f.weight.detach().numpy().copy()
            self.user_bias_ = user_b.weight.detach().numpy()[:, 0].copy()
            self.item_bias_ = item_b.weight.detach().numpy()[:, 0].copy()
        unrated = np.setdiff1d(np.arange(train.n_items), rated)
        self.item_bias_[unrated] = 0.0  # never updated: keep them exactly at the prior

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        """Predicted ratings of every item for the given user indices."""
        u = np.asarray(user_idx, dtype=np.int64)
        return (
            self.mu_
            + self.user_bias_[u][:, None]
            + self.item_bias_[None, :]
            + self.user_factors_[u] @ self.item_vectors_.T
        )

    def predict_ratings(self, pairs: Sequence[tuple[Any, Any]]) -> RatingPredictions:
        """Predicted ratings, clipped to the training range; unknown users get item terms only,
        unknown items the user terms only."""
        train = self._check_fitted()
        ratings = train.interactions["rating"]
        lo, hi = float(ratings.min()), float(ratings.max())
        out = np.empty(len(pairs), dtype=np.float64)
        for n, (user, item) in enumerate(pairs):
            u = train.user_index.get(user)
            i = train.item_index.get(item)
            value = self.mu_
            if u is not None:
                value += self.user_bias_[u]
            if i is not None:
                value += self.item_bias_[i]
            if u is not None and i is not None:
                value += float(self.user_factors_[u] @ self.item_vectors_[i])
            out[n] = value
        return RatingPredictions(np.clip(out, lo, hi))
