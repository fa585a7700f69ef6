"""DomainIndex (app/index.py): exactness, IVF recall, writes, exclusion, edge cases and
concurrent readers with a writer."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from app.index import DomainIndex, default_nlist, measure_recall

D = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Unit vectors around random centres; noise of the same norm as the centres, so the
    clusters overlap (IVF is neither trivial nor hopeless here, as with real embeddings)."""
    x = centers[rng.integers(0, len(centers), n)]
    return unit(x + rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d))


def ids_of(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{k}" for k in range(n)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
def flat(rng: np.random.Generator) -> tuple[DomainIndex, np.ndarray]:
    x = rng.standard_normal((500, D)).astype(np.float32)
    index = DomainIndex("arts", D, threads=1)
    index.build(ids_of(500), x)
    return index, x


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_flat_equals_numpy_brute_force(
    flat: tuple[DomainIndex, np.ndarray], rng: np.random.Generator
) -> None:
    index, x = flat
    assert index.kind == "flat" and len(index) == 500 and index.nprobe is None
    q = rng.standard_normal((20, D)).astype(np.float32)
    order, scores = brute_force(x, q, 10)
    got = index.search(q, 10)
    for row in range(20):
        assert [i for i, _ in got[row]] == [f"i{j}" for j in order[row]]
        np.testing.assert_allclose([s for _, s in got[row]], scores[row], rtol=1e-5, atol=1e-5)
    assert measure_recall(index, q, 10) == 1.0


def test_single_query_vector_and_float64_input(flat: tuple[DomainIndex, np.ndarray]) -> None:
    index, x = flat
    q = x[3].astype(np.float64)
    (hits,) = index.search(q, 1)  # [dim] is one query; float64 is converted
    order, _ = brute_force(x, x[3:4], 1)
    assert hits[0][0] == f"i{order[0, 0]}"


def test_ivf_recall_at_100_on_clustered_vectors(rng: np.random.Generator) -> None:
    d = 64
    centers = unit(rng.standard_normal((500, d)))
    x = clustered(50_000, d, rng, centers)
    q = clustered(200, d, rng, centers)
    index = DomainIndex("arts", d, exact_max_items=10_000, threads=2)  # default nlist/nprobe
    index.build(ids_of(50_000), x)
    assert index.kind == "ivf" and index.nprobe == 32
    assert index._index.nlist == default_nlist(50_000) == 894
    recall = measure_recall(index, q, 100)
    assert recall >= 0.95, recall
    # IVF results still never hold FAISS's -1 padding and are real ids, best first.
    for hits in index.search(q[:20], 100):
        assert all(i in index for i, _ in hits)
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)


def test_thread_count_applies_in_every_calling_thread(
    flat: tuple[DomainIndex, np.ndarray],
) -> None:
    """OpenMP's thread count is per calling thread: a search from a worker thread (as in
    the server's thread pool) must still run with the index's setting."""
    index, x = flat
    seen: list[int] = []

    def worker() -> None:
        faiss.omp_set_num_threads(3)  # whatever the thread had before
        index.search(x[:1], 5)
        seen.append(faiss.omp_get_max_threads())

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert seen == [1]


def test_kind_follows_exact_max_items(rng: np.random.Generator) -> None:
    x = rng.standard_normal((400, D)).astype(np.float32)
    small = DomainIndex("a", D, exact_max_items=400)
    small.build(ids_of(400), x)
    big = DomainIndex("a", D, exact_max_items=399, ivf_nlist=4, ivf_nprobe=100)
    big.build(ids_of(400), x)
    assert (small.kind, big.kind) == ("flat", "ivf")
    assert big.nprobe == 4  # clamped to nlist: every list scanned, i.e. exact
    assert not small.needs_rebuild
    small.upsert(["extra"], x[:1])
    assert small.kind == "flat" and small.needs_rebuild  # kind changes only on build()
    assert measure_recall(big, x[:10], 20) == 1.0


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_upsert_adds_and_replaces(kind: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((400, D)).astype(np.float32)
    index = DomainIndex("a", D, exact_max_items=0 if kind == "ivf" else 10**6, ivf_nlist=8)
    index.build(ids_of(400), x)
    assert index.kind == kind
    target = unit(rng.standard_normal((1, D)))
    index.upsert(["i5", "new"], np.vstack([target * 10, -target * 10]))
    assert len(index) == 401 and "new" in index
    np.testing.assert_array_equal(index.vector("i5"), target[0] * 10)
    index.set_nprobe(8)  # scan every list: exact, whatever list i5 went to
    assert index.search(target, 1)[0][0][0] == "i5"
    assert index.search(-target, 1)[0][0][0] == "new"
    np.testing.assert_array_equal(index.vector("i6"), x[6])  # others untouched
    # exactly one entry per id after the replace
    ids = [i for i, _ in index.search(target, 401)[0]]
    assert len(ids) == len(set(ids)) == 401


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_remove(kind: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((300, D)).astype(np.float32)
    index = DomainIndex("a", D, exact_max_items=0 if kind == "ivf" else 10**6, ivf_nlist=4)
    index.build(ids_of(300), x)
    index.set_nprobe(4)
    assert index.remove(["i1", "i2", "i2", "unknown"]) == 2
    assert index.remove(["i1"]) == 0
    assert len(index) == 298 and "i1" not in index and index.vector("i1") is None
    found = {i for i, _ in index.search(x[:3], 300)[0]}
    assert len(found) == 298 and not found & {"i1", "i2"}
    assert index.search(x[1], 1)[0][0][0] != "i1"
    index.upsert(["i1"], x[1:2])  # re-adding a removed id works
    assert index.search(x[1], 1)[0][0][0] == "i1"
    np.testing.assert_array_equal(index.vector("i1"), x[1])


def test_exclude_over_fetches_to_keep_k(flat: tuple[DomainIndex, np.ndarray]) -> None:
    index, x = flat
    q = x[:2]
    top = [[i for i, _ in hits] for hits in index.search(q, 30)]
    exclude = [set(top[0][:20]) | {"not-in-index"}, set()]
    got = index.search(q, 10, exclude=exclude)
    assert [i for i, _ in got[0]] == top[0][20:30]
    assert [i for i, _ in got[1]] == top[1][:10]
    # excluding everything leaves nothing, not -1 ids
    assert index.search(q[:1], 5, exclude=[set(ids_of(500))]) == [[]]
    with pytest.raises(ValueError, match="exclude"):
        index.search(q, 5, exclude=[set()])


def test_k_larger_than_index_and_k_zero(flat: tuple[DomainIndex, np.ndarray]) -> None:
    index, x = flat
    hits = index.search(x[:1], 10_000)[0]
    assert len(hits) == 500 and len({i for i, _ in hits}) == 500
    assert index.search(x[:2], 0) == [[], []]


def test_empty_index() -> None:
    index = DomainIndex("a", D)
    q = np.ones((3, D), np.float32)
    assert index.search(q, 5) == [[], [], []]
    assert len(index) == 0 and "x" not in index and index.vector("x") is None
    assert index.remove(["x"]) == 0
    index.build([], np.zeros((0, D), np.float32))
    assert index.search(q, 5, exclude=[{"a"}, set(), set()]) == [[], [], []]
    index.upsert(["a"], np.ones((1, D), np.float32))
    assert index.search(q[:1], 5) == [[("a", pytest.approx(float(D)))]]
    assert measure_recall(DomainIndex("b", D), q, 5) == 1.0


def test_build_replaces_everything(flat: tuple[DomainIndex, np.ndarray]) -> None:
    index, x = flat
    index.build(["z1", "z2"], x[:2])
    assert len(index) == 2 and "i0" not in index
    assert {i for i, _ in index.search(x[:1], 10)[0]} == {"z1", "z2"}


def test_invalid_input_raises_value_error(flat: tuple[DomainIndex, np.ndarray]) -> None:
    index, x = flat
    bad_nan = x[:2].copy()
    bad_nan[1, 3] = np.nan
    bad_inf = x[:1].copy()
    bad_inf[0, 0] = np.inf
    calls = [
        lambda: index.build(["a"], np.zeros((1, D + 1), np.float32)),
        lambda: index.build(["a", "b"], x[:1]),
        lambda: index.build(["a", "a"], x[:2]),
        lambda: index.build(["a", "b"], bad_nan),
        lambda: index.upsert(["a"], np.zeros((1, D - 1), np.float32)),
        lambda: index.upsert(["a"], bad_inf),
        lambda: index.upsert(["a", "a"], x[:2]),
        lambda: index.upsert(["a"], np.zeros(D, np.float32)),  # must be [n, dim]
        lambda: index.search(np.zeros((1, D + 1), np.float32), 3),
        lambda: index.search(bad_nan, 3),
        lambda: index.search(np.zeros((2, 2, D), np.float32), 3),
        lambda: DomainIndex("a", 0),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert len(index) == 500 and "a" not in index  # failed writes changed nothing


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_concurrent_readers_with_a_writer(kind: str, rng: np.random.Generator) -> None:
    n, k = 2000, 20
    x = rng.standard_normal((n, D)).astype(np.float32)
    index = DomainIndex(
        "a", D, exact_max_items=0 if kind == "ivf" else 10**6, ivf_nlist=16, threads=2
    )
    index.build(ids_of(n), x)
    ever = set(ids_of(n))
    n_writes = 300
    ever |= {f"w{j}" for j in range(n_writes)}
    stop = threading.Event()
    errors: list[BaseException] = []
    queries = rng.standard_normal((64, D)).astype(np.float32)

    def read(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                q = queries[r.integers(0, 64, 4)]
                for hits in index.search(q, k, exclude=[{"i0"}] * 4):
                    ids = [i for i, _ in hits]
                    assert len(ids) == len(set(ids)) and set(ids) <= ever and "i0" not in ids
                    scores = [s for _, s in hits]
                    assert scores == sorted(scores, reverse=True)
                index.vector(f"w{r.integers(0, n_writes)}")  # None or a vector, no crash
        except BaseException as err:  # surfaced below, not lost in the thread
            errors.append(err)

    readers = [threading.Thread(target=read, args=(s,)) for s in range(3)]
    for th in readers:
        th.start()
    try:
        w = np.random.default_rng(1)
        for j in range(n_writes):
            index.upsert([f"w{j}"], w.standard_normal((1, D)).astype(np.float32))
            if j % 3 == 0:
                index.remove([f"w{j // 2}", f"i{j + 1}"])
            if j % 100 == 50:  # a rebuild swapped in while readers search
                ids, vecs = index.export()
                index.build(ids, vecs)
    finally:
        stop.set()
        for th in readers:
            th.join()
    assert errors == []
    ids, vecs = index.export()
    assert len(ids) == len(index) and len(set(ids)) == len(ids)
    for item_id, v in zip(ids[:50], vecs[:50], strict=True):
        np.testing.assert_array_equal(index.vector(item_id), v)
