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


#: The WebSocket subprotocol that carries a credential: offer ``["amc.bearer", <token>]``.
WS_AUTH_PROTOCOL = "amc.bearer"
#: How long an open socket waits for ``{"type": "auth", "token": ...}`` as its first message.
WS_AUTH_TIMEOUT_S = 10.0


def _ws_credential(websocket: WebSocket) -> tuple[str, bool]:
    """The credential of the handshake: the Authorization header, or the token offered after
    the ``amc.bearer`` subprotocol; and whether it came as a subprotocol (the answer must
    then select ``amc.bearer``). Never the URL: query strings land in access logs."""
    auth = websocket.headers.get("authorization", "")
    if auth.lower().startswith("bearer ") and auth[7:].strip():
        return auth[7:].strip(), False
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    if WS_AUTH_PROTOCOL in offered:
        i = offered.index(WS_AUTH_PROTOCOL)
        if i + 1 < len(offered) and offered[i + 1]:
            return offered[i + 1], True
    return "", False


@router.websocket("/{job_id}/ws")
async def job_events(websocket: WebSocket, job_id: str) -> None:
    """Progress events as JSON: ``{"type": "progress"|"done", "job": {...JobPublic}}``.

    Authenticate with an ``Authorization: Bearer`` header, with the subprotocols
    ``["amc.bearer", "<access token or API key>"]`` (browsers; the server selects
    ``amc.bearer``), or, with neither, by sending ``{"type": "auth", "token": "..."}`` as the
    first message within 10 s. A credential in the URL (``?token=``) is refused: URLs are
    logged. An unknown job, another user's job and a bad token all close with code 4404."""
    app = websocket.app
    if "token" in websocket.query_params or "api_key" in websocket.query_params:
        await websocket.close(code=4400, reason="send the token in a header, a subprotocol or the first message")
        return
    credential, by_protocol = _ws_credential(websocket)

    def snapshot(cred: str) -> dict[str, Any] | None:  # every WS_POLL_S: on the read-only engine
        with app.state.read_sessionmaker() as s:
            user = user_for_credential(s.connection(), app.state.settings, cred) if cred else None
            job = s.get(Job, job_id) if user is not None and len(job_id) <= 32 else None
            if job is None or user is None or job.user_id != user.id:
                return None
            return job_public(job).model_dump(mode="json")

    if credential:
        first = await run_in_threadpool(snapshot, credential)
        if first is None:
            # 4404: closed before accept; the same answer for "no such job", "not yours", "bad token".
            await websocket.close(code=4404)
            return
        await websocket.accept(subprotocol=WS_AUTH_PROTOCOL if by_protocol else None)
    else:
        await websocket.accept()
        try:
            message = await asyncio.wait_for(websocket.receive_json(), WS_AUTH_TIMEOUT_S)
        except (TimeoutError, ValueError, KeyError, WebSocketDisconnect):
            message = None
        token = message.get("token") if isinstance(message, dict) and message.get("type") == "auth" else None
        credential = token if isinstance(token, str) and len(token) <= 4096 else ""
        first = await run_in_threadpool(snapshot, credential) if credential else None
        if first is None:
            await websocket.close(code=4404)
            return
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
            current = await run_in_threadpool(snapshot, credential)
        await websocket.close()
    except WebSocketDisconnect:
        pass
