"""Remote mode: jobs go through Redis to Celery workers (real redis-server, real worker
processes); a killed worker's job is delivered again and retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import (
    REPO,
    Server,
    auth,
    running_server,
    start_redis,
    wait_job,
    write_mix,
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    try:
        with start_redis() as url:
            yield url
    except FileNotFoundError as e:
        pytest.skip(f"{e} to test remote-mode jobs")


class Worker:
    def __init__(self, srv: Server) -> None:
        self.log = srv.storage_dir.parent / "worker.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.service.worker"], cwd=REPO, env=srv.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its pool children, no goodbye
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _upload(srv: Server, user: dict[str, str], path: Path) -> str:
    with srv.client() as c, path.open("rb") as f:
        r = c.post("/api/v1/music/process-file", headers=auth(user), data={"operation": "master"},
                   files={"file": (path.name, f, "audio/wav")})  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_jobs_run_on_celery_workers_and_survive_a_killed_worker(kind: str, redis_url: str, tmp_path: Path,
                                                                request: pytest.FixtureRequest):  # fmt: skip
    short, long = write_mix(tmp_path / "short.wav", 6.0), write_mix(tmp_path / "long.wav", 180.0)
    with running_server(kind, request, JOB_BACKEND="celery", REDIS_URL=redis_url,
                        CELERY_VISIBILITY_TIMEOUT_S="3", JOB_LEASE_S="6") as srv:  # fmt: skip
        u = srv.register()
        worker = Worker(srv)
        try:
            with srv.client() as c:
                job = _upload(srv, u, short)
                assert wait_job(c, u, job, 180)["status"] == "succeeded", worker.log.read_text()[-2000:]
                assert c.get(f"/api/v1/music/jobs/{job}/result", headers=auth(u)).status_code == 200
                victim = _upload(srv, u, long)
                deadline = time.monotonic() + 120
                while (j := c.get(f"/api/v1/music/jobs/{victim}", headers=auth(u)).json())["progress"] <= 0.02:
                    assert j["status"] in ("queued", "running") and time.monotonic() < deadline, j
                    time.sleep(0.1)
                worker.kill()
                time.sleep(1.0)
                j = c.get(f"/api/v1/music/jobs/{victim}", headers=auth(u)).json()
                assert j["status"] == "running"  # the database still says where it was
                worker = Worker(srv)  # a replacement worker picks the task up again
                done = wait_job(c, u, victim, 300)
                assert done["status"] == "succeeded", (done, worker.log.read_text()[-3000:])
            _check_attempts(srv, victim, 2)
        finally:
            worker.stop()


def _check_attempts(srv: Server, job_id: str, expected: int) -> None:
    from sqlalchemy import create_engine, text

    from app.service.db import normalise_url

    engine = create_engine(normalise_url(srv.database_url))
    with engine.connect() as conn:
        n = conn.execute(text("SELECT attempts FROM jobs WHERE id=:i"), {"i": job_id}).scalar_one()
    engine.dispose()
    assert n == expected


def test_the_api_answers_without_a_worker(redis_url: str, request: pytest.FixtureRequest):
    with running_server("sqlite", request, JOB_BACKEND="celery", REDIS_URL=redis_url) as srv:
        u = srv.register()
        with httpx.Client(base_url=srv.base) as c:
            assert c.get("/health").json()["job_backend"] == "celery"
            assert c.get("/api/v1/auth/me", headers=auth(u)).status_code == 200
