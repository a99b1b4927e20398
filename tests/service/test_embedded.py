"""app.service.embedded: the Studio's embedded account service, as a real child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.service import embedded
from tests.service.conftest import PASSWORD, REPO, free_port


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AMC_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    embedded.stop_embedded()


def _health(url: str) -> int | None:
    try:
        return httpx.get(url + "/health", timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_start_is_idempotent_uses_sqlite_in_user_data_and_stops(home: Path):
    port = free_port()
    url = embedded.start_embedded(port=port)
    assert url == f"http://127.0.0.1:{port}"
    first = embedded._running
    assert first is not None and first.process is not None and first.process.is_alive()
    body = httpx.get(url + "/health", timeout=5).json()
    assert (body["mode"], body["database"]) == ("embedded", "ok")
    assert embedded.start_embedded(port=port) == url and embedded._running is first  # no second process
    assert embedded.embedded_url() == url
    assert (home / "service" / "service.db").is_file()  # SQLite in the user data dir
    r = httpx.post(url + "/api/v1/auth/register", timeout=30,
                   json={"email": "emb@example.com", "username": "emb", "password": PASSWORD, "full_name": ""})  # fmt: skip
    assert r.status_code == 201, r.text
    embedded.stop_embedded()
    assert embedded.embedded_url() is None and not first.process.is_alive()
    assert _health(url) is None
    # Data survives a restart (same DB): the user registered above can sign in.
    url2 = embedded.start_embedded(port=port)
    r = httpx.post(url2 + "/api/v1/auth/login", json={"email": "emb@example.com", "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text


def test_port_is_remembered_and_a_running_service_is_reused(home: Path, monkeypatch: pytest.MonkeyPatch):
    port = free_port()
    monkeypatch.setattr(embedded, "DEFAULT_PORT", port)
    url = embedded.start_embedded()
    assert json.loads((home / "service" / "embedded.json").read_text()) == {"port": port}
    owner = embedded._running
    # A second Studio (simulated: forget that we own it) finds the service and does not own it.
    embedded._running = None
    assert embedded.start_embedded() == url
    assert embedded._running is not None and embedded._running.process is None
    embedded.stop_embedded()  # not ours: left running
    assert _health(url) == 200
    embedded._running = owner
    embedded.stop_embedded()
    assert _health(url) is None


def test_taken_port_is_a_clear_error(home: Path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(embedded.EmbeddedServiceError, match="taken by another program"):
            embedded.start_embedded(port=s.getsockname()[1], timeout_s=10)


def test_service_exits_when_the_studio_is_killed(tmp_path: Path):
    """No orphan keeps the port: the child notices its parent's death through the pipe."""
    port = free_port()
    script = textwrap.dedent(f"""
        import sys, time
        from app.service import embedded
        if __name__ == "__main__":
            print(embedded.start_embedded(port={port}), flush=True)
            time.sleep(600)
    """)
    env = {**os.environ, "AMC_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}" and _health(url) == 200
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while _health(url) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _health(url) is None
    finally:
        if proc.poll() is None:
            proc.kill()
