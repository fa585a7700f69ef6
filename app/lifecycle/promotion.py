"""Promotion and rollback that every replica follows: the registry switch plus the
announcement in the store.

:class:`model.registry.BundleRegistry` switches the ``current`` pointer on disk; running
replicas learn of it from the store (``Store.set_bundle_version``), which each one polls
(app/lifecycle/bundle_follow.py). Both happen under the registry lock, so two promotions racing
from two processes announce in the order they switched.

A failed announcement (store down) leaves the pointer switched: the result says so, and
promoting the same version again announces it again (nothing else changes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.api.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.api.schemas import BundlesOut, BundleVersionOut, PromotionOut
from app.store.base import Store, StoreUnavailable
from model.registry import BundleRegistry, RegistryError, UnknownVersion, UnusableVersion

if TYPE_CHECKING:
    from app.lifecycle.bundle_follow import BundleFollower


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


HISTORY_SHOWN = 50
"""History events ``GET /v1/admin/bundles`` returns (the newest)."""


class RegistryAdmin:
    """The admin API's registry operations (``/v1/admin/bundles``): the CLI's list,
    promote and rollback, with registry errors as HTTP errors. After an announcement this
    process polls at once; the other replicas follow within their poll interval."""

    def __init__(self, follower: BundleFollower, store: Store, retry_after_s: int) -> None:
        self.follower = follower
        self.registry = follower.registry
        self.store = store
        self.retry_after_s = retry_after_s

    def list(self) -> BundlesOut:
        with http_errors():
            # no "path": the answer names versions, not host paths
            versions = [BundleVersionOut.model_validate(v.to_json()) for v in self.registry.list()]
            return BundlesOut(
                current=self.registry.current(),
                bundle=self.follower.status(),
                versions=versions,
                history=self.registry.history()[-HISTORY_SHOWN:],
            )

    def promote(self, version: str, reason: str, *, force: bool) -> PromotionOut:
        with http_errors():
            done = promote(self.registry, self.store, version, reason=reason, force=force)
        return self._announced(done)

    def rollback(self, reason: str) -> PromotionOut:
        with http_errors():
            done = rollback(self.registry, self.store, reason=reason)
        return self._announced(done)

    def _announced(self, done: Promotion) -> PromotionOut:
        if done.announced_at is None:
            raise Unavailable(
                f"{done.version} is current in the registry, but the store could not be "
                f"told ({done.error}); replicas keep their version: promote "
                f"{done.version} again",
                retry_after_s=self.retry_after_s,
            )
        self.follower.tick()
        return PromotionOut(
            version=done.version, previous=done.previous, announced_at=done.announced_at
        )


@contextmanager
def http_errors() -> Iterator[None]:
    try:
        yield
    except UnknownVersion as err:
        raise NotFound(str(err)) from None
    except UnusableVersion as err:
        raise InvalidInput(str(err)) from None
    except RegistryError as err:  # refused, nothing to roll back to, unreadable registry
        raise Conflict(str(err)) from None
