"""Whether the state store answers, as the service last saw it.

Every store call of the service reports its outcome here (``failed`` / ``ok``): failures
are counted per operation (``micrec_store_errors``), logged once per outage, and shown by
``/readyz``; a failed write becomes a 503 whose message says whether anything was sent
(a store that times out may still have applied the write: the message then says the
outcome is unknown and how to check, instead of "not saved").

Kept out of app/store/, which knows nothing of the service's metrics and errors: the
service wires a store, its metrics and this bookkeeping together (app/service.py).
"""

from __future__ import annotations

import logging

from app.api.errors import Unavailable
from app.runtime.telemetry import Metrics
from app.store.base import Store

log = logging.getLogger("micrec.service")


def outcome_unknown(operation: str, check: str = "") -> str:
    """The 503 message of a write the store did not confirm."""
    how = f"{check} shows whether it was; " if check else ""
    return (
        f"state store unavailable or timed out: the {operation} write was not confirmed, so "
        f"its outcome is unknown (it may or may not have been saved). {how}retrying the "
        "same request is safe"
    )


def not_saved(operation: str) -> str:
    """The 503 message when the store failed before anything was written."""
    return f"state store unavailable; {operation} not saved, retry later"


class StoreHealth:
    def __init__(self, store: Store, metrics: Metrics, retry_after_s: int) -> None:
        self.store = store
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self.error: str | None = None
        """The last failure ("operation: error") while the store is down, else None."""

    def failed(self, operation: str, err: Exception) -> None:
        self.metrics.store_errors.labels(operation).inc()
        if self.error is None:
            log.warning("state store unavailable (%s): %s", operation, err)
        self.error = f"{operation}: {err}"

    def ok(self) -> None:
        if self.error is not None:
            log.info("state store available again")
        self.error = None

    def unavailable(
        self, operation: str, err: Exception, check: str = "", *, attempted: bool = True
    ) -> Unavailable:
        """503 for a failed store call: ``attempted`` = a write was sent (outcome unknown)."""
        self.failed(operation, err)
        message = outcome_unknown(operation, check) if attempted else not_saved(operation)
        return Unavailable(message, retry_after_s=self.retry_after_s)

    def status(self) -> tuple[bool, str | None]:
        """(ok, detail): pings the store now (readiness reports degradation)."""
        try:
            ok = bool(self.store.ping())
        except Exception as err:  # any failure to ping is "not ok", never a 500
            return False, f"{type(err).__name__}: {err}"
        if ok:
            self.ok()
            return True, None
        return False, self.error or "store did not answer the ping"
