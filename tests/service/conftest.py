"""Service fixtures: a real PostgreSQL server (session-scoped, started here), real uvicorn
servers on free ports, SQLite and PostgreSQL databases migrated with ``alembic upgrade head``.

PostgreSQL refuses to run as root, so as root initdb/pg_ctl run through
``runuser -u postgres``. Tests on PostgreSQL are skipped (with the reason) only when the
PostgreSQL server binaries are not installed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO / "app" / "service" / "alembic.ini"
PASSWORD = "SecurePass123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


@dataclass
class PgServer:
    port: int
    admin_url: str

    def new_database(self) -> str:
        import psycopg

        name = f"amc_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def start_postgres() -> Iterator[PgServer]:
    """A throw-away PostgreSQL server on a free port (trust auth, fsync off, temp data dir)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                                "apt-get install postgresql")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="amc-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        # postgres refuses root; hand the folder to the postgres system user.
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(root, 0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)  # fmt: skip
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
                       check=True, capture_output=True)  # fmt: skip
        yield PgServer(port, f"postgresql://postgres@127.0.0.1:{port}/postgres")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def start_redis() -> Iterator[str]:
    """A throw-away redis-server on a free port (no persistence); yields its ``redis://`` URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not installed: apt-get install redis-server")
    import redis

    folder = Path(tempfile.mkdtemp(prefix="amc-redis-"))
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                    "apt-get install postgresql to run the PostgreSQL half of the suite")  # fmt: skip
    with start_postgres() as pg:
        yield pg


def alembic_upgrade(url: str) -> None:
    """``alembic upgrade head`` through the real command line, as an operator runs it."""
    env = {**os.environ, "DATABASE_URL": url, "MODE": "remote", "SECRET_KEY": secrets.token_urlsafe(48)}
    subprocess.run([sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "upgrade", "head"],
                   check=True, cwd=REPO, env=env, capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_database(kind: str, folder: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'service.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    alembic_upgrade(url)
    return url


@dataclass
class Server:
    base: str
    database_url: str
    storage_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    users: list[dict[str, str]] = field(default_factory=list)
    log_level: str = "warning"  # "info": uvicorn's access log too

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=60, **kw)  # type: ignore[arg-type]

    def register(self, *, tier_hint: str = "") -> dict[str, str]:
        """A fresh user, signed in: {'email', 'username', 'id', 'access', 'refresh'}."""
        name = f"u{uuid.uuid4().hex[:10]}{tier_hint}"
        with self.client() as c:
            r = c.post("/api/v1/auth/register", json={"email": f"{name}@example.com", "username": name,
                                                      "password": PASSWORD, "full_name": name})  # fmt: skip
            assert r.status_code == 201, r.text
            t = c.post("/api/v1/auth/login", json={"email": f"{name}@example.com", "password": PASSWORD})
            assert t.status_code == 200, t.text
        body = t.json()
        u = {"email": f"{name}@example.com", "username": name, "id": r.json()["id"],
             "access": body["access_token"], "refresh": body["refresh_token"]}  # fmt: skip
        self.users.append(u)
        return u

    def start(self) -> None:
        port = int(self.base.rsplit(":", 1)[1])
        self.log = self.storage_dir.parent / f"server-{port}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "app.service.app:app_from_env",
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", self.log_level,
                 "--timeout-keep-alive", "60"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the service did not start: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.proc = None


@contextlib.contextmanager
def running_server(kind: str, request: pytest.FixtureRequest, log_level: str = "warning", **env: str) -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="amc-svc-"))
    url = new_database(kind, folder, request)
    storage = folder / "storage"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SECRET_KEY", "MODE"))},
        "MODE": "remote", "DATABASE_URL": url, "SECRET_KEY": secrets.token_urlsafe(48),
        "STORAGE_PROVIDER": "local", "STORAGE_DIR": str(storage), "AMC_HOME": str(folder / "home"),
        "AUTO_MIGRATE": "false", "RATE_BURST_PER_MINUTE": "1000", "JOB_WORKERS": "1",
        "REGISTER_PER_CLIENT_PER_HOUR": "0",  # tests register many users from 127.0.0.1
        **env,
    }  # fmt: skip
    srv = Server(f"http://127.0.0.1:{free_port()}", url, storage, full_env, log_level=log_level)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A service with its own database, per test module, on SQLite and on PostgreSQL
    (tests register their own users, so they do not see each other)."""
    with running_server(backend, request) as srv:
        yield srv


def auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access']}"}


def write_mix(path: Path, seconds: float = 6.0, sample_rate: int = 44100) -> Path:
    """A short stereo test mix: chords with a decaying beat and a little noise (seeded)."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tones = sum(0.12 * np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 277.2, 329.6, 440.0))
    beat = 0.4 * np.exp(-((t % 0.5) * 18.0)) * np.sin(2 * np.pi * 60.0 * t)
    noise = 0.02 * rng.standard_normal((2, t.size))
    audio = np.stack([tones + beat, 0.9 * tones + beat]) + noise
    sf.write(str(path), (0.5 * audio).T.astype(np.float32), sample_rate, subtype="PCM_24")
    return path


@pytest.fixture(scope="session")
def mix_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mix(tmp_path_factory.mktemp("audio") / "mix.wav")


def wait_job(c: httpx.Client, user: dict[str, str], job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = c.get(f"/api/v1/music/jobs/{job_id}", headers=auth(user))
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("succeeded", "failed", "cancelled"):
            return dict(r.json())
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")
