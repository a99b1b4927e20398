"""The service runs generate / enhance / style_transfer through the model chain: a real uvicorn
server, its job runner's real model worker process (spawned on the first model job), the
orchestrator's plan, quality gates and the engine's master.

The generator and style slots are served by the tiny real backends of
:mod:`tests.models.orchestra_backends` (``AMC_EXTRA_BACKENDS``): ``tiny-broken-gen`` always
fails (fallback), ``tiny-gen`` is silent for even seeds (gate -> seed retry), ``tiny-style``
low-passes the input. ``enhance`` runs the real ACES DSP backend. A server without those
backends (and an empty Hugging Face cache) shows the honest failure: the registry's reason.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.sync.client import connect

from app.engine import analysis
from tests.models.orchestra_backends import EXTRA
from tests.service.conftest import Server, auth, running_server, wait_job, write_mix
from tests.service.test_celery import Worker, redis_url  # noqa: F401 - the redis-server fixture

STREAMING_LUFS = -14.0
LOUDNESS_TOLERANCE_LU = 0.2


def _model_env(folder: Path, extra: str) -> dict[str, str]:
    return {"AMC_EXTRA_BACKENDS": extra, "AMC_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "HF_HOME": str(folder / "hf"),
            "HF_HUB_CACHE": str(folder / "hf" / "hub"), "AMC_MODELS_PATH": "", "AMC_SUNO_API_KEY": "",
            "AMC_MUREKA_API_KEY": "", "AMC_STABILITY_API_KEY": ""}  # fmt: skip


@pytest.fixture(scope="module")
def chain_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = _model_env(tmp_path_factory.mktemp("chain_env"), EXTRA)
    with running_server("sqlite", request, **env) as srv:
        yield srv


@pytest.fixture(scope="module")
def noisy_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 44.1 kHz mix with hiss in its pauses and a few clipped runs: something to repair."""
    path = write_mix(tmp_path_factory.mktemp("noisy") / "noisy.wav", seconds=5.0)
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    rng = np.random.default_rng(5)
    x[int(1.0 * sr) : int(1.6 * sr)] = 0.0
    x = np.clip(x * 2.5 + 0.02 * rng.standard_normal(x.shape).astype(np.float32), -1.0, 1.0)
    sf.write(str(path), x, sr, subtype="FLOAT")
    return path


def _upload(c: httpx.Client, user: dict[str, str], path: Path, **form: str) -> httpx.Response:
    with path.open("rb") as f:
        return c.post("/api/v1/music/process-file", headers=auth(user), data=form,
                      files={"file": (path.name, f, "audio/wav")})  # fmt: skip


def _events(srv: Server, user: dict[str, str], job: dict) -> list[dict]:
    url = srv.base.replace("http", "ws") + job["websocket_url"]
    events: list[dict] = []
    with connect(url, open_timeout=10, additional_headers={"Authorization": f"Bearer {user['access']}"}) as ws:
        for raw in ws:
            events.append(json.loads(raw))
            if events[-1]["type"] == "done":
                break
    return events


def _download(c: httpx.Client, user: dict[str, str], job: dict) -> tuple[np.ndarray, int]:
    res = c.get(job["result_url"], headers=auth(user))
    assert res.status_code == 200 and res.headers["content-type"] == "audio/wav"
    assert res.content[:4] == b"RIFF" and res.content[8:12] == b"WAVE"
    audio, sr = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
    return audio, sr


def _assert_on_target(audio: np.ndarray, sr: int) -> None:
    lufs = float(analysis.integrated_loudness(audio.T, sr))
    assert abs(lufs - STREAMING_LUFS) <= LOUDNESS_TOLERANCE_LU, lufs


def test_generate_runs_the_chain_with_progress_plan_and_a_mastered_result(chain_server: Server):
    u = chain_server.register()
    body = {"prompt": "warm lo-fi piano", "genre": "jazz", "mood": "calm", "duration": 4, "style": "professional"}
    with chain_server.client() as c:
        r = c.post("/api/v1/music/generate", headers=auth(u), json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and job["error"] is None
        events = _events(chain_server, u, job)
        final = events[-1]["job"]
        assert final["status"] == "succeeded", (final, chain_server.log.read_text()[-3000:])  # type: ignore[union-attr]
        progress = [e["job"]["progress"] for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        # the orchestrator's own progress reached the WebSocket, step by step
        assert any(0.0 < e["job"]["progress"] < 1.0 and e["job"]["message"].startswith("generate: ")
                   for e in events), [e["job"]["message"] for e in events]  # fmt: skip
        done = wait_job(c, u, job["job_id"])
        plan = done["report"]["plan"]
        assert plan["workflow"] == "generate" and plan["status"] == "done"
        gen, master = plan["steps"]
        assert gen["slot"] == "musicgen" and gen["status"] == "done"
        assert gen["params"]["prompt"] == "warm lo-fi piano, jazz style, calm mood"
        assert gen["params"]["duration_s"] == 4.0
        # tiny-broken-gen is tried first and fails; tiny-gen passes its gates (maybe after a silent seed)
        assert gen["attempts"][0]["backend"] == "tiny-broken-gen" and gen["attempts"][0]["outcome"] == "error"
        assert gen["attempts"][-1]["backend"] == "tiny-gen" and gen["attempts"][-1]["outcome"] == "passed"
        assert gen["backend"] == "tiny-gen" and {gt["name"] for gt in gen["gates"]} >= {"silence", "clipping"}
        assert master["backend"] == "engine" and master["params"]["style"] == "professional"
        assert abs(master["metrics"]["loudness_lufs"] - STREAMING_LUFS) <= LOUDNESS_TOLERANCE_LU
        assert done["report"]["result"]["within_spec"] is True
        assert [s["slot"] for s in done["report"]["chain"]] == ["musicgen", "mastering"]
        # The status's top-level plan: which slot, which backend, why.
        assert [(s["slot"], s["backend"]) for s in done["plan"]] == [("musicgen", "tiny-gen"), ("mastering", "engine")]
        assert all(s["why"] for s in done["plan"]), done["plan"]
        audio, sr = _download(c, u, done)
        assert abs(audio.shape[0] / sr - 4.0) < 0.1
        _assert_on_target(audio, sr)


def test_enhance_goes_through_the_aces_slot(chain_server: Server, noisy_mix: Path):
    u = chain_server.register()
    with chain_server.client() as c:
        r = _upload(c, u, noisy_mix, operation="enhance", style="professional", enhancement_level="moderate")
        assert r.status_code == 202, r.text
        done = wait_job(c, u, r.json()["job_id"], 180)
        assert done["status"] == "succeeded", done
        plan = done["report"]["plan"]
        enh, master = plan["steps"]
        assert (enh["slot"], enh["backend"], enh["task"], enh["status"]) == ("aces", "dsp-enhance", "enhance", "done")
        assert enh["params"]["steps"] == ["declip", "declick", "denoise", "eq"]
        m = enh["metrics"]
        # the repair says what it found and did; whatever it did, it never raised the floor
        assert "clipped_samples_before" in m and m["denoise"], m
        assert m["noise_floor_after_dbfs"] <= m["noise_floor_before_dbfs"], m
        assert master["status"] == "done" and done["report"]["chain"][0]["slot"] == "ACES"
        audio, sr = _download(c, u, done)
        src, src_sr = sf.read(str(noisy_mix), always_2d=True)
        assert sr == src_sr and audio.shape == src.shape
        _assert_on_target(audio, sr)


def test_style_transfer_goes_through_the_jukebox_slot(chain_server: Server, tmp_path: Path):
    u = chain_server.register()
    mix = write_mix(tmp_path / "mix.wav", seconds=4.0)
    with chain_server.client() as c:
        assert _upload(c, u, mix, operation="style_transfer").status_code == 422  # no target_genre
        r = _upload(c, u, mix, operation="style_transfer", target_genre="jazz", style="balanced")
        assert r.status_code == 202, r.text
        done = wait_job(c, u, r.json()["job_id"], 180)
        assert done["status"] == "succeeded", done
        st = done["report"]["plan"]["steps"][0]
        assert (st["slot"], st["backend"], st["status"]) == ("jukebox", "tiny-style", "done")
        assert st["params"]["target_genre"] == "jazz" and st["metrics"]["target_genre"] == "jazz"
        _assert_on_target(*_download(c, u, done))


def test_capabilities_follow_the_registry(chain_server: Server):
    with chain_server.client() as c:
        ops = {o["name"]: o for o in c.get("/api/v1/music/capabilities").json()["operations"]}
        assert {k: o["available"] for k, o in ops.items()} == {
            "master": True, "enhance": True, "generate": True, "style_transfer": True}  # fmt: skip
        st = c.get("/api/v1/music/agent/status").json()
        slots = {s["slot"]: s for s in st["slots"]}
        assert len(slots) == 12 and slots["musicgen"]["state"] == "ready"
        assert "tiny-gen" in [b["name"] for b in slots["musicgen"]["backends"]]
        assert st["model_worker"]["state"] in ("ready", "busy")  # started by the earlier jobs
        assert st["model_worker"]["device"] == "cpu"


def test_cancel_a_running_generate(chain_server: Server):
    """Runs last in this module: the cancelled tiny-gen job keeps its worker busy a while."""
    u = chain_server.register()
    with chain_server.client() as c:
        r = c.post("/api/v1/music/generate", headers=auth(u), json={"prompt": "slow strings", "duration": 30})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 60
        while True:  # running inside the model step: the plan is stored and the generator reports
            j = c.get(f"/api/v1/music/jobs/{job_id}", headers=auth(u)).json()
            assert j["status"] in ("queued", "running") and time.monotonic() < deadline, j
            if j["status"] == "running" and j["message"].startswith("generate: ") and j["report"]:
                break
            time.sleep(0.05)
        assert j["report"]["plan"]["status"] == "planned"
        t0 = time.monotonic()
        assert c.post(f"/api/v1/music/jobs/{job_id}/cancel", headers=auth(u)).status_code == 200
        done = wait_job(c, u, job_id, 60)
        assert done["status"] == "cancelled", done
        assert time.monotonic() - t0 < 20  # the orchestrator stops waiting; no 15 s synthesis to the end
        assert c.get(f"/api/v1/music/jobs/{job_id}/result", headers=auth(u)).status_code == 409


def test_without_a_ready_generator_the_job_fails_with_the_registrys_reason(request: pytest.FixtureRequest,
                                                                          tmp_path: Path):  # fmt: skip
    with running_server("sqlite", request, **_model_env(tmp_path, "")) as srv:
        u = srv.register()
        with srv.client() as c:
            cap = {o["name"]: o for o in c.get("/api/v1/music/capabilities").json()["operations"]}
            assert cap["generate"]["available"] is False and "facebook/musicgen-small" in cap["generate"]["reason"]
            r = c.post("/api/v1/music/generate", headers=auth(u), json={"prompt": "warm lo-fi piano", "duration": 5})
            assert r.status_code == 202, r.text
            job = wait_job(c, u, r.json()["job_id"], 120)
            assert job["status"] == "failed" and job["error"]["code"] == "backend_unavailable", job
            msg = job["error"]["message"]
            assert "weights_missing" in msg and "facebook/musicgen-small" in msg and "2.36 GB" in msg, msg
            assert c.get(f"/api/v1/music/jobs/{job['job_id']}/result", headers=auth(u)).status_code == 409


def test_celery_workers_run_the_same_chain(redis_url: str, request: pytest.FixtureRequest,  # noqa: F811
                                           tmp_path: Path):  # fmt: skip
    """Remote mode: the API enqueues, a Celery worker process runs the job with its own model
    client (its own model worker) through the same orchestrator code path."""
    env = _model_env(tmp_path, EXTRA)
    with running_server("sqlite", request, JOB_BACKEND="celery", REDIS_URL=redis_url, **env) as srv:
        u = srv.register()
        worker = Worker(srv)
        try:
            with srv.client() as c:
                st = c.get("/api/v1/music/agent/status").json()
                assert st["model_worker"]["state"] == "remote"
                r = c.post("/api/v1/music/generate", headers=auth(u), json={"prompt": "warm lo-fi piano",
                                                                           "duration": 3})  # fmt: skip
                assert r.status_code == 202, r.text
                done = wait_job(c, u, r.json()["job_id"], 240)
                assert done["status"] == "succeeded", done["error"]["message"]
                gen = done["report"]["plan"]["steps"][0]
                assert gen["backend"] == "tiny-gen" and gen["status"] == "done"
                _assert_on_target(*_download(c, u, done))
        finally:
            worker.stop()
