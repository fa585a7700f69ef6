"""Prometheus metrics: HTTP latency/requests per route template, recommendation sources,
fallback rate, index sizes, the serving model version, and the recording of served lists
and feedback events (CTR per version in PromQL below).

Each app gets its own ``CollectorRegistry`` (no global state), so several apps in one
process (tests, reload) never collide. Fallback rate in PromQL::

    sum(rate(micrec_recommendations_total{user_embedding="fallback"}[5m]))
      / sum(rate(micrec_recommendations_total[5m]))

Clicks per impression by version (``click`` as the positive event)::

    sum by (version) (rate(micrec_feedback_events_total{event="click"}[1h]))
      / sum by (version) (rate(micrec_feedback_events_total{event="impression"}[1h]))
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
"""Label of any other method: clients choose the method, so it must not become a label."""
UNMATCHED_ROUTE = "<unmatched>"
"""Label for requests no route matched: raw paths would make label cardinality unbounded."""


class Metrics:
    """All metrics of one app instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "micrec_http_request_duration_seconds",
            "Request latency by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "micrec_http_requests",
            "Requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.recommendations = Counter(
            "micrec_recommendations",
            "Recommendation responses by how the user was embedded (fallback = no model)",
            ["domain", "user_embedding"],
            registry=r,
        )
        self.fallbacks = Counter(
            "micrec_fallback",
            "Responses served (wholly or partly) by a fallback",
            ["domain"],
            registry=r,
        )
        self.items_served = Counter(
            "micrec_recommended_items", "Items returned by source", ["domain", "source"], registry=r
        )
        self.topn_cache = Counter(
            "micrec_topn_cache",
            "Known-user recommends that could use the top-N cache, by result (hit/miss)",
            ["domain", "result"],
            registry=r,
        )
        self.reloads = Counter(
            "micrec_model_reloads", "Model loads by result", ["result"], registry=r
        )
        self.store_errors = Counter(
            "micrec_store_errors",
            "State store operations that failed (store unavailable)",
            ["operation"],
            registry=r,
        )

        # Online metrics (app/feedback/): per process, summed across replicas by Prometheus;
        # the shared counters of the metrics themselves are in the store (GET /v1/stats).
        # Versions are few (the served one, a canary), event types a configured list.
        self.records = Counter(
            "micrec_recommendation_records",
            "Served lists written to the store for feedback, by model version and domain",
            ["version", "domain"],
            registry=r,
        )
        self.records_dropped = Counter(
            "micrec_recommendation_records_dropped",
            "Served lists not recorded (feedback on them gets 404), by reason: queue_full, "
            "store (unavailable), erased (user erased before the write)",
            ["reason"],
            registry=r,
        )
        self.feedback_events = Counter(
            "micrec_feedback_events",
            "Feedback events counted (a re-sent event is not), by model version, domain and type",
            ["version", "domain", "event"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def _label(template: str) -> str:
    """The route template as the OpenAPI document writes it: ``{user_id:id}`` (ids with
    "/", app/http/routers/common.py) is labelled ``{user_id}``, so labels do not depend on
    converters."""
    return _CONVERTER.sub(r"{\1}", template)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request by its route *template*.

    The template (``/v1/items/{item_id}``) is read from ``scope["route"]`` after routing,
    so item ids never become label values. Outermost user middleware, so 413s from the
    body limit are counted too.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = _label(getattr(route, "path", None) or UNMATCHED_ROUTE)
            method = scope.get("method", "")
            method = method if method in HTTP_METHODS else OTHER_METHOD
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, template, str(status)).inc()
