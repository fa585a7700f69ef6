"""What one worker accepts: connections (uvicorn protocol mixins) and requests in flight.

uvicorn's ``limit_concurrency`` counts open connections *and* request tasks against one
limit, so connections that never send a complete request (idle, or trickling partial
headers) used up the limit and every real request got 503: 300 such connections from one
address made 108 of 108 normal recommends fail (issue 22). Here the two are apart:

* :class:`InFlightLimitMiddleware` - ``max_concurrency`` counts requests in flight only
  (503 + Retry-After beyond it); an open socket costs no request slot.
* :class:`ConnectionCapMixin` - the sockets themselves: at most ``max_connections`` open
  per worker, and at most ``max_pending_per_client`` from one client address that have not
  completed their first request's headers (a new one beyond either is answered and closed
  at once, before anything is read).
* :class:`HeaderTimeoutMixin` - a connection must complete each request's headers within
  ``header_timeout_s`` (from the connection's start for its first request, from the first
  byte for later ones), so a silent or trickling connection does not stay forever.

The mixins read their settings from the ``MICREC_*`` environment, which ``micrec serve``
sets for every worker from the validated settings (a class attribute overrides it, for
tests).
"""

from __future__ import annotations

import json
import logging
import os
import time
import weakref
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("micrec.app")

HEADER_TIMEOUT_ENV = "MICREC_HEADER_TIMEOUT_S"
MAX_CONNECTIONS_ENV = "MICREC_MAX_CONNECTIONS"
MAX_PENDING_ENV = "MICREC_MAX_PENDING_PER_CLIENT"
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 2048
DEFAULT_MAX_PENDING = 128
REFUSAL_LINGER_S = 1.0
"""A refused connection is half-closed after its answer and closed when the client closes
or after this long; closing at once reset connections whose request was already on its way,
and the client saw a broken pipe instead of the answer."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""At most one warning per this many seconds about refused connections: a flood must not
become a flood of log lines."""


def _env_number(key: str, default: float) -> float:
    return float(os.environ.get(key, default))


def _request_started(protocol: Any, cycle_before: Any) -> bool:
    """uvicorn (h11 and httptools) makes a new request cycle, synchronously inside
    ``data_received``, once a request's headers are complete."""
    return getattr(protocol, "cycle", None) is not cycle_before


class HeaderTimeoutMixin:
    """Closes a connection whose request headers are not complete in time.

    uvicorn times out idle keep-alive connections but neither a new connection that sends
    nothing nor a request whose headers trickle in a byte at a time, so a few hundred such
    clients held connections forever. The deadline of a connection's first request runs
    from the connection's start; a later request's from its first byte.
    """

    header_timeout_s: float | None = None
    """Class-level override (tests); else MICREC_HEADER_TIMEOUT_S, which ``run`` sets."""

    loop: Any
    transport: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if not transport.is_closing():
            self._arm_header_timer(None)

    def data_received(self, data: bytes) -> None:
        cycle = getattr(self, "cycle", None)
        idle = cycle is None or cycle.response_complete
        if idle and getattr(self, "_header_timer", None) is None:
            self._arm_header_timer(cycle)
        super().data_received(data)  # type: ignore[misc]
        if _request_started(self, cycle):
            # disarmed, so the next request on this connection gets its own deadline
            self._cancel_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self, cycle: Any) -> None:
        self._header_timer = self.loop.call_later(
            self._header_timeout(), self._headers_overdue, cycle
        )

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> float:
        if self.header_timeout_s is not None:
            return self.header_timeout_s
        return _env_number(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S)

    def _headers_overdue(self, cycle_then: Any) -> None:
        self._header_timer = None
        if getattr(self, "cycle", None) is cycle_then and not self.transport.is_closing():
            self.transport.close()


_PENDING: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
"""Per uvicorn server (its ServerState): client address -> connections from it that have
not completed their first request's headers."""


class _Refusals:
    """Counts refused connections; logs them at most once per REFUSAL_LOG_INTERVAL_S."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.next_log = 0.0

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + REFUSAL_LOG_INTERVAL_S
            summary = ", ".join(f"{n} by {why}" for why, n in sorted(self.counts.items()))
            log.warning("refused new connections (so far: %s)", summary)


REFUSALS = _Refusals()


def raw_response(status: int, reason: str, detail: str) -> bytes:
    """A complete HTTP/1.1 answer written before any request was read (JSON detail)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionCapMixin:
    """Refuses a new connection beyond ``max_connections`` open in this worker (503) or
    beyond ``max_pending_per_client`` connections from its address that have not yet
    completed their first request's headers (429): the answer is written and the
    connection closed before anything is read.

    Counting only connections without a first complete request keeps one address from
    holding many sockets for free while its connections that are being served (and the
    keep-alive connections of a client that sent real requests) never count.
    """

    max_connections: int | None = None
    max_pending_per_client: int | None = None
    """Class-level overrides (tests); else the MICREC_* environment set by ``run``."""

    server_state: Any
    client: tuple[str, int] | None

    loop: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._pending_host: str | None = None
        self._refused = False
        refusal = self._refusal()
        if refusal is not None:
            self._refused = True
            transport.write(refusal)
            if transport.can_write_eof():
                transport.write_eof()  # the rest of what the client sends is read and dropped
                self.loop.call_later(REFUSAL_LINGER_S, transport.close)
            else:
                transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        cycle = getattr(self, "cycle", None)
        super().data_received(data)  # type: ignore[misc]
        if self._pending_host is not None and _request_started(self, cycle):
            self._release_pending()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_pending()
        super().connection_lost(exc)  # type: ignore[misc]

    def _limits(self) -> tuple[int, int]:
        most = self.max_connections
        if most is None:
            most = int(_env_number(MAX_CONNECTIONS_ENV, DEFAULT_MAX_CONNECTIONS))
        pending = self.max_pending_per_client
        if pending is None:
            pending = int(_env_number(MAX_PENDING_ENV, DEFAULT_MAX_PENDING))
        return most, pending

    def _refusal(self) -> bytes | None:
        most, pending_cap = self._limits()
        if len(self.server_state.connections) > most:
            REFUSALS.add("max_connections")
            detail = f"more than max_connections={most} open connections in this worker"
            return raw_response(503, "Service Unavailable", detail)
        host = self.client[0] if self.client else None
        if host is None or pending_cap <= 0:
            return None
        pending = _PENDING.setdefault(self.server_state, {})
        if pending.get(host, 0) >= pending_cap:
            REFUSALS.add("max_pending_per_client")
            detail = (
                f"more than max_pending_per_client={pending_cap} connections from this "
                "address without a complete request"
            )
            return raw_response(429, "Too Many Requests", detail)
        pending[host] = pending.get(host, 0) + 1
        self._pending_host = host
        return None

    def _release_pending(self) -> None:
        host, self._pending_host = getattr(self, "_pending_host", None), None
        if host is None:
            return
        pending = _PENDING.get(self.server_state, {})
        left = pending.get(host, 0) - 1
        if left > 0:
            pending[host] = left
        else:
            pending.pop(host, None)


class InFlightLimitMiddleware:
    """503 + Retry-After for an HTTP request that arrives while ``max_in_flight`` requests
    are already in flight in this worker (one event loop: a plain counter is exact)."""

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            body = json.dumps(
                {"detail": f"more than max_concurrency={self.max_in_flight} requests in flight "
                 "in this worker; retry later"}
            ).encode()  # fmt: skip
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(self.retry_after_s).encode()),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
