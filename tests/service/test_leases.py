"""Job leases: a job another live process holds is never run a second time; a lease that ran
out (its runner is gone) is taken over; the runner's heartbeat keeps its lease alive. On a
migrated SQLite database, in process (the runner's own functions)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from app.service import db
from app.service.jobs import INSTANCE_ID, JobBudget, _Heartbeat, run_job
from app.service.models import Job, utcnow
from app.service.storage import LocalStorage
from tests.service.conftest import alembic_upgrade


@pytest.fixture()
def factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'service.db'}"
    alembic_upgrade(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (id, email, username, full_name, password_hash, tier, role, is_active, "
                          "created_at) VALUES ('u1', 'a@example.com', 'a', '', 'x', 'free', 'user', true, :t)"),
                     {"t": utcnow()})  # fmt: skip
    yield db.make_sessionmaker(engine)
    engine.dispose()


def _running_job(factory, owner: str, expires_in_s: float) -> str:  # type: ignore[no-untyped-def]
    job_id = uuid.uuid4().hex
    with factory() as s, s.begin():
        s.execute(text("INSERT INTO jobs (id, user_id, kind, operation, status, progress, message, params, "
                       "cancel_requested, attempts, created_at, updated_at, lease_owner, lease_expires_at) VALUES "
                       "(:i, 'u1', 'process-file', 'master', 'running', 0.5, 'mastering', '{}', false, 1, :t, :t, "
                       ":o, :e)"),
                  {"i": job_id, "t": utcnow(), "o": owner, "e": utcnow() + timedelta(seconds=expires_in_s)})  # fmt: skip
    return job_id


def _row(factory, job_id: str) -> tuple:  # type: ignore[no-untyped-def]
    with factory() as s:
        return tuple(s.execute(text("SELECT status, attempts, lease_owner FROM jobs WHERE id = :i"),
                               {"i": job_id}).one())  # fmt: skip


def test_a_job_leased_by_a_live_process_is_not_run_again(factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    job_id = _running_job(factory, "other-host:123:abcd", expires_in_s=60)
    assert run_job(job_id, factory, LocalStorage(tmp_path / "storage")) == "leased"
    assert _row(factory, job_id) == ("running", 1, "other-host:123:abcd")


def test_a_job_whose_lease_ran_out_is_taken_over(factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    job_id = _running_job(factory, "other-host:123:abcd", expires_in_s=-1)
    # No input stored: the job runs (attempt 2) and fails with a reason, its lease cleared.
    assert run_job(job_id, factory, LocalStorage(tmp_path / "storage")) == "failed"
    assert _row(factory, job_id) == ("failed", 2, None)


def test_the_heartbeat_renews_the_lease(factory):  # type: ignore[no-untyped-def]
    job_id = _running_job(factory, INSTANCE_ID, expires_in_s=0.2)
    with _Heartbeat(job_id, factory, lease_s=0.4):
        time.sleep(1.0)
        with factory() as s:
            expires = s.get(Job, job_id).lease_expires_at
    assert expires is not None and expires > utcnow()  # set 0.2 s after the start; renewed since
    assert JobBudget().lease_s == 60.0
