"""A readable summary of this process's Prometheus metrics (``GET /v1/stats``).

Read from the same registry ``/metrics`` renders, so the console and a scraper see the
same numbers. Latency percentiles are estimated from the histogram buckets by linear
interpolation inside the bucket, as Prometheus' ``histogram_quantile`` does; above the
last finite bucket the estimate is that bucket's bound.
"""

from __future__ import annotations

import math
from collections import defaultdict

from app.api.schemas_console import LatencySummary, ServiceStats
from app.runtime.telemetry import Metrics

MAX_ROUTES = 12
ADMIN_PREFIX = "/v1/admin"


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``q``-quantile from cumulative ``(upper bound, count)`` buckets (sorted, +Inf last)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarise(metrics: Metrics, *, admin_routes: bool = True) -> ServiceStats:
    """The summary; ``admin_routes`` False leaves the ``/v1/admin`` routes out of the
    per-route latency rows (their requests still count in the totals by status)."""
    by_status: dict[str, int] = defaultdict(int)
    recommendations: dict[str, int] = defaultdict(int)
    by_source: dict[str, int] = defaultdict(int)
    reloads: dict[str, int] = defaultdict(int)
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    fallbacks = registrations = store_errors = 0
    for family in metrics.registry.collect():
        for s in family.samples:
            labels, value = s.labels, s.value
            if s.name == "micrec_http_requests_total":
                by_status[labels["status"][0] + "xx"] += int(value)
                created = labels["status"] == "201" and labels["method"] in ("POST", "PUT")
                if created and labels["route"].startswith("/v1/items"):
                    registrations += int(value)
            elif s.name == "micrec_http_request_duration_seconds_bucket":
                if not admin_routes and labels["route"].startswith(ADMIN_PREFIX):
                    continue
                key = (labels["method"], labels["route"])
                buckets[key].append((float(labels["le"]), value))
            elif s.name == "micrec_recommendations_total":
                recommendations[labels["user_embedding"]] += int(value)
            elif s.name == "micrec_recommended_items_total":
                by_source[labels["source"]] += int(value)
            elif s.name == "micrec_fallback_total":
                fallbacks += int(value)
            elif s.name == "micrec_model_reloads_total":
                reloads[labels["result"]] += int(value)
            elif s.name == "micrec_store_errors_total":
                store_errors += int(value)
    latency = []
    for (method, route), rows in buckets.items():
        rows.sort()
        latency.append(
            LatencySummary(
                route=route,
                method=method,
                count=int(rows[-1][1]),
                p50_ms=_ms(quantile(0.5, rows)),
                p95_ms=_ms(quantile(0.95, rows)),
                p99_ms=_ms(quantile(0.99, rows)),
            )
        )
    latency.sort(key=lambda r: (-r.count, r.route, r.method))
    return ServiceStats(
        requests=sum(by_status.values()),
        requests_by_status=dict(sorted(by_status.items())),
        latency=latency[:MAX_ROUTES],
        recommendations=dict(recommendations),
        items_by_source=dict(by_source),
        fallbacks=fallbacks,
        registrations=registrations,
        reloads=dict(reloads),
        store_errors=store_errors,
    )
