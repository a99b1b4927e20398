"""Job state lives in the database: a restart resumes queued jobs, retries interrupted ones
and gives up (failed, with the reason) after the attempt limit."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, auth, running_server, wait_job


def _upload(srv: Server, user: dict[str, str], mix: Path) -> str:
    with srv.client() as c, mix.open("rb") as f:
        r = c.post("/api/v1/music/process-file", headers=auth(user), data={"operation": "master"},
                   files={"file": ("mix.wav", f, "audio/wav")})  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _sql(srv: Server, sql: str, **params: object) -> None:
    engine = create_engine(normalise_url(srv.database_url))
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_killed_service_resumes_and_retries_its_jobs(kind: str, request: pytest.FixtureRequest, mix_wav: Path):
    with running_server(kind, request) as srv:
        u = srv.register()
        done = _upload(srv, u, mix_wav)
        with srv.client() as c:
            wait_job(c, u, done)
        queued, running, exhausted = (_upload(srv, u, mix_wav) for _ in range(3))
        srv.stop(signal.SIGKILL)  # no goodbye: whatever it was doing is lost mid-flight
        # Put the jobs in the states a crash leaves behind.
        _sql(srv, "UPDATE jobs SET status='queued', attempts=0 WHERE id=:i", i=queued)
        _sql(srv, "UPDATE jobs SET status='running', attempts=1, progress=0.4 WHERE id=:i", i=running)
        _sql(srv, "UPDATE jobs SET status='running', attempts=3 WHERE id=:i", i=exhausted)
        srv.start()
        with srv.client() as c:
            assert wait_job(c, u, done)["status"] == "succeeded"  # finished work survives
            assert wait_job(c, u, queued)["status"] == "succeeded"
            retried = wait_job(c, u, running)
            assert retried["status"] == "succeeded"
            failed = wait_job(c, u, exhausted)
            assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted"
            assert c.get(f"/api/v1/music/jobs/{running}/result", headers=auth(u)).status_code == 200
        engine = create_engine(normalise_url(srv.database_url))
        with engine.connect() as conn:
            attempts = conn.execute(text("SELECT attempts FROM jobs WHERE id=:i"), {"i": running}).scalar_one()
            params = conn.execute(text("SELECT params FROM jobs WHERE id=:i"), {"i": running}).scalar_one()
        engine.dispose()
        assert attempts == 2 and json.loads(params)["operation"] == "master"
