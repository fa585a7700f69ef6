"""A worker that starts on a warm serving cache maps its per-item arrays instead of
computing its own copies, and a cache built a chunk of items at a time equals the
in-memory engine (model/serving_arrays.py, model.bundle.item_templates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.lifecycle.engine import load_engine
from model import bundle as bundle_module
from model import serving_arrays
from model.bundle import item_templates, load_bundle
from model.inference import InferenceEngine
from tests.app.real_bundle import RealBundles


def mapped_file(t: torch.Tensor) -> str | None:
    """The file whose mapping in this process holds ``t``'s memory (None: anonymous)."""
    ptr = t.data_ptr()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= ptr < hi:
                return parts[5] if len(parts) > 5 and parts[5].startswith("/") else None
    return None


def assert_same_engine(a: InferenceEngine, b: InferenceEngine) -> None:
    for d in a.domains:
        np.testing.assert_array_equal(a.catalogue(d).vectors, b.catalogue(d).vectors)
        ea, eb = a.bundle.domains[d].embedder, b.bundle.domains[d].embedder
        assert torch.equal(ea.item_template, eb.item_template)
        assert torch.equal(ea.is_template, eb.is_template)
        ids = a.catalogue(d).item_ids
        for history in ([ids[0], ids[5], ids[9]], [ids[17]], list(ids[:40])):
            ua, ub = a.embed_user(d, {d: history}), b.embed_user(d, {d: history})
            assert ua.method == ub.method
            np.testing.assert_array_equal(ua.vector, ub.vector)


def test_warm_worker_maps_template_rows_instead_of_computing_them(
    real: RealBundles, tmp_path: Path
) -> None:
    """The service's loader leaves the per-item template rows and flags uncomputed; the
    engine maps them from the cache files (a worker holds no copy of its own), equal to
    what an engine without a cache computes."""
    lazy = load_bundle(real.v1, templates=False)
    assert not lazy.templates_loaded
    for s in lazy.domains.values():
        assert s.embedder.item_template.numel() == 0 and s.embedder.is_template.numel() == 0
    in_memory = InferenceEngine.from_bundle(load_bundle(real.v1))
    built = load_engine(real.v1, cache_root=lambda _: tmp_path)
    warm = load_engine(real.v1, cache_root=lambda _: tmp_path)
    for e in (built, warm):
        assert e.bundle.templates_loaded
        for d, s in e.bundle.domains.items():
            for name, t in (
                ("template", s.embedder.item_template),
                ("is-template", s.embedder.is_template),
            ):
                where = mapped_file(t)
                assert where is not None and Path(where).name.startswith(f"{name}-"), (d, where)
        assert_same_engine(in_memory, e)


def test_a_bundle_without_template_rows_gets_them_computed_without_a_cache(
    real: RealBundles,
) -> None:
    """No cache to map (caching off, or the cache cannot be written): the engine derives
    the rows itself, the same as load_bundle's."""
    engine = InferenceEngine.from_bundle(load_bundle(real.v1, templates=False))
    assert engine.bundle.templates_loaded
    assert_same_engine(InferenceEngine.from_bundle(load_bundle(real.v1)), engine)


def test_cache_built_in_small_chunks_equals_the_in_memory_engine(
    real: RealBundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks far smaller than a domain (7 items; 5 for the template rows): the serving
    vectors, template rows and user vectors are those of the one-step in-memory engine,
    from a bundle loaded with its template rows and from one loaded without."""
    monkeypatch.setattr(serving_arrays, "CHUNK", 7)
    monkeypatch.setattr(bundle_module, "TEMPLATE_CHUNK", 5)
    in_memory = InferenceEngine.from_bundle(load_bundle(real.v1))
    for k, templates in enumerate((True, False)):
        cached = InferenceEngine.from_bundle(
            load_bundle(real.v1, templates=templates), cache_dir=tmp_path / str(k)
        )
        assert_same_engine(in_memory, cached)
    b = load_bundle(real.v1)
    for d, s in b.domains.items():
        out = np.full(tuple(s.embedder.item_template.shape), np.nan, dtype=np.float32)
        flags = np.full(s.embedder.n_items, np.nan, dtype=np.float32)
        got, got_flags = item_templates(b.model, d, out, flags)
        assert got is out and got_flags is flags  # written in place
        np.testing.assert_array_equal(out, s.embedder.item_template.numpy())
        np.testing.assert_array_equal(flags, s.embedder.is_template.numpy())
