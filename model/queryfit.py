"""Users started from a query (a free text or a picture, no history): the simulation, the
fit of their two weights on validation, and the same simulation on test (bench/query_start.py).

A query-started user is scored ``w_c * <c_q, c_i> + w_p * prior_i``
(``DomainBlend.query_user``): ``c_q`` is the query's encoder output(s) reduced by the
blend's ``ContentReducer``, exactly as a registered item's content is, so a text query
meets the items' text part and a picture meets their image part (in an open_clip bundle
both modalities live in one space).

The simulation, per domain and stage (``val`` to fit, ``test`` to report): every user with
at least two held-out interactions of that stage is a visitor whose query is one of those
items (a seeded choice): its **title**, encoded by the bundle's text encoder, or, for an
item without a title or in a bundle without text, its picture's features. That item is
removed from the candidates and from the targets; the user's other held-out items are
the targets. Nothing else is masked: the service knows no history for this visitor.

The fit: a grid over ``w_p / w_c`` (with the corners content only and prior only; prior
only ranks by training degree, i.e. most-popular), the best validation NDCG@20 per domain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.data.split import DomainSplit, InductiveSplit
from model.metrics import user_metrics
from model.nn.blend import BlendWeights, ContentReducer, DomainBlend

log = logging.getLogger(__name__)

RATIOS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, float("inf"))
"""The grid of w_prior / w_content (0: content only; inf: prior only = most-popular)."""
K = 20
QueryFeatures = Callable[[str, Sequence[int]], dict[str, np.ndarray]]
"""(domain, local item rows) -> the raw encoder features of those items' queries per
modality ([b, dim] float32; zero rows where an item has no query in that modality)."""


@dataclass
class QueryCases:
    """A stage's simulated visitors of one domain."""

    users: np.ndarray  # local user ids [b]
    query_items: np.ndarray  # local item rows [b]: what each visitor typed / showed
    targets: list[np.ndarray]  # the other held-out items of each visitor


def query_cases(ds: DomainSplit, stage: str, *, seed: int, max_users: int | None) -> QueryCases:
    """Users with >= 2 held-out ``stage`` items; one of them is the query (seeded)."""
    pairs = {"val": ds.val, "test": ds.test}[stage]
    rng = np.random.default_rng(seed)
    order = np.argsort(pairs[:, 0], kind="stable")
    users_sorted = pairs[order, 0]
    starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
    ends = np.r_[starts[1:], len(users_sorted)]
    users, queries, targets = [], [], []
    for a, b in zip(starts, ends, strict=True):
        items = np.unique(pairs[order[a:b], 1])
        if len(items) < 2:
            continue
        q = int(items[rng.integers(len(items))])
        users.append(int(users_sorted[a]))
        queries.append(q)
        targets.append(items[items != q])
    pick = np.arange(len(users))
    if max_users is not None and len(users) > max_users:
        pick = np.sort(rng.permutation(len(users))[:max_users])
    return QueryCases(
        users=np.asarray(users, dtype=np.int64)[pick],
        query_items=np.asarray(queries, dtype=np.int64)[pick],
        targets=[targets[k] for k in pick],
    )


def query_ndcg(
    cq: torch.Tensor, blend: DomainBlend, cases: QueryCases, weights: BlendWeights, k: int = K
) -> np.ndarray:
    """Per-visitor NDCG@k of the query scores (``cq`` [b, r]: the reduced queries)."""
    assert blend.content is not None
    scores = weights.content * (cq @ blend.content.T) + weights.prior * blend.prior
    scores[torch.arange(len(cq)), torch.as_tensor(cases.query_items)] = -torch.inf
    top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
    return user_metrics(top, cases.targets, k)[1]


def ratio_weights(ratio: float) -> BlendWeights:
    """The weights of one grid point (prior only for ``inf``)."""
    if ratio == float("inf"):
        return BlendWeights(model=0.0, prior=1.0, content=0.0)
    return BlendWeights(model=0.0, prior=float(ratio), content=1.0)


def reduced_queries(
    reducer: ContentReducer, features: QueryFeatures, domain: str, rows: Sequence[int]
) -> torch.Tensor:
    """The queries of ``rows`` in the blend's content space: [b, r]."""
    raw = features(domain, rows)
    return reducer.reduce(raw, len(rows))


def fit_query_weights(
    split: InductiveSplit,
    reducer: ContentReducer | None,
    blends: dict[str, DomainBlend],
    features: QueryFeatures,
    *,
    seed: int = 0,
    max_users: int = 2000,
) -> tuple[dict[str, BlendWeights], dict[str, Any]]:
    """Per domain, the query weights with the best validation NDCG@20 (ties: the smaller
    ratio, i.e. more content); a domain without validation visitors or without a content
    part gets none (the default serves). Returns (weights, report)."""
    out: dict[str, BlendWeights] = {}
    report: dict[str, Any] = {}
    if reducer is None:
        return out, report
    for domain, blend in blends.items():
        if blend.content is None:
            continue
        cases = query_cases(split.domains[domain], "val", seed=seed, max_users=max_users)
        if len(cases.users) == 0:
            continue
        cq = reduced_queries(reducer, features, domain, cases.query_items.tolist())
        grid = {r: float(query_ndcg(cq, blend, cases, ratio_weights(r)).mean()) for r in RATIOS}
        best = max(RATIOS, key=lambda r: (grid[r], -r))
        out[domain] = ratio_weights(best)
        report[domain] = {
            "users": len(cases.users),
            "chosen": out[domain].to_dict(),
            "val_ndcg@20": {str(r): v for r, v in grid.items()},
        }
        log.info(
            "%s: query weights %s (validation NDCG@20 %.4f, %d visitors)",
            domain,
            out[domain],
            grid[best],
            len(cases.users),
        )
    return out, report


def title_features(
    titles: dict[str, list[str]],
    text_encoder: Any | None,
    item_features: dict[str, dict[str, np.ndarray]],
    modalities: Sequence[str],
) -> QueryFeatures:
    """The :data:`QueryFeatures` of the simulation: an item's title through
    ``text_encoder`` when it has one (and the bundle encodes text), else its picture's
    features (``item_features[domain][modality]``: [n_items, dim], zero rows = none)."""

    def features(domain: str, rows: Sequence[int]) -> dict[str, np.ndarray]:
        idx = np.asarray(rows, dtype=np.int64)
        out: dict[str, np.ndarray] = {}
        has_text = np.zeros(len(idx), dtype=bool)
        if text_encoder is not None and "text" in modalities:
            names = [titles[domain][int(i)].strip() for i in idx]
            has_text = np.array([bool(t) for t in names])
            vec = np.zeros((len(idx), int(text_encoder.dim)), dtype=np.float32)
            if has_text.any():
                wanted = [t for t in names if t]
                vec[has_text] = text_encoder.encode(wanted, batch_size=64)
            out["text"] = vec
        image = item_features.get(domain, {}).get("image")
        if "image" in modalities and image is not None:
            pic = image[idx].astype(np.float32, copy=True)
            pic[has_text] = 0.0  # the title is the query where there is one
            out["image"] = pic
        return out

    return features
