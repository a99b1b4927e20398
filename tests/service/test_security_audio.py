"""Uploads checked from their header before anything is decoded, refused (4xx) without being
stored or charged; jobs stopped when they go over their scratch or time budget. Against real
servers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, auth, running_server, wait_job, write_mix


def _upload(c: httpx.Client, user: dict[str, str], path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return c.post("/api/v1/music/process-file", headers=auth(user), data={"operation": "master"},
                      files={"file": (path.name, f, "audio/wav")})  # fmt: skip


def _db_count(srv: Server, sql: str, **params: str) -> int:
    engine = create_engine(normalise_url(srv.database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql), params).scalar_one())
    finally:
        engine.dispose()


def _requests_today(c: httpx.Client, user: dict[str, str]) -> int:
    return int(c.get("/api/v1/usage", headers=auth(user)).json()["requests_today"])


def _stored_inputs(srv: Server) -> list[Path]:
    return sorted((srv.storage_dir / "jobs").glob("*/input.*")) if (srv.storage_dir / "jobs").exists() else []


@pytest.fixture(scope="module")
def srv(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # 5 s of audio at most, stereo at most, up to 96 kHz.
    with running_server(backend, request, MAX_AUDIO_MINUTES=str(5 / 60), MAX_AUDIO_CHANNELS="2",
                        MAX_SAMPLE_RATE="96000") as s:  # fmt: skip
        yield s


def _refused(srv: Server, path: Path, status: int, code: str) -> None:
    u = srv.register()
    stored = _stored_inputs(srv)
    with srv.client() as c:
        r = _upload(c, u, path)
        assert r.status_code == status and r.json()["code"] == code, r.text
        assert str(path.parent) not in r.text  # no server or client paths in the answer
        assert _requests_today(c, u) == 0  # not charged
    assert _db_count(srv, "SELECT count(*) FROM jobs WHERE user_id = :u", u=u["id"]) == 0
    assert _stored_inputs(srv) == stored  # nothing kept


def test_audio_over_the_duration_limit_is_refused_from_its_header(srv: Server, tmp_path: Path):
    _refused(srv, write_mix(tmp_path / "six-seconds.wav", seconds=6.0), 422, "audio_too_long")


def test_too_many_channels_or_an_odd_sample_rate_is_refused(srv: Server, tmp_path: Path):
    many = tmp_path / "six-channels.wav"
    sf.write(str(many), np.zeros((4410, 6), np.float32), 44100)
    _refused(srv, many, 422, "unsupported_audio")
    fast = tmp_path / "192k.wav"
    sf.write(str(fast), np.zeros((19200, 2), np.float32), 192000)
    _refused(srv, fast, 422, "unsupported_audio")


def test_damaged_audio_whose_header_reads_is_refused(srv: Server, tmp_path: Path):
    whole = tmp_path / "whole.flac"
    rng = np.random.default_rng(7)
    sf.write(str(whole), (0.3 * rng.standard_normal((44100 * 4, 2))).astype(np.float32), 44100)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])  # the header says 4 s
    _refused(srv, cut, 415, "unsupported_media_type")


def test_not_audio_is_refused_and_not_charged(srv: Server, tmp_path: Path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF" + bytes(5000))
    _refused(srv, junk, 415, "unsupported_media_type")


def test_a_good_upload_is_charged_once(srv: Server, tmp_path: Path):
    u = srv.register()
    with srv.client() as c:
        r = _upload(c, u, write_mix(tmp_path / "ok.wav", seconds=3.0))
        assert r.status_code == 202, r.text
        assert _requests_today(c, u) == 1
        assert wait_job(c, u, r.json()["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize("limit", [{"JOB_SCRATCH_MB": "1"}, {"JOB_TIME_LIMIT_S": "0.3"}], ids=["scratch", "time"])
def test_a_job_over_its_budget_is_stopped(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                          limit: dict[str, str]):  # fmt: skip
    with running_server(backend, request, TMPDIR=str(tmp_path), **limit) as s:
        u = s.register()
        with s.client() as c:
            r = _upload(c, u, write_mix(tmp_path / "long.wav", seconds=40.0))
            assert r.status_code == 202, r.text
            job = wait_job(c, u, r.json()["job_id"], timeout_s=180)
        assert job["status"] == "failed" and job["error"]["code"] == "over_budget", job
        assert "limit" in job["error"]["message"]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("amc-")]  # its scratch is gone
