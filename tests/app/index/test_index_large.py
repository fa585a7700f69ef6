"""The chunked build of large bases (app/index/base.py ``_build_large``), exercised at a
small size by lowering its threshold: built from a float16 memory map, never copied whole,
it serves the same items under the same ids as exact search, at the calibrated recall."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

import app.index.base as base_mod
import app.index.domain as domain_mod
from app.index.domain import DomainIndex


@pytest.fixture
def small_large(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in (base_mod, domain_mod):
        monkeypatch.setattr(mod, "LARGE_ABOVE", 5_000)
        monkeypatch.setattr(mod, "ADD_CHUNK", 1_500)  # several chunks, a partial last one


def test_large_base_from_a_float16_map_matches_exact_search(
    small_large: None, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 24)).astype(np.float32)
    x = centres[rng.integers(0, 40, 12_000)] + 0.3 * rng.standard_normal((12_000, 24))
    x *= rng.uniform(0.5, 2.0, (12_000, 1))  # unequal norms: the inner-product transform
    np.save(tmp_path / "v.npy", x.astype(np.float16))
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    ids = [f"i{k}" for k in range(len(x))]
    queries = centres[rng.integers(0, 40, 200)] + 0.3 * rng.standard_normal((200, 24))
    queries = queries.astype(np.float32)

    index = DomainIndex("d", 24, exact_max_items=1_000, ivf_nlist=64, dtype="float16")
    index.build(ids, mapped, queries=queries[:100])
    assert index.kind == "ivf-pq" and index.calibration is not None
    assert index.calibration.recall >= 0.95

    exact = faiss.knn(
        queries[100:], np.asarray(mapped, np.float32), 50, metric=faiss.METRIC_INNER_PRODUCT
    )[1]
    found = index.search(queries[100:], 50)
    hits = sum(
        len({ids[j] for j in row.tolist()} & {i for i, _ in got})
        for row, got in zip(exact, found, strict=True)
    )
    assert hits / (50 * 100) >= 0.9
    # every label maps back to its own row's vector (chunks added in order)
    for item_id, score in found[0][:5]:
        row = int(item_id[1:])
        assert score == pytest.approx(
            float(mapped[row].astype(np.float32) @ queries[100]), rel=1e-2
        )


def test_large_base_refuses_non_finite_vectors(small_large: None) -> None:
    x = np.ones((6_000, 8), dtype=np.float16)
    x[5_999, 3] = np.inf
    index = DomainIndex("d", 8, exact_max_items=1_000, ivf_nlist=16)
    with pytest.raises(ValueError, match="NaN or inf"):
        index.build([f"i{k}" for k in range(6_000)], x)


def test_large_float16_base_keeps_its_recall_when_one_item_is_far_longer(
    small_large: None, tmp_path: Path
) -> None:
    """The lists are scanned by inner product, not by L2 over the augmented vectors: the
    augmenting coordinate sqrt(R^2 - |x|^2) of short items is close to R, and stored in
    float16 its rounding (~R * 5e-4) shifted L2 distances by more than the score gaps near
    rank 100 of a dense catalogue, so the calibration could not reach its recall even
    with every list probed and the service fell back to exact search (seen at 1e7 items)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((30, 16)).astype(np.float32)
    x = centres[rng.integers(0, 30, 12_000)] + 0.05 * rng.standard_normal((12_000, 16))
    x[0] *= 100  # one long item sets R
    np.save(tmp_path / "v.npy", x.astype(np.float16))
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    queries = (centres[rng.integers(0, 30, 100)] + 0.05 * rng.standard_normal((100, 16))).astype(
        np.float32
    )
    index = DomainIndex(
        "d", 16, exact_max_items=1_000, ivf_nlist=128, ivf_nprobe=8, dtype="float16"
    )
    index.build([f"i{k}" for k in range(len(x))], mapped, queries=queries)
    cal = index.calibration
    assert cal is not None and not cal.exact_instead and index.kind == "ivf-pq"
    assert cal.recall >= 0.95


def test_probing_every_list_of_a_large_base_is_exact_search(
    small_large: None, tmp_path: Path
) -> None:
    """nprobe = nlist scans every list, so the result is exact search's: the HNSW coarse
    quantizer's breadth follows nprobe (with a fixed breadth of 128 a walk returned fewer
    lists than asked for, and recall stayed below 1 at "every list"); saved and mapped back,
    the index keeps that breadth."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((12_000, 64)).astype(np.float32)
    queries = rng.standard_normal((50, 64)).astype(np.float32)
    # every candidate re-ranked: then only the lists probed decide what is found
    params = base_mod.BaseParams(exact_max_items=1_000, nlist=1024, nprobe=32, rerank=12_000)
    built = base_mod.BaseIndex.build(x, params)
    assert built.kind == "ivf-pq"
    built.save(tmp_path)
    truth = base_mod.exact_top(x, queries, 100)
    for index in (built, base_mod.BaseIndex.load(tmp_path, x)):
        index.set_nprobe(1024)
        found = index.search(queries, 100)[1]
        hits = sum(
            len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True)
        )
        assert hits == 100 * len(queries)
    mapped = base_mod.BaseIndex.load(tmp_path, x)
    mapped.set_nprobe(300)
    assert faiss.downcast_index(mapped.index.quantizer).hnsw.efSearch >= 300


def _clustered(seed: int, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    x = centres[rng.integers(0, 60, n)] + 0.4 * rng.standard_normal((n, dim))
    x *= rng.uniform(0.5, 2.0, (n, 1))  # unequal norms: the inner-product transform
    q = centres[rng.integers(0, 60, 300)] + 0.4 * rng.standard_normal((300, dim))
    return x.astype(np.float32), q.astype(np.float32)


def test_large_base_scans_compact_codes_and_reranks_them_exactly(
    small_large: None, tmp_path: Path
) -> None:
    """A large base stores 4-bit codes (1 byte per 4 dimensions: a query scans 1/8 of what
    the float16 lists held) and re-scores its candidates against the mapped serving
    vectors, so what it returns are the stored vectors' exact scores, at the calibrated
    recall on held-out queries."""
    x, queries = _clustered(11, 12_000, 48)
    np.save(tmp_path / "v.npy", x.astype(np.float16))
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    ids = [f"i{k}" for k in range(len(x))]
    index = DomainIndex(
        "d", 48, exact_max_items=1_000, ivf_nlist=64, ivf_rerank=200, dtype="float16"
    )
    index.build(ids, mapped, queries=queries[:150], cache_root=tmp_path / "c", source_key="v")
    assert index.kind == "ivf-pq"
    cal = index.calibration
    assert cal is not None and cal.recall >= 0.95 and not cal.exact_instead
    assert index.nprobe is not None and index.nprobe < 64

    (files,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    fp16_lists = len(x) * 48 * 2
    assert (files / base_mod.INDEX_FILE).stat().st_size < fp16_lists / 3  # codes + ids

    held = queries[150:]
    truth = base_mod.exact_top(np.asarray(mapped, np.float32), held, 50)
    found = index.search(held, 50)
    hits = sum(
        len({ids[j] for j in row.tolist()} & {i for i, _ in got})
        for row, got in zip(truth, found, strict=True)
    )
    assert hits / (50 * len(held)) >= 0.95
    for (item_id, score), q in ((got[0], q) for got, q in zip(found, held, strict=True)):
        exact = float(mapped[int(item_id[1:])].astype(np.float32) @ q)
        assert score == pytest.approx(exact, rel=1e-5, abs=1e-5)
    assert np.array_equal(index.vector("i7"), mapped[7].astype(np.float32))


def test_a_mapped_large_base_reranks_against_the_vectors_it_is_given(
    small_large: None, tmp_path: Path
) -> None:
    """Saved and mapped back, a large base needs the vectors it re-ranks against (refused
    clearly without them) and then returns the built index's results; its re-rank depth
    and nprobe come back with it."""
    x, queries = _clustered(12, 9_000, 32)
    params = base_mod.BaseParams(exact_max_items=1_000, nlist=48, nprobe=4, rerank=150)
    built = base_mod.BaseIndex.build(x, params, queries[:100])
    built.save(tmp_path)
    with pytest.raises(ValueError, match="needs those vectors"):
        base_mod.BaseIndex.load(tmp_path)
    with pytest.raises(ValueError, match="needs those vectors"):
        base_mod.BaseIndex.load(tmp_path, x[:10])
    mapped = base_mod.BaseIndex.load(tmp_path, x)
    assert (mapped.kind, mapped.rerank, mapped.nprobe) == ("ivf-pq", 150, built.nprobe)
    a, b = built.search(queries[100:], 30), mapped.search(queries[100:], 30)
    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])


def test_the_rerank_depth_is_in_the_cache_key_of_large_bases_only() -> None:
    """Bases up to LARGE_ABOVE items keep their cache keys (their served results are
    unchanged); a large base's depth changes what it serves, so it is part of its key."""
    p1, p2 = base_mod.BaseParams(rerank=500), base_mod.BaseParams(rerank=1000)
    small, big = 1_000_000, base_mod.LARGE_ABOVE + 1
    assert domain_mod.cache_key("d", 8, p1, "s", small) == domain_mod.cache_key(
        "d", 8, p2, "s", small
    )
    assert domain_mod.cache_key("d", 8, p1, "s", big) != domain_mod.cache_key("d", 8, p2, "s", big)


def test_large_base_candidates_are_ranked_by_inner_product_across_lists(
    small_large: None,
) -> None:
    """The codes are residuals from the lists' centroids, so a candidate's estimate needs
    its list's term <q, centroid>: FAISS would use the L2 quantizer's distance there,
    which favours the lists far from the query. Two opposite clusters, both lists probed,
    no re-rank slack: the candidates must come from the query's side."""
    rng = np.random.default_rng(13)
    a = rng.standard_normal(16).astype(np.float32)
    a /= np.linalg.norm(a)
    x = np.vstack(
        [a + 0.2 * rng.standard_normal((3_000, 16)), -a + 0.2 * rng.standard_normal((3_000, 16))]
    )
    x = x.astype(np.float32)
    params = base_mod.BaseParams(exact_max_items=1_000, nlist=2, nprobe=2, rerank=20)
    index = base_mod.BaseIndex.build(x, params)
    assert index.kind == "ivf-pq"
    found = index.search(a[None, :], 20)[1][0]
    assert (found >= 0).all() and (found < 3_000).all()  # rows 0..2999: the a side


def test_large_base_lists_partition_the_augmented_vectors_and_are_chosen_by_direction() -> None:
    """FAISS makes an inner-product IVF's k-means spherical (unit-length centroids): over
    the augmented vectors, all of length R, residuals were then as long as the items, and
    at 1e7 items the calibration reached recall 0.41 with every list probed. The
    centroids must be means of the augmented vectors (length close to R). Lists are
    chosen by the direction of their centroid: plain L2 to centroids that lie inside the
    sphere at different depths favoured the tightest lists whatever the query (on this
    catalogue recall 0.32 at 4 of 32 lists, calibrated to every list: served exact)."""
    rng = np.random.default_rng(14)
    centres = rng.standard_normal((60, 32)).astype(np.float32)
    x = 20 * (centres[rng.integers(0, 60, 9_000)] + 0.3 * rng.standard_normal((9_000, 32)))
    x = x.astype(np.float32)  # items far longer than 1, clusters of different spreads
    queries = centres[rng.integers(0, 60, 300)] + 0.3 * rng.standard_normal((300, 32))
    queries = queries.astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base_mod, "LARGE_ABOVE", 5_000)
        params = base_mod.BaseParams(exact_max_items=1_000, nlist=32, nprobe=2, rerank=200)
        index = base_mod.BaseIndex.build(x, params, queries[:150])
    assert index.kind == "ivf-pq" and index.nprobe is not None and index.nprobe <= 8
    assert index._centres is not None
    assert np.linalg.norm(index._centres, axis=1).min() > 0.5 * index.radius
    truth = base_mod.exact_top(x, queries[150:], 50)
    found = index.search(queries[150:], 50)[1]
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True))
    assert hits / (50 * 150) >= 0.95


def test_a_zero_query_gets_items_from_a_large_base(small_large: None) -> None:
    """A zero query (a user with nothing to embed from, e.g. a cross-domain user of a
    bundle without bridges) scores every item 0. FAISS's fast scan returned no candidate
    for it, so the recommender widened its search 4x at a time up to the whole catalogue
    (1.3 s per request at 1e7 items); exact search returns k items at score 0."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((9_000, 16)).astype(np.float32)
    index = DomainIndex("d", 16, exact_max_items=1_000, ivf_nlist=16, ivf_target_recall=None)
    index.build([f"i{k}" for k in range(len(x))], x)
    assert index.kind == "ivf-pq"
    hits = index.search(np.zeros(16, np.float32), 10, exclude=[{"i0", "i3"}])[0]
    assert len(hits) == 10 and {s for _, s in hits} == {0.0}
    assert not {"i0", "i3"} & {i for i, _ in hits}
