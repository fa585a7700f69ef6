"""``GET /v1/model``: what is serving (version, domains, indexes, encoders)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import ReadAccess, ServiceDep
from app.routers.common import AUTH, NOT_READY
from app.schemas import ModelInfo

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[ReadAccess])


@router.get("/model", responses={**AUTH, **NOT_READY})
def model_info(service: ServiceDep) -> ModelInfo:
    return service.model_info()
