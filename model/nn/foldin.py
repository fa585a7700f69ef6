"""Fold-in: embed users and items of a domain without the training graph.

After a forward pass over a domain's input graph, the per-layer item states E^(l)_i, item
degrees and content vectors h_i are all a new user needs: its layer-0 is built from its
template items and content (exactly as in training) and its layer l+1 is
sum_i E^(l)_i / sqrt(d_u d_i) over its items. For a user that is already a node of the
graph this is *exactly* the full forward pass; for an online user it is the full rebuild
minus the user's own (tiny) effect on the item states and degrees (measured in
tests/model/test_foldin.py). These tensors are what a bundle ships per domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.nn.blend import profiles_of
from model.nn.bridge import Bridges, HistoryItems
from model.nn.itemmap import ItemMaps
from model.nn.micrec import DomainInputs, MICRec
from model.nn.modules import ModalityAggregator

LOW_DEGREE_MAX = 50
"""Items with more interactions keep their collaborative vector whatever k: their mix
weight k / (k + d) is already small for the pseudo-counts the blend fit tries."""


@dataclass
class DomainEmbedder:
    """Serving state of one domain.

    item_layers: [L+1, n_items, d]; item_degree: [n_items]; item_content: [n_items, d] or
    None (no content); item_template: [n_items, d] = T row of template items, 0 elsewhere;
    is_template: [n_items] float; user_token / item_token: [d].
    """

    domain: str
    alpha: float
    gamma: float
    item_layers: torch.Tensor
    item_degree: torch.Tensor
    item_template: torch.Tensor
    is_template: torch.Tensor
    user_token: torch.Tensor
    item_token: torch.Tensor
    item_content: torch.Tensor | None
    user_content: bool = True
    """Users get the content preference term (MICRecConfig.user_content)."""
    cold_scale: float = 1.0
    """Multiplier of isolated (cold) items' vectors, see ``calibrate_cold_scale``."""
    mapped_rows: torch.Tensor | None = None
    """[m] rows of isolated items whose vector comes from the item map (model.nn.itemmap)
    instead of their layer-0 vector; None without an item map."""
    mapped: torch.Tensor | None = None
    """[m, d] the item map's vectors of ``mapped_rows``."""
    low_rows: torch.Tensor | None = None
    """[l] rows of items with 1..LOW_DEGREE_MAX interactions and content: they get part of
    their item-map vector (``low_degree_k``); None without an item map or with k = 0."""
    low_mapped: torch.Tensor | None = None
    """[l, d] the item map's vectors of ``low_rows``."""
    low_degree_k: float = 0.0
    """Pseudo-count of the low-degree mix (ItemMaps.low_degree_k of this domain)."""

    @property
    def n_layers(self) -> int:
        return self.item_layers.shape[0] - 1

    @property
    def n_items(self) -> int:
        return self.item_layers.shape[1]

    @property
    def dim(self) -> int:
        return self.item_layers.shape[2]

    def item_vectors(
        self, low_degree_k: float | None = None, rows: slice | None = None
    ) -> torch.Tensor:
        """z_i = mean of the item's layers: [n_items, d]; isolated items are scaled by
        ``cold_scale`` exactly as ``new_item_vector`` scales a registered item. With an
        item map, isolated items get their mapped vector and items with few interactions
        a mix: (d z_i + k m_i) / (k + d) for degree d and pseudo-count k
        (``low_degree_k``, or the argument: the blend fit tries several). ``rows``: only
        the items of that contiguous range (step 1), the same values as those rows of the
        whole (the serving cache builds a large domain in chunks)."""
        lo, hi = (0, self.n_items) if rows is None else rows.indices(self.n_items)[:2]
        z = self.item_layers[:, lo:hi].mean(dim=0)
        degree = self.item_degree[lo:hi]
        if self.cold_scale != 1.0:
            z = torch.where((degree == 0).unsqueeze(1), z * self.cold_scale, z)
        if self.mapped_rows is not None and self.mapped is not None and len(self.mapped_rows):
            inside = (self.mapped_rows >= lo) & (self.mapped_rows < hi)
            z = z.clone()
            z[self.mapped_rows[inside] - lo] = self.mapped[inside].to(z.dtype)
        k = self.low_degree_k if low_degree_k is None else low_degree_k
        if k > 0 and self.low_rows is not None and self.low_mapped is not None:
            inside = (self.low_rows >= lo) & (self.low_rows < hi)
            local = self.low_rows[inside] - lo
            if len(local):
                d = degree[local].to(z.dtype).unsqueeze(1)
                z = z.clone()
                z[local] = (d * z[local] + k * self.low_mapped[inside].to(z.dtype)) / (k + d)
        return z

    def attach_item_map(
        self, maps: ItemMaps, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]
    ) -> None:
        """Give every isolated item with content its item-map vector (``features``: the
        map's modalities for all of this domain's items)."""
        has = np.zeros(self.n_items, dtype=bool)
        for m in maps.modalities:
            if m in masks:
                has |= np.asarray(masks[m], dtype=bool)
        deg = self.item_degree.cpu().numpy()
        rows = np.flatnonzero(has & (deg == 0))
        sub = {m: f[rows] for m, f in features.items() if m in maps.modalities}
        self.mapped_rows = torch.as_tensor(rows, dtype=torch.int64)
        self.mapped = maps.map(self.domain, sub, len(rows))
        # mapped vectors of low-degree items: only what the mix can use, computed once
        low = np.flatnonzero(has & (deg >= 1) & (deg <= LOW_DEGREE_MAX))
        sub = {m: f[low] for m, f in features.items() if m in maps.modalities}
        self.low_rows = torch.as_tensor(low, dtype=torch.int64)
        self.low_mapped = maps.map(self.domain, sub, len(low))
        self.low_degree_k = float(maps.low_degree_k.get(self.domain, 0.0))

    def _scale(self, c: torch.Tensor) -> torch.Tensor:
        return c.clamp_min(1.0).pow(self.alpha / 2 - 1)

    def history_items(self, histories: Sequence[np.ndarray]) -> HistoryItems:
        """The users' distinct graph items as the personalised cross-domain maps read them
        (model.nn.bridge): each item's mean of layers, without the cold-item scaling or
        item maps (the history items of a user are bought, so warm)."""
        cols = [np.unique(np.asarray(h, dtype=np.int64)) for h in histories]
        owner = [np.full(len(c), k, dtype=np.int64) for k, c in enumerate(cols)]
        empty = np.empty(0, dtype=np.int64)
        idx = torch.as_tensor(
            np.concatenate(cols) if cols else empty, device=self.item_layers.device
        )
        return HistoryItems(
            self.item_layers[:, idx].mean(dim=0),
            torch.as_tensor(np.concatenate(owner) if owner else empty),
            len(histories),
        )

    def embed_users(
        self,
        histories: Sequence[np.ndarray],
        extra_content: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Users from their items in this domain: [b, d].

        histories[k]: local item ids (int64, duplicates ignored); extra_content[k]: [m, d]
        content vectors h of items that are not nodes of the graph (registered after
        training) or None. A user with neither gets only the user token.
        """
        b = len(histories)
        rows = (
            np.concatenate([np.full(len(np.unique(h)), k) for k, h in enumerate(histories)])
            if b
            else np.array([])
        )
        cols = (
            np.concatenate([np.unique(np.asarray(h, dtype=np.int64)) for h in histories])
            if b
            else np.array([])
        )
        dev = self.item_layers.device
        idx = torch.as_tensor(np.stack([rows, cols]).astype(np.int64), device=dev).reshape(2, -1)
        # Rows and columns are built here from known item rows: the invariant check would only
        # cost time (and its implicit default prints a warning on a server's first request).
        hist = torch.sparse_coo_tensor(
            idx, torch.ones(idx.shape[1], device=dev), (b, self.n_items), check_invariants=False
        ).coalesce()
        n_hist = (
            torch.sparse.sum(hist, dim=1).to_dense() if idx.shape[1] else torch.zeros(b, device=dev)
        )
        c = hist_mv(hist, self.is_template) + 1
        e0 = self._scale(c).unsqueeze(1) * (
            torch.sparse.mm(hist, self.item_template) + self.user_token
        )
        if self.item_content is not None and self.user_content:
            psum = torch.sparse.mm(hist, self.item_content)
            n_all = n_hist.clone()
            if extra_content is not None:
                for k, ex in enumerate(extra_content):
                    if ex is not None and len(ex):
                        psum[k] = psum[k] + ex.sum(dim=0)
                        n_all[k] += len(ex)
            e0 = e0 + self.gamma * self._scale(n_all + 1).unsqueeze(1) * psum
        # LightGCN rows of A_hat for the user: 1/sqrt(d_u d_i) over its graph items. The
        # 1/sqrt(d_i) factors sit on the history's nonzeros, so a layer costs O(|history| d)
        # instead of scaling the whole [n_items, d] layer state per call (16 ms per user at
        # 1e5 items, bench/serve.py).
        inv_du = n_hist.clamp_min(1.0).rsqrt().unsqueeze(1)
        hidx = hist.indices()
        inv_di = self.item_degree[hidx[1]].clamp_min(1.0).rsqrt()
        hist_w = torch.sparse_coo_tensor(
            hidx, inv_di, hist.shape, is_coalesced=True, check_invariants=False
        )
        layers = [e0]
        for layer in range(self.n_layers):
            layers.append(inv_du * torch.sparse.mm(hist_w, self.item_layers[layer]))
        return torch.stack(layers).mean(dim=0)

    def content_only_user(self, h: torch.Tensor) -> torch.Tensor:
        """A user with no graph items in this domain whose content comes from items ``h``
        ([m, d], e.g. their items in other domains, since projections are shared): [d]."""
        p = torch.zeros(self.dim, device=self.item_layers.device)
        if len(h) and self.item_content is not None and self.user_content:
            p = self._scale(torch.tensor(float(len(h) + 1))) * h.sum(dim=0)
        e0 = self.user_token + self.gamma * p
        return e0 / (self.n_layers + 1)  # no edges: layers 1..L are zero

    def new_item_vector(self, h: torch.Tensor | None) -> torch.Tensor:
        """A registered item with no interactions yet: token (c = 1) plus content, [d]."""
        e0 = self.item_token.clone()
        if h is not None and self.item_content is not None:
            e0 = e0 + self.gamma * h
        return self.cold_scale * e0 / (self.n_layers + 1)

    def calibrate_cold_scale(self) -> float:
        """Scale that gives content-only item vectors the norm of low-degree warm items.

        A cold item has only layer 0 (no edges, layers 1..L are zero), so its z is several
        times shorter than a warm item's and inner-product scores push it below almost
        every warm item although its direction is informative. The scale is the median
        norm of items with 1-5 interactions over the median norm of the content-only
        vectors of those same items (measured on the cold_items_vs_all slice).
        """
        if self.item_content is None:
            return 1.0
        low = (self.item_degree >= 1) & (self.item_degree <= 5)
        if int(low.sum()) < 5:
            low = self.item_degree >= 1
        if not bool(low.any()):
            return 1.0
        warm = self.item_layers.mean(dim=0)[low].norm(dim=1).median()
        cold = (
            ((self.item_token + self.gamma * self.item_content[low]) / (self.n_layers + 1))
            .norm(dim=1)
            .median()
        )
        self.cold_scale = float(warm / cold.clamp_min(1e-12))
        return self.cold_scale


def hist_mv(hist: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Sparse [b, n] @ dense [n] -> [b]."""
    return torch.sparse.mm(hist, v.unsqueeze(1)).squeeze(1)


@torch.no_grad()
def build_embedder(
    model: MICRec, domain: str, inp: DomainInputs, *, calibrate: bool = True
) -> DomainEmbedder:
    """Run the full forward pass on ``inp`` and keep what fold-in needs."""
    model.eval()
    _, _, layers = model(domain, inp)
    item_layers = torch.stack([layer[inp.n_users :] for layer in layers])
    tmap = model.templates[domain]
    table = model.table(domain).detach()
    rows = torch.as_tensor(tmap.item_rows, device=table.device)
    is_tpl = (rows >= 0).float()
    item_template = table[rows.clamp_min(0)] * is_tpl.unsqueeze(1)
    h = model.item_content(inp)
    emb = DomainEmbedder(
        domain=domain,
        alpha=float(model.alpha),
        gamma=float(model.domain_gamma(domain).detach()),
        item_layers=item_layers.detach(),
        item_degree=inp.item_degree.to(table.device),
        item_template=item_template,
        is_template=is_tpl,
        user_token=table[tmap.user_token].clone(),
        item_token=table[tmap.item_token].clone(),
        item_content=None if h is None else h.detach(),
        user_content=model.config.user_content,
    )
    if calibrate:
        emb.calibrate_cold_scale()
    return emb


@torch.no_grad()
def project_content(
    aggregator: ModalityAggregator | None,
    features: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
) -> torch.Tensor | None:
    """h for new items from raw encoder outputs ([m, dim_m] per modality): [m, d] or None."""
    if aggregator is None:
        return None
    n = next(iter(features.values())).shape[0] if features else 0
    feats, ms = {}, {}
    for mod in aggregator.modalities:
        lin = aggregator.proj[mod]
        assert isinstance(lin, torch.nn.Linear)
        feats[mod] = features.get(mod, torch.zeros(n, lin.in_features))
        ms[mod] = masks.get(mod, torch.zeros(n, dtype=torch.bool))
    return aggregator(feats, ms)


class MultiDomainEmbedder:
    """Embeds a user in any domain from item histories in all domains.

    In-domain history -> fold-in ("inductive"); history only elsewhere -> the cross-domain
    rule ("cross_domain"); nothing -> user token only ("none", callers fall back).
    ``bridges``: the trained cross-domain maps the rule "bridge" uses (model.nn.bridge);
    ``content``: every domain's blend content rows ([n_items, r]), which maps that read
    content profiles need (a domain without them gives zero profiles).
    """

    def __init__(
        self,
        embedders: dict[str, DomainEmbedder],
        rule: str = "content+aligned",
        bridges: Bridges | None = None,
        content: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.embedders = embedders
        self.rule = rule
        self.bridges = bridges
        self.content = dict(content or {})

    def embed(
        self,
        domain: str,
        histories: dict[str, np.ndarray],
        extra_content: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, str]:
        """histories: domain -> local item ids; extra_content: domain -> [m, d] content of
        registered (non-graph) items in the history. Returns ([d], method)."""
        z, methods = self.embed_many(domain, [histories], [extra_content or {}])
        return z[0], methods[0]

    def embed_many(
        self,
        domain: str,
        histories: Sequence[dict[str, np.ndarray]],
        extra_content: Sequence[dict[str, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[str]]:
        """:meth:`embed` for b users at once: ([b, d], b methods). Users are grouped by
        method and each group is one batched fold-in (a call per user costs ~4x more per
        user in dispatch than the arithmetic, docs/results/serve-steps/batch.md)."""
        target = self.embedders[domain]
        empty = np.empty(0, dtype=np.int64)
        own: list[int] = []
        cross: list[int] = []
        methods: list[str] = []
        for k, (hist, extra) in enumerate(zip(histories, extra_content, strict=True)):
            own_extra = extra.get(domain)
            if len(hist.get(domain, empty)) or (own_extra is not None and len(own_extra)):
                own.append(k)
                methods.append("inductive")
            elif any(d != domain and (len(hist.get(d, ())) or d in extra) for d in self.embedders):
                cross.append(k)
                methods.append("cross_domain")
            else:
                methods.append("none")
        out = torch.zeros(len(histories), target.dim, device=target.item_layers.device)
        if own:
            out[own] = target.embed_users(
                [histories[k].get(domain, empty) for k in own],
                [extra_content[k].get(domain) for k in own],
            )
        if cross:
            others = [
                {
                    d: histories[k].get(d, empty)
                    for d in self.embedders
                    if d != domain and (len(histories[k].get(d, ())) or d in extra_content[k])
                }
                for k in cross
            ]
            out[cross] = self.cross_domain(domain, others, [dict(extra_content[k]) for k in cross])
        none = [k for k, m in enumerate(methods) if m == "none"]
        if none:
            out[none] = target.embed_users([empty])[0]
        return out, methods

    def cross_domain(
        self,
        domain: str,
        histories: list[dict[str, np.ndarray]],
        extra_content: list[dict[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Batch of users served in ``domain`` from their other domains only: [b, d]."""
        target = self.embedders[domain]
        out = torch.zeros(len(histories), target.dim, device=target.item_layers.device)
        if self.rule == "bridge":
            return self._bridged(domain, histories, out)
        for d, emb in self.embedders.items():
            if d == domain:
                continue
            idx = [k for k, h in enumerate(histories) if len(h.get(d, ()))]
            if not idx:
                continue
            hs = [histories[k][d] for k in idx]
            if "aligned" in self.rule:
                # the other domain's representation, pulled toward this domain's by L_CD
                out[idx] += emb.embed_users(hs)
        if "content" in self.rule:
            for k, h in enumerate(histories):
                parts = [
                    self.embedders[d].item_content[torch.as_tensor(np.unique(items))]  # type: ignore[index]
                    for d, items in h.items()
                    if d != domain and len(items) and self.embedders[d].item_content is not None
                ]
                if extra_content:
                    parts += [v for d, v in extra_content[k].items() if d != domain]
                h_all = torch.cat(parts) if parts else torch.zeros(0, target.dim)
                out[k] += target.content_only_user(h_all)
        return out

    def _bridged(
        self, domain: str, histories: list[dict[str, np.ndarray]], out: torch.Tensor
    ) -> torch.Tensor:
        """The mean over a user's other domains of their mapped fold-in vectors (zero for a
        user whose other-domain history holds only registered items)."""
        count = torch.zeros(len(histories), 1, device=out.device)
        for d, emb in self.embedders.items():
            if d == domain or self.bridges is None or not self.bridges.has(d, domain):
                continue
            idx = [k for k, h in enumerate(histories) if len(h.get(d, ()))]
            if idx:
                hs = [histories[k][d] for k in idx]
                prof = None
                if self.bridges.content_dim:
                    c = self.content.get(d)
                    prof = (
                        profiles_of(c, hs)
                        if c is not None
                        else torch.zeros(len(idx), self.bridges.content_dim)
                    )
                items = emb.history_items(hs) if self.bridges.personal else None
                out[idx] += self.bridges.map(d, domain, emb.embed_users(hs), prof, items)
                count[idx] += 1
        return out / count.clamp_min(1.0)
