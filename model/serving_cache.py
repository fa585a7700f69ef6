"""Files derived from a bundle, built once per machine and memory-mapped by every process.

Serving needs arrays the bundle does not store (the serving item vectors, the template rows
of each item, the service's FAISS index). Computed in each worker they are private memory,
one copy per worker; written once to a file and memory-mapped read-only they are page-cache
pages that every worker of the machine shares (``np.load(mmap_mode="r")``,
``faiss.read_index(IO_FLAG_MMAP_IFC)``).

Layout: ``<root>/<key>/`` holds the files and ``meta.json`` (format, key, and per file its
size, sha256, the sha256 of a sample and its stat), written last; ``<root>/<key>.lock``
serialises builders and its mtime is the key's last use (set at every open). ``key`` is a
hash of everything the content depends on (the bundle's manifest, which lists the sha256 of
every bundle file, plus the builder's parameters), so a new bundle or other settings get a
new directory and a stale one is never read.

A build runs under an exclusive ``flock`` (workers starting together: one builds, the
others wait, then map the same files), writes into a temporary directory and renames it
into place, so a crash leaves no half-written cache. Only ``.npy`` (``allow_pickle=False``),
JSON and FAISS index files are written or read: nothing is unpickled.

Verification at open (``CachePolicy.verify``):

* ``"full"`` hashes every byte of every file (seconds per GB; at 1e6 items per domain
  several GB on every worker start and reload).
* ``"quick"`` (default) compares each file's size, mtime_ns, ctime_ns and inode with those
  recorded at build and hashes a sample (the first and last ``SAMPLE_BYTES``: the .npy and
  FAISS headers that say how the rest is read, and the end a truncation or append
  changes); a file whose stat differs is hashed in full, and if it still matches its
  sha256 (a copy or a restore) the new stat is recorded so the next open is quick again.
  Why that is safe here: the files are written only by this module and mapped read-only,
  so any later change goes through the file system, which sets mtime and ctime (ctime
  cannot be set back by a user: restoring an mtime with ``utime`` sets it), a replacement
  gets a new inode and a truncation a new size. What it does not see is a change below the
  file system (a flipped bit on disk) outside the sample; a full check at start-up would
  not protect the pages read later either. Either way a cache that fails is rebuilt, never
  served.

Pruning (``CachePolicy.keep``, ``unused_s``): after each open, directories under the same
root (caches of older bundles or other settings) are removed when they are not among the
``keep`` most recently used, have not been opened for ``unused_s`` seconds, and their lock
is free (nobody is building or opening them); the directory just opened never is. The age
keeps what a starting worker is about to map (its open touched the lock, it maps right
after) and the other directories of the same start (one per domain index), which a count
alone would not: a start opens several. A process that still maps a removed file keeps its
pages (Linux frees a deleted file's space when its last mapping goes); a later open of
that key builds it again. Pruning only sees one root, so bundles whose old caches should go
share one (the service does for all versions of a registry).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, get_args

import numpy as np

log = logging.getLogger("micrec.serving_cache")

CACHE_FORMAT = 1

META = "meta.json"

SAMPLE_BYTES = 1 << 18
"""Bytes hashed at each end of a file by the quick check."""

VerifyMode = Literal["quick", "full"]
VERIFY_MODES: tuple[str, ...] = get_args(VerifyMode)

_KEY = re.compile(r"[0-9a-f]{32}")  # cache_key() and the index's key: 32 hex digits


class CacheError(RuntimeError):
    """A cache directory is unusable (unwritable, or a file does not match its meta)."""


@dataclass(frozen=True)
class CachePolicy:
    """How :func:`open_cached` verifies a cache and prunes its root (see the module doc).

    ``verify``: "quick" or "full"; ``keep``: directories kept at least, most recently used
    first (0 = never prune); ``unused_s``: a directory opened more recently is kept.
    """

    verify: VerifyMode = "quick"
    keep: int = 8
    unused_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")
        if self.keep < 0 or self.unused_s < 0:
            raise ValueError("keep and unused_s must be >= 0")


_policy = CachePolicy()


def configure(policy: CachePolicy) -> None:
    """Set the policy of every later :func:`open_cached` of this process (the service
    calls it once at start-up, from its settings)."""
    global _policy
    _policy = policy


def current_policy() -> CachePolicy:
    return _policy


def cache_key(manifest_path: Path, params: Mapping[str, Any]) -> str:
    """Hash of the bundle's manifest (which holds every bundle file's sha256) and the
    parameters the cached content depends on."""
    h = hashlib.sha256(Path(manifest_path).read_bytes())
    h.update(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def open_cached(
    root: Path, key: str, build: Callable[[Path], None], policy: CachePolicy | None = None
) -> Path:
    """The directory of the complete cache ``key`` under ``root``; ``build(tmp_dir)`` writes
    its files when it is absent (or does not match its meta), once per machine. Then old
    directories under ``root`` are pruned. ``policy``: None = the process's
    (:func:`configure`).

    Raises CacheError when ``root`` cannot be written (callers then compute in memory).
    """
    policy = policy or _policy
    root = Path(root)
    final = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = _lock(root, key, wait=True)
    except OSError as err:
        raise CacheError(f"serving cache {root} is not writable ({err})") from err
    assert lock is not None  # wait=True
    with lock:
        try:
            if not _verify(final, key, policy.verify):
                _build(root, final, key, build)
            os.utime(root / f"{key}.lock")  # last use, read by prune()
        except OSError as err:
            raise CacheError(f"serving cache {final} could not be written ({err})") from err
    if policy.keep:
        try:
            prune(root, keep=policy.keep, unused_s=policy.unused_s, current=key)
        except OSError as err:  # a cache that works is not failed by its neighbours
            log.warning("serving cache %s: pruning failed (%s)", root, err)
    return final


def _build(root: Path, final: Path, key: str, build: Callable[[Path], None]) -> None:
    if final.exists():  # stale or damaged: rebuilt below
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        build(tmp)
        files = {f.name: _record(f) for f in sorted(tmp.iterdir())}
        meta = {"format": CACHE_FORMAT, "key": key, "files": files}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _lock(root: Path, key: str, *, wait: bool) -> IO[bytes] | None:
    """The open ``<key>.lock``, exclusively flock'ed (closing it unlocks); None when another
    process holds it and not ``wait``. prune() unlinks lock files: a lock taken on a file
    unlinked meanwhile guards nothing, so it is dropped and taken on the file now there."""
    path = root / f"{key}.lock"
    while True:
        f = open(path, "a+b")  # noqa: SIM115 - returned open, held by the caller
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            own = os.fstat(f.fileno())
            try:
                now = os.stat(path)
                if (now.st_ino, now.st_dev) == (own.st_ino, own.st_dev):
                    return f
            except FileNotFoundError:
                pass
        except BlockingIOError:
            f.close()
            return None
        except BaseException:
            f.close()
            raise
        f.close()


# --- verification ---------------------------------------------------------------------


def _digest(path: Path, ranges: Sequence[tuple[int, int]]) -> str:
    """sha256 of the bytes of ``path`` in ``ranges`` ((offset, length) each, in order)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for offset, length in ranges:
            f.seek(offset)
            while length > 0:
                chunk = f.read(min(length, 1 << 20))
                if not chunk:  # shorter than expected: the digest differs
                    break
                h.update(chunk)
                length -= len(chunk)
    return h.hexdigest()


def _sample_ranges(size: int, n: int) -> list[tuple[int, int]]:
    return [(0, size)] if size <= 2 * n else [(0, n), (size - n, n)]


def _stat_id(st: os.stat_result) -> dict[str, int]:
    return {"mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _record(f: Path) -> dict[str, Any]:
    """What meta.json says of file ``f``: size, sha256, sample sha256 and stat."""
    st = f.stat()
    return {
        "size": st.st_size,
        "sha256": _digest(f, [(0, st.st_size)]),
        "sample_bytes": SAMPLE_BYTES,
        "sample_sha256": _digest(f, _sample_ranges(st.st_size, SAMPLE_BYTES)),
        "stat": _stat_id(st),
    }


def _read_meta(directory: Path, key: str) -> dict[str, Any] | None:
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        return None
    files = meta.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None
    return meta


def _verify(directory: Path, key: str, mode: str) -> bool:
    """True when ``directory`` is a complete cache for ``key`` whose files match meta.json
    (``mode``: "quick" or "full", see the module doc). A file that matches in full under a
    new stat gets that stat recorded in meta.json."""
    meta = _read_meta(directory, key)
    if meta is None:
        return False
    resealed = False
    for name, info in meta["files"].items():
        f = directory / name
        if Path(name).name != name or name == META:
            return False
        try:
            st = os.stat(f)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != info.get("size"):
            return False
        n = info.get("sample_bytes")
        if mode == "quick" and info.get("stat") == _stat_id(st) and isinstance(n, int) and n > 0:
            if _digest(f, _sample_ranges(st.st_size, n)) != info.get("sample_sha256"):
                return False  # changed without the file system noticing: damaged
            continue
        if _digest(f, [(0, st.st_size)]) != info.get("sha256"):
            return False
        after = os.stat(f)
        if info.get("stat") != _stat_id(st) and _stat_id(after) == _stat_id(st):
            info["sample_bytes"] = SAMPLE_BYTES  # not changed while it was hashed
            info["sample_sha256"] = _digest(f, _sample_ranges(st.st_size, SAMPLE_BYTES))
            info["stat"] = _stat_id(st)
            resealed = True
    if resealed:
        tmp = directory / f".{META}.tmp"
        try:
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, directory / META)
        except OSError as err:  # verified all the same; the next open hashes again
            log.warning("serving cache %s: meta.json not updated (%s)", directory, err)
    return True


# --- pruning ----------------------------------------------------------------------------


def _last_use(root: Path, key: str) -> float | None:
    """When ``key`` was last opened (its lock's mtime; the directory's without a lock)."""
    for p in (root / f"{key}.lock", root / key):
        try:
            return p.stat().st_mtime
        except FileNotFoundError:
            continue
    return None


def prune(
    root: Path,
    *,
    keep: int,
    unused_s: float,
    current: str | None = None,
    now: float | None = None,
) -> list[str]:
    """Remove the cache directories under ``root`` that are not among the ``keep`` most
    recently used, not ``current`` and not opened for ``unused_s`` seconds, each under its
    lock and only when nobody holds that lock; also temporary directories of builds that
    died (their key's lock is free, so no build is running). Returns the keys removed.
    Only names this module writes (32 hex digits, ``.<key>-*``) are touched."""
    root = Path(root)
    now = time.time() if now is None else now
    keys: set[str] = set()
    temps: dict[str, list[Path]] = {}
    for p in root.iterdir():
        name = p.name
        if _KEY.fullmatch(name) and p.is_dir() and not p.is_symlink():
            keys.add(name)
        elif name.endswith(".lock") and _KEY.fullmatch(name[:-5]):
            keys.add(name[:-5])  # a lock without a directory: a build that failed
        elif name.startswith(".") and _KEY.fullmatch(name[1:33]) and name[33:34] == "-":
            temps.setdefault(name[1:33], []).append(p)
    used = {k: t for k in keys if (t := _last_use(root, k)) is not None}
    ranked = sorted((k for k in used if (root / k).is_dir()), key=used.__getitem__, reverse=True)
    kept = set(ranked[:keep]) | {current}
    removed = []
    for k in sorted((set(used) - kept) | set(temps)):
        lock = _lock(root, k, wait=False)
        if lock is None:  # being built or opened now
            continue
        with lock:
            for leftover in temps.get(k, []):
                shutil.rmtree(leftover, ignore_errors=True)
            if k not in used and not (root / k).exists():  # only leftovers were there:
                (root / f"{k}.lock").unlink(missing_ok=True)  # drop the lock taking them made
                continue
            last = _last_use(root, k)
            if last is None or k in kept or now - last < unused_s:
                continue
            if (root / k).exists():
                trash = root / f".{k}-pruned-{os.getpid()}"
                os.rename(root / k, trash)  # gone at once for openers; rmtree may take time
                shutil.rmtree(trash, ignore_errors=True)
            (root / f"{k}.lock").unlink(missing_ok=True)
            removed.append(k)
            log.info("serving cache: removed %s (unused for %.0f s)", root / k, now - last)
    return removed


# --- arrays -------------------------------------------------------------------------------


def save_array(directory: Path, name: str, array: np.ndarray) -> None:
    """``array`` as ``<name>.npy`` (the .npy header is padded to 64 bytes, so the data of
    a memory-mapped file is aligned)."""
    np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def load_array(directory: Path, name: str) -> np.ndarray:
    """``<name>.npy`` memory-mapped read-only (pages shared by every process mapping it)."""
    return np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
