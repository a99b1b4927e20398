"""One service process owns a data folder (its jobs, its scratch, its storage folder).

Taken at start, before anything is recovered, migrated or swept, and held until the process
exits (the kernel drops it when the process dies, even by SIGKILL):

* a local storage folder and a SQLite database: an exclusive ``flock`` on ``.owner.lock`` in
  each folder (the storage root, the database's folder);
* PostgreSQL with the local job runner: a session-level advisory lock held on a connection
  of its own for the life of the process.

A second ``amc serve`` on the same data refuses to start (:class:`DataFolderBusy`) and touches
nothing: no job is requeued, no file removed. PostgreSQL with Celery takes no lock: several
API processes share the database by design, and the broker, not ``recover``, owns the jobs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, literal, select

from app.service.settings import Settings

LOCK_NAME = ".owner.lock"
_PG_LOCK = "amc-serve-owner"


class DataFolderBusy(RuntimeError):
    """Another service process owns this data folder or database."""


def _flock(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        if os.name == "nt":  # pragma: no cover - Windows Studio builds
            import msvcrt

            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = f.read().strip()
        f.close()
        raise DataFolderBusy(f"another account service (pid {holder or 'unknown'}) already serves "
                             f"{path.parent}; stop it first") from None  # fmt: skip
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class Ownership:
    """The locks this process holds; :meth:`release` at shutdown (exit releases them too)."""

    def __init__(self) -> None:
        self.files: list[IO[str]] = []
        self.connection: Connection | None = None
        self.exclusive = False  # this process alone writes the data folder and runs its jobs

    def release(self) -> None:
        for f in self.files:
            with contextlib.suppress(OSError):
                f.close()
        self.files.clear()
        if self.connection is not None:
            with contextlib.suppress(Exception):  # a session lock outlives a pooled connection's return
                self.connection.execute(select(func.pg_advisory_unlock(func.hashtext(literal(_PG_LOCK)))))
                self.connection.commit()
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None


def _sqlite_folder(url: str) -> Path | None:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///")).resolve().parent
    return None


def take(settings: Settings, engine: Engine) -> Ownership:
    """Take the data folder for this process, or raise :class:`DataFolderBusy`."""
    own = Ownership()
    try:
        folders: list[Path] = []
        if settings.storage_provider == "local":
            folders.append(settings.storage_dir.resolve())
        if (db_folder := _sqlite_folder(settings.database_url)) is not None and db_folder not in folders:
            folders.append(db_folder)
        for folder in folders:
            own.files.append(_flock(folder / LOCK_NAME))
        if engine.dialect.name == "postgresql" and settings.job_backend == "local":
            conn = engine.connect()
            own.connection = conn
            got: Any = conn.execute(select(func.pg_try_advisory_lock(func.hashtext(literal(_PG_LOCK))))).scalar()
            conn.commit()
            if not got:
                raise DataFolderBusy("another account service with local jobs already uses this PostgreSQL "
                                     "database; stop it first (or run jobs on Celery: JOB_BACKEND=celery)")  # fmt: skip
    except BaseException:
        own.release()
        raise
    own.exclusive = settings.job_backend == "local"
    return own
