"""Content -> collaborative mapping for items nobody has interacted with yet.

A cold item has no edges, so in the graph it is only its layer-0 vector: under INMO the
item token (every cold item the same), with content ``(t_item + gamma h_i) / (L + 1)``.
Its ranking then comes from the blend's content part alone (content kNN). The item map
learns, per domain, where an item with this content would sit among the *trained* item
vectors (DeepMusic, van den Oord et al., NeurIPS 2013; Heater, Zhu et al., SIGIR 2020;
ALDI, Huang et al., SIGIR 2023, which distils warm items into the cold-item generator):

    g_d(x_i) ~ z_i         for warm items i of domain d (x_i: the frozen encoder outputs)

trained with a ranking loss (the users who interacted with i should rank g_d(x_i) above
other items) plus a distillation term to z_i itself (model.itemmapfit). Cold items of a
bundle and items registered later get ``g_d(x)`` as their model vector, so their model
score depends on their content and competes with warm items on the same scale.

Shapes: x [n, D] = the modalities' outputs concatenated in ``modalities`` order (zeros for
an absent modality); out [n, d].
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


def domain_key(domain: str) -> str:
    """Module key of a domain (any characters allowed in domain names)."""
    return domain.encode().hex()


class ItemMaps(nn.Module):
    """One map per domain from the concatenated content features to item vectors."""

    def __init__(
        self,
        modalities: tuple[str, ...],
        dims: tuple[int, ...],
        dim: int,
        hidden: int,
        domains: list[str],
    ) -> None:
        super().__init__()
        self.modalities, self.dims, self.dim, self.hidden = modalities, dims, dim, hidden
        self.domains = sorted(domains)
        self.low_degree_k: dict[str, float] = {}
        """Per domain, the pseudo-count k of the low-degree mix: an item with d >= 1
        training interactions is served k / (k + d) of its mapped vector and d / (k + d)
        of its collaborative one (absent or 0 = collaborative only). Chosen on validation
        by the blend fit (model.blendfit); 0 until then."""
        d_in = sum(dims)
        self.maps = nn.ModuleDict(
            {
                domain_key(d): nn.Sequential(
                    nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, dim)
                )
                for d in self.domains
            }
        )

    def inputs(self, features: Mapping[str, np.ndarray | torch.Tensor], n: int) -> torch.Tensor:
        """[n, D] from modality -> [n, dim_m] features (a missing modality is zeros)."""
        parts = []
        for m, dm in zip(self.modalities, self.dims, strict=True):
            f = features.get(m)
            if f is not None and f.shape[1] != dm:
                raise ValueError(f"{m} features have dim {f.shape[1]}, the item map expects {dm}")
            parts.append(
                torch.zeros(n, dm) if f is None else torch.as_tensor(f, dtype=torch.float32)
            )
        return torch.cat(parts, dim=1)

    def forward(self, domain: str, x: torch.Tensor) -> torch.Tensor:
        net = self.maps[domain_key(domain)]
        out: torch.Tensor = net(x)
        return out

    @torch.no_grad()
    def map(
        self, domain: str, features: Mapping[str, np.ndarray | torch.Tensor], n: int
    ) -> torch.Tensor:
        """Model vectors [n, d] of n items of ``domain`` from their content."""
        return self.forward(domain, self.inputs(features, n))

    def meta(self) -> dict[str, object]:
        return {
            "modalities": list(self.modalities),
            "dims": list(self.dims),
            "dim": self.dim,
            "hidden": self.hidden,
            "domains": list(self.domains),
            "low_degree_k": dict(self.low_degree_k),
        }

    @classmethod
    def from_state(cls, meta: Mapping[str, object], state: Mapping[str, torch.Tensor]) -> ItemMaps:
        mods, dims, doms = meta["modalities"], meta["dims"], meta["domains"]
        dim, hidden = meta["dim"], meta["hidden"]
        if not (
            isinstance(mods, list)
            and isinstance(dims, list)
            and isinstance(doms, list)
            and isinstance(dim, int)
            and isinstance(hidden, int)
        ):
            raise ValueError(f"item map metadata malformed: {dict(meta)!r:.200}")
        out = cls(
            tuple(map(str, mods)), tuple(int(x) for x in dims), dim, hidden, [str(d) for d in doms]
        )
        out.load_state_dict(dict(state), strict=True)
        low = meta.get("low_degree_k", {})  # absent in bundles made before the mix
        if not isinstance(low, dict) or not all(
            isinstance(v, (int, float)) and 0 <= v < float("inf") for v in low.values()
        ):
            raise ValueError(f"item map low_degree_k malformed: {low!r:.200}")
        out.low_degree_k = {str(d): float(v) for d, v in low.items() if str(d) in out.domains}
        out.eval()
        return out
