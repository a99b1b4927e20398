"""The service's engines: token checks read through an engine that never queues behind writers
(SQLite) and needs no BEGIN/COMMIT (PostgreSQL), and a PostgreSQL connection that died while
idle in the pool is replaced before a request sees it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.service import db
from app.service.settings import Settings, SettingsError
from tests.service.conftest import new_database


def test_sqlite_reads_do_not_wait_for_a_writer_and_cannot_write(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    writer, reader = db.make_engine(url), db.make_engine(url, read_only=True)
    try:
        with writer.begin() as w:
            w.execute(text("CREATE TABLE counters (count INTEGER)"))
            w.execute(text("INSERT INTO counters (count) VALUES (1)"))
        holding, release = threading.Event(), threading.Event()

        def hold_the_write_lock() -> None:
            with writer.begin() as w:  # BEGIN IMMEDIATE: the database's write lock
                w.execute(text("UPDATE counters SET count = 2"))
                holding.set()
                release.wait(10)

        t = threading.Thread(target=hold_the_write_lock)
        t.start()
        try:
            assert holding.wait(10)
            t0 = time.monotonic()
            with reader.connect() as r:  # the last committed value, at once
                assert r.scalar(text("SELECT count FROM counters")) == 1
            assert time.monotonic() - t0 < 1.0
            with reader.connect() as r, pytest.raises(OperationalError, match=r"readonly database"):
                r.execute(text("UPDATE counters SET count = 3"))
        finally:
            release.set()
            t.join(10)
        with reader.connect() as r:
            assert r.scalar(text("SELECT count FROM counters")) == 2
    finally:
        writer.dispose()
        reader.dispose()


def test_postgresql_reads_run_in_autocommit(tmp_path: Path, request: pytest.FixtureRequest):
    url = new_database("postgresql", tmp_path, request)
    reader = db.make_engine(url, read_only=True)
    try:
        with reader.connect() as r:
            r.execute(text("SELECT 1"))
            # No transaction block is open between statements: the read cost one round trip.
            assert r.connection.dbapi_connection.info.transaction_status.name == "IDLE"  # type: ignore[union-attr]
    finally:
        reader.dispose()


def test_a_postgresql_connection_that_died_while_idle_is_replaced(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
):
    url = new_database("postgresql", tmp_path, request)
    engine = db.make_engine(url)
    try:
        with engine.connect() as c:
            victim = c.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as c:  # in use a moment ago: handed out without a ping
            assert c.scalar(text("SELECT pg_backend_pid()")) == victim
        admin = db.make_engine(url)
        with admin.connect() as a:
            assert a.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
        admin.dispose()
        monkeypatch.setattr(db, "_PING_IDLE_S", 0.0)  # now every pooled connection counts as idle
        with engine.connect() as c:  # the dead one fails its ping and a fresh one is used
            assert c.scalar(text("SELECT 1")) == 1
            assert c.scalar(text("SELECT pg_backend_pid()")) != victim
    finally:
        engine.dispose()


def test_db_threads_must_be_positive():
    env = {"MODE": "remote", "SECRET_KEY": "k" * 40, "DATABASE_URL": "sqlite:///x.db"}
    assert Settings.from_env(env).db_threads == 4
    assert Settings.from_env({**env, "DB_THREADS": "2"}).db_threads == 2
    with pytest.raises(SettingsError, match="DB_THREADS"):
        Settings.from_env({**env, "DB_THREADS": "0"})
