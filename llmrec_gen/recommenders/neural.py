"""Two-tower collaborative filtering in torch: learned user vectors against item vectors that
come from item IDs or from fixed item features, optionally smoothed over the interaction graph.

``score(u, i) = cos(user_u, item_i)`` (softmax loss) or ``user_u . item_i`` (BPR). The item
tower is either an ID embedding (``id-mf``, this module) or ``MLP(features_i)`` (+ an optional
ID residual) when a subclass supplies a dense item-feature matrix (``llm-mf`` in
:mod:`llmrec_gen.llm.features` feeds language-model vectors, the AlphaRec recipe of Sheng et al.,
ICLR 2025). Because both share everything else, comparing the two isolates what the text
contributes.

- **Graph propagation** (``n_layers > 0``): LightGCN (He et al., SIGIR 2020) over the symmetric-
  normalised user-item graph ``A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2``; the final vectors are the
  mean of layers ``0..n_layers``. Items with no interactions keep their layer-0 vector (scaled),
  so a feature-based tower still ranks cold items.
- **Losses**: ``softmax`` = cross-entropy of each training (user, item) pair against the *whole*
  catalogue with cosine logits divided by ``temperature``. All pairs of a user share one logits
  row, so the loss is computed per user (``-sum_i x_ui log softmax(s_u)_i``, the multinomial
  likelihood of Mult-VAE): ``n_users x n_items`` logits per epoch, not ``n_pairs x n_items``.
  ``bpr`` = ``-log sigmoid(s(u, i) - s(u, j))`` with one uniform negative per pair.
  Items with no training interactions (cold items) are left out of both losses' negatives.

Training is seeded and deterministic on CPU for a fixed thread count; only numpy factors are kept
after ``fit``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.recommenders.base import ScoringRecommender

log = logging.getLogger(__name__)


class TwoTowerConfig(StrictModel):
    """Hyperparameters (then run options) of :class:`TwoTowerMF`."""

    factors: int = Field(64, ge=2)  # vector width; 32-128
    n_layers: int = Field(2, ge=0)  # LightGCN propagation layers; 0 = plain MF, 1-3
    loss: Literal["softmax", "bpr"] = "softmax"  # full-catalogue softmax (faster) or BPR
    temperature: float = Field(0.1, gt=0)  # softmax: cosine / temperature; 0.05-0.3
    lr: float = Field(5e-3, gt=0)  # Adam step; 1e-3-1e-2
    weight_decay: float = Field(0.0, ge=0)  # AdamW decay on all weights; 0-1e-2
    epochs: int = Field(20, ge=1)  # passes over the training pairs; 10-50
    batch_size: int = Field(128, ge=1)  # softmax: users per step (32-512); bpr: pairs (1k-8k)
    hidden: int = Field(256, ge=1)  # feature tower: MLP hidden width; 128-512
    id_residual: bool = False  # feature tower: add an ID embedding (starts at 0) to MLP(features)
    dropout: float = Field(0.0, ge=0, lt=1)  # feature tower: dropout on the MLP input; 0-0.3
    seed: int = Field(0, ge=0)  # initialisation, batch order, negatives
    num_threads: int = Field(2, ge=1)  # torch CPU threads (run option)
    device: str = "cpu"  # torch device (run option)


def normalized_adjacency(matrix: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 [[0, R], [R^T, 0]] D^-1/2`` of a binary user x item matrix ``R`` (float32)."""
    r = sp.csr_matrix(matrix, dtype=np.float32)
    n_users, n_items = r.shape
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    out = sp.csr_matrix(d @ adj @ d, dtype=np.float32)
    assert out.shape == (n_users + n_items, n_users + n_items)
    return out


def _torch_sparse(m: sp.csr_matrix, device: str) -> Any:
    import torch

    coo = m.tocoo()
    idx = torch.as_tensor(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.as_tensor(coo.data), m.shape, device=device, check_invariants=False
    ).coalesce()


class TwoTowerMF(ScoringRecommender):
    """Learned users x item tower, cosine scores, optional LightGCN (module docstring).

    This class is the ID model (``id-mf``); subclasses return a dense ``(n_items, dim)`` matrix
    from :meth:`_item_features` to get the feature tower. After ``fit``: ``user_factors_`` and
    ``item_factors_`` (unit rows, float32) and ``history_`` (loss and seconds per epoch).
    """

    name = "id-mf"
    config_class = TwoTowerConfig

    def _item_features(self, train: TrainData) -> np.ndarray | None:
        """Dense item features (one row per catalogue item) or ``None`` for ID embeddings."""
        return None

    def _fit(self, train: TrainData) -> None:
        import torch

        from llmrec_gen.recommenders.sequential import torch_threads

        features = self._item_features(train)
        with torch_threads(self.config.num_threads):
            torch.manual_seed(self.config.seed)
            users, items, self.history_ = self._train(train, features)
        self.user_factors_ = users
        self.item_factors_ = items

    def _train(
        self, train: TrainData, features: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
        import torch
        import torch.nn.functional as F
        from torch import nn

        c = self.config
        dev = c.device
        rng = np.random.default_rng(c.seed)
        coo = train.matrix.tocoo()
        pairs_u = torch.as_tensor(coo.row.astype(np.int64))
        pairs_i = torch.as_tensor(coo.col.astype(np.int64))
        n_users, n_items = train.n_users, train.n_items
        adj = _torch_sparse(normalized_adjacency(train.matrix), dev) if c.n_layers else None

        user_emb = nn.Embedding(n_users, c.factors).to(dev)
        nn.init.normal_(user_emb.weight, std=0.1)
        modules: list[nn.Module] = [user_emb]
        if features is None:
            item_emb = nn.Embedding(n_items, c.factors).to(dev)
            nn.init.normal_(item_emb.weight, std=0.1)
            modules.append(item_emb)
            feats, mlp, residual = None, None, None
        else:
            feats = torch.as_tensor(np.asarray(features, dtype=np.float32), device=dev)
            mlp = nn.Sequential(
                nn.Dropout(c.dropout),
                nn.Linear(feats.shape[1], c.hidden),
                nn.LeakyReLU(),
                nn.Linear(c.hidden, c.factors),
            ).to(dev)
            modules.append(mlp)
            residual = None
            if c.id_residual:
                residual = nn.Embedding(n_items, c.factors).to(dev)
                nn.init.zeros_(residual.weight)
                modules.append(residual)
            item_emb = None

        def towers() -> tuple[torch.Tensor, torch.Tensor]:
            if feats is None:
                items0 = item_emb.weight  # type: ignore[union-attr]
            else:
                items0 = mlp(feats)  # type: ignore[misc]
                if residual is not None:
                    items0 = items0 + residual.weight
            if adj is None:
                return user_emb.weight, items0
            x = torch.cat([user_emb.weight, items0])
            layers = [x]
            for _ in range(c.n_layers):
                x = torch.sparse.mm(adj, x)
                layers.append(x)
            out = torch.stack(layers).mean(0)
            return out[:n_users], out[n_users:]

        params = [p for m in modules for p in m.parameters()]
        opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        seen = train.matrix
        # items without training interactions are never negatives: they would only be pushed
        # down, which is exactly wrong for a cold item a feature tower should rank by its text
        active = np.flatnonzero(train.item_popularity > 0)
        inactive = torch.as_tensor(train.item_popularity == 0, device=dev)
        n_rows = n_users if c.loss == "softmax" else len(pairs_u)
        n_batches = max(1, math.ceil(n_rows / c.batch_size))
        records = []
        for epoch in range(1, c.epochs + 1):
            t0 = time.perf_counter()
            for m in modules:
                m.train()
            total, count = 0.0, 0
            for idx in np.array_split(rng.permutation(n_rows), n_batches):
                users_f, items_f = towers()
                if c.loss == "softmax":
                    # every pair of a user shares that user's logits row, so the pairwise
                    # cross-entropy summed over a user's items is one row of log-softmax
                    # times the user's binary history: n_users x n_items logits per epoch
                    x = torch.as_tensor(seen[idx].toarray(), device=dev)
                    uu = F.normalize(users_f[torch.as_tensor(idx, device=dev)], dim=-1)
                    logits = uu @ F.normalize(items_f, dim=-1).T / c.temperature
                    logits = logits.masked_fill(inactive, -torch.inf)
                    n = float(x.sum())
                    log_p = F.log_softmax(logits, dim=-1).masked_fill(inactive, 0.0)  # no -inf*0
                    loss = -(log_p * x).sum() / max(n, 1.0)
                else:
                    idx_t = torch.as_tensor(idx)
                    u, i = pairs_u[idx_t].to(dev), pairs_i[idx_t].to(dev)
                    j = torch.as_tensor(active[rng.integers(0, len(active), len(idx))], device=dev)
                    diff = (users_f[u] * (items_f[i] - items_f[j])).sum(-1)
                    loss = -F.logsigmoid(diff).mean()
                    n = float(len(idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * n, count + int(n)
            records.append(
                {"epoch": epoch, "loss": total / max(1, count), "epoch_s": time.perf_counter() - t0}
            )
            log.info("%s: epoch %d loss %.4f (%.1fs)", self.name, epoch, records[-1]["loss"],
                     records[-1]["epoch_s"])  # fmt: skip
        for m in modules:
            m.eval()
        with torch.no_grad():
            users_f, items_f = towers()
            if c.loss == "softmax":
                users_f, items_f = F.normalize(users_f, dim=-1), F.normalize(items_f, dim=-1)
        as_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)  # noqa: E731
        return as_np(users_f), as_np(items_f), records

    def _score(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T
