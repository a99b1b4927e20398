"""Each real backend end to end through the model worker process (tiny checkpoints under AMC_HOME)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.models.client import JobFailed, ModelClient
from app.models.protocol import Job, Progress
from tests.models.backends.conftest import tone_wav

pytest.importorskip("transformers")  # tiny checkpoints are built with it


@pytest.fixture(scope="module")
def real_client(
    models_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelClient]:
    logs = tmp_path_factory.mktemp("logs")
    env = {"AMC_HOME": str(models_home), "HF_HUB_OFFLINE": "1", "AMC_EXTRA_BACKENDS": ""}
    with ModelClient(device="cpu", log_path=logs / "worker.log", env=env) as c:
        c.wait_ready(120)
        yield c


def _run(
    client: ModelClient,
    tmp_path: Path,
    slot: str,
    backend: str,
    task: str,
    params: dict,
    inputs: dict | None = None,
):
    out = tmp_path / f"{slot}-{task}"
    out.mkdir()
    job = Job.create(
        slot, task, output_dir=str(out), params=params, inputs=inputs or {}, backend=backend, seed=5
    )
    return client.submit(job).wait(240)


def test_registry_lists_every_backend_ready_with_tiny_weights(
    models_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.models import registry

    monkeypatch.setenv("AMC_HOME", str(models_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(models_home / "hf"))
    monkeypatch.delenv("AMC_EXTRA_BACKENDS", raising=False)
    want = {
        "musicgen": "transformers-musicgen",
        "stable-audio": "diffusers-stable-audio",
        "audiocraft": "transformers-audiocraft",
        "jukebox": "musicgen-melody-style-transfer",
        "musiclm": "bundled-music-understanding",
        "aces": "dsp-enhance",
    }
    rows = {r["slot"]: r for r in registry.slot_status(device="cpu", slots=list(want))}
    for slot, name in want.items():
        first = rows[slot]["backends"][0]
        assert first["name"] == name, rows[slot]
        assert first["state"] == "ready", first


def test_musicgen_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    res = _run(
        real_client,
        tmp_path,
        "musicgen",
        "transformers-musicgen",
        "text_to_audio",
        {"prompt": "warm piano", "duration_s": 0.5},
    )
    audio, sr = sf.read(res.outputs["audio"])
    assert audio.shape[0] == sr // 2 and res.metrics["device"] == "cpu"


def test_musicgen_cancel_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    job = Job.create(
        "musicgen",
        "text_to_audio",
        output_dir=str(tmp_path),
        backend="transformers-musicgen",
        params={"prompt": "rock", "duration_s": 30.0},
    )
    handle = real_client.submit(job)
    for ev in handle.events(timeout=60):
        if isinstance(ev, Progress) and "token" in ev.message:
            break
    t0 = time.monotonic()
    handle.cancel()
    with pytest.raises(JobFailed) as info:
        handle.wait(30)
    assert info.value.kind == "cancelled"
    assert time.monotonic() - t0 < 1.0


def test_stable_audio_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    res = _run(
        real_client,
        tmp_path,
        "stable-audio",
        "diffusers-stable-audio",
        "text_to_audio",
        {"prompt": "drum loop", "duration_s": 0.5, "steps": 3},
    )
    audio, sr = sf.read(res.outputs["audio"], always_2d=True)
    assert audio.shape == (sr // 2, 2)


def test_audiocraft_codec_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=1.0, sample_rate=8000)
    res = _run(
        real_client,
        tmp_path,
        "audiocraft",
        "transformers-audiocraft",
        "codec",
        {},
        {"audio": str(clip)},
    )
    assert np.load(res.outputs["codes"]).shape == (2, 50)


def test_jukebox_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=2.0, sample_rate=22050, channels=2)
    res = _run(
        real_client,
        tmp_path,
        "jukebox",
        "musicgen-melody-style-transfer",
        "style_transfer",
        {"target_genre": "jazz", "duration_s": 1.5},
        {"audio": str(clip)},
    )
    assert res.metrics["loudness_lufs"] == pytest.approx(-14.0, abs=0.5)
    assert Path(res.outputs["audio"]).is_file()


def test_musiclm_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=3.0, sample_rate=22050)
    res = _run(
        real_client,
        tmp_path,
        "musiclm",
        "bundled-music-understanding",
        "analyze",
        {},
        {"audio": str(clip)},
    )
    assert Path(res.outputs["report"]).is_file() and Path(res.outputs["midi"]).is_file()


def test_aces_through_worker(real_client: ModelClient, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=3.0, sample_rate=44100, channels=2)
    res = _run(
        real_client,
        tmp_path,
        "aces",
        "dsp-enhance",
        "enhance",
        {"level": "light"},
        {"audio": str(clip)},
    )
    assert res.metrics["loudness_lufs"] == pytest.approx(-14.0, abs=0.5)
