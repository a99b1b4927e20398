"""/health and /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.service import SERVICE_VERSION, security
from app.service.deps import CommittingRoute
from app.service.errors import ApiError

router = APIRouter(tags=["health"], route_class=CommittingRoute)


@router.get("/health")
def health(request: Request) -> Any:
    """Liveness + database reachability (503 when the database does not answer)."""
    db = "ok"
    try:
        with request.app.state.sessionmaker() as s:
            s.execute(text("SELECT 1"))
    except Exception as e:
        db = f"error: {type(e).__name__}"
    settings = request.app.state.settings
    body = {"status": "ok" if db == "ok" else "degraded", "version": SERVICE_VERSION,
            "mode": settings.mode, "database": db, "job_backend": settings.job_backend,
            "model_worker": "unavailable"}  # fmt: skip
    return JSONResponse(body, status_code=200 if db == "ok" else 503)


_LOOPBACK = ("127.", "::1", "localhost")


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics: with ``METRICS_TOKEN`` set, for ``Authorization: Bearer <it>`` only;
    without one, for clients on this machine only (the embedded service, a local scraper)."""
    wanted = request.app.state.settings.metrics_token
    if wanted:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not security.same(given.strip(), wanted):
            raise ApiError(401, "not_authenticated", "metrics need the metrics token", headers={"WWW-Authenticate": "Bearer"})
    elif not (request.client and request.client.host.startswith(_LOOPBACK)):
        raise ApiError(404, "not_found", "Not Found")
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
