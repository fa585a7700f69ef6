"""Training the content -> collaborative item map (model.nn.itemmap) after the backbone.

Per domain: the warm items are the old items with training interactions and content;
their targets are their vectors ``z_i`` on the full training input (what a bundle serves),
the users are the old users folded in from their training items (what a request gets).
A step takes a batch of (user, item) training pairs and minimises

    softmax loss of <z_u/|z_u|, g(x_i)> against the batch's other items' g(x_j)
    + distill_weight * |g(x_i) - z_i|^2

so a mapped vector both ranks like its item and sits at the scale of warm vectors (a cold
item competes with every warm item in the service). A tenth of the warm items (and their
pairs) is held back for early stopping. Held-out new items of the split are never used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.bridgefit import serving_embedders
from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import _group
from model.nn.config import ItemMapConfig
from model.nn.earlystop import BestState
from model.nn.foldin import DomainEmbedder
from model.nn.itemmap import ItemMaps, domain_key
from model.nn.micrec import MICRec
from model.training import domain_features

log = logging.getLogger(__name__)


def _loss(
    maps: ItemMaps,
    domain: str,
    zu: torch.Tensor,
    x: torch.Tensor,
    z: torch.Tensor,
    distill: float,
) -> torch.Tensor:
    g = maps(domain, x)
    logits = F.normalize(zu, dim=1) @ g.T
    loss = F.cross_entropy(logits, torch.arange(len(zu)))
    if distill > 0:
        loss = loss + distill * (g - z).pow(2).sum(dim=1).mean()
    return loss


@dataclass
class _DomainData:
    """One domain's fixed training inputs: user vectors, item features, item vectors."""

    zu_rows: np.ndarray  # [n_users] row of each user in zu (-1: not a training user)
    zu: torch.Tensor  # [m, d]
    x: torch.Tensor  # [n_items, D]
    z: torch.Tensor  # [n_items, d]

    def batch(self, p: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u, i = torch.as_tensor(self.zu_rows[p[:, 0]]), torch.as_tensor(p[:, 1])
        return self.zu[u], self.x[i], self.z[i]


def _held_loss(
    maps: ItemMaps, d: str, data: _DomainData, back: np.ndarray, cfg: ItemMapConfig
) -> float:
    if len(back) < 2:
        return 0.0
    with torch.no_grad():
        losses = [
            float(_loss(maps, d, *data.batch(back[b : b + cfg.batch_pairs]), cfg.distill_weight))
            for b in range(0, len(back) - 1, cfg.batch_pairs)
        ]
    return float(np.mean(losses))


def _fit_domain(
    maps: ItemMaps,
    d: str,
    data: _DomainData,
    pairs: np.ndarray,
    warm: np.ndarray,
    cfg: ItemMapConfig,
) -> dict[str, Any]:
    rng = np.random.default_rng(cfg.seed)
    warm_ids = np.flatnonzero(warm)
    is_back = np.zeros(len(warm), dtype=bool)
    is_back[rng.choice(warm_ids, max(1, len(warm_ids) // 10), replace=False)] = True
    train, back = pairs[~is_back[pairs[:, 1]]], pairs[is_back[pairs[:, 1]]]
    net = maps.maps[domain_key(d)]
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop, epochs = BestState(net, cfg.patience), 0
    for epoch in range(cfg.epochs):
        epochs = epoch + 1
        maps.train()
        order = train[rng.permutation(len(train))]
        for b in range(0, len(order) - 1, cfg.batch_pairs):
            loss = _loss(maps, d, *data.batch(order[b : b + cfg.batch_pairs]), cfg.distill_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        maps.eval()
        held = _held_loss(maps, d, data, back, cfg)
        if stop.update(held):
            break
    stop.restore()
    return {
        "warm_items": int(warm.sum()),
        "pairs": len(pairs),
        "epochs": epochs,
        "held_back_loss": stop.best,
        "trained": True,
    }


def fit_item_maps(
    model: MICRec,
    split: InductiveSplit,
    features: ItemFeatures | None,
    cfg: ItemMapConfig | None = None,
    *,
    embedders: dict[str, DomainEmbedder] | None = None,
) -> tuple[ItemMaps | None, dict[str, Any]]:
    """The item map of every domain with warm items that have content, and a report."""
    cfg = cfg or ItemMapConfig()
    if not cfg.enabled or features is None or not features.modalities:
        return None, {}
    mods = tuple(sorted(features.modalities))
    dims = tuple(features.modalities[m].dim for m in mods)
    torch.manual_seed(cfg.seed)
    maps = ItemMaps(mods, dims, model.config.dim, cfg.hidden, list(model.domains))
    # ``embedders``: the serving fold-in states when the caller already has them
    embedders = embedders or serving_embedders(model, split, features)
    report: dict[str, Any] = {}
    for d in model.domains:
        t0 = time.perf_counter()
        ds = split.domains[d]
        raw, masks = domain_features(features, ds.item_ids, mods)
        has = np.any(np.stack([masks[m] for m in mods], axis=1), axis=1)
        pairs = ds.train_old()
        warm = np.zeros(ds.n_items, dtype=bool)
        warm[np.unique(pairs[:, 1])] = True
        warm &= has
        pairs = pairs[warm[pairs[:, 1]]]
        if len(pairs) < 16:
            report[d] = {"pairs": len(pairs), "trained": False}
            continue
        users = np.unique(pairs[:, 0])
        zu_rows = np.full(ds.n_users, -1)
        zu_rows[users] = np.arange(len(users))
        with torch.no_grad():
            data = _DomainData(
                zu_rows,
                embedders[d].embed_users(_group(ds.train, users)),
                maps.inputs(raw, ds.n_items),
                embedders[d].item_vectors(),
            )
        rec = _fit_domain(maps, d, data, pairs, warm, cfg)
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        report[d] = rec
        log.info("item map %s: %s", d, rec)
    maps.eval()
    if not any(r.get("trained") for r in report.values()):
        return None, report
    return maps, report
