"""API-key authentication (``X-API-Key``).

Writes always need a key; reads only when ``require_key_for_reads`` is set; probes
(/healthz, /readyz, /metrics) never do, so orchestrators and scrapers need no secret.
With no keys configured authentication is off (local development; a warning is logged at
start-up). Keys are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from app.settings import Settings

API_KEY_HEADER = "X-API-Key"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,  # we raise ourselves, with a message saying what is wrong
    description="One of the keys in MICREC_API_KEYS.",
)


# Dependencies are ``async def`` although they do no I/O: FastAPI runs a plain ``def``
# dependency in the thread pool, one hop per dependency per request, which cost more than
# the model work (bench/serve.py, docs/results/serve.md).
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def key_is_valid(given: str, settings: Settings) -> bool:
    """Constant-time check against every configured key (no early exit on a match)."""
    given_b = given.encode()
    valid = False
    for key in settings.api_keys:
        valid |= hmac.compare_digest(given_b, key.get_secret_value().encode())
    return valid


def _check(given: str | None, settings: Settings) -> None:
    if not settings.auth_enabled:
        return
    headers = {"WWW-Authenticate": "APIKey"}
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header", headers=headers
        )
    if not key_is_valid(given, settings):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=headers)


async def require_write_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of every endpoint that changes state."""
    _check(key, settings)


async def require_read_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of read endpoints: enforced only with ``require_key_for_reads``."""
    if settings.require_key_for_reads:
        _check(key, settings)
