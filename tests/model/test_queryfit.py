"""model.queryfit: the simulated visitors and the fit of the query weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.data.split import DomainSplit, InductiveSplit, SplitConfig
from model.nn.blend import BlendWeights, ContentReducer, DomainBlend
from model.queryfit import fit_query_weights, query_cases, query_ndcg, ratio_weights

N_ITEMS, DIM = 60, 8


def domain(val: np.ndarray) -> DomainSplit:
    users = int(val[:, 0].max()) + 1
    return DomainSplit(
        domain="d",
        user_ids=[f"u{k}" for k in range(users)],
        item_ids=[f"i{k}" for k in range(N_ITEMS)],
        n_old_users=users,
        n_old_items=N_ITEMS,
        train=np.zeros((0, 2), dtype=np.int64),
        val=val,
        test=val,
    )


def test_cases_take_users_with_two_items_and_hold_the_query_out() -> None:
    val = np.array([[0, 1], [0, 2], [0, 3], [1, 4], [2, 5], [2, 5], [2, 6]], dtype=np.int64)
    cases = query_cases(domain(val), "val", seed=0, max_users=None)
    assert cases.users.tolist() == [0, 2]  # user 1 has one item only
    for q, targets, items in zip(
        cases.query_items, cases.targets, ([1, 2, 3], [5, 6]), strict=True
    ):
        assert q in items and q not in targets
        assert sorted([q, *targets.tolist()]) == items
    again = query_cases(domain(val), "val", seed=0, max_users=None)
    assert again.query_items.tolist() == cases.query_items.tolist()
    assert len(query_cases(domain(val), "val", seed=0, max_users=1).users) == 1


def world(content_matters: bool) -> tuple[InductiveSplit, DomainBlend, ContentReducer]:
    """Items in 6 content clusters; each visitor's items come from one cluster (content
    matters) or are the most popular items whatever the cluster (popularity matters)."""
    rng = np.random.default_rng(0)
    centres = F.normalize(torch.randn(6, DIM), dim=1)
    cluster = np.arange(N_ITEMS) % 6
    content = F.normalize(centres[cluster] + 0.1 * torch.randn(N_ITEMS, DIM), dim=1)
    degree = torch.as_tensor(rng.permutation(N_ITEMS) + 1, dtype=torch.float32)
    blend = DomainBlend(prior=DomainBlend.prior_of(degree), content=content)
    popular = np.argsort(-degree.numpy())[:6]
    rows = []
    for u in range(120):
        c = u % 6
        items = rng.choice(np.flatnonzero(cluster == c), 3, replace=False)
        if not content_matters:
            items = np.r_[rng.choice(np.flatnonzero(cluster == c), 1), rng.choice(popular, 2)]
        rows += [[u, int(i)] for i in items]
    split = InductiveSplit(SplitConfig(), {"d": domain(np.array(rows, dtype=np.int64))})
    reducer = ContentReducer(("text",), (DIM,), torch.zeros(DIM), torch.eye(DIM))
    return split, blend, reducer


def features_of(blend: DomainBlend) -> object:
    def features(d: str, rows: Sequence[int]) -> dict[str, np.ndarray]:
        assert blend.content is not None
        return {"text": blend.content[list(rows)].numpy()}

    return features


def test_the_fit_follows_what_the_validation_visitors_did() -> None:
    for content_matters in (True, False):
        split, blend, reducer = world(content_matters)
        weights, report = fit_query_weights(
            split,
            reducer,
            {"d": blend},
            features_of(blend),
            seed=0,  # type: ignore[arg-type]
        )
        w = weights["d"]
        grid = report["d"]["val_ndcg@20"]
        assert report["d"]["users"] == 120
        assert max(grid.values()) == grid[str(w.prior if w.content else float("inf"))]
        ratio = float("inf") if w.content == 0 else w.prior / w.content
        if content_matters:
            assert ratio < 1.0, report
        else:
            assert ratio >= 1.0, report
        # never below the corners on validation: most-popular (prior only), content only
        assert grid[str(max(k for k in map(float, grid)))] <= max(grid.values())


def test_query_ndcg_never_recommends_the_query_item() -> None:
    split, blend, _ = world(True)
    cases = query_cases(split.domains["d"], "val", seed=0, max_users=None)
    assert blend.content is not None
    cq = blend.content[torch.as_tensor(cases.query_items)]
    # the query item itself scores highest on content, but it is held out: a perfect
    # content ranking still finds the cluster mates
    ndcg = query_ndcg(cq, blend, cases, BlendWeights(0.0, 0.0, 1.0))
    assert ndcg.mean() > 0.5
    assert query_ndcg(cq, blend, cases, ratio_weights(float("inf"))).mean() < ndcg.mean()
