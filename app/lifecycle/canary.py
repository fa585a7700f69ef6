"""Canary promotion: a candidate bundle version served to a stable share of users on every
replica, compared online with the current one, then promoted or rolled back.

* **Start** (:func:`start_canary`; ``micrec bundles promote V --canary 10%``, the admin
  API, or the trainer with ``trainer_canary_share``): the store gets a
  :class:`~app.store.base.Canary` (version, share, a fresh random salt). The registry's
  current version is untouched.
* **Serve** (app/lifecycle/canary_follow.py): every replica loads the candidate next to
  the current version and sends a request to it when the stable hash of (user id or
  session id, salt) falls under the share (:func:`canary_bucket`): the same answer on
  every replica and on every request, so a user never flips between versions; a request
  without any id gets the current version. The answer's ``model_version`` names the
  version that served it, so feedback is counted per version.
* **Decide** (:class:`CanaryRule`, pure): once both arms have ``min_events`` events, the
  candidate is promoted when its online ``metric`` >= the current one's - ``tolerance``,
  else rolled back. Every replica reads the metrics every ``canary_check_s``; the first
  to record a decision in the store (``Store.decide_canary``: atomic, one winner) acts on
  it (:func:`finish_canary`), so exactly one process promotes or rolls back.
* **Finish**: promote = the ordinary promotion (registry switch + announcement); every
  replica then serves the candidate's already-loaded state as its main one. Roll back =
  the version is marked refused in the registry; replicas drop the candidate at once.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from app.lifecycle.promotion import promote
from app.store.base import Canary, Store
from model.registry import BundleRegistry, RegistryError

Outcome = Literal["promote", "rollback"]
METRICS = ("ctr", "hit_rate", "mrr")


def parse_share(text: str) -> float:
    """ "10%", "10 %", "0.1" -> 0.1; a share must be in (0, 1)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text)
    if m is None:
        raise ValueError(f"canary share must look like 10% or 0.1, got {text[:20]!r}")
    share = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0.0 < share < 1.0:
        raise ValueError(f"canary share must be between 0 and 100 % (exclusive), got {text!r}")
    return share


# --- the rule -------------------------------------------------------------------------
class ArmMetrics(Protocol):
    """What the rule reads of one (version, domain)'s online metrics
    (app/feedback: ``OnlineMetrics``)."""

    impressions: int
    clicks: int
    observed: int
    hits: int
    mrr: float


@dataclass(frozen=True)
class Arm:
    """One version's online counts summed over domains."""

    version: str
    impressions: int = 0
    clicks: int = 0
    observed: int = 0
    hits: int = 0
    rr_sum: float = 0.0

    @classmethod
    def combine(cls, version: str, parts: Iterable[ArmMetrics]) -> Arm:
        arm = cls(version)
        for m in parts:
            arm = replace(
                arm,
                impressions=arm.impressions + m.impressions,
                clicks=arm.clicks + m.clicks,
                observed=arm.observed + m.observed,
                hits=arm.hits + m.hits,
                rr_sum=arm.rr_sum + m.mrr * m.observed,
            )
        return arm

    def events(self, metric: str) -> int:
        return self.impressions if metric == "ctr" else self.observed

    def value(self, metric: str) -> float | None:
        n = self.events(metric)
        if n == 0:
            return None
        top = {"ctr": self.clicks, "hit_rate": self.hits, "mrr": self.rr_sum}[metric]
        return float(top) / n


def arm_from_store(store: Store, model_version: str) -> Arm:
    """``model_version``'s online counters (app/feedback: what every replica adds to in the
    store) summed over its domains."""
    arm = Arm(model_version)
    for version, domain in store.online_versions():
        if version != model_version:
            continue
        c = store.online_counts(version, domain)
        arm = replace(
            arm,
            impressions=arm.impressions + c.impressions,
            clicks=arm.clicks + c.clicks,
            observed=arm.observed + c.observed,
            hits=arm.hits + c.hits,
            rr_sum=arm.rr_sum + c.rr_sum,
        )
    return arm


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["wait", "promote", "rollback"]
    reason: str


@dataclass(frozen=True)
class CanaryRule:
    """Promote when candidate >= current - ``tolerance`` on ``metric`` once each arm has
    ``min_events`` events; else roll back (settings ``canary_*``)."""

    min_events: int = 1000
    metric: str = "ctr"
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"canary metric must be one of {', '.join(METRICS)}")
        if self.min_events < 1 or not 0.0 <= self.tolerance <= 1.0:
            raise ValueError("canary min_events must be >= 1 and tolerance in [0, 1]")

    def judge(self, current: Arm, candidate: Arm) -> Verdict:
        m = self.metric
        need = [
            f"{name} {arm.events(m)}/{self.min_events}"
            for name, arm in (("current", current), ("candidate", candidate))
            if arm.events(m) < self.min_events
        ]
        if need:
            return Verdict("wait", f"{m}: waiting for events ({', '.join(need)})")
        c, p = candidate.value(m), current.value(m)
        assert c is not None and p is not None and not math.isnan(c + p)
        facts = f"candidate {m} {c:.4f} vs current {p:.4f} - tolerance {self.tolerance:g}"
        if c >= p - self.tolerance:
            return Verdict("promote", f"{facts} (>=) after {candidate.events(m)} events")
        return Verdict("rollback", f"{facts} (<) after {candidate.events(m)} events")


# --- start and finish (the store and the registry) ----------------------------------
def start_canary(
    registry: BundleRegistry, store: Store, version: str, share: float, *, force: bool = False
) -> Canary:
    """Announce ``version`` as a canary for ``share`` of users (raises RegistryError for
    an unknown, unusable, refused (unless ``force``) or already current version, or while
    another canary runs undecided)."""
    with registry.locked():
        registry.path(version)  # unknown / unusable: raises
        if registry.current() == version:
            raise RegistryError(f"{version} is already the current version")
        if registry.show(version).refused and not force:
            raise RegistryError(f"{version} was refused; pass force to serve it as a canary")
        running = store.get_canary()
        if running is not None and running.decided is None:
            raise RegistryError(
                f"a canary of {running.version} runs; promote or abort it first "
                "(micrec bundles canary promote|abort)"
            )
        canary = Canary(version, share, secrets.token_hex(8), time.time())
        store.set_canary(canary)
    return canary


def finish_canary(
    registry: BundleRegistry, store: Store, canary: Canary, outcome: Outcome, reason: str
) -> bool:
    """Act on ``outcome`` for ``canary`` if this call records the decision (False: another
    process decided first, or the canary is gone). Promote: the ordinary promotion; roll
    back: the version is refused. The canary is then cleared."""
    if not store.decide_canary(canary.salt, outcome):
        return False
    why = f"canary: {reason}"
    try:
        if outcome == "promote":
            promote(registry, store, canary.version, reason=why, force=True)
        else:
            registry.refuse(canary.version, {"reason": why, "by": "canary"})
    finally:
        with registry.locked():
            now = store.get_canary()
            if now is not None and now.salt == canary.salt:
                store.set_canary(None)
    return True
