"""The serving benchmark's padded bundles, written a chunk at a time (bench/serve_bundles.py,
bench/stream_safetensors.py), and its per-process memory split (bench/serve_procs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model.bundle import load_bundle, verify_bundle
from model.inference import InferenceEngine
from tests.app.real_bundle import RealBundles

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def bench_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # the bench modules' own imports are bare


def test_streamed_safetensors_are_read_by_the_library(tmp_path: Path) -> None:
    """Tensors of mixed dtypes and sizes (an empty one too), filled a row range at a time
    through the writer's maps, read back by safetensors as written."""
    from stream_safetensors import SafetensorsWriter

    rng = np.random.default_rng(0)
    want = {
        "layers": rng.standard_normal((3, 101, 5)).astype(np.float32),
        "rows": rng.integers(-1, 9, 101),
        "one": np.array([1.5], dtype=np.float32),
        "half": rng.standard_normal((7, 3)).astype(np.float16),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    w = SafetensorsWriter(
        tmp_path / "x.safetensors", {k: (v.dtype, v.shape) for k, v in want.items()}
    )
    layers = w.array("layers")
    for lo in range(0, 101, 13):
        layers[:, lo : lo + 13] = want["layers"][:, lo : lo + 13]
    layers.flush()
    for k in ("rows", "one", "half", "empty"):
        w.write(k, want[k])
    got = load_file(tmp_path / "x.safetensors")
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k].numpy(), v)
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.get_slice("layers").get_shape() == [3, 101, 5]


def test_streamed_padding_is_the_same_whatever_the_chunk(real: RealBundles, tmp_path: Path) -> None:
    """A bundle padded 7 items at a time is byte for byte the one padded in a single step
    (every per-item tensor whole in memory): the streamed bundle equals the in-memory one
    row for row."""
    from serve_bundles import pad_bundle

    d = load_bundle(real.v1).model.domains[0]
    a = pad_bundle(real.v1, tmp_path / "a", 400, domains=[d], chunk=7)
    b = pad_bundle(real.v1, tmp_path / "b", 400, domains=[d], chunk=10**6)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name != "manifest.json":  # its creation time may differ
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_padded_bundle_keeps_the_real_items_and_pads_only_its_domains(
    real: RealBundles, tmp_path: Path
) -> None:
    """One domain padded to 400 items: a verified bundle whose first rows are the real
    items, whose padded rows mix real ones (blend content re-normalised), the other domains
    unchanged; the engine serves it."""
    from serve_bundles import pad_bundle, pad_id

    src = load_bundle(real.v1)
    d = src.model.domains[0]
    out = pad_bundle(real.v1, tmp_path / "p", 400, domains=[d], chunk=64)
    verify_bundle(out)
    padded = load_bundle(out)
    for name, s in src.domains.items():
        p = padded.domains[name]
        n0 = s.embedder.n_items
        n = 400 if name == d else n0
        assert p.embedder.n_items == len(p.item_ids) == len(p.titles) == len(p.popularity) == n
        assert p.item_ids[:n0] == s.item_ids and p.user_ids == s.user_ids
        assert p.item_ids[n0:] == [pad_id(name, k) for k in range(n - n0)]
        assert torch.equal(p.embedder.item_layers[:, :n0], s.embedder.item_layers)
        assert torch.equal(p.embedder.item_degree[:n0], s.embedder.item_degree)
        np.testing.assert_array_equal(p.history_items, s.history_items)
        assert (
            padded.model.templates[name].n_item_templates
            == src.model.templates[name].n_item_templates
        )
        assert p.blend is not None and s.blend is not None and p.blend.content is not None
        assert s.blend.content is not None
        assert torch.equal(p.blend.content[:n0], s.blend.content)
        norms = p.blend.content[n0:].norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        if n > n0:  # near real items: within the real layer states' range, not copies
            lo, hi = s.embedder.item_layers.amin(), s.embedder.item_layers.amax()
            extra = p.embedder.item_layers[:, n0:]
            assert extra.amin() > 2 * lo and extra.amax() < 2 * hi
            assert not any(
                torch.equal(extra[:, 0], s.embedder.item_layers[:, j]) for j in range(n0)
            )
    engine = InferenceEngine.from_bundle(padded, cache_dir=tmp_path / "cache")
    assert len(engine.catalogue(d).item_ids) == 400


def test_memory_split_of_a_process_separates_anonymous_from_file_pages(tmp_path: Path) -> None:
    """smaps_rollup's fields for this process: a mapped, read file shows up as file pages,
    not as anonymous memory."""
    from serve_procs import smaps_rollup

    path = tmp_path / "f.npy"
    np.save(path, np.ones(4 << 20, dtype=np.float32))  # 16 MB
    before = smaps_rollup(os.getpid())
    mapped = np.load(path, mmap_mode="r")
    assert float(mapped.sum()) == 4 << 20
    after = smaps_rollup(os.getpid())
    assert after["Rss"] - before["Rss"] > 12  # MB: the pages just read
    assert after["Anonymous"] - before["Anonymous"] < 4
    assert {"Pss_Anon", "Pss_File", "Private_Clean", "Private_Dirty", "VmHWM"} <= set(after)
    assert smaps_rollup(2**22 + 12345) == {}  # no such process
