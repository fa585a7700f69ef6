"""Files derived from a bundle, built once per machine and memory-mapped by every process.

Serving needs arrays the bundle does not store (the serving item vectors, the template rows
of each item, the service's FAISS index). Computed in each worker they are private memory,
one copy per worker; written once to a file and memory-mapped read-only they are page-cache
pages that every worker of the machine shares (``np.load(mmap_mode="r")``,
``faiss.read_index(IO_FLAG_MMAP_IFC)``).

Layout: ``<root>/<key>/`` holds the files and ``meta.json`` (format, key, size and sha256 of
every file), written last; ``<root>/<key>.lock`` serialises builders. ``key`` is a hash of
everything the content depends on (the bundle's manifest, which lists the sha256 of every
bundle file, plus the builder's parameters), so a new bundle or other settings get a new
directory and a stale one is never read.

A build runs under an exclusive ``flock`` (workers starting together: one builds, the
others wait, then map the same files), writes into a temporary directory and renames it
into place, so a crash leaves no half-written cache. Only ``.npy`` (``allow_pickle=False``),
JSON and FAISS index files are written or read: nothing is unpickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import sha256_file

CACHE_FORMAT = 1

META = "meta.json"


class CacheError(RuntimeError):
    """A cache directory is unusable (unwritable, or a file does not match its meta)."""


def cache_key(manifest_path: Path, params: Mapping[str, Any]) -> str:
    """Hash of the bundle's manifest (which holds every bundle file's sha256) and the
    parameters the cached content depends on."""
    h = hashlib.sha256(Path(manifest_path).read_bytes())
    h.update(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True).encode())
    return h.hexdigest()[:32]


def _check(directory: Path, key: str) -> bool:
    """True when ``directory`` is a complete cache for ``key`` whose files match meta.json."""
    meta_path = directory / META
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        return False
    for name, info in (meta.get("files") or {}).items():
        f = directory / name
        if Path(name).name != name or not f.is_file() or f.stat().st_size != info.get("size"):
            return False
        if sha256_file(f) != info.get("sha256"):
            return False
    return True


def open_cached(root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """The directory of the complete cache ``key`` under ``root``; ``build(tmp_dir)`` writes
    its files when it is absent (or does not match its meta), once per machine.

    Raises CacheError when ``root`` cannot be written (callers then compute in memory).
    """
    root = Path(root)
    final = root / key
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key}.lock", "a+b")  # noqa: SIM115 - held across the build
    except OSError as err:
        raise CacheError(f"serving cache {root} is not writable ({err})") from err
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _check(final, key):
                return final
            if final.exists():  # stale or damaged: rebuilt below
                shutil.rmtree(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
            try:
                build(tmp)
                files = {
                    f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)}
                    for f in sorted(tmp.iterdir())
                }
                meta = {"format": CACHE_FORMAT, "key": key, "files": files}
                (tmp / META).write_text(json.dumps(meta, indent=1))
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final
        except OSError as err:
            raise CacheError(f"serving cache {final} could not be written ({err})") from err
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def save_array(directory: Path, name: str, array: np.ndarray) -> None:
    """``array`` as ``<name>.npy`` (the .npy header is padded to 64 bytes, so the data of
    a memory-mapped file is aligned)."""
    np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


def load_array(directory: Path, name: str) -> np.ndarray:
    """``<name>.npy`` memory-mapped read-only (pages shared by every process mapping it)."""
    return np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
