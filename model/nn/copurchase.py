"""Cross-domain co-purchase: what users of both domains bought in one domain given the other.

For a target domain B and every other domain A, over the anchor users (users with
interactions in both in the graph the model scores with: a bundle's training graph, or
the inputs an evaluation binds, which hide the evaluated users' target-domain rows):

    P_AB[i, j] = (anchors who bought i in A and j in B) / (pairs (i, j') over all j')

the probability that an anchor who bought ``i`` bought ``j`` (each row keeps its
``top`` largest entries: a bounded size per source item however large the catalogues).
A user of B with items in other domains gets the boost

    c_u[j] = b_u[j] / max_j' b_u[j'],   b_u = sum over the user's other-domain items i of P[i]

(in [0, 1]; the user's best co-purchased item gets 1), and the served score of item j is
``s(u, j) + w_copurchase * c_u[j]`` with the domain's weight for the user's type
(model.nn.blend.BlendWeights, fitted on validation by model.copurchasefit: users new to
B on the pseudo-cold validation users, users with history in B too on their slices).

Why exact and not one more block of the inner product: the gain is in the sharp item
pairs of the co-occurrence, which a low-rank factorisation loses (a rank-64 and a rank-256
SVD block were built and measured: no gain; docs/results/ablation/copurchase.md). Why it
is still exactly servable: ``c_u`` is sparse and nonnegative, so an item outside it keeps
its index score, and the top n of ``s + w c`` is within the index's top n plus the
items of ``c_u`` scored exactly (app/serving/copurchase.py does that re-ranking; the
offline evaluation adds ``w c_u`` to the full score matrix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_TOP = 200
"""Entries kept per source item (``[blend] copurchase_top``)."""


@dataclass
class CoPurchase:
    """``transitions[(A, B)]``: P_AB as CSR [n_A, n_B] (source items x target items),
    ``top`` entries per source item at most. Like item vectors, the transitions belong to
    a graph: :meth:`on_graph` fits them for another one with the same ``top``."""

    top: int = DEFAULT_TOP
    transitions: dict[tuple[str, str], sp.csr_matrix] = field(default_factory=dict)
    anchor_norm: float = 0.0
    """Each anchor's target items weigh ``(their number)^-anchor_norm``: 0 counts item pairs
    (a heavy buyer's many items weigh as much as everyone else's), 1 gives every anchor one
    vote spread over their items."""
    pop: dict[str, float] = field(default_factory=dict)
    """Per target domain (absent: 0), item j's entries are divided by ``(its
    buyers)^pop`` before each row is normalised: 0 keeps the raw co-purchase share (which
    leans to what is popular anyway, and the blend has a popularity prior already),
    larger values favour what is specific to the source item. model.copurchasefit
    chooses it per domain on validation."""

    max_items: int = 0
    """A user's boost keeps its ``max_items`` largest entries (0: all). Bounds what the
    service's re-ranking stage scores for a user with a long history elsewhere; the
    evaluation cuts the same way (both call :meth:`boosts`)."""

    def on_graph(self, domains: Mapping[str, tuple[Sequence[str], int, np.ndarray]]) -> CoPurchase:
        """The transitions of ``domains`` (see :func:`fit_copurchase`) with this ``top``,
        these exponents and this ``max_items``."""
        out = fit_copurchase(domains, self.top, anchor_norm=self.anchor_norm, pop=self.pop)
        out.max_items = self.max_items
        return out

    @property
    def nnz(self) -> int:
        return sum(int(m.nnz) for m in self.transitions.values())

    def boosts(
        self, target: str, histories: Sequence[Mapping[str, np.ndarray]], n_items: int
    ) -> sp.csr_matrix:
        """[b, n_items] ``c_u`` of each user from their items in other domains (local ids;
        the ``target`` entry is ignored; an item past a domain's rows, one registered after
        training, has no co-purchase and is skipped). A user with none gets an empty row.
        ``n_items``: the target's items (its transitions' columns must be as many)."""
        for (_, t), m in self.transitions.items():
            if t == target and m.shape[1] != n_items:
                raise ValueError(f"co-purchase of {target} has {m.shape[1]} items, not {n_items}")
        total = sp.csr_matrix((len(histories), n_items), dtype=np.float32)
        sources = {d for d, t in self.transitions if t == target and d != target}
        if not any(len(h.get(d, ())) for h in histories for d in sources):
            return total  # nobody has items elsewhere: skip the sparse products (the
            # service's inline-history batches are mostly such users)
        for (d, t), m in self.transitions.items():
            if t != target or d == target:
                continue
            users, items = [], []
            for k, h in enumerate(histories):
                ids = np.unique(np.asarray(h.get(d, ()), dtype=np.int64))
                ids = ids[(ids >= 0) & (ids < m.shape[0])]
                users.append(np.full(len(ids), k))
                items.append(ids)
            if histories:  # users x source items, one per distinct item: a sum of P rows
                pick = sp.csr_matrix(
                    (
                        np.ones(sum(map(len, items)), dtype=np.float32),
                        (np.concatenate(users), np.concatenate(items)),
                    ),
                    shape=(len(histories), m.shape[0]),
                )
                total = (total + pick @ m).tocsr()
        if self.max_items > 0:
            total = _top_per_row(total, self.max_items)
        top = total.max(axis=1).toarray().ravel() if total.nnz else np.zeros(len(histories))
        scale = np.divide(1.0, top, out=np.zeros_like(top), where=top > 0)
        return (sp.diags(scale.astype(np.float32)) @ total).tocsr().astype(np.float32)

    def boost_rows(
        self, target: str, histories: Sequence[Mapping[str, np.ndarray]], n_items: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`boosts` per user as (target item rows int64, values float32): the sparse
        form the service re-ranks with."""
        m = self.boosts(target, histories, n_items)
        return [
            (
                m.indices[m.indptr[k] : m.indptr[k + 1]].astype(np.int64),
                m.data[m.indptr[k] : m.indptr[k + 1]].astype(np.float32),
            )
            for k in range(m.shape[0])
        ]

    # --- bundle ------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        pairs = sorted(self.transitions)
        return {
            "top": self.top,
            "anchor_norm": self.anchor_norm,
            "max_items": self.max_items,
            "pop": dict(sorted(self.pop.items())),
            "pairs": [list(p) for p in pairs],
            "shapes": [list(self.transitions[p].shape) for p in pairs],
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for k, p in enumerate(sorted(self.transitions)):
            m = self.transitions[p]
            out[f"{k}.indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
            out[f"{k}.indices"] = torch.from_numpy(m.indices.astype(np.int64))
            out[f"{k}.data"] = torch.from_numpy(m.data.astype(np.float32))
        return out

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> CoPurchase:
        """Checked: shapes, offsets and indices must describe a valid CSR matrix of
        nonnegative finite values (a bundle file is untrusted input)."""
        out = cls(
            top=int(meta["top"]),
            anchor_norm=float(meta.get("anchor_norm", 0.0)),
            max_items=int(meta.get("max_items", 0)),
            pop={str(d): float(v) for d, v in dict(meta.get("pop") or {}).items()},
        )
        if not all(np.isfinite(v) and v >= 0 for v in (out.anchor_norm, *out.pop.values())):
            raise ValueError("co-purchase exponents must be finite and nonnegative")
        if out.max_items < 0:
            raise ValueError(f"co-purchase max_items must be >= 0, got {out.max_items}")
        for k, (pair, shape) in enumerate(zip(meta["pairs"], meta["shapes"], strict=True)):
            name = f"co-purchase {pair[0]} -> {pair[1]}"
            rows, cols = int(shape[0]), int(shape[1])
            indptr = tensors[f"{k}.indptr"].numpy()
            indices = tensors[f"{k}.indices"].numpy()
            data = tensors[f"{k}.data"].numpy()
            if rows < 0 or cols < 0 or indptr.shape != (rows + 1,) or indptr[0] != 0:
                raise ValueError(f"{name}: offsets do not match shape {rows} x {cols}")
            if np.any(np.diff(indptr) < 0):
                raise ValueError(f"{name}: offsets are not increasing")
            if len(indices) != len(data) or int(indptr[-1]) != len(data):
                raise ValueError(f"{name}: {len(indices)} indices for {len(data)} values")
            if len(indices) and (indices.min() < 0 or indices.max() >= cols):
                raise ValueError(f"{name}: an item index is outside 0..{cols - 1}")
            if not np.all(np.isfinite(data)) or np.any(data < 0):
                raise ValueError(f"{name}: values must be finite and nonnegative")
            out.transitions[(str(pair[0]), str(pair[1]))] = sp.csr_matrix(
                (data, indices, indptr), shape=(rows, cols)
            )
        return out


def _binary(pairs: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=shape)
    m.data[:] = 1.0  # a repeated purchase counts once
    return m


def _power(counts: np.ndarray, exponent: float) -> np.ndarray:
    """``counts ** exponent`` with 0 where a count is 0 (nothing to weigh)."""
    out = np.zeros(len(counts), dtype=np.float64)
    ok = counts > 0
    out[ok] = counts[ok].astype(np.float64) ** exponent
    return out


def _top_per_row(m: sp.csr_matrix, top: int) -> sp.csr_matrix:
    """``m`` with only the ``top`` largest entries of each row (ties: the lower index)."""
    if top <= 0:
        return m
    lengths = np.diff(m.indptr)
    if not len(lengths) or lengths.max() <= top:
        return m
    keep = np.zeros(m.nnz, dtype=bool)
    for r in np.flatnonzero(lengths > 0):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        if hi - lo <= top:
            keep[lo:hi] = True
        else:
            order = np.lexsort((m.indices[lo:hi], -m.data[lo:hi]))[:top]
            keep[lo + order] = True
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def fit_copurchase(
    domains: Mapping[str, tuple[Sequence[str], int, np.ndarray]],
    top: int = DEFAULT_TOP,
    *,
    anchor_norm: float = 0.0,
    pop: Mapping[str, float] | None = None,
) -> CoPurchase:
    """P_AB for every ordered pair of domains from each domain's ``(user ids, n_items,
    pairs [n, 2])``: the pairs are the graph's (local user, local item) rows (the caller
    leaves out whatever the users it will judge must not have). Users are matched across
    domains by id; a pair of domains without a shared user has no transitions."""
    pop = dict(pop or {})
    out = CoPurchase(top, anchor_norm=anchor_norm, pop=pop)
    names = sorted(domains)
    for t in names:
        t_users, t_items, t_pairs = domains[t]
        where = {u: k for k, u in enumerate(t_users)}
        b = _binary(t_pairs, (len(t_users), t_items))
        if anchor_norm:
            b = sp.diags(_power(np.asarray(b.sum(axis=1)).ravel(), -anchor_norm)) @ b
        if pop.get(t):
            buyers = np.asarray(b.astype(bool).sum(axis=0)).ravel()
            b = b @ sp.diags(_power(buyers, -pop[t]))
        b = b.tocsr()
        for s in names:
            if s == t:
                continue
            s_users, s_items, s_pairs = domains[s]
            in_t = np.array([where.get(u, -1) for u in s_users], dtype=np.int64)
            ok = np.flatnonzero(in_t >= 0)
            link = sp.csr_matrix(
                (np.ones(len(ok)), (ok, in_t[ok])), shape=(len(s_users), len(t_users))
            )
            co = (_binary(s_pairs, (len(s_users), s_items)).T @ link @ b).tocsr()
            if co.nnz == 0:
                continue
            total = np.asarray(co.sum(axis=1)).ravel()
            p = (sp.diags(1.0 / np.maximum(total, 1.0)) @ co).tocsr().astype(np.float32)
            p.sort_indices()
            out.transitions[(s, t)] = _top_per_row(p, top)
    return out
