"""The cross-domain mapping: a user's representation in one domain -> their vector in
another, for users new to that domain.

Each domain has its own template table, so a user's vector in domain A says nothing
about domain B's item space unless something maps it there. Without alignment training
(the search often turns it off) the "aligned" rule adds an unrelated vector. The bridge is
that mapping, learned as in EMCDR (Man et al., IJCAI 2017): after the backbone is trained,
on the users the two domains share (the anchors), a small network f_{A->B} is fitted so that

    f_{A->B}(z_u^A / |z_u^A|)  ranks u's items of domain B

(a softmax over all of B's item vectors, the task-oriented loss of later bridges such as
TMCDR and PTUPCDR; EMCDR's regression to z_u^B is an optional extra term). ``z_u^A`` is
the user's fold-in from their domain-A items, computed exactly as the service computes it
for a request, so training and serving read the same input. A user with history in
several other domains gets the mean of their mapped vectors.

With ``content_dim`` r > 0 the map also reads the user's content preference in A: ``p_u^A``,
the normalised mean of the blend's content rows ``c_i`` (model.nn.blend.profile) over
their A items. The content space is shared by every domain (one encoder, one PCA), so it
can carry what the collaborative vector of A cannot: which kinds of B items the kind of
things a user buys in A goes with.

With ``personal`` = h > 0 the map is also personalised as in PTUPCDR (Zhu et al., WSDM
2022): a characteristic encoder pools the user's A items with learned attention, a
meta-network (hidden width h) turns that into a d x d matrix W_u, and W_u z_u^A is added to
the shared map's output. Its last layer starts at zero, so training starts from the
shared map and personalises only as far as the held-back anchors allow.

Shapes: ``dim`` = the model's d; the input of every map is [b, d] (+ [b, r] profiles, +
the users' A items as ``HistoryItems``), its output [b, d].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HistoryItems:
    """The history items of ``n_users`` users, flattened: item vectors [m, d] and the row
    of the user each belongs to ([m], int64)."""

    vectors: torch.Tensor
    owner: torch.Tensor
    n_users: int

    def take(self, users: torch.Tensor | np.ndarray) -> HistoryItems:
        """The items of the users ``users`` (rows, in that order)."""
        pos = torch.full((self.n_users,), -1, dtype=torch.int64)
        pos[torch.as_tensor(users, dtype=torch.int64)] = torch.arange(len(users))
        new = pos[self.owner]
        keep = new >= 0
        return HistoryItems(self.vectors[keep], new[keep], len(users))


class Characteristic(nn.Module):
    """PTUPCDR's characteristic encoder: an attention-weighted mean of a user's items,
    [m, d] item vectors -> [b, d] (a user without items gets 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, items: HistoryItems) -> torch.Tensor:
        b, v, owner = items.n_users, items.vectors, items.owner
        logit = self.score(v).squeeze(1)
        top = torch.full((b,), -torch.inf, dtype=v.dtype).scatter_reduce(
            0, owner, logit, "amax", include_self=True
        )
        w = torch.exp(logit - top[owner])  # softmax per user, stable
        den = torch.zeros(b, dtype=v.dtype).index_add(0, owner, w)
        pooled = torch.zeros(b, v.shape[1], dtype=v.dtype).index_add(0, owner, w.unsqueeze(1) * v)
        return pooled / den.clamp_min(1e-12).unsqueeze(1)


def pair_key(src: str, dst: str) -> str:
    """State-dict prefix of the map src -> dst (domain names may hold any character)."""
    return f"{src.encode().hex()}__{dst.encode().hex()}"


class DomainMap(nn.Module):
    """f_{A->B}: [b, d] unit vectors of domain A (and [b, r] content profiles when
    ``content_dim`` = r > 0) -> [b, d] vectors in domain B's space.

    hidden = 0 is a linear map (EMCDR's linear variant); otherwise one hidden layer with a
    residual linear path, so the map starts close to a linear one and the nonlinearity
    only adds what the data supports.
    """

    def __init__(self, dim: int, hidden: int, content_dim: int = 0, personal: int = 0) -> None:
        super().__init__()
        self.content_dim, self.personal = content_dim, personal
        width = dim + content_dim
        self.linear = nn.Linear(width, dim)
        self.mlp: nn.Module | None = (
            nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden > 0
            else None
        )
        self.characteristic: Characteristic | None = None
        self.meta: nn.Sequential | None = None
        if personal > 0:
            # drawn from a forked generator, so the shared part (and every map made after
            # this one) starts exactly as without the personal part: a comparison of the
            # two differs only by it
            with torch.random.fork_rng():
                torch.manual_seed(0)
                self.characteristic = Characteristic(dim)
                self.meta = nn.Sequential(
                    nn.Linear(dim, personal), nn.GELU(), nn.Linear(personal, dim * dim)
                )
            last = self.meta[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)  # W_u = 0 at the start: the shared map alone
            nn.init.zeros_(last.bias)
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        """Softmax temperature of the ranking loss (training only; serving normalises)."""
        self.prior_weight = nn.Parameter(torch.tensor(0.0))
        """Weight of the item prior inside the training loss (training only): with it the
        map learns what popularity does not already explain, as the served blend adds
        the prior itself (model.nn.blend)."""

    def forward(
        self,
        z: torch.Tensor,
        profiles: torch.Tensor | None = None,
        items: HistoryItems | None = None,
    ) -> torch.Tensor:
        """``z``: [b, d] unit vectors; ``profiles``: [b, r] (required iff content_dim > 0;
        a zero row is a user with no content in A); ``items``: the users' A items
        (required iff personal > 0)."""
        x = z
        if self.content_dim:
            if profiles is None:
                raise ValueError("this map reads content profiles: none given")
            x = torch.cat([z, profiles.to(z.dtype)], dim=1)
        out = self.linear(x)
        if self.mlp is not None:
            out = out + self.mlp(x)
        if self.meta is not None and self.characteristic is not None:
            if items is None:
                raise ValueError("this map is personalised: the users' items are needed")
            d = z.shape[1]
            w = self.meta(self.characteristic(items)).view(-1, d, d)
            out = out + torch.bmm(w, z.unsqueeze(2)).squeeze(2)
        return out


def member_key(src: str, dst: str, k: int) -> str:
    """State-dict key of the k-th member (k >= 1) of the map src -> dst's ensemble."""
    return f"{pair_key(src, dst)}__{k}"


class Bridges(nn.Module):
    """Every trained map of a model, keyed by (source, target) domain.

    ``ensemble`` = m > 1: each pair has m maps trained from different initialisations, and a
    user's vector is the mean of their unit outputs (members 1..m-1 live in ``members``, so
    a one-map bundle keeps its layout)."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        pairs: list[tuple[str, str]],
        content_dim: int = 0,
        personal: int = 0,
        ensemble: int = 1,
    ) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.content_dim, self.personal, self.ensemble = content_dim, personal, ensemble
        self.pairs = sorted(pairs)
        self.maps = nn.ModuleDict(
            {pair_key(s, t): DomainMap(dim, hidden, content_dim, personal) for s, t in self.pairs}
        )
        # made after every first map, so those start as in a one-map model
        self.members = nn.ModuleDict(
            {
                member_key(s, t, k): DomainMap(dim, hidden, content_dim, personal)
                for k in range(1, ensemble)
                for s, t in self.pairs
            }
        )

    def pair_maps(self, src: str, dst: str) -> list[DomainMap]:
        """The ensemble of the map src -> dst (one map unless ``ensemble`` > 1)."""
        first = self.maps[pair_key(src, dst)]
        rest = [self.members[member_key(src, dst, k)] for k in range(1, self.ensemble)]
        out = [first, *rest]
        assert all(isinstance(f, DomainMap) for f in out)
        return out  # type: ignore[return-value]

    def has(self, src: str, dst: str) -> bool:
        return pair_key(src, dst) in self.maps

    @torch.no_grad()
    def map(
        self,
        src: str,
        dst: str,
        z_src: torch.Tensor,
        profiles: torch.Tensor | None = None,
        items: HistoryItems | None = None,
    ) -> torch.Tensor:
        """Users' vectors in ``dst`` from their fold-in vectors in ``src`` [b, d] (and their
        content profiles in ``src`` [b, r] when the maps read content, their ``src`` items
        when they are personalised): [b, d]."""
        x = F.normalize(z_src, dim=1)
        p, h = profiles if self.content_dim else None, items if self.personal else None
        maps = self.pair_maps(src, dst)
        if len(maps) == 1:
            out: torch.Tensor = maps[0](x, p, h)
            return out
        return torch.stack([F.normalize(f(x, p, h), dim=1) for f in maps]).mean(dim=0)

    def meta(self) -> dict[str, object]:
        """What the bundle manifest records to rebuild the modules."""
        return {
            "dim": self.dim,
            "hidden": self.hidden,
            "content_dim": self.content_dim,
            "personal": self.personal,
            "ensemble": self.ensemble,
            "pairs": [list(p) for p in self.pairs],
        }

    @classmethod
    def from_state(cls, meta: Mapping[str, object], state: Mapping[str, torch.Tensor]) -> Bridges:
        raw_pairs, dim, hidden = meta["pairs"], meta["dim"], meta["hidden"]
        # bundles written before the content input and the personalisation: neither
        content_dim, personal = meta.get("content_dim", 0), meta.get("personal", 0)
        ensemble = meta.get("ensemble", 1)
        if (
            not isinstance(raw_pairs, list)
            or not isinstance(dim, int)
            or not isinstance(hidden, int)
            or not isinstance(content_dim, int)
            or not isinstance(personal, int)
            or not isinstance(ensemble, int)
            or ensemble < 1
        ):
            raise ValueError(f"bridge metadata malformed: {dict(meta)!r:.200}")
        pairs = [(str(p[0]), str(p[1])) for p in raw_pairs]
        out = cls(dim, hidden, pairs, content_dim, personal, ensemble)
        out.load_state_dict(dict(state), strict=True)
        out.eval()
        return out
