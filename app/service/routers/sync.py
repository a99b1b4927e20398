"""/api/v1/sync: projects as revisions of project.json + content-addressed media blobs.

A client HEADs each blob, PUTs only the missing ones, then pushes a revision naming its base
revision; a stale base is a 409 carrying both revision numbers, never an overwrite."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app.service import scratch
from app.service.blobs import blob_key, free_unreferenced, lock_blobs, media_of
from app.service.deps import (
    CommittingRoute,
    CurrentUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    stored_file,
)
from app.service.errors import ApiError, not_found
from app.service.models import Blob, Project, ProjectRevision
from app.service.routers.usage import storage_used
from app.service.schemas import (
    ProjectCreate,
    ProjectDeleted,
    ProjectPublic,
    RevisionPublic,
    RevisionPush,
)

router = APIRouter(prefix="/sync", tags=["sync"], route_class=CommittingRoute)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A media name inside a project folder: under media/ or renders/ (so a revision can never name
# project.json, the sync state or autosaves), forward slashes, no hidden or '..' parts.
_MEDIA_NAME = re.compile(r"^(?:media|renders)(?:/[A-Za-z0-9 _()+,-][A-Za-z0-9 _.()+,-]*)+$")
MAX_PROJECT_JSON_BYTES = 8 << 20
#: Revision numbers are 32-bit in the database; a larger one in a URL is a 422, not a 500.
MAX_REVISION = 2**31 - 1


def _check_sha(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ApiError(422, "invalid_blob_name", "a blob is named by its lower-case hex SHA-256")
    return sha256


def _project_public(p: Project) -> ProjectPublic:
    return ProjectPublic(id=p.id, name=p.name, head_revision=p.head_revision,
                         created_at=p.created_at, updated_at=p.updated_at)  # fmt: skip


def _own_project(session: SessionDep, user_id: str, project_id: str) -> Project:
    p = session.get(Project, project_id) if len(project_id) <= 32 else None
    if p is None or p.user_id != user_id:
        raise not_found("project")
    return p


def _own_blob(session: SessionDep, user_id: str, sha256: str) -> Blob | None:
    return session.scalar(select(Blob).where(Blob.user_id == user_id, Blob.sha256 == sha256))


@router.head("/blobs/{sha256}")
def head_blob(sha256: str, user: CurrentUser, session: SessionDep) -> Response:
    b = _own_blob(session, user.id, _check_sha(sha256))
    if b is None:
        return Response(status_code=404)
    return Response(status_code=200, headers={"Content-Length": str(b.size), "ETag": f'"{sha256}"'})


@router.put("/blobs/{sha256}", status_code=201)
async def put_blob(sha256: str, request: Request, user: CurrentUser, settings: SettingsDep,
                   storage: StorageDep) -> Response:  # fmt: skip
    """Upload one blob (raw body). The body must hash to the name; an existing blob is 200."""
    _check_sha(sha256)
    factory = request.app.state.sessionmaker

    def lookup() -> tuple[bool, int]:
        with factory() as s:
            return _own_blob(s, user.id, sha256) is not None, storage_used(s, user.id)

    # Database work in the thread pool, in short sessions: no transaction spans the upload.
    exists, used = await run_in_threadpool(lookup)
    if exists:
        return Response(status_code=200)
    limit = settings.tier_storage_bytes.get(user.tier, 0)
    digest, size = hashlib.sha256(), 0
    with scratch.temp_dir("blob") as tmp:
        path = Path(tmp) / "blob"
        with path.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise ApiError(413, "payload_too_large", "the blob is larger than the upload limit")
                if used + size > limit:
                    raise ApiError(413, "storage_quota_exceeded",
                                   f"the {user.tier} tier's {limit} bytes of storage would be exceeded",
                                   used_bytes=used, limit_bytes=limit)  # fmt: skip
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise ApiError(422, "hash_mismatch", "the body's SHA-256 is not the blob's name")
        blob = blob_key(user.id, sha256)
        await run_in_threadpool(storage.put_file, blob, path)

        def record() -> int:
            with factory() as s:
                try:
                    lock_blobs(s, user.id, exclusive=False)
                    s.add(Blob(user_id=user.id, sha256=sha256, size=size))
                    s.commit()
                except IntegrityError:  # the same blob uploaded twice at once: same content, fine
                    s.rollback()
                    return 200
            # Freeing an unreferenced blob of the same content may have deleted the object
            # between our write and our row (blobs.py): the row is in, so write it again.
            if not storage.exists(blob):
                storage.put_file(blob, path)
            return 201

        return Response(status_code=await run_in_threadpool(record))


@router.get("/blobs/{sha256}", response_class=FileResponse)
def get_blob(sha256: str, user: CurrentUser, session: SessionDep, storage: StorageDep) -> Any:
    if _own_blob(session, user.id, _check_sha(sha256)) is None:
        raise not_found("blob")
    return stored_file(storage, blob_key(user.id, sha256), "application/octet-stream")


@router.post("/projects", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    if session.scalar(select(Project.id).where(Project.user_id == user.id, Project.name == body.name)):
        raise ApiError(409, "project_exists", f"you already have a project named {body.name!r}")
    p = Project(user_id=user.id, name=body.name)
    session.add(p)
    session.flush()
    return _project_public(p)


@router.get("/projects", response_model=list[ProjectPublic])
def list_projects(user: CurrentUser, session: SessionDep) -> list[ProjectPublic]:
    rows = session.scalars(select(Project).where(Project.user_id == user.id).order_by(Project.name))
    return [_project_public(p) for p in rows]


@router.get("/projects/{project_id}", response_model=ProjectPublic)
def get_project(project_id: str, user: CurrentUser, session: SessionDep) -> ProjectPublic:
    return _project_public(_own_project(session, user.id, project_id))


def _revision_public(p: Project, r: ProjectRevision) -> RevisionPublic:
    return RevisionPublic(project_id=p.id, number=r.number, project=json.loads(r.document),
                          media=json.loads(r.media), created_at=r.created_at)  # fmt: skip


@router.get("/projects/{project_id}/revisions/{number}", response_model=RevisionPublic)
def get_revision(project_id: str, number: Annotated[int, PathParam(ge=0, le=MAX_REVISION)], user: CurrentUser,
                 session: SessionDep) -> RevisionPublic:  # fmt: skip
    p = _own_project(session, user.id, project_id)
    r = session.scalar(select(ProjectRevision).where(ProjectRevision.project_id == p.id,
                                                     ProjectRevision.number == number))  # fmt: skip
    if r is None:
        raise not_found("revision")
    return _revision_public(p, r)


@router.post("/projects/{project_id}/revisions", status_code=201, response_model=RevisionPublic)
def push_revision(project_id: str, body: RevisionPush, user: CurrentUser, session: SessionDep) -> RevisionPublic:
    # Lock the project row (PostgreSQL FOR UPDATE; SQLite transactions are already exclusive).
    p = session.scalar(select(Project).where(Project.id == project_id).with_for_update()) if len(project_id) <= 32 else None
    if p is None or p.user_id != user.id:
        raise not_found("project")
    lock_blobs(session, user.id, exclusive=False)  # the blobs checked below stay until the commit
    if body.base_revision != p.head_revision:
        raise ApiError(409, "stale_revision",
                       f"the project is at revision {p.head_revision}, your edit is based on {body.base_revision}; "
                       "pull, merge and push again", base_revision=body.base_revision, head_revision=p.head_revision)  # fmt: skip
    for name, sha in body.media.items():
        if len(name) > 255 or not _MEDIA_NAME.match(name):
            raise ApiError(422, "invalid_media_name",
                           f"media name {name!r} must be a relative path under media/ or renders/")  # fmt: skip
        _check_sha(sha)
    missing = sorted({sha for sha in body.media.values() if _own_blob(session, user.id, sha) is None})
    if missing:
        raise ApiError(422, "missing_blobs", f"{len(missing)} media blob(s) are not uploaded yet", missing=missing)
    document = json.dumps(body.project, separators=(",", ":"))
    if len(document) > MAX_PROJECT_JSON_BYTES:
        raise ApiError(413, "payload_too_large", "project.json is larger than 8 MB")
    p.head_revision += 1
    p.updated_at = datetime.now(UTC)
    r = ProjectRevision(project_id=p.id, number=p.head_revision, document=document, media=json.dumps(body.media))
    session.add(r)
    session.flush()
    return _revision_public(p, r)


@router.delete("/projects/{project_id}", response_model=ProjectDeleted)
def delete_project(project_id: str, request: Request, user: CurrentUser, session: SessionDep,
                   storage: StorageDep) -> ProjectDeleted:  # fmt: skip
    """Delete a server project with all its revisions, and free the media only it named (any
    other project's revisions keep theirs). Copies on the musician's machines are untouched."""
    p = _own_project(session, user.id, project_id)
    columns = list(session.scalars(select(ProjectRevision.media).where(ProjectRevision.project_id == p.id)))
    gone = ProjectDeleted(id=p.id, name=p.name, revisions_deleted=len(columns))
    session.execute(delete(ProjectRevision).where(ProjectRevision.project_id == p.id))
    session.execute(delete(Project).where(Project.id == p.id))
    session.commit()  # the project is gone before any blob is freed
    gone.blobs_freed, gone.bytes_freed = free_unreferenced(request.app.state.sessionmaker, storage, user.id,
                                                           candidates=media_of(columns))  # fmt: skip
    return gone
