"""What the offline jobs (``micrec export``, ``retrain``, ``trainer``) share with the
service: the store, the bundle registry and the serving bundle, from the same
``MICREC_*`` settings."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from app.store.base import Store
from app.store.factory import create_store
from model.commands.runner import UserError
from model.registry import BundleRegistry


def open_store(settings: Settings) -> Store:
    try:
        return create_store(settings.store_url)
    except ValueError as err:
        raise UserError(str(err)) from None


def registry_of(settings: Settings) -> BundleRegistry:
    if settings.registry_dir is None:
        raise UserError(
            "no bundle registry: set MICREC_REGISTRY_DIR (or --registry); "
            "`micrec bundles add BUNDLE --promote` starts one"
        )
    return BundleRegistry(settings.registry_dir)


def serving_bundle(settings: Settings, explicit: Path | None = None) -> Path:
    """``explicit``, else the registry's current version (``MICREC_REGISTRY_DIR``), else
    ``MICREC_BUNDLE_PATH``: the bundle the service serves."""
    if explicit is not None:
        path = Path(explicit)
    elif settings.registry_dir is not None:
        registry = BundleRegistry(settings.registry_dir)
        version = registry.current()
        if version is None:
            raise UserError(f"registry {settings.registry_dir} has no current version")
        path = registry.path(version)
    else:
        path = settings.bundle_path
    if not (path / "manifest.json").is_file():
        raise UserError(f"no model bundle at {path} (set --bundle or MICREC_BUNDLE_PATH)")
    return path
