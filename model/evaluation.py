"""Full-ranking evaluation over the slices of docs/evaluation.md.

Every ranker is scored through the same path: it is *bound* to an input graph (the
interactions it may read), then asked for [users x items] scores in one domain. MICRec's
scores come from the fold-in embedder (model.nn.foldin) that the service uses too, so an
offline number is what the service would answer. A ranker that cannot serve a slice
returns None and the slice is reported as n/a, never borrowed from another method.

The ``all`` slice also reports two catalogue metrics per K (model.metrics):
``coverage@K``, the distinct items in any evaluated user's top-K over the domain's
candidate items (all items), and ``long_tail@K``, the mean over users of the share of
their top-K that lies in the long tail (the 80 % of items with the fewest training
interactions, ties by item id). ``cold_items_vs_all`` stays the cold-item slice that
competes with every warm item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model.data.split import DomainSplit, InductiveSplit
from model.metrics import coverage_at_k, long_tail_mask, long_tail_share_at_k, user_metrics

KS = (10, 20, 50)
CATALOGUE_SLICE = "all"
"""The slice whose top-K tables give coverage@K and long_tail@K."""
CROSS_DOMAIN_KINDS = ("cd_cold", "cd_pseudo")
"""Input kinds whose users are served from their other domains only."""
PSEUDO_COLD_SLICE = "cd_pseudo_cold"
"""Validation only: old users shared with another domain, their history in this domain
hidden (model.data.split.InductiveSplit.pseudo_cold_users): the validation stand-in for
users new to a domain."""
DEGREE_BUCKETS = (("deg_0", 0, 0), ("deg_1-5", 1, 5), ("deg_6-20", 6, 20), ("deg_>20", 21, 10**12))


class Scorer(Protocol):
    def scores(self, domain: str, users: np.ndarray, *, cross_domain: bool) -> torch.Tensor | None:
        """[len(users), n_items] scores; cross_domain: serve from other domains only."""


class Ranker(Protocol):
    name: str

    def serves(self, slice_name: str) -> bool: ...

    def bind(self, inputs: dict[str, np.ndarray]) -> Scorer:
        """A scorer that reads only ``inputs`` (domain -> local (user, item) pairs)."""


@dataclass
class Slice:
    """Users, candidate items and targets of one evaluation slice in one domain."""

    name: str
    domain: str
    input_kind: str  # "standard" | "cold_items" | "cd_cold" | "cd_pseudo"
    users: np.ndarray
    targets: list[np.ndarray]
    candidates: np.ndarray  # bool [n_items]


def _group(pairs: np.ndarray, users: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(pairs[:, 0], kind="stable")
    p = pairs[order]
    lo = np.searchsorted(p[:, 0], users, side="left")
    hi = np.searchsorted(p[:, 0], users, side="right")
    return [p[a:b, 1] for a, b in zip(lo, hi, strict=True)]


def _slice(
    name: str,
    ds: DomainSplit,
    kind: str,
    test: np.ndarray,
    cand: np.ndarray,
    users: np.ndarray | None = None,
) -> Slice:
    test = test[cand[test[:, 1]]]
    u = np.unique(test[:, 0])
    if users is not None:
        u = np.intersect1d(u, users)
    return Slice(name, ds.domain, kind, u, _group(test, u), cand)


def _population(sl: Slice, keep: np.ndarray) -> Slice:
    """``sl`` restricted to the users with ``keep[user]``."""
    ok = keep[sl.users]
    targets = [t for t, k in zip(sl.targets, ok, strict=True) if k]
    return Slice(sl.name, sl.domain, sl.input_kind, sl.users[ok], targets, sl.candidates)


def build_slices(split: InductiveSplit, domain: str, *, stage: str = "test") -> list[Slice]:
    """The slices of ``domain`` with targets from the test split, or from the validation
    split (``stage="val"``: what weights and hyperparameters are chosen on).

    Validation slices hold only the users the test split scores
    (``DomainSplit.test_population``), so what is fitted on them is fitted on the
    population it serves, and add the pseudo-cold users (``PSEUDO_COLD_SLICE``)."""
    ds = split.domains[domain]
    new_u, new_i = ds.new_user_mask(), ds.new_item_mask()
    all_i = np.ones(ds.n_items, dtype=bool)
    test = {"test": ds.test, "val": ds.val}[stage]
    deg = np.bincount(ds.train[:, 1], minlength=ds.n_items)
    old_users = np.flatnonzero(~new_u)
    out = [
        _slice("all", ds, "standard", test, all_i),
        _slice("old_users", ds, "standard", test, all_i, old_users),
        _slice("new_users", ds, "standard", test, all_i, np.flatnonzero(new_u)),
        _slice("old_items", ds, "standard", test, ~new_i),
        _slice("new_items", ds, "standard", test, new_i),
        _slice("old_users_old_items", ds, "standard", test, ~new_i, old_users),
        _slice("cold_items", ds, "cold_items", test, new_i),
        # the same cold items competing with every warm item, as in the service
        _slice("cold_items_vs_all", ds, "cold_items", test[new_i[test[:, 1]]], all_i),
        _slice("cd_cold_users", ds, "cd_cold", test, all_i, split.cross_domain_cold_users(domain)),
    ]
    if stage == "val":
        pseudo = split.pseudo_cold_users(domain)
        out.append(_slice(PSEUDO_COLD_SLICE, ds, "cd_pseudo", test, all_i, pseudo))
    for name, lo, hi in DEGREE_BUCKETS:
        bucket = (deg >= lo) & (deg <= hi)
        s = _slice(name, ds, "standard", test[bucket[test[:, 1]]], all_i)
        s.candidates = all_i  # rank among all items; only targets are restricted to the bucket
        out.append(s)
    if stage == "val":
        keep = ds.test_population()
        out = [_population(s, keep) for s in out]
    return out


def slice_inputs(split: InductiveSplit, domain: str, kind: str) -> dict[str, np.ndarray]:
    """The interactions a model may read for a slice kind (all domains' full train input)."""
    inputs = {d: s.train for d, s in split.domains.items()}
    ds = split.domains[domain]
    if kind == "cold_items":  # new items lose every interaction: content only
        inputs[domain] = ds.train[~ds.new_item_mask()[ds.train[:, 1]]]
    elif kind == "cd_cold":  # the slice's users lose their whole target-domain history
        hide = np.isin(ds.train[:, 0], split.cross_domain_cold_users(domain))
        inputs[domain] = ds.train[~hide]
    elif kind == "cd_pseudo":  # pseudo-cold validation users: the same, for old users
        hide = np.isin(ds.train[:, 0], split.pseudo_cold_users(domain))
        inputs[domain] = ds.train[~hide]
    return inputs


def seen_pairs(ds: DomainSplit, stage: str = "test") -> np.ndarray:
    """Pairs masked out of the ranking: training (and, for the test stage, validation)."""
    return np.concatenate([ds.train, ds.val]) if stage == "test" else ds.train


def _masked_topk(
    scores: torch.Tensor,
    users: np.ndarray,
    ds: DomainSplit,
    cand: np.ndarray,
    k: int,
    stage: str = "test",
) -> np.ndarray:
    """[len(users), min(k, candidates)] local item ids, best first, train+val items and
    non-candidates masked. A user with fewer than k rankable items (a small domain: K larger
    than a catalogue is legal) gets -1 in the remaining columns, never a masked item."""
    scores = scores.clone()
    scores[:, torch.as_tensor(~cand)] = -torch.inf
    seen = seen_pairs(ds, stage)
    row = np.full(ds.n_users, -1)
    row[users] = np.arange(len(users))
    r = row[seen[:, 0]]
    ok = r >= 0
    scores[torch.as_tensor(r[ok]), torch.as_tensor(seen[ok, 1])] = -torch.inf
    k = min(k, int(cand.sum()))
    top = torch.topk(scores, k, dim=1)
    idx = top.indices.cpu().numpy()
    idx[~torch.isfinite(top.values).cpu().numpy()] = -1
    return idx


def _catalogue_metrics(
    top: np.ndarray, ds: DomainSplit, sl: Slice, ks: Sequence[int]
) -> dict[str, float | None]:
    """coverage@K and long_tail@K of one slice's top-K table (degree = full train input)."""
    tail = long_tail_mask(np.bincount(ds.train[:, 1], minlength=ds.n_items), ds.item_ids)
    out: dict[str, float | None] = {}
    for k in ks:
        out[f"coverage@{k}"] = coverage_at_k(top, k, int(sl.candidates.sum()))
        out[f"long_tail@{k}"] = long_tail_share_at_k(top, k, tail)
    return out


def evaluate(
    ranker: Ranker,
    split: InductiveSplit,
    *,
    domains: Sequence[str] | None = None,
    ks: Sequence[int] = KS,
    batch_users: int = 1024,
    only: Sequence[str] | None = None,
    stage: str = "test",
    per_user: dict[tuple[str, str], dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """{domain: {slice: {"n_users", "recall@k", "ndcg@k"...}}} with None for n/a slices;
    the ``all`` slice adds "coverage@k" and "long_tail@k" (module docstring).
    ``stage="val"`` scores the validation split instead of the test split. ``per_user``
    (a dict to fill) receives {(domain, slice): {"users": local ids, "ndcg@k": [users]...}}
    for every scored slice: what a paired comparison of two rankers needs."""
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    kmax = max(ks)
    for domain in domains or sorted(split.domains):
        ds = split.domains[domain]
        scorers: dict[str, Scorer] = {}
        results[domain] = {}
        for sl in build_slices(split, domain, stage=stage):
            if only is not None and sl.name not in only:
                continue
            row: dict[str, float | None] = {"n_users": float(len(sl.users))}
            names: tuple[str, ...] = ("recall", "ndcg")
            if sl.name == CATALOGUE_SLICE:
                names += ("coverage", "long_tail")
            if not ranker.serves(sl.name) or len(sl.users) == 0:
                row.update({f"{m}@{k}": None for k in ks for m in names})
                results[domain][sl.name] = row
                continue
            if sl.input_kind not in scorers:
                scorers[sl.input_kind] = ranker.bind(slice_inputs(split, domain, sl.input_kind))
            scorer = scorers[sl.input_kind]
            tops: list[np.ndarray] = []
            for b in range(0, len(sl.users), batch_users):
                users = sl.users[b : b + batch_users]
                s = scorer.scores(domain, users, cross_domain=sl.input_kind in CROSS_DOMAIN_KINDS)
                if s is None:
                    tops = []
                    break
                tops.append(_masked_topk(s.float().cpu(), users, ds, sl.candidates, kmax, stage))
            if not tops:
                row.update({f"{m}@{k}": None for k in ks for m in names})
            else:
                top = np.concatenate(tops)
                values: dict[str, np.ndarray] = {"users": sl.users}
                for k in ks:
                    rec, ndcg = user_metrics(top, sl.targets, k)
                    row[f"recall@{k}"] = float(rec.mean())
                    row[f"ndcg@{k}"] = float(ndcg.mean())
                    values[f"recall@{k}"], values[f"ndcg@{k}"] = rec, ndcg
                if per_user is not None:
                    per_user[(domain, sl.name)] = values
                if sl.name == CATALOGUE_SLICE:
                    row.update(_catalogue_metrics(top, ds, sl, ks))
            results[domain][sl.name] = row
    return results
