"""Stored files that no row names: what a process killed mid-write leaves in a local storage folder.

A put writes ``.part-*`` beside its key and renames it into place; an upload stores a job's
input before its job row commits, and a sync blob before its row. A SIGKILL at the wrong
moment leaves a ``.part-*`` file, a ``jobs/<id>/`` folder with no job, or a blob object with no
row: nobody's quota, nothing points at them, and nothing would ever remove them.

:func:`sweep_storage` removes them. At start it runs with ``min_age_s=0`` once this process
owns the data folder (``owner.py``: no other process can be half-way through a write);
the hourly housekeeping runs it with an hour's grace, so a write in flight is never taken
for an orphan. S3 needs no sweep for ``.part-*`` (a put is one request, and an interrupted
multipart upload is never visible; a bucket lifecycle rule should abort them); its
orphaned objects are left to the operator (listed in the note of issue #16).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.service.models import Blob, Job
from app.service.storage import LocalStorage, Storage

log = logging.getLogger(__name__)

_BATCH = 500


def _old(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime <= cutoff
    except OSError:
        return False


def sweep_storage(factory: sessionmaker[Session], storage: Storage, *, min_age_s: float) -> dict[str, int]:
    """Remove partial writes, job folders with no job and blob objects with no row, older
    than ``min_age_s``, from a local storage folder (a no-op on S3). Returns counts."""
    counts = {"partial_files": 0, "job_folders": 0, "blobs": 0}
    if not isinstance(storage, LocalStorage):
        return counts
    root = storage.root
    cutoff = time.time() - min_age_s
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if name.startswith(".part-") and _old(p, cutoff):
                p.unlink(missing_ok=True)
                counts["partial_files"] += 1
    jobs_dir = root / "jobs"
    folders = [p for p in jobs_dir.iterdir() if p.is_dir()] if jobs_dir.is_dir() else []
    for i in range(0, len(folders), _BATCH):
        batch = {p.name: p for p in folders[i : i + _BATCH]}
        with factory() as s:
            known = set(s.scalars(select(Job.id).where(Job.id.in_(list(batch)))))
        for job_id, p in batch.items():
            if job_id not in known and _old(p, cutoff):
                shutil.rmtree(p, ignore_errors=True)
                counts["job_folders"] += 1
    blobs_dir = root / "blobs"
    users = [p for p in blobs_dir.iterdir() if p.is_dir()] if blobs_dir.is_dir() else []
    for user in users:
        objects = [p for p in user.glob("??/*") if p.is_file() and not p.name.startswith(".part-")]
        if not objects:
            continue
        with factory() as s:
            known = set(s.scalars(select(Blob.sha256).where(Blob.user_id == user.name)))
        for p in objects:
            if p.name not in known and _old(p, cutoff):
                p.unlink(missing_ok=True)
                counts["blobs"] += 1
    if any(counts.values()):
        log.info("storage sweep: removed %(partial_files)d partial files, %(job_folders)d job folders with "
                 "no job, %(blobs)d blob objects with no row", counts)  # fmt: skip
    return counts
