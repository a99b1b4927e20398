"""/api/v1/music: generate, process-file, agent status, capabilities."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from sqlalchemy import func, select

from app.service.deps import (
    CommittingRoute,
    CurrentUser,
    OptionalUser,
    QuotaDep,
    SessionDep,
    SettingsDep,
    StorageDep,
)
from app.service.errors import ApiError
from app.service.jobs import ENGINE_OPERATIONS, MODEL_WORKER_UNAVAILABLE
from app.service.models import Job
from app.service.routers.jobs import job_public
from app.service.schemas import GenerateRequest, JobPublic
from app.service.storage import key

router = APIRouter(prefix="/music", tags=["music"], route_class=CommittingRoute)

OPERATIONS = ("master", "enhance", "style_transfer")
_CHUNK = 1 << 20
#: libsndfile container name -> file extension used for the stored input.
_EXT = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "AIFF": "aiff", "MP3": "mp3",
        "W64": "w64", "RF64": "wav", "CAF": "caf"}  # fmt: skip

# The twelve slots of the model chain (ARCHITECTURE.md); their backends live in the model
# worker, which this service version does not reach yet.
SLOTS = ("MusicGen", "Stable Audio", "MusicLM", "AudioCraft", "Jukebox", "Melody RNN", "Music VAE",
         "ACES", "Diff Rhythm", "Suni", "Beethoven AI", "Mureka")  # fmt: skip


def _engine_choices() -> dict[str, list[str]]:
    from app.engine.mastering.plan import LEVELS, STYLES, TARGETS

    return {"styles": list(STYLES), "levels": list(LEVELS), "targets": list(TARGETS)}


def _new_job(request: Request, session: SessionDep, user_id: str, kind: str, operation: str,
             params: dict[str, Any]) -> Job:  # fmt: skip
    job = Job(user_id=user_id, kind=kind, operation=operation, params=json.dumps(params))
    if operation not in ENGINE_OPERATIONS:
        job.status, job.error_code, job.message = "failed", "model_worker_unavailable", "failed"
        job.error = MODEL_WORKER_UNAVAILABLE.format(
            what="text-to-music generation" if operation == "generate" else "style transfer")
    session.add(job)
    session.flush()
    return job


@router.post("/generate", status_code=202, response_model=JobPublic)
def generate(body: GenerateRequest, request: Request, user: CurrentUser, _quota: QuotaDep,
             session: SessionDep) -> JobPublic:  # fmt: skip
    """Queue a text-to-music job. Until the model worker lands the job is recorded and ends
    ``failed`` with code ``model_worker_unavailable`` (it counts against the quota, as any
    accepted request does)."""
    job = _new_job(request, session, user.id, "generate", "generate", body.model_dump())
    return job_public(job, request)


@router.post("/process-file", status_code=202, response_model=JobPublic)
def process_file(
    request: Request,
    user: CurrentUser,
    _quota: QuotaDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    file: Annotated[UploadFile, File(description="audio: WAV, FLAC, AIFF, OGG, MP3")],
    operation: Annotated[str, Form(description="master | enhance | style_transfer")] = "master",
    style: Annotated[str, Form()] = "balanced",
    enhancement_level: Annotated[str, Form(description="light | moderate | aggressive")] = "moderate",
    target_genre: Annotated[str | None, Form(max_length=64)] = None,
    target: Annotated[str, Form(description="loudness target, e.g. streaming")] = "streaming",
) -> JobPublic:
    """Upload audio and queue processing. ``master``/``enhance`` run the engine's mastering chain."""
    choices = _engine_choices()
    if operation not in OPERATIONS:
        raise ApiError(422, "validation_error", f"operation must be one of {', '.join(OPERATIONS)}")
    if style not in choices["styles"]:
        raise ApiError(422, "validation_error", f"style must be one of {', '.join(choices['styles'])}")
    if enhancement_level not in choices["levels"]:
        raise ApiError(422, "validation_error",
                       f"enhancement_level must be one of {', '.join(choices['levels'])}")  # fmt: skip
    if target not in choices["targets"]:
        raise ApiError(422, "validation_error", f"target must be one of {', '.join(choices['targets'])}")
    params = {"operation": operation, "style": style, "enhancement_level": enhancement_level,
              "target_genre": target_genre, "target": target,
              "filename": (file.filename or "")[:200]}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="amc-upload-") as tmp:
        path = Path(tmp) / "upload"
        _receive(file, path, settings.max_upload_bytes)
        ext = _sniff_audio(path)
        job = _new_job(request, session, user.id, "process-file", operation, params)
        if operation in ENGINE_OPERATIONS:
            job.input_key = key("jobs", job.id, f"input.{ext}")
            storage.put_file(job.input_key, path)
    session.commit()  # the runner reads the job from another session
    if operation in ENGINE_OPERATIONS:
        request.app.state.runner.submit(job.id)
    return job_public(job, request)


def _receive(upload: UploadFile, dest: Path, limit: int) -> None:
    size = 0
    with dest.open("wb") as f:
        while chunk := upload.file.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "payload_too_large",
                               f"the file is larger than the {limit // (1024 * 1024)} MB upload limit")  # fmt: skip
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _sniff_audio(path: Path) -> str:
    """The container's extension if libsndfile can read the file as audio, else 415."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        raise ApiError(415, "unsupported_media_type",
                       "the file is not audio this service can read (WAV, FLAC, AIFF, OGG, MP3)") from None  # fmt: skip
    if info.frames <= 0 or info.samplerate <= 0:
        raise ApiError(415, "unsupported_media_type", "the file holds no audio frames")
    return _EXT.get(info.format, "wav")


@router.get("/agent/status")
def agent_status(request: Request, session: SessionDep, user: OptionalUser) -> dict[str, Any]:
    """What can run now: the engine (always here), the model worker (not yet), job queue size.
    Anonymous callers get the same public view; a signed-in user also sees their own jobs."""
    counts = dict(session.execute(select(Job.status, func.count()).where(
        Job.status.in_(("queued", "running"))).group_by(Job.status)).all())  # fmt: skip
    body: dict[str, Any] = {
        "status": "degraded",
        "mode": request.app.state.settings.mode,
        "engine": {"state": "ready", "operations": list(ENGINE_OPERATIONS)},
        "model_worker": {"state": "unavailable",
                         "reason": "the model worker is not connected to this service yet"},
        "slots": [{"name": s, "state": "unavailable", "reason": "needs the model worker"}
                  if s != "ACES" else
                  {"name": s, "state": "ready", "reason": "engine DSP enhancement (no learned weights)"}
                  for s in SLOTS],
        "queue": {"queued": int(counts.get("queued", 0)), "running": int(counts.get("running", 0))},
    }  # fmt: skip
    if user is not None:
        mine = dict(session.execute(select(Job.status, func.count()).where(
            Job.user_id == user.id).group_by(Job.status)).all())  # fmt: skip
        body["your_jobs"] = {k: int(v) for k, v in mine.items()}
    return body


@router.get("/capabilities")
def capabilities(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    c = _engine_choices()
    why = "needs the model worker, not available in this service version"
    return {
        "operations": [
            {"name": "master", "available": True, "endpoint": "/api/v1/music/process-file"},
            {"name": "enhance", "available": True, "endpoint": "/api/v1/music/process-file"},
            {"name": "style_transfer", "available": False, "reason": why, "endpoint": "/api/v1/music/process-file"},
            {"name": "generate", "available": False, "reason": why, "endpoint": "/api/v1/music/generate"},
        ],
        "workflows": ["auto", "enhance", "style_transfer", "generate"],
        "styles": c["styles"],
        "enhancement_levels": c["levels"],
        "targets": c["targets"],
        "input_formats": ["wav", "flac", "aiff", "ogg", "mp3"],
        "max_upload_bytes": settings.max_upload_bytes,
        "tiers": {t: {"requests_per_day": n, "storage_bytes": settings.tier_storage_bytes[t]}
                  for t, n in settings.tier_daily_requests.items()},
    }  # fmt: skip
