"""Descriptive statistics of a dataset and plain-text tables for the command line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.data.dataset import Dataset, Interactions

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Degree quantiles reported: min, 25%, median, 75%, max (numpy's linear interpolation)."""


@dataclass(frozen=True)
class DomainStats:
    """Sizes and degree distribution of one domain (or of ``"all"`` domains together).

    ``items`` counts the catalogue (items.csv) of the domain when describing raw data, so
    items nobody interacted with show up as degree 0 in ``item_degree`` and lower the
    ``density`` (= interactions / (users * items)). ``user_degree``/``item_degree`` hold the
    :data:`QUANTILES` of the per-user / per-item interaction counts.
    """

    domain: str
    users: int
    items: int
    interactions: int
    density: float
    overlapping_users: int
    """Users of this domain that also interact in another domain."""
    user_degree: tuple[float, ...]
    item_degree: tuple[float, ...]


def _quantiles(degrees: np.ndarray) -> tuple[float, ...]:
    if len(degrees) == 0:
        return tuple(0.0 for _ in QUANTILES)
    return tuple(float(q) for q in np.quantile(degrees, QUANTILES))


def _stats(
    name: str, inter: Interactions, catalogue: Sequence[str], overlap: set[str]
) -> DomainStats:
    """Statistics of the rows ``inter`` over the item catalogue ``catalogue``."""
    users: list[str] = []
    user_deg = np.zeros(0, dtype=np.int64)
    if len(inter):
        uniq, user_deg = np.unique(inter.user, return_counts=True)
        users = uniq.tolist()
    counts: dict[str, int] = dict.fromkeys(catalogue, 0)
    for i in inter.item.tolist():
        counts[i] = counts.get(i, 0) + 1
    n_users, n_items = len(users), len(counts)
    return DomainStats(
        domain=name,
        users=n_users,
        items=n_items,
        interactions=len(inter),
        density=len(inter) / (n_users * n_items) if n_users and n_items else 0.0,
        overlapping_users=sum(u in overlap for u in users),
        user_degree=_quantiles(user_deg),
        item_degree=_quantiles(np.fromiter(counts.values(), dtype=np.int64, count=n_items)),
    )


def dataset_stats(dataset: Dataset, inter: Interactions | None = None) -> list[DomainStats]:
    """One :class:`DomainStats` per domain (sorted) plus a final ``"all"`` row.

    ``inter`` defaults to ``dataset.interactions`` and ``items`` is then the whole
    catalogue; pass filtered interactions (e.g. after a k-core) to describe them, and
    ``items`` counts only the items they still contain.
    """
    # Raw data: the whole catalogue counts (never-bought items show as degree 0). Filtered
    # data: only surviving items, else a k-core's dropped items would swamp the quantiles.
    whole_catalogue = inter is None
    inter = dataset.interactions if inter is None else inter
    user_domains: dict[str, set[str]] = {}
    for u, d in zip(inter.user.tolist(), inter.domain.tolist(), strict=True):
        user_domains.setdefault(u, set()).add(d)
    overlap = {u for u, ds in user_domains.items() if len(ds) > 1}
    catalogue: dict[str, list[str]] = {}
    if whole_catalogue:
        for rec in dataset.items.values():
            catalogue.setdefault(rec.domain, []).append(rec.item_id)
    rows = [
        _stats(d, inter.select(inter.domain == d), catalogue.get(d, []), overlap)
        for d in sorted(set(dataset.domains) | set(inter.domain.tolist()))
    ]
    rows.append(_stats("all", inter, list(dataset.items) if whole_catalogue else [], overlap))
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Fixed-width text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[j]) for r in cells) for j in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _q(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:g}" for v in values)


def format_stats_table(stats: Sequence[DomainStats]) -> str:
    """The ``micrec data stats`` table (degree columns are min/25/50/75/max)."""
    headers = [
        "domain",
        "users",
        "items",
        "interactions",
        "density",
        "overlap users",
        "user deg min/25/50/75/max",
        "item deg min/25/50/75/max",
    ]
    rows = [
        [
            s.domain,
            s.users,
            s.items,
            s.interactions,
            f"{s.density:.5f}",
            s.overlapping_users,
            _q(s.user_degree),
            _q(s.item_degree),
        ]
        for s in stats
    ]
    return format_table(headers, rows)


def format_slice_table(sizes: dict[str, dict[str, Any]]) -> str:
    """Table of :func:`model.data.splitio.slice_sizes`: split sizes, then test pairs per
    slice (``xd-cold`` = cross-domain cold users; ``deg`` = full-train item degree)."""
    headers = [
        "domain",
        "users",
        "items",
        "train",
        "train old",
        "val",
        "test",
        "new users",
        "new items",
        "overlap",
        "xd-cold users",
        "test: new users",
        "cold items",
        "xd-cold",
        "deg 0",
        "deg 1-5",
        "deg 6-20",
        "deg >20",
    ]
    rows = []
    for d, s in sizes.items():
        sl, b = s["slices"], s["degree_buckets"]
        rows.append(
            [
                d,
                s["users"],
                s["items"],
                s["train"],
                s["train_old"],
                s["val"],
                s["test"],
                s["new_users"],
                s["new_items"],
                s["overlapping_users"],
                s["cross_domain_cold_users"],
                sl["new_users"]["test_pairs"],
                s["cold_item_test_pairs"],
                sl["cross_domain_cold"]["test_pairs"],
                *(b[k]["test_pairs"] for k in ("0", "1-5", "6-20", ">20")),
            ]
        )
    return format_table(headers, rows)
