"""Probes: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics`` (Prometheus).

No API key: orchestrators and scrapers call these without secrets, and they reveal no
user data.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.schemas import Health, Readiness, StoreStatus
from app.http.deps import MetricsDep, ServiceDep
from app.lifecycle.reload import LOAD_FAILED

router = APIRouter(tags=["probes"])


@router.get("/healthz")
def healthz() -> Health:
    """200 whenever the process can answer (even while the model loads)."""
    return Health()


@router.get("/readyz", responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(service: ServiceDep, response: Response) -> Readiness:
    """200 once a model serves (``degraded`` lists what does not work, e.g. the store);
    503 while loading or when the initial load failed."""
    ok, detail = service.health.status()
    store = StoreStatus(ok=ok, detail=detail)
    state = service.state
    if state is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        reload = service.loader.status()
        failed = reload.status == "failed"
        return Readiness(
            status="failed" if failed else "loading",
            store=store,
            error=LOAD_FAILED if failed else None,
            bundle=service.bundle_status(),
        )
    bundle = service.bundle_status()  # read once: "degraded" and "bundle" agree
    degraded = service.degraded(bundle)
    if not ok:
        degraded.insert(0, f"state store unavailable ({detail}): writes fail with 503")
    return Readiness(
        status="degraded" if degraded else "ready",
        model_version=state.model_version,
        loaded_at=state.loaded_at,
        domains=state.domains,
        store=store,
        degraded=degraded,
        encoders_unavailable=state.engine.encoders_unavailable,
        bundle=bundle,
    )


@router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
