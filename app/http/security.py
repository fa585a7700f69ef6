"""API-key authentication (``X-API-Key``).

Writes always need a key (user erasure takes an API key or an admin key); reads that
name a user (their recommendations reveal their history) unless ``open_user_reads``;
other reads only when ``require_key_for_reads``; ``/v1/admin/*`` needs one of the separate
``admin_keys``; probes (/healthz, /readyz, /metrics) never do, so orchestrators and
scrapers need no secret. With no keys configured authentication is off (local
development; a warning is logged at start-up). Keys are compared in constant time and
never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from pydantic import SecretStr

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
    """Constant-time check against every configured API key (no early exit on a match)."""
    return _matches(given, settings.api_keys)


def _matches(given: str, keys: Sequence[SecretStr]) -> bool:
    given_b = given.encode()
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(given_b, key.get_secret_value().encode())
    return valid


_CHALLENGE = {"WWW-Authenticate": "APIKey"}


def _check(given: str | None, settings: Settings) -> None:
    if not settings.auth_enabled:
        return
    if not given:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header", headers=_CHALLENGE
        )
    if not key_is_valid(given, settings):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)


def check_user_read(given: str | None, settings: Settings) -> None:
    """A read that names a user: needs an API key unless ``open_user_reads``. Raised
    before the user is looked up, so known and unknown users get the same 401."""
    if not settings.open_user_reads:
        _check(given, settings)


async def require_write_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of every endpoint that changes state."""
    _check(key, settings)


async def require_user_read_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of endpoints whose path names a user."""
    check_user_read(key, settings)


async def require_admin_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of /v1/admin/*: one of ``admin_keys`` (API keys are refused with 403).

    Open only when authentication is off altogether (no api_keys and no admin_keys).
    """
    if not settings.admin_keys:
        if settings.auth_enabled:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "admin endpoints are disabled: set MICREC_ADMIN_KEYS to use them",
            )
        return
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header", headers=_CHALLENGE
        )
    if not _matches(key, settings.admin_keys):
        if key_is_valid(key, settings):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint needs an admin key")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)


def holds_admin_key(given: str | None, settings: Settings) -> bool:
    """True when ``given`` is one of ``admin_keys``, or authentication is off altogether:
    what may see admin traffic in a shared read (``GET /v1/stats``)."""
    if not settings.auth_enabled and not settings.admin_keys:
        return True
    return bool(given) and _matches(given or "", settings.admin_keys)


async def require_write_or_admin_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of writes an operator may also run with an admin key (user erasure):
    one of ``api_keys`` or ``admin_keys``."""
    if not settings.auth_enabled:
        return
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header", headers=_CHALLENGE
        )
    # Both checks always run: the time taken does not say which kind of key matched.
    is_api = key_is_valid(key, settings)
    is_admin = _matches(key, settings.admin_keys)
    if not (is_api or is_admin):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)


async def require_read_key(
    settings: Annotated[Settings, Depends(_settings)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    """Dependency of read endpoints: enforced only with ``require_key_for_reads``."""
    if settings.require_key_for_reads:
        _check(key, settings)
