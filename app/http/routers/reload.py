"""Model hot reload: ``POST /v1/admin/reload`` (202) and ``GET /v1/admin/reload``.

The reload is asynchronous: the POST returns 202 at once and the new bundle is loaded,
indexed and replayed in a background thread while the current model keeps serving; the
swap is one reference assignment, so requests in flight finish on the model they started
with. Poll ``GET /v1/admin/reload`` for the outcome. A failed load (missing or tampered
bundle) leaves the old model serving and is reported there (and in /readyz).
"""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.schemas import ReloadRequest, ReloadStatus
from app.http.deps import AdminAccess, LoaderDep, SettingsDep
from app.http.routers.common import ADMIN_AUTH, CONFLICT, INVALID, MALFORMED
from app.lifecycle.bundles import bundle_inside

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAccess])


@router.post(
    "/reload",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **CONFLICT},
)
def start_reload(
    loader: LoaderDep, settings: SettingsDep, body: ReloadRequest | None = None
) -> ReloadStatus:
    """Start loading ``bundle_path`` (default: the current bundle again), a directory
    inside ``bundles_dir`` (422 otherwise). 409 if a reload is already running."""
    requested = body.bundle_path if body else None
    path = None if requested is None else bundle_inside(requested, settings.bundles_root)
    return loader.start(path)


@router.get("/reload", responses=ADMIN_AUTH)
def reload_status(loader: LoaderDep) -> ReloadStatus:
    """State of the last reload: idle, loading, succeeded, failed (with the error) or
    superseded (a registry version dropped because another one was wanted by then)."""
    return loader.status()
