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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import _group
from model.nn.blend import ContentReducer, DomainBlend, profiles_of
from model.nn.bridge import Bridges, DomainMap, HistoryItems, pair_key
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


def _fit_pair(
    f: DomainMap,
    x: torch.Tensor,
    prof: torch.Tensor | None,
    hist: HistoryItems | None,
    items: torch.Tensor,
    positives: list[np.ndarray],
    target: torch.Tensor,
    cfg: BridgeConfig,
    prior: torch.Tensor | None,
) -> dict[str, Any]:
    gen = np.random.default_rng(cfg.seed)
    order = gen.permutation(len(x))
    n_back = max(1, len(x) // 10) if len(x) >= 20 else 0
    back, train = order[:n_back], order[n_back:]
    opt = torch.optim.Adam(f.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stop, epochs = BestState(f, cfg.patience), 0
    for epoch in range(cfg.epochs):
        epochs = epoch + 1
        f.train()
        train = train[gen.permutation(len(train))]
        for b in range(0, len(train), cfg.batch_users):
            idx = train[b : b + cfg.batch_users]
            pos = [positives[k] for k in idx]
            p = None if prof is None else prof[idx]
            h = None if hist is None else hist.take(idx)
            loss = _loss(f, x[idx], p, h, items, pos, target[idx], cfg.mse_weight, prior)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if not n_back:
            continue
        f.eval()
        with torch.no_grad():
            pos = [positives[k] for k in back]
            p = None if prof is None else prof[back]
            h = None if hist is None else hist.take(back)
            held = float(_loss(f, x[back], p, h, items, pos, target[back], 0.0, prior))
        if stop.update(held):
            break
    stop.restore()
    f.eval()
    return {
        "anchors": len(x),
        "held_back": int(n_back),
        "epochs": epochs,
        "held_back_loss": stop.best,
        "prior_weight": float(f.prior_weight.detach()),
    }


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
    use_content = cfg.content and content is not None and bool(content)
    r = int(next(iter(content.values())).shape[1]) if use_content and content else 0
    bridges = Bridges(model.config.dim, cfg.hidden, pairs, content_dim=r, personal=cfg.personal)
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
        f = bridges.maps[pair_key(src, dst)]
        assert isinstance(f, DomainMap)
        prior = DomainBlend.prior_of(embedders[dst].item_degree.cpu()) if cfg.with_prior else None
        rec = _fit_pair(f, x.detach(), prof, hist, items.detach(), own, target.detach(), cfg, prior)
        rec.update(trained=True, seconds=round(time.perf_counter() - t0, 2))
        report[key] = rec
        log.info("bridge %s: %s", key, rec)
    bridges.eval()
    return bridges, report
