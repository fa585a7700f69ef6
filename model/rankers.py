"""Rankers for the evaluation pipeline: MICRec (and ablations), INMO, LightGCN, popular,
content kNN. Each implements ``model.evaluation.Ranker``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from model.data.split import InductiveSplit
from model.encoders.base import ItemFeatures
from model.evaluation import Scorer, _group
from model.nn.blend import Blend, DomainBlend, profile, profiles_of
from model.nn.bridge import Bridges
from model.nn.config import MICRecConfig
from model.nn.copurchase import CoPurchase
from model.nn.foldin import MultiDomainEmbedder, build_embedder
from model.nn.graph import TemplateMap
from model.nn.itemmap import ItemMaps
from model.nn.micrec import DomainInputs, MICRec, domain_key
from model.nn.modules import propagate
from model.training import domain_features


def _local_maps(split: InductiveSplit) -> dict[str, dict[str, int]]:
    return {d: {u: k for k, u in enumerate(s.user_ids)} for d, s in split.domains.items()}


def other_domain_histories(
    split: InductiveSplit,
    domain: str,
    users: np.ndarray,
    inputs: dict[str, np.ndarray],
    maps: dict[str, dict[str, int]],
) -> list[dict[str, np.ndarray]]:
    """For users of ``domain`` (local ids): their input items in every other domain."""
    raw = [split.domains[domain].user_ids[u] for u in users]
    out: list[dict[str, np.ndarray]] = [{} for _ in users]
    for d in split.domains:
        if d == domain:
            continue
        local = np.array([maps[d].get(r, -1) for r in raw])
        ok = np.flatnonzero(local >= 0)
        if not len(ok):
            continue
        for k, items in zip(ok, _group(inputs[d], local[ok]), strict=True):
            if len(items):
                out[k][d] = items
    return out


class MICRecRanker:
    """A trained MICRec (any ablation, INMO included) scored through fold-in, with the
    fitted score blend (model.nn.blend), cross-domain maps (model.nn.bridge) and item maps
    (model.nn.itemmap) when given: exactly what the service ranks. ``cross_domain_rule``
    overrides the model's. ``graph`` (domain -> local pairs): the graph item vectors and
    the blend's prior are computed from, instead of the bound inputs (which then give
    users' histories only): a bundle's own training graph, as the service serves it
    (model/retrain.py)."""

    def __init__(
        self,
        name: str,
        model: MICRec,
        split: InductiveSplit,
        features: ItemFeatures | None,
        *,
        calibrate_cold: bool = True,
        blend: Blend | None = None,
        bridges: Bridges | None = None,
        cross_domain_rule: str | None = None,
        item_maps: ItemMaps | None = None,
        graph: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self.graph = graph
        self.bridges = bridges
        self.item_maps = item_maps
        self.map_feats = (
            {
                d: domain_features(features, split.domains[d].item_ids, item_maps.modalities)
                for d in model.domains
            }
            if item_maps is not None
            else {}
        )
        self.cross_domain_rule = cross_domain_rule or model.config.cross_domain_rule
        self.calibrate_cold = calibrate_cold
        self.model = model
        self.split = split
        self.blend = blend
        self.maps = _local_maps(split)
        self.feats = {
            d: domain_features(features, split.domains[d].item_ids, tuple(model.modalities))
            for d in model.domains
        }
        # the blend's content part reads every modality its reducer was fitted on
        reducer = blend.reducer if blend is not None else None
        self.raw = {
            d: domain_features(
                features, split.domains[d].item_ids, reducer.modalities if reducer else ()
            )[0]
            for d in model.domains
        }

    def serves(self, slice_name: str) -> bool:
        return True

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        m = self.model
        dev = next(m.parameters()).device
        graph = self.graph if self.graph is not None else inputs
        embedders = {}
        for d in m.domains:
            ds = self.split.domains[d]
            inp = DomainInputs.build(
                m.templates[d], ds.n_users, ds.n_items, graph[d], *self.feats[d], device=dev
            )
            embedders[d] = build_embedder(m, d, inp, calibrate=self.calibrate_cold)
            if self.item_maps is not None:
                embedders[d].attach_item_map(self.item_maps, *self.map_feats[d])
        blends = {}
        if self.blend is not None:
            for d in m.domains:
                degree = torch.from_numpy(
                    np.bincount(graph[d][:, 1], minlength=self.split.domains[d].n_items)
                )
                blends[d] = self.blend.for_domain(d, degree, self.raw[d])
        content = {d: b.content for d, b in blends.items() if b.content is not None}
        md = MultiDomainEmbedder(embedders, self.cross_domain_rule, self.bridges, content)
        copurchase = None
        if self.blend is not None and self.blend.copurchase is not None:
            # fitted on the graph scored with, as the item vectors are (a bundle's: its own)
            copurchase = self.blend.copurchase.on_graph(
                {
                    d: (self.split.domains[d].user_ids, self.split.domains[d].n_items, graph[d])
                    for d in m.domains
                }
            )
        return _FoldInScorer(self, md, inputs, blends, copurchase)


class _FoldInScorer:
    def __init__(
        self,
        ranker: MICRecRanker,
        md: MultiDomainEmbedder,
        inputs: dict[str, np.ndarray],
        blends: dict[str, DomainBlend],
        copurchase: CoPurchase | None = None,
    ) -> None:
        self.r, self.md, self.inputs, self.blends = ranker, md, inputs, blends
        self.copurchase = copurchase
        self.items = {d: e.item_vectors() for d, e in md.embedders.items()}

    @torch.no_grad()
    def parts(
        self, domain: str, users: np.ndarray, *, cross_domain: bool, boosts: bool = True
    ) -> tuple[torch.Tensor, list[str], torch.Tensor | None, sp.csr_matrix | None]:
        """Model user vectors [b, d], each user's type (model.nn.blend.USER_TYPES), content
        profiles [b, r] (None without a blend content part) and co-purchase boosts
        [b, n_items] from the users' other-domain items (model.nn.copurchase; None without
        co-purchase, where the users' type has no co-purchase weight, or with ``boosts``
        False: the blend fit reads no boosts here)."""
        blend = self.blends.get(domain)
        want_profiles = blend is not None and blend.content is not None
        cop = None
        want_boosts = (
            boosts
            and self.copurchase is not None
            and blend is not None
            and blend.weights_for("cross_domain" if cross_domain else "inductive").copurchase != 0
        )
        # users with history here: their other-domain profile mixed in (DomainBlend)
        mix = not cross_domain and blend is not None and want_profiles and blend.profile_other != 0
        hist = None
        if cross_domain or want_boosts or mix:
            hist = self.histories(domain, users)
        if want_boosts:
            assert self.copurchase is not None and hist is not None
            cop = self.copurchase.boosts(domain, hist, self.r.split.domains[domain].n_items)
        prof = None
        if cross_domain:
            assert hist is not None
            zu = self.md.cross_domain(domain, hist)
            types = ["cross_domain" if h else "none" for h in hist]
            if want_profiles:
                prof = self.other_profiles(hist, blend.content_dim)  # type: ignore[union-attr]
        else:
            own = _group(self.inputs[domain], users)
            zu = self.md.embedders[domain].embed_users(own)
            types = ["inductive" if len(h) else "none" for h in own]
            if want_profiles:
                assert blend is not None and blend.content is not None
                prof = profiles_of(blend.content, own)
                if mix:
                    assert hist is not None
                    prof = blend.mix_profiles(prof, self.other_profiles(hist, blend.content_dim))
        return zu, types, prof, cop

    def other_profiles(self, hist: list[dict[str, np.ndarray]], dim: int) -> torch.Tensor:
        """Content profiles [b, r] of users from their items in other domains (``hist``,
        model.rankers.other_domain_histories; a zero row for a user without any)."""
        if not hist:
            return torch.zeros(0, dim)
        return torch.stack(
            [
                profile(
                    [
                        c[torch.as_tensor(np.unique(v))]
                        for d, v in h.items()
                        if (c := self.blends[d].content) is not None
                    ],
                    dim,
                )
                for h in hist
            ]
        )

    def histories(self, domain: str, users: np.ndarray) -> list[dict[str, np.ndarray]]:
        """The users' bound input items in every other domain."""
        return other_domain_histories(self.r.split, domain, users, self.inputs, self.r.maps)

    @torch.no_grad()
    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        zu, types, prof, cop = self.parts(domain, users, cross_domain=cross_domain)
        blend = self.blends.get(domain)
        if blend is None:
            return zu @ self.items[domain].T
        items = blend.items(self.items[domain])
        rows = torch.empty(len(users), items.shape[1])
        boost = torch.zeros(len(users), 1)
        for t in set(types):
            idx = torch.as_tensor([k for k, x in enumerate(types) if x == t])
            rows[idx] = blend.users(zu[idx], t, None if prof is None else prof[idx])
            boost[idx] = blend.weights_for(t).copurchase
        out = rows @ items.T
        if cop is not None and bool(boost.any()):
            # the re-ranking stage of the service (app/serving/copurchase.py), on every item
            out += boost * torch.from_numpy(cop.toarray())
        return out


class PopularRanker:
    """Most popular items by input-graph degree (the same list for every user)."""

    name = "popular"

    def __init__(self, split: InductiveSplit) -> None:
        self.n_items = {d: s.n_items for d, s in split.domains.items()}

    def serves(self, slice_name: str) -> bool:
        return True

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _PopularScorer(inputs, self.n_items)


class _PopularScorer:
    def __init__(self, inputs: dict[str, np.ndarray], n_items: dict[str, int]) -> None:
        self.inputs = inputs
        self.n_items = n_items

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor:
        n = self.n_items[domain]
        deg = np.bincount(self.inputs[domain][:, 1], minlength=n).astype(np.float32)
        return torch.from_numpy(deg).expand(len(users), n)


class ContentKNNRanker:
    """User history vs item text vectors: score = cos(mean of history vectors, item vector).

    Uses the frozen encoder space directly (no training); cross-domain users are served
    from their other-domain history since the encoder is shared. Text modality only
    (METHOD.md); items without text score 0.
    """

    name = "content-knn"

    def __init__(
        self, split: InductiveSplit, features: ItemFeatures, modality: str = "text"
    ) -> None:
        self.split = split
        self.maps = _local_maps(split)
        self.vecs = {}
        for d, ds in split.domains.items():
            rows = features.rows(ds.item_ids)
            self.vecs[d] = (
                torch.from_numpy(rows.modalities[modality].vectors)
                if modality in rows.modalities
                else None
            )

    def serves(self, slice_name: str) -> bool:
        return True

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _ContentScorer(self, inputs)


class _ContentScorer:
    def __init__(self, r: ContentKNNRanker, inputs: dict[str, np.ndarray]) -> None:
        self.r, self.inputs = r, inputs

    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor | None:
        items = self.r.vecs[domain]
        if items is None:
            return None
        profiles = torch.zeros(len(users), items.shape[1])
        if cross_domain:
            hist = other_domain_histories(self.r.split, domain, users, self.inputs, self.r.maps)
            for k, by_domain in enumerate(hist):
                parts = [
                    vec[v] for d, v in by_domain.items() if (vec := self.r.vecs[d]) is not None
                ]
                if parts:
                    profiles[k] = torch.cat(parts).mean(0)
        else:
            for k, own in enumerate(_group(self.inputs[domain], users)):
                if len(own):
                    profiles[k] = items[torch.as_tensor(own)].mean(0)
        return F.normalize(profiles, dim=1) @ items.T


class LightGCN(nn.Module):
    """Transductive LightGCN: one ID embedding per user and item, same propagation.

    Signature-compatible with MICRec for the Trainer (``templates`` only give sizes).
    """

    def __init__(
        self, config: MICRecConfig, templates: dict[str, TemplateMap], feature_dims: object = None
    ) -> None:
        super().__init__()
        self.config = config
        self.domains = sorted(templates)
        self.sizes = {d: (len(t.user_rows), len(t.item_rows)) for d, t in templates.items()}
        self.tables = nn.ModuleDict()
        for d in self.domains:
            e = nn.Embedding(sum(self.sizes[d]), config.dim)
            nn.init.normal_(e.weight, std=config.init_std)
            self.tables[domain_key(d)] = e

    def forward(
        self,
        domain: str,
        inp: DomainInputs,
        *,
        drop: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        emb = self.tables[domain_key(domain)]
        assert isinstance(emb, nn.Embedding)
        layers = propagate(inp.adjacency, emb.weight, self.config.n_layers)
        z = torch.stack(layers).mean(0)
        return z[: inp.n_users], z[inp.n_users :], layers


class LightGCNRanker:
    """Serves only old users x old items: new entities have no ID embedding (n/a)."""

    name = "lightgcn"

    def __init__(
        self, model: LightGCN, split: InductiveSplit, templates: dict[str, TemplateMap]
    ) -> None:
        self.model, self.split, self.templates = model, split, templates

    def serves(self, slice_name: str) -> bool:
        return slice_name == "old_users_old_items"

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        return _LightGCNScorer(self, inputs)


class _LightGCNScorer:
    def __init__(self, r: LightGCNRanker, inputs: dict[str, np.ndarray]) -> None:
        self.r, self.inputs = r, inputs

    @torch.no_grad()
    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor | None:
        ds = self.r.split.domains[domain]
        if cross_domain or (users >= ds.n_old_users).any():
            return None
        pairs = ds.old_pairs(self.inputs[domain])
        inp = DomainInputs.build(self.r.templates[domain], ds.n_users, ds.n_items, pairs)
        self.r.model.eval()
        zu, zi, _ = self.r.model(domain, inp)
        return zu[torch.as_tensor(users)] @ zi.T
