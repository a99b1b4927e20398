"""/api/v1/music/jobs: status, result download, cancel, list, and a WebSocket of progress events.

Another user's job is always 404 (never 403), so ids reveal nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.service.deps import (
    CommittingRoute,
    CurrentUser,
    SessionDep,
    StorageDep,
    stored_file,
    user_for_credential,
)
from app.service.errors import ApiError, not_found
from app.service.jobs import ENGINE_OPERATIONS, TERMINAL
from app.service.models import Job, utcnow
from app.service.schemas import JobError, JobPublic, PlanStep

router = APIRouter(prefix="/music/jobs", tags=["jobs"], route_class=CommittingRoute)
WS_POLL_S = 0.2


_ENGINE_PLAN = [PlanStep(slot="mastering", backend="engine", why="the engine's offline mastering chain")]


def job_public(job: Job, request: Request | WebSocket | None = None) -> JobPublic:
    base = f"/api/v1/music/jobs/{job.id}"
    report = json.loads(job.report) if job.report else None
    plan: list[PlanStep] | None = None
    if job.operation in ENGINE_OPERATIONS:
        plan = _ENGINE_PLAN
    elif report and isinstance(report.get("chain"), list):
        plan = [PlanStep(**step) for step in report["chain"]]
    return JobPublic(
        job_id=job.id, kind=job.kind, operation=job.operation, status=job.status,  # type: ignore[arg-type]
        progress=job.progress, message=job.message,
        error=JobError(code=job.error_code or "error", message=job.error or "") if job.status == "failed" else None,
        params=json.loads(job.params or "{}"), plan=plan, report=report,
        result_url=f"{base}/result" if job.status == "succeeded" and job.result_key else None,
        websocket_url=f"{base}/ws", created_at=job.created_at, updated_at=job.updated_at,
    )  # fmt: skip


def _own_job(session: SessionDep, user_id: str, job_id: str) -> Job:
    job = session.get(Job, job_id) if len(job_id) <= 32 else None
    if job is None or job.user_id != user_id:
        raise not_found("job")
    return job


@router.get("", response_model=list[JobPublic])
def list_jobs(request: Request, user: CurrentUser, session: SessionDep, limit: int = 50) -> list[JobPublic]:
    rows = session.scalars(select(Job).where(Job.user_id == user.id)
                           .order_by(Job.created_at.desc()).limit(max(1, min(limit, 200))))  # fmt: skip
    return [job_public(j, request) for j in rows]


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, request: Request, user: CurrentUser, session: SessionDep) -> JobPublic:
    return job_public(_own_job(session, user.id, job_id), request)


@router.get("/{job_id}/result", response_class=FileResponse,
            responses={200: {"content": {"audio/wav": {}}, "description": "the mastered audio"},
                       410: {"description": "removed JOB_FILES_RETENTION_DAYS after the job finished"}})  # fmt: skip
def get_result(job_id: str, user: CurrentUser, session: SessionDep, storage: StorageDep) -> Any:
    job = _own_job(session, user.id, job_id)
    if job.status == "succeeded" and not job.result_key:  # only the retention sweep clears it
        raise ApiError(410, "result_expired", f"the result is gone: {job.message}")
    if job.status != "succeeded" or not job.result_key:
        raise ApiError(409, "not_ready", f"the job is {job.status}; its result is not available")
    return stored_file(storage, job.result_key, "audio/wav", f"{job.id}-{job.operation}.wav")


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, request: Request, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Ask the job to stop. A queued job is cancelled at once; a running one stops at its next
    progress step. Cancelling a finished job changes nothing."""
    job = _own_job(session, user.id, job_id)
    if job.status not in TERMINAL:
        job.cancel_requested = True
        if job.status == "queued":
            job.status, job.message = "cancelled", "cancelled before start"
        job.updated_at = utcnow()
    session.flush()
    return job_public(job, request)


@router.websocket("/{job_id}/ws")
async def job_events(websocket: WebSocket, job_id: str) -> None:
    """Progress events as JSON: ``{"type": "progress"|"done", "job": {...JobPublic}}``.
    Authenticate with ``?token=<access token or API key>`` or an Authorization header."""
    app = websocket.app
    auth = websocket.headers.get("authorization", "")
    credential = websocket.query_params.get("token") or (auth[7:].strip() if auth.lower().startswith("bearer ") else "")

    def snapshot() -> dict[str, Any] | None:  # every WS_POLL_S: on the read-only engine
        with app.state.read_sessionmaker() as s:
            user = user_for_credential(s.connection(), app.state.settings, credential) if credential else None
            job = s.get(Job, job_id) if user is not None and len(job_id) <= 32 else None
            if job is None or user is None or job.user_id != user.id:
                return None
            return job_public(job).model_dump(mode="json")

    first = await run_in_threadpool(snapshot)
    if first is None:
        # 4404: closed before accept; the same answer for "no such job", "not yours", "bad token".
        await websocket.close(code=4404)
        return
    await websocket.accept()
    last: dict[str, Any] | None = None
    current: dict[str, Any] | None = first
    try:
        while current is not None:
            if current != last:
                done = current["status"] in TERMINAL
                await websocket.send_json({"type": "done" if done else "progress", "job": current})
                if done:
                    break
                last = current
            await asyncio.sleep(WS_POLL_S)
            current = await run_in_threadpool(snapshot)
        await websocket.close()
    except WebSocketDisconnect:
        pass
