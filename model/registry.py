"""The bundle registry: model bundles by version under one directory, one of them current.

Layout (``root`` = the registry directory)::

    versions/v0001/bundle/        a complete bundle (model/bundle.py), never modified
    versions/v0001/version.json   what the registry knows of it: added_at, meta (source,
                                  metrics...), the refusal (time, report) when refused
    current -> versions/v0003/bundle   symlink: the promoted version (relative target)
    history.jsonl                 append-only: one JSON line per add, promote, rollback,
                                  refuse (time, version, previous version, reason, metrics)
    .lock                         fcntl lock: one mutation at a time across processes
    .incoming-*/                  a version being added (ignored; removed once its writer
                                  is dead)

The registry holds its own copies: a version directory, its ``bundle/`` or its
``version.json`` that resolves outside ``versions/`` (a symlink planted out of the
registry) is never listed, loaded or promoted, and ``add`` refuses a source bundle with a
link out of itself (the copy would take in whatever the link names).

Crash safety (a ``kill -9`` at any instant):

* a version is *listed* only once its directory is renamed into ``versions/``; ``add``
  copies into a hidden ``.incoming-*`` directory inside the root, fsyncs it and renames it
  (one atomic step on one filesystem), so a half-copied bundle is never listed;
* ``current`` is switched by creating a new symlink and ``os.replace``-ing it over the old
  one (atomic), so it names the old or the new version, never nothing or a half state;
* the history is written after the switch; a crash between the two leaves a history whose
  last promotion is not the current version, which the next mutation notices and repairs
  by appending a ``recovered`` promotion;
* a stale ``.incoming-*`` directory holds a lock while its writer lives; the next ``add``
  removes those whose lock is free (the writer died).

Status of a version (derived, never stored, so it cannot disagree with the pointer):
``promoted`` = current; ``refused`` = refused and not current (kept for inspection, never
served unless promoted with ``force``); ``retired`` = was current once; else
``candidate``.

This module is filesystem only: telling running replicas about a promotion is the
service's job (``app/lifecycle/promotion.py``).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model.bundle import BundleError, check_self_contained, read_manifest, verify_bundle
from model.fsio import atomic_write, fsync_dir, fsync_tree
from model.registry_history import History

VERSION_RE = re.compile(r"^v(\d{4,})$")
BUNDLE_DIR = "bundle"
VERSION_FILE = "version.json"
CURRENT = "current"
HISTORY = "history.jsonl"
INCOMING = ".incoming-"
OWNER = ".owner"

Status = Literal["candidate", "promoted", "refused", "retired"]


class RegistryError(RuntimeError):
    """A registry operation cannot be done (unknown version, refused, nothing to roll back
    to, bundle fails its check...); ``str(err)`` is one line for the user. Subclasses
    name the cases a caller may treat apart (the admin API maps them to 404/409/422)."""


class UnknownVersion(RegistryError):
    """No such version here (or not a version name)."""


class RefusedVersion(RegistryError):
    """The version was refused; promoting it needs ``force``."""


class UnusableVersion(RegistryError):
    """The version's bundle fails the check a promotion requires."""


@dataclass(frozen=True)
class VersionInfo:
    """One version as :meth:`BundleRegistry.show` / ``list`` report it."""

    version: str
    status: Status
    path: Path
    """The bundle directory (what a service loads)."""
    added_at: float
    model_version: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, Any] | None = None
    """``{"at": time, "report": {...}}`` when refused."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "path": str(self.path),
            "added_at": self.added_at,
            "model_version": self.model_version,
            "meta": self.meta,
            "refused": self.refused,
        }


class BundleRegistry:
    """Bundles by version under ``root``, one of them current. ``create=False`` refuses
    a directory that is not a registry yet (a service must not make one from a typo).

    ``check`` is what a version must pass before it is promoted (default
    :func:`model.bundle.verify_bundle`: format version + sha256 of every file); it raises
    :class:`BundleError` when the bundle cannot be used.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        create: bool = True,
        check: Callable[[Path], object] = verify_bundle,
    ) -> None:
        self.root = Path(root)
        self.check = check
        self.versions_dir = self.root / "versions"
        if create:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
        elif not self.versions_dir.is_dir():
            raise RegistryError(
                f"{self.root} is not a bundle registry (no versions/ inside; "
                "`micrec bundles --registry DIR add BUNDLE` creates one)"
            )
        self.events = History(self.root / HISTORY)
        self._thread_lock = threading.RLock()
        self._depth = 0

    # --- reading (no lock: every file read here is replaced atomically) ----------------
    def path(self, version: str) -> Path:
        """The bundle directory of ``version`` (RegistryError when there is none)."""
        self._require(version)
        return self.versions_dir / version / BUNDLE_DIR

    def current(self) -> str | None:
        """The promoted version, None before the first promotion."""
        try:
            target = os.readlink(self.root / CURRENT)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RegistryError(f"{self.root / CURRENT}: not a registry pointer ({err})") from err
        return self.version_of(self.root / target)

    def version_of(self, path: str | Path) -> str | None:
        """The version whose bundle directory is ``path`` (None: not one of this
        registry's bundles)."""
        p = Path(path)
        if p.name != BUNDLE_DIR or not VERSION_RE.match(p.parent.name):
            return None
        try:
            if p.parent.parent.resolve() != self.versions_dir.resolve():
                return None
        except OSError:
            return None
        return p.parent.name if (p.parent / VERSION_FILE).is_file() else None

    def list(self) -> builtins.list[VersionInfo]:
        """Every version, oldest first."""
        current = self.current()
        served = self._served(current)
        return [
            _version_info(self.versions_dir, v, self._record(v), current, served)
            for v in self._names()
        ]

    def show(self, version: str) -> VersionInfo:
        record = self._record(version)
        current = self.current()
        return _version_info(self.versions_dir, version, record, current, self._served(current))

    def promotions(self) -> builtins.list[str]:
        """The versions a rollback would walk back through, oldest first; the last one is
        normally current (each promotion pushes, each rollback pops)."""
        return self.events.stack()

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every history event, oldest first (model/registry_history.py)."""
        return self.events.events()

    # --- changing (under the lock) -----------------------------------------------------
    def add(self, src_dir: str | Path, *, meta: dict[str, Any] | None = None) -> str:
        """Copy the bundle at ``src_dir`` in as a new version (``v0001``, ``v0002``...,
        numbered in the order added); returns the version. The source must be a bundle
        (manifest.json of a known format); it becomes a candidate, nothing is served."""
        src = Path(src_dir)
        try:
            manifest = read_manifest(src)
            # the copy below follows links: one out of the bundle would copy in any file
            check_self_contained(src)
        except BundleError as err:
            raise RegistryError(str(err)) from None
        with self.locked():
            # Under the lock, so a cleaner never sees this directory before its owner lock.
            _clean_incoming(self.root)
            staging = Path(tempfile.mkdtemp(prefix=INCOMING, dir=self.root))
            owner = open(staging / OWNER, "w")  # noqa: SIM115 - held until the rename
            fcntl.flock(owner, fcntl.LOCK_EX)  # freed by the OS if this process dies
        try:
            shutil.copytree(src, staging / BUNDLE_DIR, copy_function=shutil.copy2)
            record = {
                "added_at": time.time(),
                "model_version": manifest.get("model_version"),
                "meta": dict(meta or {}),
                "refused": None,
            }
            _write_json(staging / VERSION_FILE, record)
            fsync_tree(staging)
            with self.locked():
                version = self._next_version()
                os.rename(staging, self.versions_dir / version)
                os.unlink(self.versions_dir / version / OWNER)
                fsync_dir(self.versions_dir)
                self.events.append("add", version, source=str(src), meta=record["meta"])
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            owner.close()
        return version

    def promote(
        self,
        version: str,
        reason: str,
        *,
        metrics: dict[str, Any] | None = None,
        force: bool = False,
    ) -> str | None:
        """Make ``version`` current; returns the version it replaced (None: first one).

        The bundle must pass ``check``; a refused version needs ``force=True``. Promoting
        the current version again changes nothing (returns it)."""
        with self.locked():
            record = self._record(version)
            if record.get("refused") and not force:
                raise RefusedVersion(
                    f"{version} was refused ({_refusal_reason(record)}); "
                    "promote it with force to serve it anyway"
                )
            previous = self.current()
            if previous == version:
                return previous
            self._check(version)
            _point_at(self.root, version)
            forced = bool(force and record.get("refused"))
            self.events.append(
                "promote", version, previous=previous, reason=reason, metrics=metrics, forced=forced
            )
            return previous

    def rollback(self, reason: str = "rollback") -> str:
        """Make the version promoted before the current one current again; returns it.

        Promotions form a stack: each rollback goes one further back (A, B, C promoted:
        rollback -> B, rollback -> A). Versions refused since, or failing ``check``, are
        skipped."""
        with self.locked():
            current = self.current()
            stack = self.events.stack()
            if current is None or not stack:
                raise RegistryError("nothing to roll back: no version was promoted")
            stack.pop()
            while stack:
                target = stack.pop()
                try:
                    if self._record(target).get("refused"):
                        continue
                    self._check(target)
                except UnusableVersion:
                    continue
                _point_at(self.root, target)
                self.events.append("rollback", target, previous=current, reason=reason)
                return target
            raise RegistryError(f"nothing to roll back to: {current} is the only usable version")

    def refuse(self, version: str, report: dict[str, Any] | None = None) -> None:
        """Mark ``version`` refused (e.g. a retrain gate measured it worse): kept for
        inspection, never promoted without ``force``. The current version cannot be
        refused (roll back first)."""
        with self.locked():
            record = self._record(version)
            if self.current() == version:
                raise RegistryError(f"{version} is the current version; roll back before refusing")
            record["refused"] = {"at": time.time(), "report": dict(report or {})}
            _write_json(self.versions_dir / version / VERSION_FILE, record)
            self.events.append("refuse", version, report=record["refused"]["report"])

    # --- internals ---------------------------------------------------------------------
    def _names(self) -> builtins.list[str]:
        names = [
            p.name
            for p in self.versions_dir.iterdir()
            if VERSION_RE.match(p.name)
            and (p / VERSION_FILE).is_file()
            and _link_out(self.root, self.versions_dir, p.name) is None
        ]
        return sorted(names, key=lambda n: int(n[1:]))

    def _require(self, version: str) -> None:
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise UnknownVersion(f"{version!r} is not a version name (v0001, v0002, ...)")
        outside = _link_out(self.root, self.versions_dir, version)
        if outside is not None:
            raise UnusableVersion(
                f"{version}: {outside} is a link out of the registry; refused (add the bundle "
                "with `micrec bundles add` instead)"
            )
        if not (self.versions_dir / version / VERSION_FILE).is_file():
            known = self._names()
            hint = f"; known: {', '.join(known[-5:])}" if known else "; the registry is empty"
            raise UnknownVersion(f"no version {version} in {self.root}{hint}")

    def _record(self, version: str) -> dict[str, Any]:
        self._require(version)
        path = self.versions_dir / version / VERSION_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RegistryError(f"{path}: unreadable ({err})") from err
        if not isinstance(record, dict):
            raise RegistryError(f"{path}: not a JSON object")
        return record

    def _served(self, current: str | None) -> set[str]:
        return self.events.served() | ({current} if current else set())

    def _check(self, version: str) -> None:
        try:
            self.check(self.versions_dir / version / BUNDLE_DIR)
        except (BundleError, OSError, ValueError) as err:
            raise UnusableVersion(f"{version} does not load: {err}") from None

    def _repair(self) -> None:
        """A crash between switching ``current`` and writing its history line leaves
        them apart; the pointer is the truth, the history is told (under the lock)."""
        current = self.current()
        if current is None:
            return
        stack = self.events.stack()
        if not stack or stack[-1] != current:
            self.events.append(
                "recovered", current, reason="current pointer switched, history line lost"
            )

    def _next_version(self) -> str:
        # every version-named entry, also those refused as links out (the name is taken)
        numbers = [
            int(m.group(1)) for p in self.versions_dir.iterdir() if (m := VERSION_RE.match(p.name))
        ]
        numbers += [
            int(m.group(1))
            for e in self.events.events()
            if (m := VERSION_RE.match(str(e.get("version", ""))))
        ]
        return f"v{max(numbers, default=0) + 1:04d}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry lock (re-entrant in this process; other processes wait):
        every mutation takes it; callers take it around a mutation plus what must happen
        in the same order (``app/lifecycle/promotion.py`` announces the version under it)."""
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.root / ".lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    self._repair()
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(f, fcntl.LOCK_UN)


def _link_out(root: Path, versions_dir: Path, version: str) -> str | None:
    """What of ``version`` (its directory, bundle or record) resolves outside
    ``versions/`` (a symlink out of the registry), None when nothing does. Such a
    version is never listed, loaded or promoted: the registry holds its own copies,
    and a link could point anywhere or change after the check."""
    home = versions_dir / version
    try:
        base = versions_dir.resolve()
        for part in (home, home / BUNDLE_DIR, home / VERSION_FILE):
            if part.resolve() != base / part.relative_to(versions_dir):
                return str(part.relative_to(root))
    except (OSError, RuntimeError):  # a symlink loop
        return str(home.relative_to(root))
    return None


def _version_info(
    versions_dir: Path, version: str, record: dict[str, Any], current: str | None, served: set[str]
) -> VersionInfo:
    status: Status
    if version == current:
        status = "promoted"
    elif record.get("refused"):
        status = "refused"
    elif version in served:
        status = "retired"
    else:
        status = "candidate"
    return VersionInfo(
        version=version,
        status=status,
        path=versions_dir / version / BUNDLE_DIR,
        added_at=float(record.get("added_at", 0.0)),
        model_version=record.get("model_version"),
        meta=record.get("meta") or {},
        refused=record.get("refused"),
    )


def _point_at(root: Path, version: str) -> None:
    """Switch ``current`` to ``version`` atomically (new symlink renamed over it)."""
    link = root / CURRENT
    tmp = root / f".{CURRENT}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.join("versions", version, BUNDLE_DIR), tmp)
    os.replace(tmp, link)
    fsync_dir(root)


def _clean_incoming(root: Path) -> None:
    """Remove ``.incoming-*`` directories whose writer is gone (its lock is free)."""
    for p in root.glob(f"{INCOMING}*"):
        try:
            fd = os.open(p / OWNER, os.O_RDWR)
        except OSError:
            fd = -1  # no owner file: its writer died before taking the lock
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live add
            finally:
                os.close(fd)
        shutil.rmtree(p, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    blob = json.dumps(data, indent=1, sort_keys=True, default=str).encode()
    atomic_write(path, lambda f: f.write(blob))
    fsync_dir(path.parent)


def _refusal_reason(record: dict[str, Any]) -> str:
    report = (record.get("refused") or {}).get("report") or {}
    reason = report.get("reason") if isinstance(report, dict) else None
    return str(reason) if reason else "see `micrec bundles show`"
