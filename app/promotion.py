"""Promotion and rollback that every replica follows: the registry switch plus the
announcement in the store.

:class:`model.registry.BundleRegistry` switches the ``current`` pointer on disk; running
replicas learn of it from the store (``Store.set_bundle_version``), which each one polls
(app/bundle_follow.py). Both happen under the registry lock, so two promotions racing
from two processes announce in the order they switched.

A failed announcement (store down) leaves the pointer switched: the result says so, and
promoting the same version again announces it again (nothing else changes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.store.base import Store, StoreUnavailable
from model.registry import BundleRegistry


@dataclass(frozen=True)
class Promotion:
    """Outcome of :func:`promote` / :func:`rollback`."""

    version: str
    """The version now current."""
    previous: str | None
    """The version current before (None: the first promotion)."""
    announced_at: float | None
    """When replicas were told (None: the store could not be written; see ``error``)."""
    error: str | None = None

    @property
    def announced(self) -> bool:
        return self.announced_at is not None


def promote(
    registry: BundleRegistry,
    store: Store,
    version: str,
    *,
    reason: str,
    metrics: dict[str, Any] | None = None,
    force: bool = False,
) -> Promotion:
    """Make ``version`` current and tell every replica to serve it (raises
    :class:`model.registry.RegistryError` when the registry refuses)."""
    with registry.locked():
        previous = registry.promote(version, reason, metrics=metrics, force=force)
        return _announce(store, version, previous)


def rollback(registry: BundleRegistry, store: Store, *, reason: str = "rollback") -> Promotion:
    """Make the previously promoted version current and tell every replica."""
    with registry.locked():
        previous = registry.current()
        version = registry.rollback(reason)
        return _announce(store, version, previous)


def _announce(store: Store, version: str, previous: str | None) -> Promotion:
    now = time.time()
    try:
        store.set_bundle_version(version, now)
    except StoreUnavailable as err:
        return Promotion(version, previous, None, str(err))
    return Promotion(version, previous, now)
