"""``micrec bundles canary status``: the running canary read from the store and the
registry (no service needed): both arms' online counts and the rule's reading now."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.lifecycle.canary import Arm, CanaryRule, arm_from_store
from app.settings import Settings
from app.store.base import Canary, Store
from model.registry import BundleRegistry


def _arm(
    registry: BundleRegistry, store: Store, version: str | None, metric: str
) -> tuple[dict[str, Any], Arm | None]:
    model_version = registry.show(version).model_version if version else None
    arm = arm_from_store(store, model_version) if model_version else None
    out: dict[str, Any] = {"version": version, "model_version": model_version}
    if arm is not None:
        out.update({k: v for k, v in asdict(arm).items() if k != "version"})
        out[metric] = arm.value(metric)
    return out, arm


def canary_report(
    settings: Settings, registry: BundleRegistry, store: Store, canary: Canary | None
) -> dict[str, Any]:
    rule = CanaryRule(settings.canary_min_events, settings.canary_metric, settings.canary_tolerance)
    report: dict[str, Any] = {
        "canary": None if canary is None else asdict(canary) | {"salt": "(hidden)"},
        "rule": asdict(rule) | {"auto": settings.canary_auto},
    }
    if canary is None:
        return report
    report["current"], cur = _arm(registry, store, registry.current(), rule.metric)
    report["candidate"], cand = _arm(registry, store, canary.version, rule.metric)
    if cur is not None and cand is not None:
        v = rule.judge(cur, cand)
        report["verdict"] = {"outcome": v.outcome, "reason": v.reason}
    return report
