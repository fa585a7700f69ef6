"""Bundle registry admin API (``MICREC_REGISTRY_DIR``): ``GET /v1/admin/bundles``,
``POST /v1/admin/bundles/promote`` (with ``canary``: a canary, app/lifecycle/canary.py),
``POST /v1/admin/bundles/rollback``, ``GET /v1/admin/bundles/canary``,
``POST /v1/admin/bundles/canary/promote``, ``POST /v1/admin/bundles/canary/abort``.

The same operations as ``micrec bundles list | promote | rollback`` (app/lifecycle/promotion.py):
a promotion switches the registry and announces the version in the store; every replica
then reloads it in the background (app/lifecycle/bundle_follow.py). 404 when the service does not
serve from a registry.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.errors import InvalidInput, NotFound
from app.api.schemas import (
    BundlesOut,
    CanaryAction,
    CanaryOut,
    ErrorBody,
    PromoteRequest,
    PromotionOut,
    RollbackRequest,
)
from app.http.deps import AdminAccess, CanaryAdminDep, RegistryAdminDep
from app.http.routers.common import ADMIN_AUTH, CONFLICT, INVALID, MALFORMED, NOT_READY, Responses
from app.lifecycle.canary import parse_share
from app.lifecycle.canary_follow import CanaryAdmin
from app.lifecycle.promotion import RegistryAdmin

router = APIRouter(prefix="/v1/admin/bundles", tags=["admin"], dependencies=[AdminAccess])

NOT_FOUND: Responses = {
    404: {"model": ErrorBody, "description": "Not serving from a registry, or no such version"}
}


def _required(admin: RegistryAdmin | None) -> RegistryAdmin:
    if admin is None:
        raise NotFound("this service does not serve from a bundle registry (MICREC_REGISTRY_DIR)")
    return admin


def _canary(admin: CanaryAdmin | None) -> CanaryAdmin:
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
def promote(
    admin: RegistryAdminDep, canary: CanaryAdminDep, body: PromoteRequest
) -> PromotionOut | CanaryOut:
    """Make ``version`` current on every replica; with ``canary`` ("10%"), serve it to that
    share of users first (the canary's state is answered). 404 unknown version, 409
    refused (unless ``force``) or already current, 422 the bundle fails its check or a bad
    share, 503 the store could not be told."""
    if body.canary is not None:
        try:
            share = parse_share(body.canary)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        return _canary(canary).start_canary(body.version, share, force=body.force)
    return _required(admin).promote(body.version, body.reason, force=body.force)


@router.get("/canary", responses={**ADMIN_AUTH, **NOT_FOUND})
def canary_status(admin: CanaryAdminDep) -> CanaryOut:
    """The canary (None: none runs): version, share, both arms' online counts and the
    rule's last reading on this replica."""
    return _canary(admin).canary_status()


@router.post(
    "/canary/promote",
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **NOT_FOUND, **CONFLICT, **NOT_READY},
)
def canary_promote(admin: CanaryAdminDep, body: CanaryAction | None = None) -> CanaryOut:
    """Promote the canary's version now (409: no canary runs, or it was decided)."""
    reason = (body or CanaryAction()).reason
    return _canary(admin).decide_canary("promote", reason)


@router.post(
    "/canary/abort",
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **NOT_FOUND, **CONFLICT, **NOT_READY},
)
def canary_abort(admin: CanaryAdminDep, body: CanaryAction | None = None) -> CanaryOut:
    """Roll the canary back now: its version is refused, every user gets the current one
    (409: no canary runs, or it was decided)."""
    reason = (body or CanaryAction()).reason
    return _canary(admin).decide_canary("rollback", reason)


@router.post(
    "/rollback",
    responses={**ADMIN_AUTH, **MALFORMED, **INVALID, **NOT_FOUND, **CONFLICT, **NOT_READY},
)
def rollback(admin: RegistryAdminDep, body: RollbackRequest | None = None) -> PromotionOut:
    """Back to the previously promoted version on every replica (409: nothing to roll
    back to)."""
    return _required(admin).rollback(body.reason if body else RollbackRequest().reason)
