"""DomainIndex (app/index/domain.py): exactness, IVF recall, writes, exclusion, edge cases and
concurrent readers with a writer."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from app.index.domain import DomainIndex, default_nlist, measure_recall

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
    assert index.nlist == default_nlist(50_000) == 894
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
    small.upsert(["extra"], x[:1])
    assert small.kind == "flat"  # kind changes only on build()
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


def varied_norms(n: int, d: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    """Clustered directions with norms spread over 0.2..3: the case where inner-product
    IVF misses long vectors and the L2 mapping matters."""
    return clustered(n, d, rng, centers) * rng.uniform(0.2, 3.0, (n, 1)).astype(np.float32)


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = faiss.knn(q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, labels


def test_ivf_scans_all_lists_exactly_and_scores_are_inner_products(
    rng: np.random.Generator,
) -> None:
    """The L2 mapping preserves inner-product order: probing every list gives the exact
    top-k, and returned scores are the exact inner products (re-scored)."""
    d = 16
    x = varied_norms(3_000, d, rng, unit(rng.standard_normal((20, d))))
    q = rng.standard_normal((10, d)).astype(np.float32)
    index = DomainIndex("a", d, exact_max_items=0, ivf_nlist=16, ivf_nprobe=16)
    index.build(ids_of(3_000), x)
    assert index.kind == "ivf" and index.nprobe == 16
    want_s, want_l = exact_top(x, q, 50)
    for row, hits in enumerate(index.search(q, 50)):
        assert [i for i, _ in hits] == [f"i{j}" for j in want_l[row]]
        np.testing.assert_allclose([s for _, s in hits], want_s[row], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(index.vector("i7"), x[7], rtol=0, atol=1e-6)


def test_ivf_delta_keeps_upserts_exact(rng: np.random.Generator) -> None:
    """Vectors upserted after the build (even ones longer than the build's radius, which
    the L2 mapping could not hold) live in the exact in-memory delta: found, scored,
    reconstructed, replaced and removed like any; replacing a base item hides its row."""
    d = 16
    x = varied_norms(2_000, d, rng, unit(rng.standard_normal((20, d))))
    index = DomainIndex("a", d, exact_max_items=0, ivf_nlist=16, ivf_nprobe=1)
    index.build(ids_of(2_000), x)
    q = unit(rng.standard_normal((1, d)))
    long = (q * 50).astype(np.float32)  # far beyond the radius (max norm ~3)
    index.upsert(["long"], long)
    assert index.delta_size == 1 and len(index) == 2_001
    top = index.search(q, 3)[0]
    assert top[0][0] == "long" and top[0][1] == pytest.approx(50.0, rel=1e-5)
    np.testing.assert_allclose(index.vector("long"), long[0], atol=1e-6)
    ids, vecs = index.export()
    assert ids[-1] == "long" and np.allclose(vecs[-1], long[0])
    index.upsert(["long"], (q * 0.5).astype(np.float32))  # replaced: still one entry
    assert index.delta_size == 1 and len(index) == 2_001
    assert index.search(q, 1, exclude=[set()])[0][0][0] != "long"
    # A base item replaced: its base row is hidden, the new vector served from the delta.
    index.upsert(["i3"], long)
    assert len(index) == 2_001 and index.search(q, 1)[0][0][0] == "i3"
    found = [i for i, _ in index.search(q, 2_001)[0]]
    assert found.count("i3") == 1
    assert index.remove(["long", "i3"]) == 2 and index.delta_size == 0
    assert "long" not in index and "i3" not in index and len(index) == 1_999
    assert all(i not in ("long", "i3") for i, _ in index.search(q, 50)[0])
    # A rebuild folds the delta into the base.
    many = (unit(rng.standard_normal((21, d))) * 40).astype(np.float32)
    index.upsert(ids_of(21, "big"), many)
    assert index.delta_size == 21
    index.build(*index.export())
    assert index.delta_size == 0
    assert index.search(many[:1], 1)[0][0][0] == "big0"


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_cached_base_is_memory_mapped_and_answers_the_same(
    kind: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    """With a cache root the base is built once, written, and mapped read-only by every
    later build with the same source (e.g. the other workers): same answers, no rebuild."""
    d = 16
    x = varied_norms(3_000, d, rng, unit(rng.standard_normal((20, d))))
    q = rng.standard_normal((20, d)).astype(np.float32)
    opts = {"exact_max_items": 0 if kind == "ivf" else 10**6, "ivf_nlist": 16}
    plain = DomainIndex("a", d, **opts)
    plain.build(ids_of(3_000), x, queries=q)
    calls = []

    def queries() -> np.ndarray:
        calls.append(1)
        return q

    first, second = DomainIndex("a", d, **opts), DomainIndex("a", d, **opts)
    first.build(ids_of(3_000), x, queries=queries, cache_root=tmp_path, source_key="b1")
    second.build(ids_of(3_000), x, queries=queries, cache_root=tmp_path, source_key="b1")
    assert len(calls) == (1 if kind == "ivf" else 0)  # built (and calibrated) once
    assert first.kind == second.kind == plain.kind and second.nprobe == plain.nprobe
    assert second.calibration == first.calibration
    assert len(list(tmp_path.iterdir())) == 2  # one cache directory + its lock file
    for index in (first, second):
        assert index.search(q, 30) == plain.search(q, 30)
        index.upsert(["new"], x[:1] * 2)  # the mapped base is read-only; the delta is not
        assert index.search(x[:1], 1)[0][0][0] == "new"
    # Another source (a new bundle) gets its own cache.
    other = DomainIndex("a", d, **opts)
    other.build(ids_of(3_000), x, cache_root=tmp_path, source_key="b2")
    assert len(list(tmp_path.iterdir())) == 4


def test_positions_of_the_caller_replace_the_index_s_own_map(
    flat: tuple[DomainIndex, np.ndarray],
) -> None:
    """Given the caller's id -> row map (the engine's), the index answers as with its own."""
    own, x = flat
    ids = ids_of(500)
    rows = {i: k for k, i in enumerate(ids)} | {"elsewhere": 7}  # another domain's id
    shared = DomainIndex("arts", D, threads=1)
    shared.build(ids, x, positions=lambda i: rows.get(i) if i != "elsewhere" else None)
    assert len(shared) == 500 and "i7" in shared and "elsewhere" not in shared
    assert shared.search(x[:3], 20) == own.search(x[:3], 20)
    assert shared.remove(["i7", "elsewhere"]) == 1 and "i7" not in shared and len(shared) == 499
    assert shared.vector("i7") is None and shared.remove(["i7"]) == 0
    shared.upsert(["i7"], x[7:8])
    np.testing.assert_array_equal(shared.vector("i7"), x[7])
    assert [i for i, _ in shared.search(x[7], 1)[0]] == ["i7"]


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_float16_storage_rounds_vectors_only(kind: str, rng: np.random.Generator) -> None:
    d = 16
    x = varied_norms(3_000, d, rng, unit(rng.standard_normal((20, d))))
    q = rng.standard_normal((20, d)).astype(np.float32)
    opts = {"exact_max_items": 0 if kind == "ivf" else 10**6, "ivf_nlist": 16, "ivf_nprobe": 16}
    half = DomainIndex("a", d, dtype="float16", **opts)
    half.build(ids_of(3_000), x)
    x16 = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(half.vector("i5"), x16[5])
    want_s, want_l = exact_top(x16, q, 20)  # exact search over the rounded vectors
    for row, hits in enumerate(half.search(q, 20)):
        assert [i for i, _ in hits] == [f"i{j}" for j in want_l[row]]
        np.testing.assert_allclose([s for _, s in hits], want_s[row], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="dtype"):
        DomainIndex("a", d, dtype="int8")


def test_ivf_calibrates_nprobe_to_the_target_recall(rng: np.random.Generator) -> None:
    d = 32
    centers = unit(rng.standard_normal((200, d)))
    x = varied_norms(20_000, d, rng, centers)
    q = clustered(100, d, rng, centers)
    held_out = clustered(100, d, rng, centers)
    index = DomainIndex("a", d, exact_max_items=0, ivf_nprobe=1, ivf_target_recall=0.95)
    index.build(ids_of(20_000), x, queries=q)
    cal = index.calibration
    assert cal is not None and cal.queries == 100 and cal.k == 100
    assert cal.recall >= 0.95 and index.nprobe == cal.nprobe > 1  # 1 list is not enough
    assert measure_recall(index, q, 100) == pytest.approx(cal.recall)
    assert measure_recall(index, held_out, 100) >= 0.9  # generalises beyond the sample
    # Without queries, or with calibration off, nprobe is the configured value.
    plain = DomainIndex("a", d, exact_max_items=0, ivf_nprobe=2, ivf_target_recall=None)
    plain.build(ids_of(20_000), x, queries=q)
    assert plain.calibration is None and plain.nprobe == 2
    # Target 1.0 is always reachable: at worst every list is scanned.
    strict = DomainIndex("a", d, exact_max_items=0, ivf_nlist=8, ivf_target_recall=1.0)
    strict.build(ids_of(20_000), x, queries=q)
    assert strict.calibration is not None and strict.calibration.recall == 1.0


def test_target_recall_is_validated() -> None:
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="ivf_target_recall"):
            DomainIndex("a", D, ivf_target_recall=bad)


def test_calibration_falls_back_to_exact_when_ivf_would_scan_most_lists(
    rng: np.random.Generator,
) -> None:
    """I.i.d. random vectors have no clusters: a high recall target needs most lists, and
    then the index is built exact (same answers, no slower than IVF would be)."""
    d = 32
    x = rng.standard_normal((5_000, d)).astype(np.float32)
    q = rng.standard_normal((50, d)).astype(np.float32)
    index = DomainIndex("a", d, exact_max_items=0, ivf_nprobe=1, ivf_target_recall=0.99)
    index.build(ids_of(5_000), x, queries=q)
    cal = index.calibration
    assert cal is not None and cal.exact_instead and 2 * cal.nprobe > cal.nlist
    assert index.kind == "flat" and index.nprobe is None
    assert measure_recall(index, q, 100) == 1.0
    # Clustered data at a moderate target stays IVF.
    centers = unit(rng.standard_normal((50, d)))
    easy = DomainIndex("a", d, exact_max_items=0, ivf_nprobe=1, ivf_target_recall=0.9)
    easy.build(
        ids_of(5_000), clustered(5_000, d, rng, centers), queries=clustered(50, d, rng, centers)
    )
    assert easy.kind == "ivf" and easy.calibration is not None
    assert not easy.calibration.exact_instead
