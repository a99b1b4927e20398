"""Engine and sessions.

SQLite gets WAL, ``BEGIN IMMEDIATE`` and, within one process, a lock that hands the
database's write lock from one transaction to the next. Without it, a transaction that finds
the database locked waits in SQLite's busy handler, which sleeps 1, 2, 5 ... 100 ms between
tries: under 50 concurrent requests that turned a 3 ms transaction into seconds of tail
latency. With it, waiting transactions queue on a Python lock and start the moment the
previous one commits; the busy timeout remains for other processes (``amc`` commands, a
second service) sharing the file.

Reads that write nothing (the token check of every request) go through a second engine,
``read_only``: on SQLite its transactions take no lock (WAL readers never wait for the
writer), on PostgreSQL it runs in autocommit (one round trip per read, no BEGIN/COMMIT).

PostgreSQL connections are pinged before use only when they have been idle a while
(``_PING_IDLE_S``): a ping on every checkout was a round trip on every request, and a
connection that dies while busy is caught by SQLAlchemy's disconnect handling anyway.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
ALEMBIC_INI = Path(__file__).with_name("alembic.ini")


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the only PostgreSQL driver we ship)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


#: How long a transaction waits for another one of this process to finish (as the busy timeout).
LOCK_TIMEOUT_S = 30.0


def _serialising_connection(lock: threading.Lock) -> type[sqlite3.Connection]:
    """A sqlite3 connection class whose transactions take ``lock`` at BEGIN and give it back
    after COMMIT or ROLLBACK (which may run on another thread: a plain Lock allows that)."""

    class Connection(sqlite3.Connection):
        holds_lock = False

        def begin_immediate(self) -> None:
            if not lock.acquire(timeout=LOCK_TIMEOUT_S):
                raise sqlite3.OperationalError(
                    "database is locked (another transaction of this process)"
                )
            self.holds_lock = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._release()
                raise

        def _release(self) -> None:
            if self.holds_lock:
                self.holds_lock = False
                lock.release()

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                if not self.in_transaction:
                    self._release()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self._release()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self._release()

    return Connection


def make_engine(url: str, *, read_only: bool = False) -> Engine:
    """The service's engine. ``read_only``: for reads that write nothing; on SQLite its
    connections refuse writes (``PRAGMA query_only``) and begin deferred transactions, which
    take no lock; on PostgreSQL they run in autocommit."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {"timeout": LOCK_TIMEOUT_S, "check_same_thread": False}
        if not read_only:
            connect_args["factory"] = _serialising_connection(threading.Lock())
        engine = create_engine(url, connect_args=connect_args, pool_size=20, max_overflow=40)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            if read_only:  # a snapshot for the transaction's reads; no lock to wait for
                conn.connection.dbapi_connection.execute("BEGIN")
                return
            # A deferred transaction that reads and then writes cannot wait for the lock in WAL
            # mode (SQLITE_BUSY_SNAPSHOT); taking the write lock up front makes writers queue.
            # The Python lock makes this process's writers queue without sleeping.
            conn.connection.dbapi_connection.begin_immediate()

        return engine
    engine = create_engine(url, pool_size=20, max_overflow=40,
                           **({"isolation_level": "AUTOCOMMIT"} if read_only else {}))  # fmt: skip
    _ping_when_idle(engine)
    return engine


#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
_PING_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pessimistic disconnect check, for connections idle over ``_PING_IDLE_S``
    only (a server restart, a firewall dropping idle connections): a dead one is replaced by
    a fresh connection before the request sees it."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["amc_checkin"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        idle_since = record.info.get("amc_checkin")
        if idle_since is None or time.monotonic() - idle_since < _PING_IDLE_S:
            return  # just connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            raise exc.DisconnectionError(f"a pooled connection is dead: {e}") from e


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


def upgrade(url: str) -> None:
    """``alembic upgrade head`` on ``url`` (the same as the CLI with this package's alembic.ini)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
