"""What the offline jobs (``micrec export``, ``retrain``, ``trainer``) share with the
service: the store and the serving bundle, from the same ``MICREC_*`` settings."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings
from app.store.base import Store
from app.store.factory import create_store
from model.cli import UserError


def open_store(settings: Settings) -> Store:
    try:
        return create_store(settings.store_url)
    except ValueError as err:
        raise UserError(str(err)) from None


def serving_bundle(settings: Settings, explicit: Path | None = None) -> Path:
    """``explicit``, else the bundle the service serves (``MICREC_BUNDLE_PATH``)."""
    path = Path(explicit) if explicit is not None else settings.bundle_path
    if not (path / "manifest.json").is_file():
        raise UserError(f"no model bundle at {path} (set --bundle or MICREC_BUNDLE_PATH)")
    return path
