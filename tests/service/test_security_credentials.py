"""No credential in a URL or a log line: the job WebSocket takes its token from a header, a
subprotocol or its first message, refuses ``?token=``, and the access log (at INFO, as
``amc serve`` runs) never shows a token or an API key, even one a client put in a URL.
Security headers on every answer. Real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from app.service.jobs import public_error
from tests.service.conftest import Server, auth, running_server, wait_job


@pytest.fixture(scope="module")
def srv(backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    with running_server(backend, request, log_level="info") as s:
        yield s


def _job(srv: Server, user: dict[str, str], mix: Path) -> dict:
    with srv.client() as c, mix.open("rb") as f:
        r = c.post("/api/v1/music/process-file", headers=auth(user), data={"operation": "master"},
                   files={"file": ("mix.wav", f, "audio/wav")})  # fmt: skip
        assert r.status_code == 202, r.text
        return dict(r.json())


def test_a_token_in_the_websocket_url_is_refused_and_never_logged(srv: Server, mix_wav: Path):
    u = srv.register()
    job = _job(srv, u, mix_wav)
    url = srv.base.replace("http", "ws") + job["websocket_url"]
    with pytest.raises(InvalidStatus) as e, connect(url + f"?token={u['access']}", open_timeout=10):
        pass
    assert e.value.response.status_code == 403
    with srv.client() as c:
        r = c.post("/api/v1/auth/api-keys", json={"name": "log"}, headers=auth(u))
        key = r.json()["key"]
        # A client that puts its key in a URL anyway: the request works by header, the log hides it.
        assert c.get(f"/api/v1/auth/me?api_key={key}", headers={"X-API-Key": key}).status_code == 200
        wait_job(c, u, job["job_id"])
    assert srv.log is not None
    log = srv.log.read_text()
    assert "WebSocket" in log and "/api/v1/auth/me" in log  # the access log is on
    assert u["access"] not in log and key not in log and u["refresh"] not in log
    assert "[redacted]" in log


def test_the_websocket_authenticates_by_its_first_message(srv: Server, mix_wav: Path):
    u, other = srv.register(), srv.register()
    job = _job(srv, u, mix_wav)
    url = srv.base.replace("http", "ws") + job["websocket_url"]
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": u["access"]}))
        events = []
        for raw in ws:
            events.append(json.loads(raw))
            if events[-1]["type"] == "done":
                break
    assert events[-1]["job"]["status"] == "succeeded"
    # Another user's token, or none, closes the socket with the same code as a missing job.
    for first in ({"type": "auth", "token": other["access"]}, {"type": "hello"}):
        with connect(url, open_timeout=10) as ws:
            ws.send(json.dumps(first))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_security_headers(srv: Server):
    u = srv.register()
    with srv.client() as c:
        tokens = c.post("/api/v1/auth/login", json={"email": u["email"], "password": "SecurePass123"})
        assert tokens.status_code == 200
        assert tokens.headers["cache-control"] == "no-store"
        me = c.get("/api/v1/auth/me", headers=auth(u))
        for r in (tokens, me, c.get("/health"), c.get("/api/v1/nope")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'none'" in r.headers["content-security-policy"]
        docs = c.get("/api/v1/docs")
        assert "script-src" in docs.headers["content-security-policy"]


def test_error_answers_show_no_server_paths(srv: Server, tmp_path: Path):
    u = srv.register()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros((44100 * 3, 2), np.float32), 44100)
    with srv.client() as c:
        with bad.open("rb") as f:
            r = c.post("/api/v1/music/process-file", headers=auth(u), data={"operation": "master"},
                       files={"file": ("bad.wav", f, "audio/wav")})  # fmt: skip
        assert r.status_code == 415 and "/tmp" not in r.text and str(srv.storage_dir) not in r.text
        job = _job(srv, u, silent)
        done = wait_job(c, u, job["job_id"])
    assert done["status"] == "failed" and done["error"]["code"] == "processing_error", done
    assert "silent" in done["error"]["message"] and "/" not in done["error"]["message"]


def test_job_errors_keep_file_names_and_drop_server_paths():
    err = OSError("cannot read /srv/amc/storage/jobs/ab12/input.wav: bad header (C:\\amc\\tmp\\x.flac)")
    assert public_error(err) == "cannot read input.wav: bad header (x.flac)"


def test_metrics_need_the_metrics_token(backend: str, request: pytest.FixtureRequest):
    with running_server(backend, request, METRICS_TOKEN="m" * 40) as s, s.client() as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = c.get("/metrics", headers={"Authorization": "Bearer " + "m" * 40})
        assert ok.status_code == 200 and "amc_http_requests_total" in ok.text


def test_data_files_are_private(srv: Server):
    db = srv.database_url.removeprefix("sqlite:///")
    if srv.database_url.startswith("sqlite"):
        assert Path(db).stat().st_mode & 0o077 == 0
    assert srv.storage_dir.stat().st_mode & 0o077 == 0
    for p in srv.storage_dir.rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, p
