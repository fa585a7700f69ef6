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

Shapes: ``dim`` = the model's d; the input and output of every map are [b, d].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


def pair_key(src: str, dst: str) -> str:
    """State-dict prefix of the map src -> dst (domain names may hold any character)."""
    return f"{src.encode().hex()}__{dst.encode().hex()}"


class DomainMap(nn.Module):
    """f_{A->B}: [b, d] unit vectors of domain A -> [b, d] vectors in domain B's space.

    hidden = 0 is a linear map (EMCDR's linear variant); otherwise one hidden layer with a
    residual linear path, so the map starts close to a linear one and the nonlinearity
    only adds what the data supports.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.mlp: nn.Module | None = (
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if hidden > 0
            else None
        )
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        """Softmax temperature of the ranking loss (training only; serving normalises)."""
        self.prior_weight = nn.Parameter(torch.tensor(0.0))
        """Weight of the item prior inside the training loss (training only): with it the
        map learns what popularity does not already explain, as the served blend adds
        the prior itself (model.nn.blend)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.linear(z)
        if self.mlp is not None:
            out = out + self.mlp(z)
        return out


class Bridges(nn.Module):
    """Every trained map of a model, keyed by (source, target) domain."""

    def __init__(self, dim: int, hidden: int, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.pairs = sorted(pairs)
        self.maps = nn.ModuleDict({pair_key(s, t): DomainMap(dim, hidden) for s, t in self.pairs})

    def has(self, src: str, dst: str) -> bool:
        return pair_key(src, dst) in self.maps

    @torch.no_grad()
    def map(self, src: str, dst: str, z_src: torch.Tensor) -> torch.Tensor:
        """Users' vectors in ``dst`` from their fold-in vectors in ``src``: [b, d]."""
        f = self.maps[pair_key(src, dst)]
        return f(F.normalize(z_src, dim=1))

    def meta(self) -> dict[str, object]:
        """What the bundle manifest records to rebuild the modules."""
        return {"dim": self.dim, "hidden": self.hidden, "pairs": [list(p) for p in self.pairs]}

    @classmethod
    def from_state(cls, meta: Mapping[str, object], state: Mapping[str, torch.Tensor]) -> Bridges:
        raw_pairs, dim, hidden = meta["pairs"], meta["dim"], meta["hidden"]
        if (
            not isinstance(raw_pairs, list)
            or not isinstance(dim, int)
            or not isinstance(hidden, int)
        ):
            raise ValueError(f"bridge metadata malformed: {dict(meta)!r:.200}")
        pairs = [(str(p[0]), str(p[1])) for p in raw_pairs]
        out = cls(dim, hidden, pairs)
        out.load_state_dict(dict(state), strict=True)
        out.eval()
        return out
