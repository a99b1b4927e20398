"""One service per data folder, and what a killed one leaves behind is swept at the next start:
real server processes on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, auth, free_port, running_server, wait_job, write_mix


def _sql(srv: Server, sql: str, **params: object) -> list[tuple]:
    engine = create_engine(normalise_url(srv.database_url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_second_service_on_the_same_data_refuses_and_touches_no_job(kind: str, request: pytest.FixtureRequest,
                                                                       tmp_path: Path):  # fmt: skip
    with running_server(kind, request, TMPDIR=str(tmp_path)) as srv:
        u = srv.register()
        with srv.client() as c, write_mix(tmp_path / "long.wav", seconds=60.0).open("rb") as f:
            r = c.post("/api/v1/music/process-file", headers=auth(u), data={"operation": "master"},
                       files={"file": ("long.wav", f, "audio/wav")})  # fmt: skip
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while c.get(f"/api/v1/music/jobs/{job_id}", headers=auth(u)).json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # A job the first service runs, as the second would find it in the database.
        held = uuid.uuid4().hex
        _sql(srv, "INSERT INTO jobs (id, user_id, kind, operation, status, progress, message, params, "
                  "cancel_requested, attempts, created_at, updated_at) VALUES (:i, :u, 'process-file', "
                  "'master', 'running', 0.5, 'mastering', '{}', false, 1, :t, :t)",
             i=held, u=u["id"], t=time.strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
        second = Server(f"http://127.0.0.1:{free_port()}", srv.database_url, srv.storage_dir, dict(srv.env))
        try:
            with pytest.raises(RuntimeError, match="already serves"):
                second.start()
        finally:
            second.stop()
        row = _sql(srv, "SELECT status, attempts, error_code, message FROM jobs WHERE id = :i", i=held)
        assert row == [("running", 1, None, "mastering")]  # not requeued, not failed, not run
        before = _sql(srv, "SELECT status, attempts, error_code FROM jobs WHERE id = :i", i=job_id)
        assert before[0] in (("running", 1, None), ("succeeded", 1, None)), before
        with srv.client() as c:
            done = wait_job(c, u, job_id, timeout_s=240)
        assert done["status"] == "succeeded", done
        row = _sql(srv, "SELECT attempts, error_code FROM jobs WHERE id = :i", i=job_id)
        assert row == [(1, None)]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_start_sweeps_what_killed_processes_left(kind: str, request: pytest.FixtureRequest, tmp_path: Path):
    with running_server(kind, request, TMPDIR=str(tmp_path)) as srv:
        u = srv.register()
        with srv.client() as c, write_mix(tmp_path / "mix.wav", seconds=2.0).open("rb") as f:
            r = c.post("/api/v1/music/process-file", headers=auth(u), data={"operation": "master"},
                       files={"file": ("mix.wav", f, "audio/wav")})  # fmt: skip
            job_id = r.json()["job_id"]
            assert wait_job(c, u, job_id)["status"] == "succeeded"
        srv.stop()
        dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            left = {tmp_path / f"amc-{kind_}-{dead}-x1y2z3" for kind_ in ("job", "upload", "blob")}
            kept = tmp_path / f"amc-job-{alive.pid}-keepme"
            for d in (*left, kept):
                d.mkdir()
                (d / "scratch.bin").write_bytes(bytes(1 << 16))
            jobs = srv.storage_dir / "jobs"
            orphan = jobs / uuid.uuid4().hex
            orphan.mkdir(parents=True)
            (orphan / "input.wav").write_bytes(b"RIFF")
            part = jobs / job_id / ".part-abc123"
            part.write_bytes(bytes(1000))
            stray_blob = srv.storage_dir / "blobs" / u["id"] / "ab" / ("ab" + "0" * 62)
            stray_blob.parent.mkdir(parents=True)
            stray_blob.write_bytes(b"no row names me")
            srv.start()
            assert not any(d.exists() for d in left)
            assert kept.exists()  # a live process's scratch is not ours to remove
            assert not orphan.exists() and not part.exists() and not stray_blob.exists()
            assert (jobs / job_id / "result.wav").exists() and list((jobs / job_id).glob("input.*"))
            with srv.client() as c:
                assert c.get(f"/api/v1/music/jobs/{job_id}/result", headers=auth(u)).status_code == 200
        finally:
            alive.kill()
            alive.wait()
