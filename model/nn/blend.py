"""The served score: the model's score blended with an item prior and a content match.

    s(u, i) = w_model * <z_u / |z_u|, z_i> + w_prior * prior_i + w_content * <p_u, c_i>
              (+ w_copurchase * c_u[i] for users with items in other domains)

- ``prior_i = log(1 + deg_i) / log(1 + max deg)``: the item's training degree, the
  popularity prior of popularity-aware inference (PDA, Zhang et al., SIGIR 2021, adjusts
  the model score by pop_i^gamma; in log space that is an additive log-popularity term).
  An item nobody bought in training (a held-out new item, or one registered after
  training) has no degree to judge it by: its prior is the domain's fitted ``cold_prior``
  (0 = ranked as the least popular item; model.blendfit fits it on validation), so new
  items can be lifted among warm ones without raising the content weight of every item.
- ``content_decay`` (the domain's, fitted too; 0 = off): the item's content rows are
  scaled by ``(1 + deg_i)^-decay``, so the content match can weigh on new and rarely
  bought items, where it is the best signal, and less on popular ones, where the model
  knows better. The user's profile ``p_u`` averages the unscaled rows.
- ``c_i``: the item's frozen encoder features (all modalities, concatenated) reduced to
  ``r`` dimensions by a PCA fitted on the training items, L2-normalised; ``p_u``: the
  L2-normalised mean of ``c`` over the user's history items (content kNN, the baseline
  that ranks new and rarely bought items best). One reducer serves every domain, so a
  user's profile from their items in other domains lives in the same space:
  ``profile_other`` (the domain's, fitted; 0 = off) mixes it into the profile of a user
  with history in the domain, ``p_u = norm(p_own + profile_other * p_other)`` (content
  transfer across domains for existing customers: what they bought elsewhere says what
  they like when their history here is short).
- ``c_u[i]`` (with ``[blend] copurchase``): the cross-domain co-purchase boost of
  model.nn.copurchase, what anchors who bought the user's other-domain items bought here
  (sparse, in [0, 1]); weighted per user type (users new to the domain, and with
  ``[blend] copurchase_warm`` users with history in it too). It is not part of the
  inner product below: the service re-ranks the index's answer with it
  (app/serving/copurchase.py) and the offline evaluation adds it to the full scores.
- The weights depend on the domain and on how the user was embedded (``USER_TYPES``) and
  are fitted on the validation split (``model.blendfit``); the corners (model only, prior
  only, content only) are part of the search, so on validation the blend is never below
  any of its parts.

Why one inner product: the score is linear in three parts, so the item vector
``[z_i, prior_i, c_i]`` and the user vector ``[w_m z_u/|z_u|, w_p, w_c p_u]`` give it as a single dot product. The FAISS index of the service and the offline evaluation use the
same two functions below, so the served ranking is the evaluated one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from model.nn.copurchase import CoPurchase

ITEM_TERMS: dict[str, tuple[float, float]] = {
    "cold_prior": (-1.0, 1.0),
    "content_decay": (0.0, 1.0),
}
"""Per-domain terms of the item side (name -> range searched by model.blendfit): the prior
of items without training interactions, and the exponent of the content rows' decay
with the item's degree. 0 = the blend without the term."""

USER_TYPES = ("inductive", "cross_domain", "none")
"""How a user was embedded (model.nn.foldin.MultiDomainEmbedder): history in the domain,
history only in other domains, no usable history."""


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the three parts of the served score (already divided by each part's
    spread on validation users, so they multiply raw part values)."""

    model: float = 1.0
    prior: float = 0.0
    content: float = 0.0
    copurchase: float = 0.0
    """Weight of the cross-domain co-purchase boost (model.nn.copurchase; 0 = unused)."""

    def to_dict(self) -> dict[str, float]:
        out = {"model": self.model, "prior": self.prior, "content": self.content}
        if self.copurchase:  # bundles without the block keep their exact weights record
            out["copurchase"] = self.copurchase
        return out


MODEL_ONLY = BlendWeights()

QUERY_DEFAULT = BlendWeights(model=0.0, prior=1.0, content=1.0)
"""The weights of a query-started user (no history: a text or a picture) in a bundle
that has no fitted ones (written before model.queryfit). The fitted ones are per domain;
docs/results/query-start.md gives the values fitted on amazon-arts-office."""


@dataclass
class ContentReducer:
    """Frozen encoder features -> ``c`` ([r] unit vectors), shared by every domain.

    ``modalities``/``dims``: the concatenation order of the raw features; ``mean``: [D];
    ``basis``: [D, r] (top principal directions of the training items' features).
    """

    modalities: tuple[str, ...]
    dims: tuple[int, ...]
    mean: torch.Tensor
    basis: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(
        cls,
        features: Mapping[str, np.ndarray],
        masks: Mapping[str, np.ndarray],
        dim: int,
        max_rows: int = 100_000,
    ) -> ContentReducer | None:
        """PCA of the items' concatenated features (rows with no content left out; at most
        ``max_rows`` of them, a seeded sample)."""
        mods = tuple(sorted(features))
        if not mods or dim <= 0:
            return None
        x = np.concatenate([features[m] for m in mods], axis=1).astype(np.float32)
        has = np.any(np.stack([masks[m] for m in mods], axis=1), axis=1)
        if has.sum() < 2:
            return None
        rows = np.flatnonzero(has)
        if len(rows) > max_rows:  # the principal directions settle long before 1e5 items
            rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
        xt = torch.from_numpy(x[rows])
        mean = xt.mean(dim=0)
        r = min(dim, xt.shape[0] - 1, xt.shape[1])
        _, _, vh = torch.linalg.svd(xt - mean, full_matrices=False)
        return cls(mods, tuple(features[m].shape[1] for m in mods), mean, vh[:r].T.contiguous())

    def reduce(self, features: Mapping[str, np.ndarray | torch.Tensor], n: int) -> torch.Tensor:
        """[n, r] unit vectors; rows without any feature (all zeros) stay 0."""
        parts = []
        for m, dm in zip(self.modalities, self.dims, strict=True):
            f = features.get(m)
            parts.append(
                torch.zeros(n, dm) if f is None else torch.as_tensor(f, dtype=torch.float32)
            )
        x = torch.cat(parts, dim=1)
        empty = x.abs().sum(dim=1) == 0
        c = F.normalize((x - self.mean) @ self.basis, dim=1)
        c[empty] = 0.0
        return c

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"reducer_mean": self.mean, "reducer_basis": self.basis}


@dataclass
class DomainBlend:
    """The blend of one domain: per-item parts and the fitted weights per user type.

    prior: [n_items] in [0, 1]; content: [n_items, r] unit rows (0 for items without
    content) or None when the model has no content features.
    """

    prior: torch.Tensor
    content: torch.Tensor | None
    weights: dict[str, BlendWeights] = field(default_factory=dict)
    query: BlendWeights = QUERY_DEFAULT
    """Weights of a user started from a query: content + prior, no model part."""
    cold_prior: float = 0.0
    """The prior of an item without training interactions (also a registered item's)."""
    content_scale: torch.Tensor | None = None
    """[n_items] factor of each item's content row in its serving vector (None: 1)."""
    profile_other: float = 0.0
    """Weight of a user's other-domain content profile in the profile of a user with
    history in this domain (``mix_profiles``; 0: their own items only)."""

    @staticmethod
    def prior_of(degree: torch.Tensor, cold_prior: float = 0.0) -> torch.Tensor:
        """log(1 + deg) / log(1 + max deg), and ``cold_prior`` where deg = 0: [n]."""
        top = float(torch.log1p(degree.max())) if len(degree) else 0.0
        prior = torch.log1p(degree.float()) / max(top, 1e-12)
        return prior.masked_fill(degree == 0, cold_prior) if cold_prior else prior

    @staticmethod
    def content_scale_of(degree: torch.Tensor, decay: float) -> torch.Tensor | None:
        """(1 + deg)^-decay: [n] in (0, 1] (None for decay 0: no scaling)."""
        return (1.0 + degree.float()).pow(-decay) if decay else None

    @property
    def content_dim(self) -> int:
        return 0 if self.content is None else int(self.content.shape[1])

    @property
    def extra_dim(self) -> int:
        """What the blend adds to the model vector: the prior and the content part."""
        return 1 + self.content_dim

    def weights_for(self, user_type: str) -> BlendWeights:
        return self.weights.get(user_type, MODEL_ONLY)

    def items(self, z: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Serving item vectors [n, d + 1 + r] from model item vectors z [n, d] of the
        items ``rows`` (None: all; a slice lets a large domain be built in chunks)."""
        at = slice(None) if rows is None else rows
        parts = [z, self.prior[at].to(z.dtype).unsqueeze(1)]
        if self.content is not None:
            c = self.content[at]
            if self.content_scale is not None:
                c = c * self.content_scale[at].unsqueeze(1)
            parts.append(c.to(z.dtype))
        return torch.cat(parts, dim=1)

    def new_item(self, z: torch.Tensor, content: torch.Tensor | None) -> torch.Tensor:
        """Serving vector of an item registered after training ([d] + cold prior + c; no
        co-purchase boost: nobody bought it in training)."""
        parts = [z, z.new_full((1,), self.cold_prior)]
        if self.content is not None:
            parts.append(z.new_zeros(self.content_dim) if content is None else content)
        return torch.cat(parts)

    def users(
        self,
        z: torch.Tensor,
        user_type: str,
        profiles: torch.Tensor | None,
    ) -> torch.Tensor:
        """Serving user vectors [b, d + 1 + r] from model vectors z [b, d] and content
        profiles [b, r] (normalised mean of the history's c; None = no content)."""
        w = self.weights_for(user_type)
        parts = [
            w.model * F.normalize(z, dim=1),
            torch.full((len(z), 1), w.prior, dtype=z.dtype, device=z.device),
        ]
        if self.content is not None:
            if profiles is None:
                profiles = z.new_zeros(len(z), self.content_dim)
            parts.append(w.content * profiles.to(z.dtype))
        return torch.cat(parts, dim=1)

    def mix_profiles(self, own: torch.Tensor, other: torch.Tensor | None) -> torch.Tensor:
        """Profiles [b, r] of users with history in the domain: ``norm(own +
        profile_other * other)`` from their unit profiles over their items here (``own``)
        and in the other domains (``other``, zero rows for users without any)."""
        return mix_profiles(own, other, self.profile_other)

    def query_user(self, c: torch.Tensor, model_dim: int) -> torch.Tensor:
        """Serving vector [d + 1 + r] of a query reduced to ``c`` [r]: the score is
        ``query.prior * prior_i + query.content * <c, c_i>`` (no model part: a query
        has no history to fold in)."""
        if self.content is None:
            raise ValueError("this bundle's blend has no content part to match a query in")
        w = self.query
        return torch.cat(
            [
                c.new_zeros(model_dim),
                c.new_full((1,), w.prior),
                w.content * c.to(torch.float32),
            ]
        )


def mix_profiles(own: torch.Tensor, other: torch.Tensor | None, weight: float) -> torch.Tensor:
    """``norm(own + weight * other)`` row by row ([b, r]); ``own`` unchanged for weight 0
    or no ``other``. The one arithmetic of the other-domain profile (served, evaluated,
    fitted)."""
    if not weight or other is None:
        return own
    return F.normalize(own + weight * other.to(own.dtype), dim=1)


def profile(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """A user's content profile from the ``c`` rows of their history items: [r]."""
    rows = [p for p in parts if len(p)]
    if not rows or dim == 0:
        return torch.zeros(dim)
    return F.normalize(torch.cat(rows).mean(dim=0), dim=0)


def profiles_of(c: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
    """Content profiles [b, r] of users from the rows of ``c`` ([n_items, r]) of their
    history items (local ids; repeats count once)."""
    if not histories:
        return torch.zeros(0, int(c.shape[1]))
    return torch.stack([profile([c[torch.as_tensor(np.unique(h))]], c.shape[1]) for h in histories])


@dataclass
class Blend:
    """The fitted blend of every domain: the shared content reducer and the weights
    (domain -> user type -> ``BlendWeights``). No weights for a domain = model only."""

    reducer: ContentReducer | None
    weights: dict[str, dict[str, BlendWeights]] = field(default_factory=dict)
    query: dict[str, BlendWeights] = field(default_factory=dict)
    """Per domain, the weights of query-started users (model.queryfit; none: the default)."""
    item_terms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per domain, the fitted item terms (``ITEM_TERMS``; a missing one is 0)."""
    copurchase: CoPurchase | None = None
    """The cross-domain co-purchase transitions (None: no co-purchase boost)."""
    profile_other: dict[str, float] = field(default_factory=dict)
    """Per domain, the fitted weight of the other-domain content profile of users with
    history there (``DomainBlend.profile_other``; a missing domain is 0)."""

    def for_domain(
        self,
        domain: str,
        degree: torch.Tensor,
        features: Mapping[str, np.ndarray] | None = None,
        content: torch.Tensor | None = None,
    ) -> DomainBlend:
        """The domain's blend over its items: training ``degree`` [n] and either the raw
        ``features`` (modality -> [n, dim_m]) or the already reduced ``content`` [n, r]."""
        if content is None and self.reducer is not None and features:
            content = self.reducer.reduce(features, len(degree))
        if self.reducer is None:
            content = None
        terms = self.item_terms.get(domain, {})
        cold = terms.get("cold_prior", 0.0)
        return DomainBlend(
            prior=DomainBlend.prior_of(degree.cpu(), cold),
            content=content,
            weights=dict(self.weights.get(domain, {})),
            query=self.query.get(domain, QUERY_DEFAULT),
            cold_prior=cold,
            content_scale=None
            if content is None
            else DomainBlend.content_scale_of(degree.cpu(), terms.get("content_decay", 0.0)),
            profile_other=self.profile_other.get(domain, 0.0) if content is not None else 0.0,
        )

    def weights_json(self) -> dict[str, dict[str, dict[str, float]]]:
        return {d: {t: w.to_dict() for t, w in ws.items()} for d, ws in self.weights.items()}

    @staticmethod
    def weights_from_json(
        raw: Mapping[str, Mapping[str, Mapping[str, float]]],
    ) -> dict[str, dict[str, BlendWeights]]:
        return {
            d: {t: BlendWeights(**{k: float(v) for k, v in w.items()}) for t, w in ws.items()}
            for d, ws in raw.items()
        }
