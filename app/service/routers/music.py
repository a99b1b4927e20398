"""/api/v1/music: generate, process-file, agent status, capabilities."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from app.service import quota, scratch
from app.service.deps import (
    CommittingRoute,
    CurrentUser,
    OptionalUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    authenticated,
    in_db_thread,
    rate_limit_headers,
    refuse_if_limited,
)
from app.service.errors import ApiError
from app.service.jobs import ENGINE_OPERATIONS, OPERATIONS
from app.service.models import Job, new_id, utcnow
from app.service.quota import QuotaDecision
from app.service.routers.jobs import job_public
from app.service.schemas import GenerateRequest, JobPublic
from app.service.settings import Settings
from app.service.storage import key

router = APIRouter(prefix="/music", tags=["music"], route_class=CommittingRoute)

FILE_OPERATIONS = ("master", "enhance", "style_transfer")
_CHUNK = 1 << 20
#: libsndfile container name -> file extension used for the stored input.
_EXT = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "OGG": "ogg", "AIFF": "aiff", "MP3": "mp3",
        "W64": "w64", "RF64": "wav", "CAF": "caf"}  # fmt: skip

# The twelve slots of the model chain (ARCHITECTURE.md): registry key -> title.
SLOTS = {"musicgen": "MusicGen", "stable-audio": "Stable Audio", "musiclm": "MusicLM", "audiocraft": "AudioCraft",
         "jukebox": "Jukebox", "melody-rnn": "Melody RNN", "music-vae": "Music VAE", "aces": "ACES",
         "diff-rhythm": "Diff Rhythm", "suni": "Suni", "beethoven-ai": "Beethoven AI", "mureka": "Mureka"}  # fmt: skip
#: Which slots each model operation needs (any one ready, for generate).
_OPERATION_SLOTS = {"generate": ("musicgen", "stable-audio", "suni", "mureka"), "enhance": ("aces",),
                    "style_transfer": ("jukebox",)}  # fmt: skip


def _slot_status(request: Request) -> list[dict[str, Any]]:
    """The registry's status of every slot (on the model worker's device when it is known)."""
    from app.models import registry

    chain = getattr(request.app.state.runner, "chain", None)
    device = (
        (chain.describe().get("device") if chain is not None else None)
        or request.app.state.settings.model_device
        or "cpu"
    )
    return registry.slot_status(device=device, slots=list(SLOTS))


def _operation_availability(slots: list[dict[str, Any]]) -> dict[str, tuple[bool, str]]:
    by_key = {s["slot"]: s for s in slots}
    out: dict[str, tuple[bool, str]] = {"master": (True, "engine mastering chain")}
    for op, needed in _OPERATION_SLOTS.items():
        ready = [k for k in needed if by_key.get(k, {}).get("ready")]
        if ready:
            out[op] = (True, f"{SLOTS.get(ready[0], ready[0])} ready")
        else:
            why = " | ".join(f"{b['name']}: {b['state']} ({b['detail']})" for k in needed
                             for b in by_key.get(k, {}).get("backends", []))  # fmt: skip
            out[op] = (False, f"no ready backend: {why}")
    return out


def _engine_choices() -> dict[str, list[str]]:
    from app.engine.mastering.plan import LEVELS, STYLES, TARGETS

    return {"styles": list(STYLES), "levels": list(LEVELS), "targets": list(TARGETS)}


_INSERT_JOB = insert(Job)


def _job_row(user_id: str, kind: str, operation: str, params: dict[str, Any],
             input_ext: str | None = None) -> tuple[Job, dict[str, Any]]:  # fmt: skip
    """A new queued job (detached) and its row, every column filled, for a Core INSERT."""
    job_id, now = new_id(), utcnow()
    job = Job(id=job_id, user_id=user_id, kind=kind, operation=operation, status="queued", progress=0.0,
              message="", error_code=None, error=None, params=json.dumps(params), report=None,
              input_key=key("jobs", job_id, f"input.{input_ext}") if input_ext else None, result_key=None,
              cancel_requested=False, attempts=0, created_at=now, updated_at=now)  # fmt: skip
    return job, {c.key: getattr(job, c.key) for c in Job.__table__.c}


def _new_job(session: Session, user_id: str, kind: str, operation: str, params: dict[str, Any],
             input_ext: str | None = None) -> Job:  # fmt: skip
    """A queued job, inserted in ``session``'s transaction (a Core INSERT: the ORM's flush of
    one object cost more than the rest of the request); the ``Job`` returned is detached."""
    job, row = _job_row(user_id, kind, operation, params, input_ext)
    session.connection().execute(_INSERT_JOB, row)
    return job


@router.post("/generate", status_code=202, response_model=JobPublic)
async def generate(body: GenerateRequest, request: Request, response: Response, settings: SettingsDep) -> JobPublic:
    """Queue a text-to-music job: the model chain's generate workflow (generator slot ->
    quality gates -> mastering). The job's report carries the plan (slot, backend, why) and
    per-step figures; with no ready generator it fails with the registry's reason (code
    ``backend_unavailable``), which counts against the quota as any accepted request does."""

    # The token check, the quota count and the job in one trip to the thread pool; the count
    # and the job in one transaction, on PostgreSQL in one statement (one round trip).
    def work() -> tuple[QuotaDecision, JobPublic]:
        user = authenticated(request, settings)
        styles = _engine_choices()["styles"]
        if body.style not in styles:  # checked before anything is counted
            raise ApiError(422, "validation_error", f"style must be one of {', '.join(styles)}")
        job, row = _job_row(user.id, "generate", "generate", body.model_dump())
        daily, burst = settings.tier_daily_requests.get(user.tier, 0), settings.burst_per_minute
        engine = request.app.state.engine
        if engine.dialect.name == "postgresql" and daily > 0 and burst > 0:
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                decision = quota.consume_and_insert(conn, user.id, Job.__table__, row,
                                                    daily_limit=daily, burst_limit=burst)  # fmt: skip
        else:
            with request.app.state.sessionmaker() as session:
                decision = quota.consume(session, user.id, daily_limit=daily, burst_limit=burst)
                if decision.allowed:
                    session.connection().execute(_INSERT_JOB, row)
                session.commit()  # the count and the job together (a refused request's count stands)
        refuse_if_limited(user, decision)
        request.app.state.runner.submit(job.id)  # after the commit: the runner reads the job elsewhere
        return decision, job_public(job, request)

    decision, job = await in_db_thread(request, work)
    rate_limit_headers(decision, response)
    return job


@router.post("/process-file", status_code=202, response_model=JobPublic,
             responses={413: {"description": "the file is over the upload limit"},
                        415: {"description": "not audio this service can read, or damaged"},
                        422: {"description": "a field is invalid, or the audio is over the duration, "
                                             "channel or sample-rate limits"},
                        429: {"description": "the quota or the burst limit is used up"}})  # fmt: skip
def process_file(
    request: Request,
    response: Response,
    user: CurrentUser,
    settings: SettingsDep,
    storage: StorageDep,
    file: Annotated[UploadFile, File(description="audio: WAV, FLAC, AIFF, OGG, MP3")],
    operation: Annotated[str, Form(description="master | enhance | style_transfer")] = "master",
    style: Annotated[str, Form()] = "balanced",
    enhancement_level: Annotated[
        str, Form(description="light | moderate | aggressive")
    ] = "moderate",
    target_genre: Annotated[str | None, Form(max_length=64)] = None,
    target: Annotated[str, Form(description="loudness target, e.g. streaming")] = "streaming",
) -> JobPublic:
    """Upload audio and queue processing. ``master`` runs the engine's mastering chain;
    ``enhance`` (ACES slot -> mastering) and ``style_transfer`` (Jukebox slot, needs
    ``target_genre`` -> gates -> mastering) run the model chain.

    Everything is checked before the request counts against the quota: the fields, the
    file's size, and its header (container, duration, channels, sample rate) and first and
    last frames, read without decoding the rest. A refused upload is neither stored nor
    charged."""
    choices = _engine_choices()
    if operation not in FILE_OPERATIONS:
        raise ApiError(
            422, "validation_error", f"operation must be one of {', '.join(FILE_OPERATIONS)}"
        )
    if operation == "style_transfer" and not (target_genre or "").strip():
        raise ApiError(422, "validation_error", "operation=style_transfer needs target_genre")
    if style not in choices["styles"]:
        raise ApiError(
            422, "validation_error", f"style must be one of {', '.join(choices['styles'])}"
        )
    if enhancement_level not in choices["levels"]:
        raise ApiError(422, "validation_error",
                       f"enhancement_level must be one of {', '.join(choices['levels'])}")  # fmt: skip
    if target not in choices["targets"]:
        raise ApiError(
            422, "validation_error", f"target must be one of {', '.join(choices['targets'])}"
        )
    params = {"operation": operation, "style": style, "enhancement_level": enhancement_level,
              "target_genre": target_genre, "target": target,
              "filename": (file.filename or "")[:200]}  # fmt: skip
    with scratch.temp_dir("upload") as tmp:
        path = Path(tmp) / "upload"
        _receive(file, path, settings.max_upload_bytes)
        ext = check_audio(path, settings)
        job, row = _job_row(user.id, "process-file", operation, params, input_ext=ext)
        assert job.input_key is not None
        # Stored before the job row exists (no transaction spans the copy); a process killed
        # in between leaves a folder with no job, which the start-up sweep removes.
        storage.put_file(job.input_key, path)
    try:
        decision = _charge_and_insert(request, settings, user.id, user.tier, row)
    except BaseException:
        storage.delete(job.input_key)
        raise
    if not decision.allowed:
        storage.delete(job.input_key)
    refuse_if_limited(user, decision)
    rate_limit_headers(decision, response)
    request.app.state.runner.submit(job.id)
    return job_public(job, request)


def _charge_and_insert(request: Request, settings: Settings, user_id: str, tier: str,
                       row: dict[str, Any]) -> QuotaDecision:  # fmt: skip
    """Count the request against the quota and insert its job, in one transaction: a job is
    never without its count, a count never without its job (a refused request's count stands)."""
    daily, burst = settings.tier_daily_requests.get(tier, 0), settings.burst_per_minute
    engine = request.app.state.engine
    if engine.dialect.name == "postgresql" and daily > 0 and burst > 0:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            return quota.consume_and_insert(conn, user_id, Job.__table__, row, daily_limit=daily, burst_limit=burst)
    with request.app.state.sessionmaker() as session:
        decision = quota.consume(session, user_id, daily_limit=daily, burst_limit=burst)
        if decision.allowed:
            session.connection().execute(_INSERT_JOB, row)
        session.commit()
    return decision


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


#: Frames decoded at the start and at the end of an upload to prove it is readable.
_PROBE_FRAMES = 4096


def check_audio(path: Path, settings: Settings) -> str:
    """The container's extension if libsndfile reads ``path`` as audio within the limits,
    else 415 (not audio, damaged) or 422 (too long, too many channels, odd sample rate).
    The limits are read from the header; only the first and last frames are decoded."""
    import soundfile as sf

    unreadable = ApiError(415, "unsupported_media_type",
                          "the file is not audio this service can read (WAV, FLAC, AIFF, OGG, MP3)")  # fmt: skip
    try:
        info = sf.info(str(path))
    except Exception:
        raise unreadable from None
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise ApiError(415, "unsupported_media_type", "the file holds no audio frames")
    if not 8000 <= info.samplerate <= settings.max_sample_rate:
        raise ApiError(422, "unsupported_audio",
                       f"the sample rate must be 8000 to {settings.max_sample_rate} Hz, not {info.samplerate}")  # fmt: skip
    if info.channels > settings.max_audio_channels:
        raise ApiError(422, "unsupported_audio",
                       f"the file has {info.channels} channels; at most {settings.max_audio_channels}")  # fmt: skip
    seconds = info.frames / info.samplerate
    if seconds > settings.max_audio_seconds:
        raise ApiError(422, "audio_too_long",
                       f"the audio lasts {seconds / 60:.1f} min; at most {settings.max_audio_seconds / 60:g} min")  # fmt: skip
    try:
        with sf.SoundFile(str(path)) as f:
            head = f.read(min(_PROBE_FRAMES, info.frames), dtype="float32", always_2d=True)
            if info.frames > _PROBE_FRAMES and f.seekable():
                f.seek(info.frames - _PROBE_FRAMES)
                tail = f.read(_PROBE_FRAMES, dtype="float32", always_2d=True)
            else:
                tail = head
    except Exception:
        raise ApiError(415, "unsupported_media_type", "the audio is damaged: it cannot be decoded") from None
    if head.shape[0] == 0 or tail.shape[0] == 0:
        raise ApiError(415, "unsupported_media_type", "the audio is damaged: it ends before its header says")
    return _EXT.get(info.format, "wav")


@router.get("/agent/status")
def agent_status(request: Request, session: SessionDep, user: OptionalUser) -> dict[str, Any]:
    """What can run now: the engine (always here), the model worker and each slot's backends
    as the registry reports them (ready, weights missing, package missing, needs API key),
    the job queue. Anonymous callers get the same public view; a signed-in user also sees
    their own jobs."""
    counts = dict(session.execute(select(Job.status, func.count()).where(
        Job.status.in_(("queued", "running"))).group_by(Job.status)).all())  # fmt: skip
    slots = _slot_status(request)
    chain = getattr(request.app.state.runner, "chain", None)
    worker = chain.describe() if chain is not None else {
        "state": "remote", "reason": "model jobs run on the Celery workers' model workers"}  # fmt: skip
    ops = _operation_availability(slots)
    body: dict[str, Any] = {
        "status": "ok" if all(ok for ok, _ in ops.values()) else "degraded",
        "mode": request.app.state.settings.mode,
        "engine": {"state": "ready", "operations": list(ENGINE_OPERATIONS)},
        "model_worker": worker,
        "operations": {op: {"available": ok, "reason": why} for op, (ok, why) in ops.items()},
        "slots": [{"name": SLOTS.get(s["slot"], s["slot"]), "slot": s["slot"],
                   "state": "ready" if s["ready"] else next((b["state"] for b in s["backends"]), "unavailable"),
                   "reason": "; ".join(f"{b['name']}: {b['detail']}" for b in s["backends"]),
                   "backends": [{k: b[k] for k in ("name", "state", "detail")} for b in s["backends"]]}
                  for s in slots],
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
    ops = _operation_availability(_slot_status(request))
    return {
        "operations": [
            {"name": op, "available": ops[op][0], "reason": ops[op][1],
             "endpoint": "/api/v1/music/generate" if op == "generate" else "/api/v1/music/process-file"}
            for op in OPERATIONS
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
