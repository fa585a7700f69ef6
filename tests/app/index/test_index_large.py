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
    assert index.kind == "ivf" and index.calibration is not None
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
    assert cal is not None and not cal.exact_instead and index.kind == "ivf"
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
    params = base_mod.BaseParams(exact_max_items=1_000, nlist=1024, nprobe=32)
    built = base_mod.BaseIndex.build(x, params)
    assert built.kind == "ivf"
    built.save(tmp_path)
    truth = base_mod.exact_top(x, queries, 100)
    for index in (built, base_mod.BaseIndex.load(tmp_path)):
        index.set_nprobe(1024)
        found = index.search(queries, 100)[1]
        hits = sum(
            len(set(a.tolist()) & set(b.tolist())) for a, b in zip(truth, found, strict=True)
        )
        assert hits == 100 * len(queries)
    mapped = base_mod.BaseIndex.load(tmp_path)
    mapped.set_nprobe(300)
    assert faiss.downcast_index(mapped.index.quantizer).hnsw.efSearch >= 300
