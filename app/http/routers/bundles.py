"""Bundle registry admin API (``MICREC_REGISTRY_DIR``): ``GET /v1/admin/bundles``,
``POST /v1/admin/bundles/promote``, ``POST /v1/admin/bundles/rollback``.

The same operations as ``micrec bundles list | promote | rollback`` (app/lifecycle/promotion.py):
a promotion switches the registry and announces the version in the store; every replica
then reloads it in the background (app/lifecycle/bundle_follow.py). 404 when the service does not
serve from a registry.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.errors import NotFound
from app.api.schemas import BundlesOut, ErrorBody, PromoteRequest, PromotionOut, RollbackRequest
from app.http.deps import AdminAccess, RegistryAdminDep
from app.http.routers.common import ADMIN_AUTH, CONFLICT, INVALID, MALFORMED, NOT_READY, Responses
from app.lifecycle.promotion import RegistryAdmin

router = APIRouter(prefix="/v1/admin/bundles", tags=["admin"], dependencies=[AdminAccess])

NOT_FOUND: Responses = {
    404: {"model": ErrorBody, "description": "Not serving from a registry, or no such version"}
}


def _required(admin: RegistryAdmin | None) -> RegistryAdmin:
    if admin is None:
        raise NotFound("this service does not serve from a bundle registry (MICREC_REGISTRY_DIR)")
    return admin


@router.get("", responses={**ADMIN_AUTH, **NOT_FOUND})
def list_bundles(admin: RegistryAdminDep) -> BundlesOut:
    """Every version with its status, the current one, this process's served and wanted
    versions, and the newest history events."""
    return _required(admin).list()


@router.post(
    "/promote",
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **NOT_FOUND, **CONFLICT, **NOT_READY},
)
def promote(admin: RegistryAdminDep, body: PromoteRequest) -> PromotionOut:
    """Make ``version`` current on every replica. 404 unknown version, 409 refused (unless
    ``force``), 422 the bundle fails its check, 503 the store could not be told."""
    return _required(admin).promote(body.version, body.reason, force=body.force)


@router.post(
    "/rollback",
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **NOT_FOUND, **CONFLICT, **NOT_READY},
)
def rollback(admin: RegistryAdminDep, body: RollbackRequest | None = None) -> PromotionOut:
    """Back to the previously promoted version on every replica (409: nothing to roll
    back to)."""
    return _required(admin).rollback(body.reason if body else RollbackRequest().reason)
