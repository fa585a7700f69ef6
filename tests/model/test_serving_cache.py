"""model/serving_cache.py: built once per key (also with concurrent builders), mapped
read-only, rebuilt when damaged, an unwritable root is a clear error; the quick check hashes
only a sample yet finds changed, truncated and replaced files."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from model import serving_cache
from model.serving_cache import (
    SAMPLE_BYTES,
    CacheError,
    CachePolicy,
    cache_key,
    load_array,
    open_cached,
    save_array,
)

QUICK = CachePolicy(verify="quick", keep=0)
FULL = CachePolicy(verify="full", keep=0)


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


# --- verification at open: quick (stat + sampled hash) vs full ---------------------------

BIG = 4 << 20  # bytes: well above the two sampled ends


def _build_big(tmp: Path) -> None:
    save_array(tmp, "v", np.arange(BIG // 4, dtype=np.float32))


class _Hashed:
    """Counts the bytes serving_cache hashes (every hash goes through ``_digest``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real = serving_cache._digest

        def counting(path: Path, ranges: list[tuple[int, int]]) -> str:
            self.bytes += sum(n for _, n in ranges)
            return real(path, ranges)

        monkeypatch.setattr(serving_cache, "_digest", counting)


def _counted_build(calls: list[int]) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        calls.append(1)
        _build_big(tmp)

    return build


def test_quick_open_hashes_only_the_sample_full_hashes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = open_cached(tmp_path, "k", _build_big)
    size = (d / "v.npy").stat().st_size
    assert size > 4 * SAMPLE_BYTES
    hashed = _Hashed(monkeypatch)
    calls: list[int] = []
    assert open_cached(tmp_path, "k", _counted_build(calls), QUICK) == d
    assert calls == [] and 0 < hashed.bytes <= 2 * SAMPLE_BYTES
    hashed.bytes = 0
    assert open_cached(tmp_path, "k", _counted_build(calls), FULL) == d
    assert calls == [] and hashed.bytes == size


def _corrupt(f: Path, offset: int, *, keep_mtime: bool = False) -> None:
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff\xff\xff\xff")
    if keep_mtime:  # what a careless copy tool might do; ctime still moves
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size


def _pretend_stat_unchanged(d: Path) -> None:
    """Record the files' current stat in meta.json: a change the file system did not see
    (a flipped bit on disk), which only hashing can find."""
    meta = json.loads((d / "meta.json").read_text())
    for name, info in meta["files"].items():
        info["stat"] = serving_cache._stat_id((d / name).stat())
    (d / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("offset", [100, BIG // 2])  # in the sample (header), outside it
def test_changed_file_with_its_mtime_restored_is_rebuilt(tmp_path: Path, offset: int) -> None:
    d = open_cached(tmp_path, "k", _build_big)
    _corrupt(d / "v.npy", offset, keep_mtime=True)
    calls: list[int] = []
    assert open_cached(tmp_path, "k", _counted_build(calls), QUICK) == d and calls == [1]
    np.testing.assert_array_equal(load_array(d, "v"), np.arange(BIG // 4))


def test_change_unseen_by_the_file_system_in_the_sample_is_rebuilt(tmp_path: Path) -> None:
    d = open_cached(tmp_path, "k", _build_big)
    _corrupt(d / "v.npy", 100)  # the .npy header region
    _pretend_stat_unchanged(d)
    calls: list[int] = []
    assert open_cached(tmp_path, "k", _counted_build(calls), QUICK) == d and calls == [1]
    np.testing.assert_array_equal(load_array(d, "v"), np.arange(BIG // 4))


def test_change_unseen_by_the_file_system_outside_the_sample_needs_full(
    tmp_path: Path,
) -> None:
    """The documented limit of the quick check, and what ``full`` is for."""
    d = open_cached(tmp_path, "k", _build_big)
    _corrupt(d / "v.npy", BIG // 2)
    _pretend_stat_unchanged(d)
    calls: list[int] = []
    open_cached(tmp_path, "k", _counted_build(calls), QUICK)
    assert calls == []
    open_cached(tmp_path, "k", _counted_build(calls), FULL)
    assert calls == [1]
    np.testing.assert_array_equal(load_array(d, "v"), np.arange(BIG // 4))


def test_truncated_file_is_rebuilt_without_hashing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = open_cached(tmp_path, "k", _build_big)
    os.truncate(d / "v.npy", BIG // 2)
    hashed = _Hashed(monkeypatch)
    calls: list[int] = []

    def build(tmp: Path) -> None:
        calls.append(1)
        _build_big(tmp)
        hashed.bytes = 0  # count only what the check hashed, not the new meta

    assert open_cached(tmp_path, "k", build, QUICK) == d and calls == [1]
    assert (d / "v.npy").stat().st_size > BIG and hashed.bytes > 0  # the rebuild's meta
    np.testing.assert_array_equal(load_array(d, "v"), np.arange(BIG // 4))


def test_touched_or_copied_file_is_hashed_once_then_quick_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same bytes under a new stat (a backup restore, a copy): verified in full, not
    rebuilt, and the new stat recorded, so the next open is quick."""
    d = open_cached(tmp_path, "k", _build_big)
    f = d / "v.npy"
    size = f.stat().st_size
    shutil.copy(f, d / "copy")
    os.replace(d / "copy", f)  # new inode, new times, same bytes
    hashed = _Hashed(monkeypatch)
    calls: list[int] = []
    open_cached(tmp_path, "k", _counted_build(calls), QUICK)
    assert calls == [] and hashed.bytes >= size
    hashed.bytes = 0
    open_cached(tmp_path, "k", _counted_build(calls), QUICK)
    assert calls == [] and 0 < hashed.bytes <= 2 * SAMPLE_BYTES


def test_meta_of_the_previous_format_is_verified_in_full_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches written before the quick check (size + sha256 only) are not rebuilt."""
    d = open_cached(tmp_path, "k", _build_big)
    meta = json.loads((d / "meta.json").read_text())
    for info in meta["files"].values():
        for field in ("stat", "sample_bytes", "sample_sha256"):
            del info[field]
    (d / "meta.json").write_text(json.dumps(meta))
    hashed = _Hashed(monkeypatch)
    calls: list[int] = []
    open_cached(tmp_path, "k", _counted_build(calls), QUICK)
    assert calls == [] and hashed.bytes >= BIG
    assert "stat" in json.loads((d / "meta.json").read_text())["files"]["v.npy"]
