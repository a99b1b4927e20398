"""Sync media blobs that no revision names any more: freed when their project is deleted, and
swept hourly when an upload was never followed by a push.

A blob is a row (``blobs``: user, SHA-256, size) and an object in storage under a key made of
the user and the hash, so a blob uploaded again after it was freed has the same key. Freeing
must therefore never leave a row without its object (a musician's second machine would be
told the media is there and find it gone):

1. Under the user's blob lock, in one transaction: the unreferenced blobs' rows are deleted.
   A push holds the same lock (shared) while it checks that its blobs exist and records its
   revision, so it either lands first (its blobs are referenced, and kept) or finds them
   missing (422 ``missing_blobs``: the client uploads them again).
2. Then, again under the lock, each object is deleted unless its row came back meanwhile (an
   upload of the same content). An upload records its row under the lock (shared) and then
   checks that its object is still there, writing it again if this step removed it.

If deleting an object fails, its row is put back, so storage and rows stay in step and the
next sweep tries again. A process killed between the two steps leaves objects with no row:
they take space in the bucket but nobody's quota, and nothing points at them.

The lock: on SQLite every write transaction already excludes the others (BEGIN IMMEDIATE);
on PostgreSQL it is a transaction-level advisory lock on the user's id, taken shared by
uploads and pushes (they never wait for each other) and exclusively by freeing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, literal, or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.service.models import Blob, Project, ProjectRevision, utcnow
from app.service.storage import Storage, key

log = logging.getLogger(__name__)

#: An upload that no revision names is kept this long: a sync uploads its media first and
#: pushes the revision that names them afterwards, which can take a while on a slow line.
UNREFERENCED_GRACE = timedelta(hours=24)
_BATCH = 100


def blob_key(user_id: str, sha256: str) -> str:
    return key("blobs", user_id, sha256[:2], sha256)


def lock_blobs(session: Session, user_id: str, *, exclusive: bool) -> None:
    """Take the user's blob lock for the rest of ``session``'s transaction (see above)."""
    if session.get_bind().dialect.name == "postgresql":
        fn = func.pg_advisory_xact_lock if exclusive else func.pg_advisory_xact_lock_shared
        session.execute(select(fn(func.hashtext(literal(f"amc-blobs:{user_id}")))))


def media_of(columns: Iterable[str]) -> set[str]:
    """The blob hashes named by revisions' ``media`` columns (JSON ``{name: sha256}``)."""
    shas: set[str] = set()
    for media in columns:
        shas.update(json.loads(media).values())
    return shas


def referenced(session: Session, user_id: str) -> set[str]:
    """Every blob hash any revision of any of the user's projects names (history included)."""
    rows = session.scalars(select(ProjectRevision.media)
                           .join(Project, Project.id == ProjectRevision.project_id)
                           .where(Project.user_id == user_id))  # fmt: skip
    return media_of(rows)


def free_unreferenced(factory: sessionmaker[Session], storage: Storage, user_id: str, *,
                      candidates: Iterable[str] = (),
                      uploaded_before: datetime | None = None) -> tuple[int, int]:  # fmt: skip
    """Free the user's blobs that no revision names, among ``candidates`` (any age: the media
    of a project just deleted) and those uploaded before ``uploaded_before``. Returns (blobs,
    bytes) freed."""
    conditions = []
    if shas := sorted(set(candidates)):
        conditions.append(Blob.sha256.in_(shas))
    if uploaded_before is not None:
        conditions.append(Blob.created_at < uploaded_before)
    if not conditions:
        return 0, 0
    with factory() as s, s.begin():
        lock_blobs(s, user_id, exclusive=True)
        rows = s.execute(select(Blob.sha256, Blob.size, Blob.created_at)
                         .where(Blob.user_id == user_id, or_(*conditions))).all()  # fmt: skip
        names = referenced(s, user_id)
        gone = [r for r in rows if r.sha256 not in names]
        if gone:
            s.execute(delete(Blob).where(Blob.user_id == user_id, Blob.sha256.in_([r.sha256 for r in gone])))
    freed = [0, 0]
    for i in range(0, len(gone), _BATCH):
        batch = {r.sha256: r for r in gone[i : i + _BATCH]}
        with factory() as s, s.begin():
            lock_blobs(s, user_id, exclusive=True)
            back = set(s.scalars(select(Blob.sha256).where(Blob.user_id == user_id, Blob.sha256.in_(list(batch)))))
            for sha, r in batch.items():
                if sha in back:  # uploaded again meanwhile: the object is theirs now
                    continue
                try:
                    storage.delete(blob_key(user_id, sha))
                except Exception:
                    log.warning("could not delete blob %s of user %s; it is kept for the next sweep",
                                sha, user_id, exc_info=True)  # fmt: skip
                    s.execute(insert(Blob).values(user_id=user_id, sha256=sha, size=r.size, created_at=r.created_at))
                    continue
                freed[0] += 1
                freed[1] += r.size
    return freed[0], freed[1]


def sweep_unreferenced(factory: sessionmaker[Session], storage: Storage, now: datetime | None = None,
                       grace: timedelta = UNREFERENCED_GRACE) -> tuple[int, int]:  # fmt: skip
    """Free every user's blobs uploaded more than ``grace`` ago that no revision names.
    Idempotent; several API processes may sweep at once. Returns (blobs, bytes) freed."""
    cutoff = (now or utcnow()) - grace
    with factory() as s:
        users = list(s.scalars(select(Blob.user_id).where(Blob.created_at < cutoff).distinct()))
    total = [0, 0]
    for user_id in users:
        n, size = free_unreferenced(factory, storage, user_id, uploaded_before=cutoff)
        total[0] += n
        total[1] += size
    return total[0], total[1]
