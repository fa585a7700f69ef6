"""model/serving_cache.py pruning: old cache directories go, the N most recently used, the
one just opened, recently used ones and ones being built stay; crash leftovers go; a
process still mapping a removed file keeps reading it; nothing but cache names is touched."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from model.serving_cache import CachePolicy, load_array, open_cached, prune, save_array

HOUR = 3600.0


def key(n: int) -> str:
    return f"{n:032x}"


def build_of(value: float) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        save_array(tmp, "v", np.full(1000, value, dtype=np.float32))

    return build


def make(root: Path, n: int, *, age_s: float) -> Path:
    """Cache ``key(n)`` last opened ``age_s`` seconds ago."""
    d = open_cached(root, key(n), build_of(n), CachePolicy(keep=0))
    t = time.time() - age_s
    os.utime(root / f"{key(n)}.lock", (t, t))
    return d


def names(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_keeps_the_most_recent_and_the_current_removes_the_old(tmp_path: Path) -> None:
    for n, age in ((1, 5 * HOUR), (2, 4 * HOUR), (3, 3 * HOUR), (4, 2 * HOUR)):
        make(tmp_path, n, age_s=age)
    current = open_cached(
        tmp_path,
        key(9),
        build_of(9),
        CachePolicy(keep=2, unused_s=HOUR),
    )
    # kept: key 9 (just opened) and key 4 (the next most recent); 1-3 are gone, lock and all
    assert names(tmp_path) == {key(9), f"{key(9)}.lock", key(4), f"{key(4)}.lock"}
    np.testing.assert_array_equal(load_array(current, "v"), np.full(1000, 9))


def test_recently_used_directories_stay_beyond_keep(tmp_path: Path) -> None:
    """The other caches of the same start (one per domain index) were opened seconds ago."""
    for n in range(1, 5):
        make(tmp_path, n, age_s=60)
    make(tmp_path, 5, age_s=2 * HOUR)
    assert prune(tmp_path, keep=1, unused_s=HOUR, current=key(1)) == [key(5)]
    assert {key(n) for n in range(1, 5)} <= names(tmp_path)


def test_the_current_directory_is_never_removed(tmp_path: Path) -> None:
    make(tmp_path, 1, age_s=5 * HOUR)
    make(tmp_path, 2, age_s=60)
    make(tmp_path, 3, age_s=120)
    # key 2 is the one most recently used, key 1 the current: key 3 goes
    assert prune(tmp_path, keep=1, unused_s=0, current=key(1)) == [key(3)]
    assert {key(1), key(2)} <= names(tmp_path)


def test_keep_zero_in_the_policy_never_prunes(tmp_path: Path) -> None:
    make(tmp_path, 1, age_s=5 * HOUR)
    open_cached(tmp_path, key(2), build_of(2), CachePolicy(keep=0, unused_s=0))
    assert key(1) in names(tmp_path)


def test_a_locked_directory_is_not_removed(tmp_path: Path) -> None:
    """A builder or opener holds the key's lock: pruning passes it by."""
    make(tmp_path, 1, age_s=5 * HOUR)
    make(tmp_path, 2, age_s=0)
    with open(tmp_path / f"{key(1)}.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # as another process would
        assert prune(tmp_path, keep=1, unused_s=HOUR, current=key(2)) == []
        assert key(1) in names(tmp_path)
    assert prune(tmp_path, keep=1, unused_s=HOUR, current=key(2)) == [key(1)]


def test_a_build_in_progress_is_left_alone_and_completes(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()
    found: list[Path] = []

    def slow_build(tmp: Path) -> None:
        save_array(tmp, "v", np.ones(10, dtype=np.float32))
        started.set()
        assert release.wait(10)

    builder = threading.Thread(
        target=lambda: found.append(open_cached(tmp_path, key(1), slow_build, CachePolicy(keep=0)))
    )
    builder.start()
    assert started.wait(10)
    temp = [n for n in names(tmp_path) if n.startswith(f".{key(1)}-")]
    assert len(temp) == 1
    assert prune(tmp_path, keep=1, unused_s=0, current=key(2)) == []
    assert temp[0] in names(tmp_path)  # the builder's temporary directory survived
    release.set()
    builder.join()
    np.testing.assert_array_equal(load_array(found[0], "v"), np.ones(10))


def test_leftovers_of_a_crashed_build_are_removed(tmp_path: Path) -> None:
    """A build killed outright leaves its temporary directory (and a lock file, no cache)."""
    make(tmp_path, 1, age_s=60)
    (tmp_path / f".{key(1)}-abc123").mkdir()  # died while rebuilding key 1
    (tmp_path / f".{key(1)}-abc123" / "v.npy").write_bytes(b"half")
    (tmp_path / f".{key(3)}-def456").mkdir()  # died building key 3, no lock file left
    (tmp_path / f"{key(4)}.lock").touch()  # a failed build of key 4, long ago
    t = time.time() - 2 * HOUR
    os.utime(tmp_path / f"{key(4)}.lock", (t, t))
    assert prune(tmp_path, keep=1, unused_s=HOUR, current=key(1)) == [key(4)]
    assert names(tmp_path) == {key(1), f"{key(1)}.lock"}


def test_a_mapped_cache_stays_readable_after_it_is_removed(tmp_path: Path) -> None:
    """Linux keeps a deleted file's pages while a process maps it: a worker still serving
    an old bundle is not disturbed by another one pruning its cache."""
    old = make(tmp_path, 1, age_s=2 * HOUR)
    mapped = load_array(old, "v")
    open_cached(tmp_path, key(2), build_of(2), CachePolicy(keep=1, unused_s=HOUR))
    assert not old.exists()
    np.testing.assert_array_equal(np.array(mapped), np.full(1000, 1))


def test_only_names_of_the_cache_are_touched(tmp_path: Path) -> None:
    """A cache root shared with other files (a misconfigured MICREC_SERVING_CACHE_DIR)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "notes.lock").touch()
    (tmp_path / ".hidden-dir").mkdir()
    (tmp_path / ("a" * 31)).mkdir()
    t = time.time() - 5 * HOUR
    for p in tmp_path.iterdir():
        os.utime(p, (t, t))
    make(tmp_path, 1, age_s=5 * HOUR)
    make(tmp_path, 2, age_s=0)
    assert prune(tmp_path, keep=1, unused_s=0, current=key(2)) == [key(1)]
    assert names(tmp_path) == {"models", "notes.lock", ".hidden-dir", "a" * 31} | {
        key(2),
        f"{key(2)}.lock",
    }


def test_opening_a_pruned_key_builds_it_again(tmp_path: Path) -> None:
    make(tmp_path, 1, age_s=2 * HOUR)
    make(tmp_path, 2, age_s=0)
    assert prune(tmp_path, keep=1, unused_s=HOUR, current=key(2)) == [key(1)]
    d = open_cached(tmp_path, key(1), build_of(1), CachePolicy(keep=0))
    np.testing.assert_array_equal(load_array(d, "v"), np.full(1000, 1))


def test_builds_stay_one_at_a_time_while_pruners_remove_lock_files(tmp_path: Path) -> None:
    """Openers of three keys, each open pruning the others at once (keep 1, no age): lock
    files are unlinked while other threads wait on them, yet no key is ever built by two
    threads at a time and every open succeeds."""
    active: dict[str, int] = {}
    most: list[int] = [0]
    guard = threading.Lock()
    errors: list[BaseException] = []

    def build_for(k: str) -> Callable[[Path], None]:
        def build(tmp: Path) -> None:
            with guard:
                active[k] = active.get(k, 0) + 1
                most[0] = max(most[0], active[k])
            time.sleep(0.002)  # widen the window a second builder would use
            save_array(tmp, "v", np.ones(4, dtype=np.float32))
            with guard:
                active[k] -= 1

        return build

    aggressive = CachePolicy(keep=1, unused_s=0)

    def opener(k: str) -> None:
        try:
            for _ in range(30):
                open_cached(tmp_path, k, build_for(k), aggressive)
        except BaseException as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=opener, args=(key(n % 3),)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and most[0] == 1
