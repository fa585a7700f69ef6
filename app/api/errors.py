"""Errors the service raises for bad input or unavailable dependencies.

Business logic (``app/service.py``) raises these; ``app/http/main.py`` maps each to its HTTP
status with a JSON body ``{"detail": "<what is wrong>"}``. Anything else that escapes a
handler is a bug and becomes a logged 500.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base: ``detail`` is shown to the client, so it must say what to fix."""

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(ServiceError):
    """The request is well-formed JSON but a value is not acceptable (unknown domain...)."""

    status_code = 422


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    """The id exists already, or the target is read-only (bundle items), or a reload runs."""

    status_code = 409


class PayloadTooLarge(ServiceError):
    status_code = 413


class Unavailable(ServiceError):
    """A dependency (state store, model) cannot serve now; the client should retry."""

    status_code = 503

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class NotReady(Unavailable):
    """No model is loaded yet (start-up still loading, or the first load failed)."""
