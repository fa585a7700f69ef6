"""SearchBatcher (app/batching.py): batched searches return exactly what each request would
get alone, errors reach every waiting request, and it works without its thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.batching import SearchBatcher, _Search
from app.index import DomainIndex

D = 16


def make_index(name: str, n: int, seed: int) -> DomainIndex:
    rng = np.random.default_rng(seed)
    index = DomainIndex(name, D, threads=1)
    index.build([f"{name}{k}" for k in range(n)], rng.standard_normal((n, D)).astype(np.float32))
    return index


def test_one_batch_per_index_with_each_requests_own_k_and_exclusions() -> None:
    a, b = make_index("a", 400, 0), make_index("b", 300, 1)
    rng = np.random.default_rng(2)
    jobs = []
    for j in range(24):
        index = a if j % 3 else b
        k = 1 + j % 7
        exclude = {f"{index.domain}{m}" for m in rng.choice(len(index), j % 5, replace=False)}
        jobs.append(_Search(index, rng.standard_normal(D).astype(np.float32), k, exclude))
    batcher = SearchBatcher(max_batch=64)
    for job in jobs:  # queued before the thread starts: it must take them as one batch
        batcher._queue.put(job)
    batcher.start()
    try:
        got = [job.future.result(timeout=10) for job in jobs]
    finally:
        batcher.stop()
    assert batcher.batches == 1 and batcher.searches == 24
    for job, hits in zip(jobs, got, strict=True):
        alone = job.index.search(job.query.reshape(1, -1), job.k, exclude=[job.exclude])[0]
        assert [i for i, _ in hits] == [i for i, _ in alone]
        np.testing.assert_allclose(
            [s for _, s in hits], [s for _, s in alone], rtol=1e-5, atol=1e-5
        )
        assert len(hits) == job.k and not job.exclude & {i for i, _ in hits}


def test_concurrent_callers_get_their_own_results() -> None:
    index = make_index("a", 2_000, 3)
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((64, D)).astype(np.float32)
    expected = [index.search(q.reshape(1, -1), 10)[0] for q in queries]
    batcher = SearchBatcher(max_batch=16)
    batcher.start()
    results: dict[int, list[tuple[str, float]]] = {}

    def worker(rows: range) -> None:
        for r in rows:
            results[r] = batcher.search(index, queries[r], 10, set())

    threads = [threading.Thread(target=worker, args=(range(t, 64, 8),)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    batcher.stop()
    assert batcher.searches == 64
    for r in range(64):
        assert [i for i, _ in results[r]] == [i for i, _ in expected[r]]


def test_an_error_reaches_every_request_of_its_group_only() -> None:
    good, other = make_index("a", 100, 5), make_index("b", 100, 6)
    bad = _Search(good, np.zeros(D + 1, np.float32), 5, set())  # wrong dimension
    same_group = _Search(good, np.zeros(D, np.float32), 5, set())
    fine = _Search(other, np.ones(D, np.float32), 5, set())
    batcher = SearchBatcher()
    for job in (bad, same_group, fine):
        batcher._queue.put(job)
    batcher.start()
    try:
        for job in (bad, same_group):
            with pytest.raises(ValueError):
                job.future.result(timeout=10)
        assert len(fine.future.result(timeout=10)) == 5
    finally:
        batcher.stop()


def test_without_its_thread_it_searches_in_the_caller() -> None:
    index = make_index("a", 50, 7)
    batcher = SearchBatcher()
    q = np.ones(D, np.float32)
    assert batcher.search(index, q, 3, set()) == index.search(q.reshape(1, -1), 3)[0]
    with pytest.raises(ValueError, match="max_batch"):
        SearchBatcher(max_batch=0)
