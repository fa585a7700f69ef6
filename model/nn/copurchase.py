"""Cross-domain co-purchase: what users of both domains bought in one domain given the other.

For a target domain B and every other domain A, over the anchor users (old users with
training interactions in both, the pseudo-cold validation users excluded, as for the
cross-domain map of model.nn.bridge):

    P_AB[i, j] = (anchors who bought i in A and j in B) / (pairs (i, j') over all j')

the probability that an anchor who bought ``i`` bought ``j``. Stacking every other domain's
rows, ``[P_AB; P_CB; ...]`` ([sum n_A, n_B]) is factored by a truncated SVD of rank r:
``P ~ L V^T`` with ``L = U S``. Then

- item ``j`` of B carries ``V[j]`` ([r]) in its serving vector (0 for items no anchor
  bought there: held-out new items and items registered after training);
- a user new to B (history only in other domains) carries ``q_u = normalise(mean over
  their other-domain items i of L[i])``, the low-rank form of their items' co-purchase
  distribution over B.

``<q_u, V[j]>`` is one more block of the served inner product (model.nn.blend), weighted
per domain and user type by the blend fit on validation. Why: item-to-item co-occurrence
remembers which items go together across domains, where the cross-domain map only sees
the user's folded-in vector. Why the SVD: a sparse co-occurrence row cannot be served as
one inner product; its rank-r factors can. Measured (docs/results/ablation/copurchase.md):
the exact co-occurrence added to the map on test, this rank-64 form did not; off by
default (``[blend] copurchase_rank = 0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import svds


@dataclass
class CoPurchase:
    """Fitted factors: ``items[B]`` = V of B ([n_B, r]); ``sources[(A, B)]`` = the rows of
    L for A's items ([n_A, r])."""

    rank: int
    items: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)

    def users(self, target: str, histories: Sequence[Mapping[str, np.ndarray]]) -> torch.Tensor:
        """[b, r] user parts for ``target`` from each user's items in other domains (local
        ids; the ``target`` entry is ignored; an item past a domain's rows, one registered
        after training, has no co-purchase and is skipped). A user with none gets 0."""
        out = torch.zeros(len(histories), self.rank)
        for k, h in enumerate(histories):
            rows = [
                src[torch.as_tensor(ids[ids < len(src)])]
                for d, items in h.items()
                if d != target
                and (src := self.sources.get((d, target))) is not None
                and len(ids := np.unique(np.asarray(items, dtype=np.int64)))
            ]
            rows = [r for r in rows if len(r)]
            if rows:
                out[k] = F.normalize(torch.cat(rows).mean(dim=0), dim=0)
        return out

    # --- bundle ------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "domains": sorted(self.items),
            "pairs": [list(p) for p in sorted(self.sources)],
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        m = self.meta()
        out = {f"items.{k}": self.items[d] for k, d in enumerate(m["domains"])}
        out.update({f"sources.{k}": self.sources[(s, t)] for k, (s, t) in enumerate(m["pairs"])})
        return out

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> CoPurchase:
        rank = int(meta["rank"])
        items = {d: tensors[f"items.{k}"].float() for k, d in enumerate(meta["domains"])}
        sources = {
            (str(s), str(t)): tensors[f"sources.{k}"].float()
            for k, (s, t) in enumerate(meta["pairs"])
        }
        for name, x in [*items.items(), *sources.items()]:
            if x.ndim != 2 or x.shape[1] != rank:
                raise ValueError(
                    f"co-purchase factor {name} has shape {tuple(x.shape)}, rank {rank}"
                )
        return cls(rank, items, sources)


def _binary(pairs: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=shape)
    m.data[:] = 1.0  # a repeated purchase counts once
    return m


def fit_copurchase(
    domains: Mapping[str, tuple[list[str], int, np.ndarray]],
    rank: int,
    seed: int = 0,
) -> CoPurchase | None:
    """Factors from each domain's ``(user ids, n_items, anchor pairs [n, 2])``: the pairs
    are (local user, local item) rows of the users allowed to count (the caller leaves
    out whoever validation will judge). None when no target has co-purchase rows."""
    out = CoPurchase(rank)
    names = sorted(domains)
    for t in names:
        t_users, t_items, t_pairs = domains[t]
        where = {u: k for k, u in enumerate(t_users)}
        blocks: list[sp.csr_matrix] = []
        for s in names:
            if s == t:
                continue
            s_users, s_items, s_pairs = domains[s]
            in_t = np.array([where.get(u, -1) for u in s_users], dtype=np.int64)
            ok = np.flatnonzero(in_t >= 0)
            link = sp.csr_matrix(
                (np.ones(len(ok)), (ok, in_t[ok])), shape=(len(s_users), len(t_users))
            )
            co = (
                _binary(s_pairs, (len(s_users), s_items)).T
                @ link
                @ _binary(t_pairs, (len(t_users), t_items))
            ).tocsr()
            total = np.asarray(co.sum(axis=1)).ravel()
            blocks.append((sp.diags(1.0 / np.maximum(total, 1.0)) @ co).tocsr())
        if not blocks:
            continue
        stacked = sp.vstack(blocks).tocsr()
        k = min(rank, min(stacked.shape) - 1)
        if stacked.nnz == 0 or k < 1:
            continue
        # svds' start vector is drawn from its random_state: seeded, so a fit repeats
        u, s_vals, vt = svds(stacked, k=k, random_state=seed)
        left = np.zeros((stacked.shape[0], rank), dtype=np.float32)
        right = np.zeros((t_items, rank), dtype=np.float32)
        left[:, :k] = u * s_vals
        right[:, :k] = vt.T
        out.items[t] = torch.from_numpy(right)
        at = 0
        for s in names:
            if s == t:
                continue
            n = domains[s][1]
            out.sources[(s, t)] = torch.from_numpy(left[at : at + n].copy())
            at += n
    return out if out.items else None
