"""process-file runs the engine's mastering; jobs, results, cancel, WebSocket progress; upload
limits and sniffing; every cross-user access is 404."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.service.conftest import Server, auth, running_server, wait_job


def _upload(c: httpx.Client, user: dict[str, str], path: Path, **form: str) -> httpx.Response:
    data = {"operation": "master", "style": "professional", "enhancement_level": "moderate", **form}
    with path.open("rb") as f:
        return c.post("/api/v1/music/process-file", headers=auth(user), data=data,
                      files={"file": (path.name, f, "audio/wav")})  # fmt: skip


def test_master_a_file_end_to_end_with_websocket_progress(server: Server, mix_wav: Path):
    u = server.register()
    with server.client() as c:
        r = _upload(c, u, mix_wav, operation="enhance")
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and job["operation"] == "enhance"
        ws_url = server.base.replace("http", "ws") + job["websocket_url"]
        events = []
        # The token as a subprotocol (what a browser can send), never in the URL.
        with connect(ws_url, open_timeout=10, subprotocols=["amc.bearer", u["access"]]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "amc.bearer"
            for raw in ws:
                events.append(json.loads(raw))
                if events[-1]["type"] == "done":
                    break
        assert events[-1]["type"] == "done" and events[-1]["job"]["status"] == "succeeded", events[-1]
        progress = [e["job"]["progress"] for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        done = wait_job(c, u, job["job_id"])
        assert done["result_url"] == f"/api/v1/music/jobs/{job['job_id']}/result"
        rep = done["report"]
        assert rep["result"]["within_spec"] is True, rep["result"]
        assert rep["chain"][0]["slot"] == "ACES" and "input" not in rep
        res = c.get(done["result_url"], headers=auth(u))
        assert res.status_code == 200 and res.headers["content-type"] == "audio/wav"
        audio, sr = sf.read(io.BytesIO(res.content))
        src, src_sr = sf.read(str(mix_wav))
        assert sr == src_sr and audio.shape == src.shape


def test_other_users_jobs_are_404_everywhere(server: Server, mix_wav: Path):
    owner, other = server.register(), server.register()
    with server.client() as c:
        job = _upload(c, owner, mix_wav).json()
        wait_job(c, owner, job["job_id"])
        base = f"/api/v1/music/jobs/{job['job_id']}"
        assert c.get(base, headers=auth(other)).status_code == 404
        assert c.get(base + "/result", headers=auth(other)).status_code == 404
        assert c.post(base + "/cancel", headers=auth(other)).status_code == 404
        assert c.get("/api/v1/music/jobs/" + "0" * 32, headers=auth(owner)).status_code == 404
        assert [j["job_id"] for j in c.get("/api/v1/music/jobs", headers=auth(other)).json()] == []
    ws_url = server.base.replace("http", "ws") + base + "/ws"
    # Refused before the handshake completes: the same answer as for a job that does not exist.
    for url, token in ((ws_url, other["access"]), (ws_url.replace(job["job_id"], "0" * 32), owner["access"])):
        with pytest.raises(InvalidStatus) as e, connect(url, open_timeout=10,
                                                        additional_headers={"Authorization": f"Bearer {token}"}):
            pass
        assert e.value.response.status_code == 403


def test_non_audio_is_415_and_bad_options_422(server: Server, tmp_path: Path, mix_wav: Path):
    u = server.register()
    fake = tmp_path / "song.wav"
    fake.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" + b"\x00" * 4000)
    script = tmp_path / "evil.wav"
    script.write_text("#!/bin/sh\nrm -rf /\n")
    with server.client() as c:
        for f in (fake, script):
            r = _upload(c, u, f)
            assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type", r.text
        assert _upload(c, u, mix_wav, style="loud").status_code == 422
        assert _upload(c, u, mix_wav, operation="rm -rf").status_code == 422
        assert _upload(c, u, mix_wav, enhancement_level="extreme").status_code == 422


def test_model_jobs_end_as_the_registry_says(server: Server, mix_wav: Path):
    """generate / style_transfer run the model chain (tests/service/test_model_jobs.py has
    them with test backends); here, with whatever this machine has, each job's outcome matches
    what /capabilities says: it succeeds when a backend is ready, else it fails with the
    registry's reason (never a generic error)."""
    u = server.register()
    with server.client() as c:
        cap = {o["name"]: o for o in c.get("/api/v1/music/capabilities").json()["operations"]}
        st = _upload(c, u, mix_wav, operation="style_transfer", target_genre="jazz")
        gen = c.post("/api/v1/music/generate", headers=auth(u), json={"prompt": "warm lo-fi piano", "duration": 4})
        for op, r in (("style_transfer", st), ("generate", gen)):
            assert r.status_code == 202, r.text
            job = wait_job(c, u, r.json()["job_id"], 300)
            if cap[op]["available"]:
                assert job["status"] == "succeeded", job
                assert job["report"]["plan"]["status"] == "done"
            else:
                assert job["status"] == "failed" and job["error"]["code"] == "backend_unavailable", job
                assert "no ready backend" in cap[op]["reason"]
                slot = "jukebox" if op == "style_transfer" else "musicgen"
                assert f"slot {slot!r}" in job["error"]["message"], job["error"]
                assert c.get(f"/api/v1/music/jobs/{job['job_id']}/result", headers=auth(u)).status_code == 409


def test_cancel_a_queued_job(server: Server, mix_wav: Path):
    u = server.register()
    with server.client() as c:
        # One job worker: the second job waits in the queue behind the first.
        first = _upload(c, u, mix_wav).json()
        second = _upload(c, u, mix_wav).json()
        assert [(p["slot"], p["backend"]) for p in first["plan"]] == [("mastering", "engine")]
        r = c.post(f"/api/v1/music/jobs/{second['job_id']}/cancel", headers=auth(u))
        assert r.status_code == 200 and r.json()["status"] in ("cancelled", "running")
        assert wait_job(c, u, second["job_id"])["status"] == "cancelled"
        assert wait_job(c, u, first["job_id"])["status"] == "succeeded"


def test_capabilities_and_agent_status(server: Server):
    u = server.register()
    with server.client() as c:
        cap = c.get("/api/v1/music/capabilities").json()
        ops = {o["name"]: o["available"] for o in cap["operations"]}
        assert set(ops) == {"master", "enhance", "style_transfer", "generate"}
        assert ops["master"] and ops["enhance"]  # the engine, and the ACES slot's DSP backend
        assert "professional" in cap["styles"] and cap["tiers"]["free"]["requests_per_day"] == 100
        anon = c.get("/api/v1/music/agent/status").json()
        assert "your_jobs" not in anon
        assert anon["model_worker"]["state"] in ("not_started", "starting", "ready", "busy")
        assert {op: o["available"] for op, o in anon["operations"].items()} == ops
        assert len(anon["slots"]) == 12
        aces = next(s for s in anon["slots"] if s["slot"] == "aces")
        assert aces["name"] == "ACES" and aces["state"] == "ready" and aces["backends"][0]["name"] == "dsp-enhance"
        assert "your_jobs" in c.get("/api/v1/music/agent/status", headers=auth(u)).json()


def test_upload_limit_is_413(request: pytest.FixtureRequest, tmp_path: Path):
    from tests.service.conftest import write_mix

    big = write_mix(tmp_path / "big.wav", seconds=12.0)  # ~3 MB of 24-bit stereo
    with running_server("sqlite", request, MAX_UPLOAD_MB="1") as srv:
        u = srv.register()
        with srv.client() as c:
            r = _upload(c, u, big)
            assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

            def chunks():  # no Content-Length: counted while read
                with big.open("rb") as f:
                    yield from iter(lambda: f.read(65536), b"")

            blob = c.put("/api/v1/sync/blobs/" + "a" * 64, headers=auth(u), content=chunks())
            assert blob.status_code == 413


def test_metrics_and_health(server: Server):
    with server.client() as c:
        h = c.get("/health")
        assert h.status_code == 200 and h.json()["database"] == "ok"
        c.get("/api/v1/music/jobs/" + "0" * 32)
        m = c.get("/metrics")
        assert m.status_code == 200 and "amc_http_requests_total" in m.text
        assert 'route="/health"' in m.text
        assert 'route="/api/v1/music/jobs/{job_id}"' in m.text  # templates, not raw ids
