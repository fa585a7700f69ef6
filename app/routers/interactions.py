"""``POST /v1/interactions``: append user-item events (histories + popularity)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.deps import ServiceDep, WriteAccess
from app.routers.common import ERRORS_WRITE
from app.schemas import InteractionsRequest, InteractionsResponse

router = APIRouter(prefix="/v1", tags=["interactions"], dependencies=[WriteAccess])


@router.post(
    "/interactions",
    responses={
        **ERRORS_WRITE,
        207: {"model": InteractionsResponse, "description": "Some rows were rejected"},
    },
)
def add_interactions(
    body: InteractionsRequest, service: ServiceDep, response: Response
) -> InteractionsResponse:
    """Rows are validated one by one: unknown items and domain mismatches are rejected
    with their index and reason (status 207) while the other rows are stored (200 when
    all are accepted). Only a malformed body or an oversized batch fails as a whole."""
    result = service.add_interactions(body.interactions)
    if result.rejected:
        response.status_code = status.HTTP_207_MULTI_STATUS
    return result
