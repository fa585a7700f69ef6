"""The parity check of the Milvus backend: FAISS exact and Milvus FLAT rank a real bundle's
users the same (tests/app/lifecycle/test_milvus_backend.py on the demo bundle,
tests/app/test_real_bundle.py on the tiny trained one)."""

from __future__ import annotations

import numpy as np

from app.index.domain import DomainIndex
from app.index.milvus import MilvusDomainIndex
from app.lifecycle.engine import Engine


def assert_same_top(
    engine: Engine, domain: str, exact: object, shared: object, k: int, users: int = 25
) -> int:
    """Top-``k`` of up to ``users`` real bundle users of ``domain``, without and with an
    exclusion set each, equal in both indexes; returns how many rankings were compared."""
    assert isinstance(exact, DomainIndex) and exact.kind == "flat"
    assert isinstance(shared, MilvusDomainIndex)
    q = engine.sample_user_vectors(domain, users)
    assert len(q) > 0
    ids = engine.catalogue(domain).item_ids
    seen = [set(ids[j::97]) for j in range(len(q))]
    compared = 0
    for excl in (None, seen):
        want = exact.search(q, k, exclude=excl)
        got = shared.search(q, k, exclude=excl)
        for row, w, g in zip(q, want, got, strict=True):
            _same_ranking(w, g, exact, row)
            compared += 1
    return compared


def _same_ranking(
    want: list[tuple[str, float]], got: list[tuple[str, float]], exact: DomainIndex, q: np.ndarray
) -> None:
    """Equal ids rank by rank, except within ties (scores within 1e-4), which may come in
    any order; at the cut, a tied id of the other list must score the same."""
    assert len(got) == len(want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5, atol=1e-5)
    tol, start = 1e-4, 0
    while start < len(want):
        end = start
        while end + 1 < len(want) and abs(want[end + 1][1] - want[start][1]) < tol:
            end += 1
        group_w = {i for i, _ in want[start : end + 1]}
        group_g = {i for i, _ in got[start : end + 1]}
        if end + 1 < len(want):
            assert group_g == group_w
        else:  # the last group may continue past the cut: any tied id will do
            for _, score in exact.score(q, sorted(group_g)):
                assert abs(score - want[start][1]) < tol
        start = end + 1
