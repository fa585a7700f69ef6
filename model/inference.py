"""Inductive inference: the library API the service (and offline evaluation) call.

    bundle = load_bundle(path)                  # model.bundle; never unpickles
    engine = InferenceEngine.from_bundle(bundle)
    cat = engine.catalogue("office")            # ids, vectors [n, d], popularity, ...
    emb = engine.embed_user("office", {"office": ["i1", "i2"], "arts": ["i9"]})
    emb.vector @ cat.vectors.T                  # scores; emb.method says how it was embedded
                                                # (+ emb.boost's scores: see UserEmbedding)
    content = engine.encode_content(text="red mug", image=None)   # {"text": [384] float32}
    vec = engine.add_item("new-1", "kitchen", content)            # [d]; usable in histories
    engine.remove_item("new-1")

User and item vectors come from the same fold-in code that ``micrec evaluate`` scores
with (model.nn.foldin), so offline numbers describe what the service answers.
Thread safety: reads are safe concurrently; ``add_item``/``remove_item`` must come from a
single writer (the service serialises them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bundle import Bundle, BundleError
from model.columns import CatalogueColumns
from model.encoders.records import BundleEncoders, EncoderRefused, EncoderSpec
from model.nn.blend import ContentReducer, DomainBlend, profile
from model.nn.foldin import MultiDomainEmbedder, project_content
from model.nn.micrec import MICRec
from model.serving_arrays import cached_arrays, catalogue_of, derive_templates
from model.serving_types import DomainCatalogue, ItemBoost, UserEmbedding

log = logging.getLogger("micrec.inference")


@dataclass
class _AddedItem:
    domain: str
    content: torch.Tensor | None  # h, [d]
    reduced: torch.Tensor | None = None  # c of the score blend, [r]


@dataclass
class _ParsedHistory:
    """A history resolved against the bundle and the registered items."""

    local: dict[str, np.ndarray]  # domain -> bundle rows (int64)
    extra: dict[str, list[torch.Tensor]]  # domain -> content h of registered items
    reduced: dict[str, list[torch.Tensor]]  # domain -> blend content c of registered items
    n: int  # distinct known items

    def extra_tensors(self, dim: int) -> dict[str, torch.Tensor]:
        return {d: (torch.stack(v) if v else torch.zeros(0, dim)) for d, v in self.extra.items()}


VECTOR_DTYPES = ("float32", "float16")


class _QueryStarts:
    """The members of :class:`InferenceEngine` that serve a user started from a query (a
    text and/or a picture instead of a history): what the content space takes, encoding
    with the bundle's encoders, the serving vector (model.queryfit fits its weights)."""

    _reducer: ContentReducer | None
    _blends: dict[str, DomainBlend]
    _encoders: BundleEncoders
    encoders_info: dict[str, dict[str, Any]]
    model_dim: int

    def _check_domain(self, domain: str) -> None:
        raise NotImplementedError

    @property
    def encoders_unavailable(self) -> dict[str, str]:
        """Modality -> why its encoder cannot be created here (model.encoders.records)."""
        return dict(self._encoders.unavailable)

    # --- queries: a user started from a text or a picture ----------------------------
    def query_modalities(self) -> list[str]:
        """Modalities a query may be given in: those of the blend's content space that
        the bundle records an encoder for (an unavailable one answers 503 when used)."""
        if self._reducer is None or not any(b.content is not None for b in self._blends.values()):
            return []
        return sorted(m for m in self._reducer.modalities if m in self.encoders_info)

    def encode_query(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]:
        """Raw encoder outputs of a query (same encoders, and path, as registrations)."""
        mods = self.query_modalities()
        inputs = {"text": text or None, "image": image}
        for m, x in inputs.items():
            if x is not None and m not in mods:
                raise ValueError(
                    f"this model cannot match a {m} query (its content space holds: "
                    f"{', '.join(mods) or 'nothing'})"
                )
        return {m: self._encoders.encode(m, x) for m, x in inputs.items() if x is not None}

    @torch.no_grad()
    def query_vector(self, domain: str, content: Mapping[str, np.ndarray]) -> UserEmbedding:
        """The serving vector of a query-started user in ``domain``: its inner product with
        an item's serving vector is ``w_c <c_q, c_i> + w_p prior_i`` (DomainBlend.query_user)."""
        self._check_domain(domain)
        blend = self._blends.get(domain)
        c = None if self._reducer is None else _reduced(self._reducer, content)
        if blend is None or blend.content is None or c is None:
            raise ValueError("this model has no content part to match a query in")
        v = blend.query_user(c, self.model_dim)
        return UserEmbedding(vector=v.numpy().astype(np.float32), method="query", n_history=0)


def _profile_parts(
    blends: Mapping[str, DomainBlend], domain: str, p: _ParsedHistory, own: bool
) -> list[torch.Tensor]:
    """The blend's content rows of a user's items in ``domain`` (``own``) or in the other
    domains (not ``own``): what their content profile is the mean of."""
    parts: list[torch.Tensor] = []
    for d, rows_k in p.local.items():
        c = blends[d].content if d in blends else None
        if c is not None and (d == domain) == own:
            parts.append(c[torch.as_tensor(np.unique(rows_k))])
    for d, rows in p.reduced.items():
        if (d == domain) == own:
            parts.append(torch.stack(rows))
    return parts


def _serving_users(
    blend: DomainBlend | None,
    z: torch.Tensor,
    method: str,
    content: list[list[torch.Tensor]],
    other: list[list[torch.Tensor]] | None = None,
) -> np.ndarray:
    """[b, dim] serving vectors from model vectors z [b, d]; ``content[k]``: the c rows of
    the history items user k was embedded from (one tensor per part); ``other[k]``: those
    of their items in other domains, for a blend that mixes them into the profile of users
    with history in the domain (DomainBlend.mix_profiles; None: not mixed)."""
    if blend is None:
        return np.ascontiguousarray(z.cpu().numpy(), dtype=np.float32)
    prof = None
    if blend.content is not None:
        dim = blend.content_dim
        prof = torch.stack([profile(parts, dim) for parts in content])
        if other is not None and method == "inductive":
            prof = blend.mix_profiles(prof, torch.stack([profile(p, dim) for p in other]))
    v = blend.users(z, method, prof)
    return np.ascontiguousarray(v.cpu().numpy(), dtype=np.float32)


class InferenceEngine(_QueryStarts):
    """Serves a trained MICRec bundle: user and item embeddings without retraining.

    ``cache_dir``: where the arrays the engine derives from the bundle (serving item
    vectors, each item's template row) are written once per machine and memory-mapped
    (model.serving_cache), so every worker process shares one copy; None computes them in
    this process's memory. ``vector_dtype``: storage of the cached serving item vectors
    ("float16" halves them; user vectors and fold-in stay float32). ``encoder_provider``:
    returns the content encoder called ``name`` (default ``create_encoder``, in this
    process; the service passes one that encodes in a separate process).
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        cache_dir: Path | None = None,
        vector_dtype: str = "float32",
        encoder_provider: Callable[[EncoderSpec], Any] | None = None,
        clip_weights: Path | None = None,
    ) -> None:
        if vector_dtype not in VECTOR_DTYPES:
            raise ValueError(f"vector_dtype must be one of {VECTOR_DTYPES}, got {vector_dtype!r}")
        self.bundle = bundle
        self.model_version = bundle.model_version
        self.domains = sorted(bundle.domains)
        self.model_dim = bundle.model.config.dim
        self._blends: dict[str, DomainBlend] = {
            d: s.blend for d, s in bundle.domains.items() if s.blend is not None
        }
        self._reducer = bundle.blend.reducer if bundle.blend is not None else None
        self._copurchase = bundle.blend.copurchase if bundle.blend is not None else None
        blend_extra = next(iter(self._blends.values())).extra_dim if self._blends else 0
        self.dim = self.model_dim + blend_extra
        """Length of the serving vectors (model vector + the blend's prior and content)."""
        self.encoders_info: dict[str, dict[str, Any]] = dict(bundle.manifest.get("encoders", {}))
        self._md = MultiDomainEmbedder(
            {d: s.embedder for d, s in bundle.domains.items()},
            bundle.model.config.cross_domain_rule,
            bundle.bridges,
            {d: b.content for d, b in self._blends.items() if b.content is not None},
        )
        self._domain_order = list(bundle.domains)
        cached = (
            None
            if cache_dir is None
            else cached_arrays(bundle, Path(cache_dir), vector_dtype, self.dim, self._serving_items)
        )
        if cached is None:
            derive_templates(bundle)  # loaded with templates=False, but no cache to map
            vectors: dict[str, np.ndarray] = {}
            columns = CatalogueColumns.from_catalogue(self._domain_order, catalogue_of(bundle))
        else:
            vectors, columns = cached
        self._items = columns.items  # id -> domain number << 32 | row
        self._users = {d: c.users for d, c in columns.domains.items()}
        self._catalogues = {
            d: DomainCatalogue(
                domain=d,
                item_ids=columns.domains[d].item_ids,
                vectors=vectors[d]
                if d in vectors
                else self._serving_items(d, s.embedder.item_vectors()),
                popularity=columns.domains[d].popularity,
                categories=columns.domains[d].categories,
                titles=columns.domains[d].titles,
                unreachable=columns.domains[d].unreachable,
            )
            for d, s in bundle.domains.items()
        }
        self._added: dict[str, _AddedItem] = {}
        try:
            self._encoders = BundleEncoders(self.encoders_info, encoder_provider, clip_weights)
        except EncoderRefused as err:  # one line: the load (or the start-up) stops here
            raise BundleError(f"{bundle.path}: {err}") from None

    def _serving_items(self, domain: str, z: torch.Tensor, rows: slice | None = None) -> np.ndarray:
        """Serving vectors of the items ``rows`` (None: all) from their model vectors z."""
        blend = self._blends.get(domain)
        v = z if blend is None else blend.items(z, rows)
        return np.ascontiguousarray(v.cpu().numpy(), dtype=np.float32)

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        device: str = "cpu",
        cache_dir: Path | None = None,
        vector_dtype: str = "float32",
        encoder_provider: Callable[[EncoderSpec], Any] | None = None,
        clip_weights: Path | None = None,
    ) -> InferenceEngine:
        return cls(
            bundle,
            cache_dir=cache_dir,
            vector_dtype=vector_dtype,
            encoder_provider=encoder_provider,
            clip_weights=clip_weights,
        )

    # --- catalogue --------------------------------------------------------------------
    def catalogue(self, domain: str) -> DomainCatalogue:
        self._check_domain(domain)
        return self._catalogues[domain]

    def item_domain(self, item_id: str) -> str | None:
        code = self._items.get(item_id)
        if code is not None:
            return self._domain_order[code >> 32]
        added = self._added.get(item_id)
        return added.domain if added else None

    def is_bundle_item(self, item_id: str) -> bool:
        return self._items.get(item_id) is not None

    def bundle_position(self, item_id: str) -> tuple[str, int] | None:
        """(domain, row in that domain's :meth:`catalogue`) of a bundle item, else None."""
        code = self._items.get(item_id)
        return None if code is None else (self._domain_order[code >> 32], code & 0xFFFFFFFF)

    def bundle_history(self, user_id: str) -> dict[str, list[str]]:
        """The user's training-input items per domain as shipped in the bundle ({} if unknown)."""
        out = {}
        for d, users in self._users.items():
            k = users.get(user_id)
            if k is not None:
                items = self.bundle.domains[d].history(k)
                if len(items):
                    out[d] = self._catalogues[d].item_ids_at(items)
        return out

    def _check_domain(self, domain: str) -> None:
        if domain not in self.bundle.domains:
            raise KeyError(f"unknown domain {domain!r}; known: {', '.join(self.domains)}")

    # --- users ------------------------------------------------------------------------
    @torch.no_grad()
    def embed_user(self, domain: str, history: Mapping[str, Sequence[str]]) -> UserEmbedding:
        """Embed a user in ``domain`` from item ids (any domain; unknown ids are ignored).

        The domain an id belongs to is looked up, so ``history`` may be keyed loosely (the
        key is ignored); registered items contribute their content.
        """
        return self.embed_users(domain, [history])[0]

    @torch.no_grad()
    def embed_users(
        self, domain: str, histories: Sequence[Mapping[str, Sequence[str]]]
    ) -> list[UserEmbedding]:
        """:meth:`embed_user` for several users at once (one batched fold-in per method:
        the service's model thread embeds the requests waiting together this way)."""
        self._check_domain(domain)
        parsed = [self._parse_history(h) for h in histories]
        z, methods = self._md.embed_many(
            domain, [p.local for p in parsed], [p.extra_tensors(self.model_dim) for p in parsed]
        )
        rows_of: dict[str, list[int]] = {}
        for k, method in enumerate(methods):
            rows_of.setdefault(method, []).append(k)
        out: dict[int, UserEmbedding] = {}
        for method, rows in rows_of.items():
            # the content profile reads the same items the model vector was built from:
            # the domain's own history, or (cross-domain) every other domain's
            own = method == "inductive"
            parts = [_profile_parts(self._blends, domain, parsed[k], own) for k in rows]
            blend = self._blends.get(domain)
            other = None
            if own and blend is not None and blend.profile_other:
                other = [_profile_parts(self._blends, domain, parsed[k], False) for k in rows]
            served = _serving_users(blend, z[rows], method, parts, other)
            boosts = self._boosts(domain, method, [parsed[k] for k in rows])
            for k, v, b in zip(rows, served, boosts, strict=True):
                out[k] = UserEmbedding(vector=v, method=method, n_history=parsed[k].n, boost=b)
        return [out[k] for k in range(len(parsed))]

    def _boosts(
        self, domain: str, method: str, parsed: Sequence[_ParsedHistory]
    ) -> list[ItemBoost | None]:
        """The co-purchase boost of each user from their other-domain items (users of a
        type, ``method``, the blend has a co-purchase weight for; None for the others
        and for users without one)."""
        blend = self._blends.get(domain)
        weight = 0.0 if blend is None else blend.weights_for(method).copurchase
        if self._copurchase is None or weight == 0:
            return [None] * len(parsed)
        cat = self._catalogues[domain]
        rows = self._copurchase.boost_rows(domain, [p.local for p in parsed], len(cat.vectors))
        return [
            ItemBoost(cat.item_ids_at(r), (weight * v).astype(np.float32)) if len(r) else None
            for r, v in rows
        ]

    def _parse_history(self, history: Mapping[str, Sequence[str]]) -> _ParsedHistory:
        """Item ids -> bundle rows per domain, and the content of registered items."""
        local: dict[str, list[int]] = {}
        extra: dict[str, list[torch.Tensor]] = {}
        reduced: dict[str, list[torch.Tensor]] = {}
        # distinct ids in first-seen order, resolved against the bundle in one search
        distinct = list(dict.fromkeys(iid for ids in history.values() for iid in ids))
        codes = self._items.get_many(distinct).tolist()
        for iid, code in zip(distinct, codes, strict=True):
            if code >= 0:
                d = self._domain_order[code >> 32]
                local.setdefault(d, []).append(code & 0xFFFFFFFF)
            elif iid in self._added:
                a = self._added[iid]
                if a.content is not None:
                    extra.setdefault(a.domain, []).append(a.content)
                else:  # a registered item without content still counts as history
                    extra.setdefault(a.domain, [])
                if a.reduced is not None:
                    reduced.setdefault(a.domain, []).append(a.reduced)
        return _ParsedHistory(
            local={d: np.asarray(v, dtype=np.int64) for d, v in local.items()},
            extra=extra,
            reduced=reduced,
            n=sum(len(v) for v in local.values()) + sum(len(v) for v in extra.values()),
        )

    @torch.no_grad()
    def sample_user_vectors(self, domain: str, limit: int) -> np.ndarray:
        """Vectors of up to ``limit`` bundle users with history in ``domain`` ([m, dim]).

        Real queries for checking an approximate index against exact search: users spread
        evenly over the bundle's user list (deterministic), each embedded from their
        history in ``domain`` as a request would embed them (without the other-domain
        content profile a blend may mix in for users who have one: what is measured is
        the index's recall, for which a realistic query is enough).
        """
        self._check_domain(domain)
        s = self.bundle.domains[domain]
        users = [u for u in range(len(s.history_ptr) - 1) if len(s.history(u))]
        if not users or limit < 1:
            return np.empty((0, self.dim), dtype=np.float32)
        picked = [
            users[k] for k in np.linspace(0, len(users) - 1, min(limit, len(users))).astype(int)
        ]
        hists = [s.history(u) for u in picked]
        z = s.embedder.embed_users(hists)
        c = self._blends[domain].content if domain in self._blends else None
        parts = [[] if c is None else [c[torch.as_tensor(h)]] for h in hists]
        return _serving_users(self._blends.get(domain), z, "inductive", parts)

    # --- items ------------------------------------------------------------------------
    def content_modalities(self) -> list[str]:
        """Modalities a new item's content is encoded for: the model's and the blend's."""
        mods = set(self.bundle.model.modalities)
        if self._reducer is not None:
            mods |= set(self._reducer.modalities)
        if self.bundle.item_maps is not None:
            mods |= set(self.bundle.item_maps.modalities)
        return sorted(m for m in mods if m in self.encoders_info)

    def encode_content(self, *, text: str | None, image: Any | None) -> dict[str, np.ndarray]:
        """Raw encoder outputs per modality (L2-normalised) for a new item's content.

        Only the modalities the model uses are encoded; an absent input is left out.
        """
        mods = self.content_modalities()
        inputs = {"text": text or None, "image": image}
        return {
            m: self._encoders.encode(m, x) for m, x in inputs.items() if x is not None and m in mods
        }

    @torch.no_grad()
    def add_item(self, item_id: str, domain: str, content: Mapping[str, np.ndarray]) -> np.ndarray:
        """Register a new item (content only); returns its serving vector [dim]."""
        self._check_domain(domain)
        if self._items.get(item_id) is not None:
            raise ValueError(f"item {item_id!r} is part of the bundle")
        hv = _projected(self.bundle.model, content)
        maps = self.bundle.item_maps
        mapped = {m: v for m, v in content.items() if maps is not None and m in maps.modalities}
        if maps is not None and mapped:
            # the same map the bundle's own cold items were given (model.nn.itemmap)
            raw = {m: np.asarray(v, dtype=np.float32).reshape(1, -1) for m, v in mapped.items()}
            z = maps.map(domain, raw, 1)[0]
        else:
            z = self.bundle.domains[domain].embedder.new_item_vector(hv)
        blend = self._blends.get(domain)
        c = None
        if blend is not None and self._reducer is not None:
            c = _reduced(self._reducer, content)
        vec = (
            z.cpu().numpy().astype(np.float32)
            if blend is None
            else (blend.new_item(z, c).cpu().numpy().astype(np.float32))
        )
        self._added[item_id] = _AddedItem(domain, hv, c)
        return vec

    def remove_item(self, item_id: str) -> None:
        self._added.pop(item_id, None)


def _projected(model: MICRec, content: Mapping[str, np.ndarray]) -> torch.Tensor | None:
    """A new item's content projected by the model (h, [d]); None without features."""
    feats = {
        m: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(1, -1)
        for m, v in content.items()
        if m in model.modalities
    }
    if not feats:
        return None
    dims = model.feature_dims()
    for m, f in feats.items():
        if f.shape[1] != dims[m]:
            raise ValueError(f"{m} features have dim {f.shape[1]}, the model expects {dims[m]}")
    h = project_content(model.content, feats, {m: torch.ones(1, dtype=torch.bool) for m in feats})
    return None if h is None else h[0]


def _reduced(reducer: ContentReducer, content: Mapping[str, np.ndarray]) -> torch.Tensor | None:
    """A new item's content reduced for the score blend (c, [r]); None without features."""
    raw = {m: np.asarray(v, dtype=np.float32).reshape(1, -1) for m, v in content.items()}
    raw = {m: v for m, v in raw.items() if m in reducer.modalities}
    for m, dm in zip(reducer.modalities, reducer.dims, strict=True):
        if m in raw and raw[m].shape[1] != dm:
            raise ValueError(f"{m} features have dim {raw[m].shape[1]}, expected {dm}")
    return reducer.reduce(raw, 1)[0] if raw else None
