"""``POST /v1/interactions``: append user-item events (histories + popularity)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, Security, status

from app.api.ids import key_source
from app.api.schemas import InteractionsRequest, InteractionsResponse
from app.http.deps import IdempotencyDep, InteractionsDep, KeyedRequestDep, WriteAccess
from app.http.routers.common import ERRORS_WRITE, answer_response
from app.http.security import api_key_header

router = APIRouter(prefix="/v1", tags=["interactions"], dependencies=[WriteAccess])


@router.post(
    "/interactions",
    response_model=InteractionsResponse,
    responses={
        **ERRORS_WRITE,
        207: {"model": InteractionsResponse, "description": "Some rows were rejected"},
    },
)
def add_interactions(
    keyed: KeyedRequestDep,
    body: InteractionsRequest,
    interactions: InteractionsDep,
    idempotency: IdempotencyDep,
    response: Response,
    api_key: Annotated[str | None, Security(api_key_header)],
) -> InteractionsResponse | Response:
    """Rows are validated one by one: unknown items and domain mismatches are rejected
    with their index and reason (status 207) while the other rows are stored (200 when
    all are accepted). Only a malformed body or an oversized batch fails as a whole.
    With an Idempotency-Key, a retry of the same batch is answered without storing it again.
    One API key counts at most ``popularity_key_cap`` users per item in its popularity."""

    def write() -> tuple[int, InteractionsResponse]:
        result = interactions.add(body.interactions, source=key_source(api_key))
        return (status.HTTP_207_MULTI_STATUS if result.rejected else status.HTTP_200_OK), result

    if keyed is not None:
        users = {row.user_id for row in body.interactions}
        return answer_response(idempotency.run(keyed, write, users))
    response.status_code, result = write()
    return result
