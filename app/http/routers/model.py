"""``GET /v1/model``: what is serving (version, domains, indexes, encoders); its evaluation
and plots; ``GET /v1/stats``: a summary of this process's metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, Security

from app.api.schemas import ModelInfo
from app.api.schemas_console import EvaluationReport, ServiceStats
from app.http.deps import ReadAccess, ServiceDep, SettingsDep
from app.http.routers.common import AUTH, NOT_FOUND, NOT_READY
from app.http.security import api_key_header, holds_admin_key

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[ReadAccess])


@router.get("/model", responses={**AUTH, **NOT_READY})
def model_info(service: ServiceDep) -> ModelInfo:
    return service.model_info()


@router.get("/model/evaluation", responses={**AUTH, **NOT_READY})
def model_evaluation(service: ServiceDep) -> EvaluationReport:
    """The serving bundle's offline evaluation: test metrics per domain, slice and degree
    bucket, the training history, and the names of its plots."""
    return service.evaluation()


@router.get(
    "/model/evaluation/plots/{name}",
    response_class=Response,
    responses={**AUTH, **NOT_FOUND, **NOT_READY, 200: {"content": {"image/png": {}}}},
)
def model_evaluation_plot(name: str, service: ServiceDep) -> Response:
    """One plot of the bundle by name (listed in ``plots`` of /v1/model/evaluation)."""
    headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
    return Response(service.evaluation_plot(name), media_type="image/png", headers=headers)


@router.get("/stats", responses=AUTH)
def stats(
    service: ServiceDep,
    settings: SettingsDep,
    key: Annotated[str | None, Security(api_key_header)],
) -> ServiceStats:
    """Requests, latency percentiles per route, recommendations by how the user was
    embedded, items by source, fallbacks, registrations, reloads (since start-up). The
    admin routes' rows (``/v1/admin/...``) only for an admin key (or with authentication
    off): they tell when operators act."""
    return service.stats(admin=holds_admin_key(key, settings))
