"""The MICRec model: per-domain INMO backbones + shared content projections + alignment.

One ``MICRec`` serves any number of domains. Parameters per domain: the template table T
(|T_U| + |T_I| + 2 rows: template users, template items, user token, item token) and the
self-enhanced vector w. Shared: modality projections, gamma, alignment head (and, with
``transfer_weight`` > 0, one transfer map per ordered pair of domains). The parameter
count never grows with the number of users or items (templates are fixed after training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from model.nn.config import MICRecConfig
from model.nn.graph import (
    TemplateIncidence,
    TemplateMap,
    interaction_matrix,
    normalized_adjacency,
    template_incidence,
)
from model.nn.modules import AlignmentHead, ModalityAggregator, TransferMap, propagate


@dataclass
class DomainInputs:
    """Non-parameter tensors describing one domain's input graph.

    ``pairs`` are the interactions the model may read (training pairs while training, the
    full training input at evaluation/serving). ``features[m]``: [n_items, dim_m] frozen
    encoder outputs, ``masks[m]``: [n_items] bool.
    """

    n_users: int
    n_items: int
    pairs: np.ndarray
    incidence: TemplateIncidence
    adjacency: torch.Tensor
    interactions: torch.Tensor
    user_degree: torch.Tensor
    item_degree: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        tmap: TemplateMap,
        n_users: int,
        n_items: int,
        pairs: np.ndarray,
        features: dict[str, np.ndarray] | None = None,
        masks: dict[str, np.ndarray] | None = None,
        device: str | torch.device = "cpu",
    ) -> DomainInputs:
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return cls(
            n_users=n_users,
            n_items=n_items,
            pairs=pairs,
            incidence=template_incidence(tmap, n_users, n_items, pairs).to(device),
            adjacency=normalized_adjacency(n_users, n_items, pairs).to(device),
            interactions=interaction_matrix(n_users, n_items, pairs).to(device),
            user_degree=torch.from_numpy(
                np.bincount(pairs[:, 0], minlength=n_users).astype(np.float32)
            ).to(device),
            item_degree=torch.from_numpy(
                np.bincount(pairs[:, 1], minlength=n_items).astype(np.float32)
            ).to(device),
            features={
                m: torch.as_tensor(v, dtype=torch.float32, device=device)
                for m, v in (features or {}).items()
            },
            masks={
                m: torch.as_tensor(v, dtype=torch.bool, device=device)
                for m, v in (masks or {}).items()
            },
        )


def domain_key(domain: str) -> str:
    """ModuleDict keys cannot contain '.'; domain names can."""
    return "d_" + domain.replace(".", "_")


def transfer_key(src: str, dst: str) -> str:
    """ModuleDict key of the transfer map from ``src`` to ``dst``."""
    return f"{domain_key(src)}__to__{domain_key(dst)}"


class MICRec(nn.Module):
    alpha: torch.Tensor

    def __init__(
        self,
        config: MICRecConfig,
        templates: dict[str, TemplateMap],
        feature_dims: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.domains = sorted(templates)
        self.templates = templates
        d = config.dim
        self.tables = nn.ModuleDict()
        for dom in self.domains:
            table = nn.Embedding(templates[dom].n_rows, d)
            nn.init.normal_(table.weight, std=config.init_std)
            self.tables[domain_key(dom)] = table
        self.se_w = nn.ParameterDict(
            {domain_key(dom): nn.Parameter(torch.ones(d)) for dom in self.domains}
        )
        dims = {m: n for m, n in (feature_dims or {}).items() if m in config.modalities}
        self.content: ModalityAggregator | None = ModalityAggregator(dims, d) if dims else None
        # a per-domain gamma lets a sparse domain rely less on content than a dense one
        # (docs/results/quality.md, finding 4); the shared scalar is METHOD.md's default
        if config.gamma_per_domain:
            self.gammas = nn.ParameterDict(
                {
                    domain_key(dom): nn.Parameter(torch.tensor(float(config.gamma_init)))
                    for dom in self.domains
                }
            )
        else:
            self.gamma = nn.Parameter(torch.tensor(float(config.gamma_init)))
        self.head: AlignmentHead | None = (
            AlignmentHead(d) if config.cross_domain_weight > 0 else None
        )
        self.transfer: nn.ModuleDict | None = None
        if config.transfer_weight > 0 and len(self.domains) > 1:
            self.transfer = nn.ModuleDict(
                {
                    transfer_key(a, b): TransferMap(d)
                    for a in self.domains
                    for b in self.domains
                    if a != b
                }
            )
        # alpha is state, not a parameter: annealed by the trainer, saved with the best epoch
        self.register_buffer("alpha", torch.tensor(float(config.alpha_init)))

    def feature_dims(self) -> dict[str, int]:
        """Input dimension of each modality projection (what new items must provide)."""
        if self.content is None:
            return {}
        dims = {}
        for m in self.content.modalities:
            lin = self.content.proj[m]
            assert isinstance(lin, nn.Linear)
            dims[m] = lin.in_features
        return dims

    @property
    def modalities(self) -> list[str]:
        return self.content.modalities if self.content is not None else []

    def table(self, domain: str) -> torch.Tensor:
        """Template table T of ``domain``: [n_rows, d]."""
        emb = self.tables[domain_key(domain)]
        assert isinstance(emb, nn.Embedding)
        return emb.weight

    def transfer_map(self, src: str, dst: str) -> TransferMap:
        """f_{src->dst} of the hidden-history transfer loss (``transfer_weight`` > 0)."""
        assert self.transfer is not None
        fmap = self.transfer[transfer_key(src, dst)]
        assert isinstance(fmap, TransferMap)
        return fmap

    def domain_gamma(self, domain: str) -> torch.Tensor:
        """The content weight gamma used in ``domain`` (a scalar parameter)."""
        if self.config.gamma_per_domain:
            return self.gammas[domain_key(domain)]
        return self.gamma

    def item_content(self, inp: DomainInputs) -> torch.Tensor | None:
        """h_i for every item of the domain: [n_items, d], or None without content."""
        if self.content is None:
            return None
        return self.content(inp.features, inp.masks)

    def cold_item_vectors(
        self, domain: str, inp: DomainInputs, items: torch.Tensor
    ) -> torch.Tensor:
        """z of ``items`` as if they had no interactions, (item token + gamma h_i)/(L+1):
        [b, d]; what a cold item is served with (foldin.DomainEmbedder.new_item_vector)."""
        assert self.content is not None
        tok = self.table(domain)[self.templates[domain].item_token]
        h = self.content(
            {m: f[items] for m, f in inp.features.items()},
            {m: k[items] for m, k in inp.masks.items()},
        )
        return (tok + self.domain_gamma(domain) * h) / (self.config.n_layers + 1)

    def scale(self, counts: torch.Tensor) -> torch.Tensor:
        """c^(alpha/2 - 1): 1/sqrt(c) at alpha=1 annealing toward 1/c."""
        return counts.clamp_min(1.0).pow(self.alpha / 2 - 1)

    def layer0(
        self,
        domain: str,
        inp: DomainInputs,
        *,
        drop: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Inductive layer-0 embeddings of all nodes: [n_users + n_items, d]."""
        inc = inp.incidence.matrix(drop=drop, generator=generator)
        e0 = torch.sparse.mm(inc, self.table(domain)) * self.scale(inp.incidence.counts).unsqueeze(
            1
        )
        h = self.item_content(inp)
        if h is not None:
            # user content preference over ALL interacted items, c'_u = |N(u)| + 1
            if self.config.user_content:
                p = torch.sparse.mm(inp.interactions, h) * self.scale(
                    inp.user_degree + 1
                ).unsqueeze(1)
            else:
                p = h.new_zeros(inp.n_users, h.shape[1])
            if self.config.item_content_weight == "degree":
                h = h * self.scale(inp.item_degree + 1).unsqueeze(1)
            e0 = e0 + self.domain_gamma(domain) * torch.cat([p, h], dim=0)
        return e0

    def forward(
        self,
        domain: str,
        inp: DomainInputs,
        *,
        drop: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Returns z_users [n_users, d], z_items [n_items, d] and the layers E^(0..L)."""
        layers = propagate(
            inp.adjacency,
            self.layer0(domain, inp, drop=drop, generator=generator),
            self.config.n_layers,
        )
        z = torch.stack(layers).mean(dim=0)
        return z[: inp.n_users], z[inp.n_users :], layers

    def self_enhanced_scores(
        self, domain: str, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s(u, i) = t_u . (w * t_i) on template vectors, for local ids; returns (scores, valid)
        where valid marks pairs whose user and item are both templates."""
        tmap = self.templates[domain]
        urow = torch.as_tensor(tmap.user_rows, device=users.device)[users]
        irow = torch.as_tensor(tmap.item_rows, device=items.device)[items]
        valid = (urow >= 0) & (irow >= 0)
        table = self.table(domain)
        s = (
            table[urow.clamp_min(0)] * self.se_w[domain_key(domain)] * table[irow.clamp_min(0)]
        ).sum(-1)
        return s, valid
