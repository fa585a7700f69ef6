"""Graph structures of one domain: templates, template incidence, normalised adjacency.

Node order everywhere: users ``0..n_users-1`` then items ``n_users..n_users+n_items-1``.
All builders take local-id pair arrays ``pairs`` int64 [n, 2] = (user, item).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TemplateMap:
    """Which users/items are templates and their rows in the template table.

    ``user_rows``/``item_rows``: int64 [n_users]/[n_items], the table row of a template
    entity or -1. Table layout: template users, template items, user token, item token.
    Fixed after training and saved with the model.
    """

    user_rows: np.ndarray
    item_rows: np.ndarray

    @property
    def n_user_templates(self) -> int:
        return int((self.user_rows >= 0).sum())

    @property
    def n_item_templates(self) -> int:
        return int((self.item_rows >= 0).sum())

    @property
    def user_token(self) -> int:
        return self.n_user_templates + self.n_item_templates

    @property
    def item_token(self) -> int:
        return self.user_token + 1

    @property
    def n_rows(self) -> int:
        return self.item_token + 1


def _rank_rows(mask: np.ndarray, score: np.ndarray, ratio: float) -> np.ndarray:
    """Rows 0..k-1 to the top-``ratio`` entities of ``mask`` by score (ties by id)."""
    cand = np.flatnonzero(mask)
    k = round(len(cand) * ratio) if ratio < 1 else len(cand)
    # stable sort on -score keeps id order among ties, so the choice is deterministic
    keep = np.sort(cand[np.argsort(-score[cand], kind="stable")[:k]])
    rows = np.full(len(mask), -1, dtype=np.int64)
    rows[keep] = np.arange(len(keep))
    return rows


def select_templates(
    n_users: int, n_items: int, pairs: np.ndarray, ratio: float = 1.0
) -> TemplateMap:
    """Templates among entities with training interactions (METHOD.md 1, "Templates").

    With ``ratio < 1`` users are ranked by sum over their items of 1/deg(item) (and items
    symmetrically), which favours entities connected to the long tail.
    """
    u, i = pairs[:, 0], pairs[:, 1]
    deg_u = np.bincount(u, minlength=n_users).astype(np.float64)
    deg_i = np.bincount(i, minlength=n_items).astype(np.float64)
    score_u = np.bincount(u, weights=1.0 / np.maximum(deg_i[i], 1), minlength=n_users)
    score_i = np.bincount(i, weights=1.0 / np.maximum(deg_u[u], 1), minlength=n_items)
    user_rows = _rank_rows(deg_u > 0, score_u, ratio)
    item_rows = _rank_rows(deg_i > 0, score_i, ratio)
    item_rows[item_rows >= 0] += int((user_rows >= 0).sum())
    return TemplateMap(user_rows=user_rows, item_rows=item_rows)


@dataclass
class TemplateIncidence:
    """Sparse template incidence [n_users + n_items, n_rows] and per-row counts.

    Entry (user u, row of template item i) = 1 for every interaction (u, i) with a template
    item, plus (u, user token) = 1; items symmetrically with template users and the item
    token. ``counts`` = c_x = number of template neighbours + 1 (token), float32 [n_nodes].
    """

    indices: torch.Tensor
    values: torch.Tensor
    counts: torch.Tensor
    shape: tuple[int, int]

    def matrix(self, drop: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sparse COO matrix; with ``drop`` > 0 (training) each non-zero is dropped with
        probability ``drop`` and survivors scaled by 1/(1-drop) (counts stay unchanged)."""
        values = self.values
        if drop > 0:
            keep = torch.rand(values.shape, generator=generator, device=values.device) >= drop
            values = values * keep / (1.0 - drop)
        # indices were coalesced once at build time; dropped entries stay as explicit zeros,
        # which saves a sort of every non-zero at every training step
        # (checked once when the incidence was built; not again at every step)
        return torch.sparse_coo_tensor(
            self.indices, values, self.shape, is_coalesced=True, check_invariants=False
        )

    def to(self, device: torch.device | str) -> TemplateIncidence:
        return TemplateIncidence(
            self.indices.to(device), self.values.to(device), self.counts.to(device), self.shape
        )


def template_incidence(
    tmap: TemplateMap, n_users: int, n_items: int, pairs: np.ndarray
) -> TemplateIncidence:
    u, i = pairs[:, 0], pairs[:, 1]
    # entities added after training (ids past the maps) are never templates
    user_rows = np.concatenate([tmap.user_rows, np.full(max(0, n_users - len(tmap.user_rows)), -1)])
    item_rows = np.concatenate([tmap.item_rows, np.full(max(0, n_items - len(tmap.item_rows)), -1)])
    ti = item_rows[i]
    tu = user_rows[u]
    ok_u, ok_i = ti >= 0, tu >= 0
    rows = np.concatenate(
        [u[ok_u], np.arange(n_users), n_users + i[ok_i], n_users + np.arange(n_items)]
    )
    cols = np.concatenate(
        [ti[ok_u], np.full(n_users, tmap.user_token), tu[ok_i], np.full(n_items, tmap.item_token)]
    )
    n_nodes = n_users + n_items
    counts = np.bincount(rows, minlength=n_nodes).astype(np.float32)
    coo = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols]).astype(np.int64)),
        torch.ones(len(rows)),
        (n_nodes, tmap.n_rows),
        check_invariants=True,  # once per graph build: indices come from a dataset
    ).coalesce()  # duplicates (repeated interactions) are summed, as in INMO's scipy matrix
    return TemplateIncidence(
        indices=coo.indices(),
        values=coo.values(),
        counts=torch.from_numpy(counts),
        shape=(n_nodes, tmap.n_rows),
    )


def normalized_adjacency(n_users: int, n_items: int, pairs: np.ndarray) -> torch.Tensor:
    """A_hat = D^-1/2 A D^-1/2 of the bipartite graph, sparse COO [n_nodes, n_nodes].

    Degrees are clipped to >= 1 so isolated nodes (new or cold entities) get zero rows
    instead of NaNs.
    """
    u, i = pairs[:, 0], pairs[:, 1] + n_users
    n = n_users + n_items
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    deg = np.maximum(np.bincount(rows, minlength=n), 1).astype(np.float32)
    vals = 1.0 / np.sqrt(deg[rows] * deg[cols])
    return torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols]).astype(np.int64)),
        torch.from_numpy(vals.astype(np.float32)),
        (n, n),
        check_invariants=True,  # once per graph build: indices come from a dataset
    ).coalesce()


def interaction_matrix(n_users: int, n_items: int, pairs: np.ndarray) -> torch.Tensor:
    """Binary user x item sparse matrix [n_users, n_items] (for content preference)."""
    idx = torch.from_numpy(pairs.T.astype(np.int64).copy())
    return torch.sparse_coo_tensor(
        idx, torch.ones(len(pairs)), (n_users, n_items), check_invariants=True
    ).coalesce()
