"""The FastAPI app factory: the one place the service is wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.service import API_PREFIX, SERVICE_VERSION, db, errors, owner, redact, scratch
from app.service.blobs import sweep_unreferenced
from app.service.headers import SecurityHeaders
from app.service.jobs import (
    JobRunner,
    LocalJobRunner,
    ModelChain,
    expire_job_files,
    job_budget,
    recover,
)
from app.service.limits import BodyLimit
from app.service.orphans import sweep_storage
from app.service.routers import auth, health, jobs, music, sync, usage
from app.service.settings import Settings
from app.service.storage import make_storage

log = logging.getLogger("app.service")


def make_runner(settings: Settings, app: FastAPI) -> JobRunner:
    """Local thread pool (embedded) or Celery workers (remote). The local runner owns this
    process's model chain (a model worker started by the first model job, closed at
    shutdown); Celery workers own one each (``app.service.worker``)."""
    if settings.job_backend == "celery":
        from app.service.worker import CeleryJobRunner

        return CeleryJobRunner(settings)
    # A remote service loads the job code at start; the embedded one (mostly sign-in and sync
    # for the Studio) when a job first needs it.
    return LocalJobRunner(app.state.sessionmaker, app.state.storage, settings.job_workers,
                          ModelChain(device=settings.model_device or None),
                          preload=settings.mode == "remote", budget=job_budget(settings))  # fmt: skip


#: A stored file no row names is taken for an orphan at this age (a write in flight is younger).
ORPHAN_GRACE_S = 3600.0
#: How often the housekeeping runs (the first time a minute after start).
SWEEP_EVERY_S = 3600.0
_FIRST_SWEEP_S = 60.0


def _housekeeping(app: FastAPI) -> None:
    """Remove the stored files of jobs finished more than JOB_FILES_RETENTION_DAYS ago, and
    free sync blobs uploaded over a day ago that no revision names. Each part on its own:
    one failing (storage or database down) does not stop the other; the next run retries."""
    settings, factory, storage = app.state.settings, app.state.sessionmaker, app.state.storage
    if settings.job_files_days > 0:
        try:
            n = expire_job_files(factory, storage, settings.job_files_days)
            if n:
                log.info("removed the stored files of %d jobs finished over %g days ago", n, settings.job_files_days)
        except Exception:
            log.warning("the job files sweep failed", exc_info=True)
    try:
        scratch.sweep()
        sweep_storage(factory, storage, min_age_s=ORPHAN_GRACE_S)
    except Exception:
        log.warning("the scratch and storage sweep failed", exc_info=True)
    try:
        n, size = sweep_unreferenced(factory, storage)
        if n:
            log.info("freed %d sync blobs (%d bytes) that no revision names", n, size)
    except Exception:
        log.warning("the unreferenced blobs sweep failed", exc_info=True)


async def _sweep(app: FastAPI) -> None:
    await asyncio.sleep(_FIRST_SWEEP_S)
    while True:
        await anyio.to_thread.run_sync(_housekeeping, app)
        await asyncio.sleep(SWEEP_EVERY_S)


def private_files(settings: Settings) -> None:
    """Files this process creates are the user's alone (0600, folders 0700), and so are the
    SQLite database and the storage folder already there (a 0700 folder closes what is in
    it, whatever older files' own modes)."""
    os.umask(0o077)
    paths: list[Path] = []
    if settings.storage_provider == "local":
        paths.append(settings.storage_dir)
    if settings.database_url.startswith("sqlite:///") and settings.database_url != "sqlite:///:memory:":
        db_file = Path(settings.database_url.removeprefix("sqlite:///"))
        paths += [db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")]
    for p in paths:
        with contextlib.suppress(OSError):
            p.chmod(0o700 if p.is_dir() else 0o600)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redact.install()  # uvicorn has configured its loggers by now
        private_files(settings)
        # Before anything touches the data: a second service on the same folder stops here.
        ownership = owner.take(settings, app.state.engine)
        try:
            if settings.auto_migrate:
                db.upgrade(settings.database_url)
            # What processes killed here before left: scratch folders (any process's, once it
            # is gone), and in storage, partial writes and files no row names (all of them
            # when this process alone writes the folder, else those over an hour old).
            scratch.sweep()
            sweep_storage(app.state.sessionmaker, app.state.storage,
                          min_age_s=0.0 if ownership.exclusive else ORPHAN_GRACE_S)  # fmt: skip
            app.state.db_limiter = anyio.CapacityLimiter(settings.db_threads)
            app.state.runner = make_runner(settings, app)
            # With Celery the broker keeps the queue (and redelivers a dead worker's task).
            resumed = recover(app.state.sessionmaker, app.state.runner) if settings.job_backend == "local" else []
            log.info("account service %s started: mode=%s db=%s storage=%s resumed_jobs=%d",
                     SERVICE_VERSION, settings.mode, app.state.engine.url.get_backend_name(),
                     settings.storage_provider, len(resumed))  # fmt: skip
            # What start-up loaded lives as long as the service: moved out of the collector's
            # sight, a full collection walks only what requests leave behind (a 60-100 ms pause
            # in the middle of serving, before).
            gc.collect()
            gc.freeze()
            sweeper = asyncio.create_task(_sweep(app))
            try:
                yield
            finally:
                sweeper.cancel()
                app.state.runner.shutdown()
        finally:
            ownership.release()
            app.state.engine.dispose()
            app.state.read_engine.dispose()

    app = FastAPI(
        title=settings.app_name,
        version=SERVICE_VERSION,
        debug=settings.debug,
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        openapi_url=f"{API_PREFIX}/openapi.json",
    )
    app.state.settings = settings
    redact.install()
    app.state.engine = db.make_engine(settings.database_url)
    app.state.sessionmaker = db.make_sessionmaker(app.state.engine)
    # For reads that write nothing (the token check of every request): see db.py.
    app.state.read_engine = db.make_engine(settings.database_url, read_only=True)
    app.state.read_sessionmaker = db.make_sessionmaker(app.state.read_engine)
    app.state.storage = make_storage(settings)
    _install_metrics(app)
    errors.install(app)

    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(SecurityHeaders)

    if settings.cors_origins:  # closed unless origins are listed
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type", "X-API-Key"],
                           expose_headers=["X-RateLimit-Limit", "X-RateLimit-Remaining",
                                           "X-RateLimit-Reset", "Retry-After"])  # fmt: skip

    app.include_router(health.router)
    for r in (auth.router, music.router, jobs.router, usage.router, sync.router):
        app.include_router(r, prefix=API_PREFIX)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI document describes our error body (errors.py) for every 4xx answer of every
    operation, and the constraints the handlers check themselves (a blob's SHA-256 name, the
    mastering choices), so a generated request that fits the document is one they accept."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema is None:
            from app.engine.mastering.plan import LEVELS, STYLES, TARGETS
            from app.service.routers.music import FILE_OPERATIONS

            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas["HTTPValidationError"] = {
                "title": "ApiError",
                "type": "object",
                "properties": {"detail": {"type": "string"}, "code": {"type": "string"},
                               "errors": {"type": "array", "items": {"type": "object"}}},
                "required": ["detail", "code"],
            }  # fmt: skip
            error = {"description": "refused: the body says why (`detail`) and what (`code`)",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}  # fmt: skip
            for ops in spec.get("paths", {}).values():
                for method, op in ops.items():
                    # A HEAD answer has no body.
                    op.setdefault("responses", {}).setdefault(
                        "4XX", {"description": error["description"]} if method == "head" else error)
                    for param in op.get("parameters", []):
                        if param.get("name") == "sha256":
                            param["schema"]["pattern"] = "^[0-9a-f]{64}$"
            choices = {"operation": list(FILE_OPERATIONS), "style": list(STYLES),
                       "enhancement_level": list(LEVELS), "target": list(TARGETS)}  # fmt: skip
            for name, schema in schemas.items():
                if name.startswith("Body_process_file") or name == "GenerateRequest":
                    for field, allowed in choices.items():
                        if field in schema.get("properties", {}):
                            schema["properties"][field]["enum"] = allowed
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    app.state.metrics_registry = registry
    requests = Counter("amc_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("amc_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                        registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))  # fmt: skip
    in_flight = Gauge("amc_http_requests_in_flight", "HTTP requests being served", registry=registry)
    app.add_middleware(Metrics, requests=requests, latency=latency, in_flight=in_flight)


# Plain ASGI middleware (not @app.middleware("http")): no per-request task and stream copy.
class Metrics:
    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram, in_flight: Gauge) -> None:
        self.app, self.requests, self.latency, self.in_flight = app, requests, latency, in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.in_flight.dec()
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")  # the template, never the raw path (cardinality)
            if route is not None and scope["path"].startswith(API_PREFIX) and not name.startswith(API_PREFIX):
                name = API_PREFIX + name  # routes of included routers carry their path without the prefix
            self.requests.labels(scope["method"], name, str(status[0])).inc()
            self.latency.labels(scope["method"], name).observe(time.perf_counter() - t0)


def app_from_env() -> FastAPI:
    """``uvicorn --factory app.service.app:app_from_env``: settings from the environment."""
    return create_app(Settings.from_env())
