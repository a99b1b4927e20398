"""A finished job's stored input and result are removed JOB_FILES_RETENTION_DAYS after it
ended; the job (status, report) stays, and its result answers 410. Unfinished jobs and recent
ones keep their files."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from app.service import db
from app.service.jobs import expire_job_files
from app.service.models import Job, new_id, utcnow
from app.service.settings import Settings, SettingsError
from app.service.storage import LocalStorage, key
from tests.service.conftest import Server, alembic_upgrade, auth, wait_job


def _master(server: Server, user: dict[str, str], mix: Path) -> dict:
    with server.client() as c, mix.open("rb") as f:
        r = c.post("/api/v1/music/process-file", headers=auth(user), data={"operation": "master"},
                   files={"file": (mix.name, f, "audio/wav")})  # fmt: skip
        assert r.status_code == 202, r.text
        job = wait_job(c, user, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def test_old_finished_jobs_lose_their_files_and_nothing_else(server: Server, mix_wav: Path):
    u = server.register()
    old, recent = _master(server, u, mix_wav), _master(server, u, mix_wav)
    engine = db.make_engine(server.database_url)
    factory = db.make_sessionmaker(engine)
    storage = LocalStorage(server.storage_dir)
    long_ago = utcnow() - timedelta(days=31)
    try:
        with factory() as s, s.begin():
            s.get(Job, old["job_id"]).updated_at = long_ago  # type: ignore[union-attr]
            # A job still running for a month (a stuck worker) keeps its input.
            running = Job(id=new_id(), user_id=u["id"], kind="process-file", operation="master", status="running",
                          input_key=key("jobs", "x" * 32, "input.wav"), created_at=long_ago, updated_at=long_ago)  # fmt: skip
            s.add(running)
        (storage.root / running.input_key).parent.mkdir(parents=True)  # type: ignore[operator]
        (storage.root / running.input_key).write_bytes(b"RIFF")  # type: ignore[operator]
        with factory() as s:
            old_keys = s.execute(text("SELECT input_key, result_key FROM jobs WHERE id = :i"),
                                 {"i": old["job_id"]}).one()  # fmt: skip
        assert all(storage.exists(k) for k in old_keys)

        assert expire_job_files(factory, storage, 30) == 1
        assert not any(storage.exists(k) for k in old_keys)
        assert storage.exists(running.input_key)  # type: ignore[arg-type]
        assert expire_job_files(factory, storage, 30) == 0  # a second sweep finds nothing to do

        with server.client() as c:
            gone = c.get(f"/api/v1/music/jobs/{old['job_id']}", headers=auth(u)).json()
            assert gone["status"] == "succeeded" and gone["result_url"] is None
            assert gone["report"] == old["report"] and "removed 30 days after" in gone["message"]
            r = c.get(f"/api/v1/music/jobs/{old['job_id']}/result", headers=auth(u))
            assert r.status_code == 410 and r.json()["code"] == "result_expired", r.text
            kept = c.get(f"/api/v1/music/jobs/{recent['job_id']}/result", headers=auth(u))
            assert kept.status_code == 200 and kept.content[:4] == b"RIFF"
    finally:
        engine.dispose()


def test_an_interrupted_sweep_is_finished_by_the_next(tmp_path: Path):
    """Objects already deleted (a sweep stopped before it cleared the keys) are no error."""
    url = f"sqlite:///{tmp_path / 'service.db'}"
    alembic_upgrade(url)
    engine = db.make_engine(url)
    factory = db.make_sessionmaker(engine)
    storage = LocalStorage(tmp_path / "storage")
    try:
        with factory() as s, s.begin():
            s.execute(text("INSERT INTO users (id, email, username, full_name, password_hash, tier, role, is_active,"
                           " created_at) VALUES ('u1', 'a@b.c', 'a', '', 'x', 'free', 'user', 1, '2026-01-01')"))  # fmt: skip
            s.add(Job(id="j" * 32, user_id="u1", kind="generate", operation="generate", status="failed",
                      result_key=key("jobs", "j" * 32, "result.wav"), updated_at=utcnow() - timedelta(days=9)))  # fmt: skip
        assert expire_job_files(factory, storage, 7) == 1  # the object was never there
        with factory() as s:
            assert s.get(Job, "j" * 32).result_key is None  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_retention_setting():
    env = {"MODE": "remote", "SECRET_KEY": "k" * 40, "DATABASE_URL": "sqlite:///x.db"}
    assert Settings.from_env(env).job_files_days == 30
    assert Settings.from_env({**env, "JOB_FILES_RETENTION_DAYS": "0"}).job_files_days == 0
    with pytest.raises(SettingsError, match="JOB_FILES_RETENTION_DAYS"):
        Settings.from_env({**env, "JOB_FILES_RETENTION_DAYS": "-1"})


@pytest.mark.parametrize("days", [7, 0])
def test_the_service_sweeps_on_a_schedule_and_survives_a_failed_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       days: int):  # fmt: skip
    import asyncio

    from app.service import app as service_app

    calls: list[float] = []
    blob_sweeps: list[int] = []

    def sweep(_factory: object, _storage: object, days: float) -> int:
        calls.append(days)
        if len(calls) == 1:
            raise OSError("storage unreachable")  # logged; the next sweep runs anyway
        return 0

    def sweep_blobs(_factory: object, _storage: object) -> tuple[int, int]:
        blob_sweeps.append(1)
        if len(blob_sweeps) == 2:
            raise OSError("database unreachable")  # logged; the job files sweep still runs
        return 0, 0

    monkeypatch.setattr(service_app, "_FIRST_SWEEP_S", 0.0)
    monkeypatch.setattr(service_app, "SWEEP_EVERY_S", 0.05)
    monkeypatch.setattr(service_app, "expire_job_files", sweep)
    monkeypatch.setattr(service_app, "sweep_unreferenced", sweep_blobs)
    settings = Settings(mode="remote", database_url=f"sqlite:///{tmp_path / 's.db'}", secret_key="k" * 40,
                        storage_dir=tmp_path / "storage", job_files_days=days)  # fmt: skip
    app = service_app.create_app(settings)

    async def run_a_while() -> None:
        task = asyncio.create_task(service_app._sweep(app))
        await asyncio.sleep(0.4)
        task.cancel()

    asyncio.run(run_a_while())
    assert len(blob_sweeps) >= 3  # unreferenced sync blobs are swept whatever the retention
    if days:
        assert len(calls) >= 3 and set(calls) == {days}
    else:  # JOB_FILES_RETENTION_DAYS=0 keeps job files forever
        assert calls == []
    app.state.engine.dispose()
    app.state.read_engine.dispose()
