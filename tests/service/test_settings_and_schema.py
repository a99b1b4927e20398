"""Settings refuse unsafe starts; migrations build the models' schema on SQLite and PostgreSQL;
CORS is closed by default; the OpenAPI document is served where the seed says."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.service.db import normalise_url
from app.service.models import Base
from app.service.settings import Settings, SettingsError
from tests.service.conftest import Server, new_database, running_server


@pytest.mark.parametrize("secret", [None, "", "your-secret-key", "changeme", "short-but-unique"])
def test_remote_mode_refuses_a_missing_or_default_secret(secret: str | None):
    env = {"MODE": "remote", "DATABASE_URL": "sqlite:///x.db"}
    if secret is not None:
        env["SECRET_KEY"] = secret
    with pytest.raises(SettingsError, match="SECRET_KEY"):
        Settings.from_env(env)


def test_remote_mode_needs_a_database_url():
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"MODE": "remote", "SECRET_KEY": "k" * 40})


def test_several_api_processes_need_postgresql_and_celery():
    remote = {"MODE": "remote", "SECRET_KEY": "k" * 40, "WEB_CONCURRENCY": "4"}
    pg = {**remote, "DATABASE_URL": "postgresql://u@db/amc"}
    for env in ({**remote, "DATABASE_URL": "sqlite:///x.db", "JOB_BACKEND": "celery", "REDIS_URL": "redis://r"},
                {**pg, "JOB_BACKEND": "local"}, {**pg, "WEB_CONCURRENCY": "0"}):  # fmt: skip
        with pytest.raises(SettingsError, match="WEB_CONCURRENCY"):
            Settings.from_env(env)
    ok = Settings.from_env({**pg, "JOB_BACKEND": "celery", "REDIS_URL": "redis://r"})
    assert ok.web_workers == 4


def test_embedded_mode_creates_one_private_key_and_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AMC_HOME", str(tmp_path))
    first = Settings.from_env({"MODE": "embedded"})
    second = Settings.from_env({"MODE": "embedded"})
    key_file = tmp_path / "service" / "secret_key"
    assert first.secret_key == second.secret_key == key_file.read_text()
    assert len(first.secret_key) >= 32 and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert first.database_url == f"sqlite:///{tmp_path / 'service' / 'service.db'}"
    assert first.cors_origins == () and first.auto_migrate is True


def test_migrations_build_exactly_the_models(backend: str, request: pytest.FixtureRequest, tmp_path: Path):
    url = new_database(backend, tmp_path, request)  # runs `alembic upgrade head` (the CLI)
    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], diff


def test_cors_is_closed_by_default_and_opens_only_to_listed_origins(request: pytest.FixtureRequest, server: Server):
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with server.client() as c:
        r = c.options("/api/v1/auth/login", headers=pre)
        assert "access-control-allow-origin" not in r.headers
    with running_server("sqlite", request, CORS_ORIGINS="https://studio.example") as srv, srv.client() as c:
        ok = c.options("/api/v1/auth/login", headers={**pre, "Origin": "https://studio.example"})
        assert ok.headers["access-control-allow-origin"] == "https://studio.example"
        bad = c.options("/api/v1/auth/login", headers=pre)
        assert bad.headers.get("access-control-allow-origin") != "https://evil.example"


def test_openapi_and_docs_are_served(server: Server):
    with server.client() as c:
        spec = c.get("/api/v1/openapi.json").json()
        assert c.get("/api/v1/docs").status_code == 200
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/music/generate",
                 "/api/v1/music/process-file", "/api/v1/music/jobs/{job_id}", "/api/v1/usage"):  # fmt: skip
        assert path in spec["paths"], path
