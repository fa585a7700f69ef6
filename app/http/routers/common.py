"""What the routers share: OpenAPI descriptions of the error responses, and the HTTP
form of an idempotent write's answer."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from starlette.convertors import Convertor, register_url_convertor

from app.api.schemas import ErrorBody
from app.runtime.idempotency import REPLAYED_HEADER, Answer

Responses = dict[int | str, dict[str, Any]]


class IdConvertor(Convertor[str]):
    """Path converter ``{name:id}`` for user and item ids: the rest of the path, "/" and
    control characters included. Ids may hold "/" (app/api/ids.py), and Starlette's own
    ``path`` converter stops at a newline, so ``/v1/users/a%0Ab`` answered the router's
    404 instead of the id rules' 422 saying what is wrong with the id."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("id", IdConvertor())


def _err(code: int, description: str) -> Responses:
    return {code: {"model": ErrorBody, "description": description}}


AUTH: Responses = _err(401, "Missing or invalid X-API-Key")
ADMIN_AUTH: Responses = {
    **AUTH,
    **_err(403, "Not an admin key, or admin endpoints disabled (no MICREC_ADMIN_KEYS)"),
}
NOT_READY: Responses = _err(
    503, "Model not loaded yet, or the state store is unavailable (Retry-After)"
)
INVALID: Responses = _err(422, "A value is not acceptable (the message says which and why)")
MALFORMED: Responses = _err(400, "The body cannot be parsed (not UTF-8 / not JSON / bad form data)")
UNSUPPORTED_MEDIA: Responses = _err(415, "Content-Type is neither application/json nor multipart")
TOO_LARGE: Responses = _err(413, "Body, image, batch or list larger than its configured limit")
NOT_FOUND: Responses = _err(404, "No such item")
CONFLICT: Responses = _err(409, "Exists already, read-only bundle item, or reload in progress")

ERRORS_READ: Responses = {**AUTH, **INVALID, **TOO_LARGE, **NOT_READY}
ERRORS_WRITE: Responses = {
    **AUTH,
    **MALFORMED,
    **INVALID,
    **TOO_LARGE,
    **NOT_FOUND,
    **CONFLICT,
    **NOT_READY,
}


def answer_response(answer: Answer) -> Response:
    """The answer of a write sent with an Idempotency-Key, first or replayed (same bytes)."""
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return Response(answer.body, answer.status, headers, media_type="application/json")
