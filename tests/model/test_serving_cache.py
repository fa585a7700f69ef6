"""model/serving_cache.py: built once per key (also with concurrent builders), mapped
read-only, rebuilt when damaged, an unwritable root is a clear error."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from model.serving_cache import CacheError, cache_key, load_array, open_cached, save_array


def test_built_once_then_mapped(tmp_path: Path) -> None:
    calls: list[int] = []

    def build(tmp: Path) -> None:
        calls.append(1)
        time.sleep(0.05)  # concurrent openers must wait, not build too
        save_array(tmp, "v", np.arange(12, dtype=np.float32).reshape(3, 4))

    found: list[Path] = []
    threads = [
        threading.Thread(target=lambda: found.append(open_cached(tmp_path, "k1", build)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(found)) == 1
    v = load_array(found[0], "v")
    assert isinstance(v, np.memmap) and not v.flags.writeable
    np.testing.assert_array_equal(v, np.arange(12).reshape(3, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1", "k1.lock"]  # no temp dirs


def test_damaged_cache_is_rebuilt_and_other_keys_are_separate(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        save_array(tmp, "v", np.ones(1000, dtype=np.float32))

    d = open_cached(tmp_path, "k1", build)
    with open(d / "v.npy", "r+b") as f:  # same size, other content
        f.seek(200)
        f.write(b"\x00\x00\x00\x00")
    calls: list[int] = []

    def rebuild(tmp: Path) -> None:
        calls.append(1)
        build(tmp)

    assert open_cached(tmp_path, "k1", rebuild) == d and calls == [1]
    np.testing.assert_array_equal(load_array(d, "v"), np.ones(1000))
    assert open_cached(tmp_path, "k2", rebuild) != d and calls == [1, 1]


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        save_array(tmp, "v", np.ones(3))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        open_cached(tmp_path, "k", build)
    assert [p.name for p in tmp_path.iterdir()] == ["k.lock"]


def test_unwritable_root_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="not writable"):
        open_cached(blocker / "cache", "k", lambda tmp: None)


def test_key_depends_on_manifest_and_params(tmp_path: Path) -> None:
    m = tmp_path / "manifest.json"
    m.write_text('{"a": 1}')
    k = cache_key(m, {"dtype": "float32"})
    assert k == cache_key(m, {"dtype": "float32"}) != cache_key(m, {"dtype": "float16"})
    m.write_text('{"a": 2}')
    assert cache_key(m, {"dtype": "float32"}) != k
