"""Liveness, readiness (database reachable, model loaded) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from loracle.agent.errors import DatabaseUnavailable
from loracle.api.deps import AdminDep, ServiceDep
from loracle.api.errors import hide_paths
from loracle.api.routes.chat import ERRORS
from loracle.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers (runs on the event loop: if this is slow, the loop is blocked)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(service: ServiceDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        service.agent.ping()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready, with the reason
        checks["database"] = hide_paths(f"unavailable: {exc}")
        if isinstance(exc, DatabaseUnavailable):
            service.repair_pools()
    if service.engine_ready.is_set():
        checks["model"] = "ok"
    else:
        checks["model"] = hide_paths(f"failed: {service.engine_error}") if service.engine_error else "loading"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(Health(status="ok" if ok else "unavailable", checks=checks).model_dump(),
                        status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}, 401: ERRORS[401],
                                                            403: ERRORS[401]})
def metrics(service: ServiceDep, admin: AdminDep) -> Response:
    """Prometheus metrics, for an admin key (in local mode, for anyone on loopback): route counts and timings
    say what every tenant is doing."""
    m = service.metrics
    m.in_flight.set(service.queue.in_flight)
    m.running.set(service.queue.running)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
