"""Training the cross-domain mapping (model.nn.bridge) after the backbone.

For every ordered pair of domains (A, B): the anchors are B's old users that also have
training interactions in A, minus B's pseudo-cold validation users
(``InductiveSplit.pseudo_cold_users``: validation judges the mapping on them, so it never
trains on them). Each anchor's input is their fold-in from their A items (the vector the
service computes for a request); their target is the set of their B training items,
scored against every item of B by ``scale * <f(x)/|f(x)|, z_i>`` (the model part of the
served score, model.nn.blend) with a softmax over B's catalogue. A tenth of the anchors is
held back for early stopping. The backbone is frozen: only the maps learn.

With ``[bridge] content`` and a content reducer (the blend's: one PCA for both), each
anchor's input adds their content profile in A (model.nn.bridge), computed by
``profiles_of`` exactly as the service computes it (model.nn.foldin).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import _group
from model.nn.blend import ContentReducer, DomainBlend, profiles_of
from model.nn.bridge import Bridges, DomainMap, HistoryItems
from model.nn.config import BridgeConfig
from model.nn.earlystop import BestState
from model.nn.foldin import DomainEmbedder, build_embedder
from model.nn.micrec import DomainInputs, MICRec
from model.training import domain_features

log = logging.getLogger(__name__)


def serving_embedders(
    model: MICRec, split: InductiveSplit, features: ItemFeatures | None
) -> dict[str, DomainEmbedder]:
    """Each domain's fold-in state on the full training input (what a bundle serves)."""
    dev = next(model.parameters()).device
    out = {}
    for d in model.domains:
        ds = split.domains[d]
        feats, masks = domain_features(features, ds.item_ids, tuple(model.modalities))
        inp = DomainInputs.build(
            model.templates[d], ds.n_users, ds.n_items, ds.train, feats, masks, device=dev
        )
        out[d] = build_embedder(model, d, inp)
    return out


def content_rows(
    reducer: ContentReducer, split: InductiveSplit, features: ItemFeatures | None
) -> dict[str, torch.Tensor]:
    """Every domain's items' content rows ``c`` ([n_items, r], the blend's, unscaled)."""
    out = {}
    for d, ds in split.domains.items():
        raw = domain_features(features, ds.item_ids, reducer.modalities)[0]
        out[d] = reducer.reduce(raw, ds.n_items)
    return out


def _anchors(split: InductiveSplit, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """(dst local ids, src local ids) of the anchors of src -> dst."""
    s, t = split.domains[src], split.domains[dst]
    in_src = {s.user_ids[u]: u for u in np.unique(s.train[:, 0])} if len(s.train) else {}
    held = set(split.pseudo_cold_users(dst).tolist())
    own = np.unique(t.train[:, 0]) if len(t.train) else np.empty(0, dtype=np.int64)
    pairs = [
        (int(u), in_src[t.user_ids[u]])
        for u in own
        if u < t.n_old_users and int(u) not in held and t.user_ids[u] in in_src
    ]
    if not pairs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    a = np.asarray(pairs, dtype=np.int64)
    return a[:, 0], a[:, 1]


def _loss(
    f: DomainMap,
    x: torch.Tensor,
    prof: torch.Tensor | None,
    hist: HistoryItems | None,
    items: torch.Tensor,
    positives: list[np.ndarray],
    target: torch.Tensor | None,
    mse_weight: float,
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over users of the mean softmax loss of their positives (+ EMCDR's MSE); with
    ``prior`` ([n_items]) the logits add ``prior_weight * prior`` (learned)."""
    out = F.normalize(f(x, prof, hist), dim=1)
    logits = f.log_scale.exp() * (out @ items.T)
    if prior is not None:
        logits = logits + f.prior_weight * prior
    logp = torch.log_softmax(logits, dim=1)
    rows = np.concatenate([np.full(len(p), k) for k, p in enumerate(positives)])
    cols = np.concatenate(positives)
    weight = torch.as_tensor(np.concatenate([np.full(len(p), 1.0 / len(p)) for p in positives]))
    loss = -(logp[torch.as_tensor(rows), torch.as_tensor(cols)] * weight.float()).sum() / len(x)
    if target is not None and mse_weight > 0:
        loss = loss + mse_weight * (out - F.normalize(target, dim=1)).pow(2).sum(dim=1).mean()
    return loss


@dataclass
class _PairData:
    """One pair's anchors: fold-in vectors x [a, d], content profiles [a, r] or None, their
    items in A (personal maps) or None, B's item vectors [n, d], each anchor's B items,
    their own B vectors [a, d] (EMCDR's regression target), the prior [n] or None."""

    x: torch.Tensor
    prof: torch.Tensor | None
    hist: HistoryItems | None
    items: torch.Tensor
    positives: list[np.ndarray]
    target: torch.Tensor
    prior: torch.Tensor | None

    def loss(self, f: DomainMap, rows: np.ndarray, mse_weight: float) -> torch.Tensor:
        return _loss(
            f,
            self.x[rows],
            None if self.prof is None else self.prof[rows],
            None if self.hist is None else self.hist.take(rows),
            self.items,
            [self.positives[k] for k in rows],
            self.target[rows],
            mse_weight,
            self.prior,
        )


PERSONAL = ("characteristic.", "meta.")
"""Parameter name prefixes of a map's personal part (model.nn.bridge.DomainMap)."""


def _train(
    f: DomainMap,
    params: list[torch.nn.Parameter],
    data: _PairData,
    train: np.ndarray,
    back: np.ndarray,
    cfg: BridgeConfig,
    gen: np.random.Generator,
    start: float | None = None,
) -> tuple[int, float]:
    """Adam on ``params`` only, early stopping on the held-back anchors ``back``; with
    ``start`` (their loss now) the result is never worse than the parameters it began
    from. Returns (epochs run, best held-back loss)."""
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop, epochs = BestState(f, cfg.patience), 0
    if start is not None:
        stop.start(start)
    for epoch in range(cfg.epochs):
        epochs = epoch + 1
        f.train()
        train = train[gen.permutation(len(train))]
        for b in range(0, len(train), cfg.batch_users):
            loss = data.loss(f, train[b : b + cfg.batch_users], cfg.mse_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if not len(back):
            continue
        f.eval()
        with torch.no_grad():
            held = float(data.loss(f, back, 0.0))
        if stop.update(held):
            break
    stop.restore()
    f.eval()
    return epochs, stop.best


def _fit_pair(f: DomainMap, data: _PairData, cfg: BridgeConfig) -> dict[str, Any]:
    """Train one map. A personal map trains in two stages, as PTUPCDR trains its
    meta-network on trained embeddings: the shared map first (the personal part is zero
    then), then only the personal part, from the shared map's best, so it personalises
    only as far as it lowers the held-back anchors' loss."""
    gen = np.random.default_rng(cfg.seed)
    n = len(data.x)
    order = gen.permutation(n)
    n_back = max(1, n // 10) if n >= 20 else 0
    back, train = order[:n_back], order[n_back:]
    named = list(f.named_parameters())
    shared = [p for name, p in named if not name.startswith(PERSONAL)]
    personal = [p for name, p in named if name.startswith(PERSONAL)]
    epochs, best = _train(f, shared, data, train, back, cfg, gen)
    rec: dict[str, Any] = {
        "anchors": n,
        "held_back": int(n_back),
        "epochs": epochs,
        "held_back_loss": best,
        "prior_weight": float(f.prior_weight.detach()),
    }
    if personal and n_back:
        rec["shared_held_back_loss"] = best
        rec["personal_epochs"], rec["held_back_loss"] = _train(
            f, personal, data, train, back, cfg, gen, start=best
        )
    return rec


def fit_bridges(
    model: MICRec,
    split: InductiveSplit,
    features: ItemFeatures | None,
    cfg: BridgeConfig | None = None,
    *,
    embedders: dict[str, DomainEmbedder] | None = None,
    content: dict[str, torch.Tensor] | None = None,
) -> tuple[Bridges | None, dict[str, Any]]:
    """The maps of every ordered domain pair with anchors, and a report per pair.

    ``content``: every domain's content rows (``content_rows``); the maps read content
    profiles when ``cfg.content`` is on and it is given. None (and an empty report) with
    the bridge disabled or fewer than two domains."""
    cfg = cfg or BridgeConfig()
    if not cfg.enabled or len(model.domains) < 2:
        return None, {}
    torch.manual_seed(cfg.seed)
    # ``embedders``: the serving fold-in states when the caller already has them
    embedders = embedders or serving_embedders(model, split, features)
    pairs = [(s, t) for s in model.domains for t in model.domains if s != t]
    r = int(next(iter(content.values())).shape[1]) if cfg.content and content else 0
    bridges = Bridges(
        model.config.dim,
        cfg.hidden,
        pairs,
        content_dim=r,
        personal=cfg.personal,
        ensemble=cfg.ensemble,
    )
    report: dict[str, Any] = {}
    for src, dst in pairs:
        t0 = time.perf_counter()
        dst_users, src_users = _anchors(split, src, dst)
        key = f"{src}->{dst}"
        if len(dst_users) < 2:
            report[key] = {"anchors": len(dst_users), "trained": False}
            continue
        with torch.no_grad():
            src_hist = _group(split.domains[src].train, src_users)
            x = embedders[src].embed_users(src_hist)
            prof = profiles_of(content[src], src_hist) if r and content else None
            hist = embedders[src].history_items(src_hist) if cfg.personal else None
            own = _group(split.domains[dst].train, dst_users)
            target = embedders[dst].embed_users(own)
            items = embedders[dst].item_vectors()
        prior = DomainBlend.prior_of(embedders[dst].item_degree.cpu()) if cfg.with_prior else None
        data = _PairData(x.detach(), prof, hist, items.detach(), own, target.detach(), prior)
        members = [_fit_pair(f, data, cfg) for f in bridges.pair_maps(src, dst)]
        rec = members[0]
        if len(members) > 1:
            rec["members_held_back_loss"] = [m["held_back_loss"] for m in members]
        rec.update(trained=True, seconds=round(time.perf_counter() - t0, 2))
        report[key] = rec
        log.info("bridge %s: %s", key, rec)
    bridges.eval()
    return bridges, report
