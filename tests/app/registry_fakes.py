"""Bundle registries of fake bundles for the service tests (app/lifecycle/bundle_follow.py,
app/lifecycle/promotion.py): each bundle is a fake one (tests/app/fakes.py: what the fake engine
loads) plus the files of tests/model/checked_bundle.py (what the registry's checksum check
reads), so the registry treats them exactly as real bundles."""

from __future__ import annotations

import json
from pathlib import Path

from model.registry import BundleRegistry
from tests.app.fakes import FAKE_MANIFEST, FakeEngineFactory
from tests.model.checked_bundle import make_bundle


def fake_bundle(factory: FakeEngineFactory, directory: Path, version: str) -> Path:
    make_bundle(directory, version=version)
    return factory.make_bundle(directory, version=version)


def make_registry(root: Path, factory: FakeEngineFactory) -> BundleRegistry:
    """v0001 (fake-v1, promoted), v0002 (fake-v2), v0003 (fake-v3) under ``root``."""
    reg = BundleRegistry(root / "registry")
    for k in (1, 2, 3):
        reg.add(fake_bundle(factory, root / f"src-{k}", f"fake-v{k}"))
    reg.promote("v0001", "first")
    return reg


def add_broken(registry: BundleRegistry, root: Path, factory: FakeEngineFactory) -> str:
    """A version that passes the registry's check but that the (fake) engine cannot load,
    like a bundle written by other code: its fake manifest, not covered by the checksums,
    fails the fake engine's own check."""
    version = registry.add(fake_bundle(factory, root / "src-broken", "fake-broken"))
    manifest = registry.path(version) / FAKE_MANIFEST
    payload = json.loads(manifest.read_text())
    payload["manifest"]["dim"] = 17
    manifest.write_text(json.dumps(payload))
    return version
