"""MusicGen and Stable Audio backends on tiny random checkpoints, through their production path."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine.errors import ParameterError
from app.models.backends.base import Cancelled
from app.models.backends.musicgen import TransformersMusicGen
from app.models.backends.stable_audio import DiffusersStableAudio
from tests.models.backends import tiny_models
from tests.models.backends.conftest import tone_wav

pytest.importorskip("transformers")  # tiny checkpoints are built with it


def _none(spec: object) -> None:
    return None


@pytest.mark.parametrize("backend", [TransformersMusicGen(), DiffusersStableAudio()])
def test_status_weights_missing_names_repo_size_url(backend) -> None:
    st = backend.status(device="cpu", find_weights=_none)
    assert st.state == "weights_missing"
    d = st.to_dict()
    assert d["weights"]["repo_id"] == backend.weights[0].repo_id
    assert d["weights"]["size_bytes"] > 1e9
    assert d["weights"]["url"].startswith("https://huggingface.co/")
    assert backend.weights[0].repo_id in st.detail


@pytest.mark.parametrize("backend", [TransformersMusicGen(), DiffusersStableAudio()])
def test_status_ready_with_weights(backend, find_weights) -> None:
    assert backend.status(device="cpu", find_weights=find_weights).state == "ready"


def test_musicgen_text_to_audio(make_ctx) -> None:
    ctx, rec = make_ctx()
    out = TransformersMusicGen().run(
        "text_to_audio", {"prompt": "warm lo fi piano", "duration_s": 1.0}, {}, ctx
    )
    audio, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert sr == tiny_models.TINY_SAMPLE_RATE
    assert audio.shape[0] == sr  # exactly duration_s
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0
    m = out.metrics
    assert m["device"] == "cpu" and m["duration_s"] == pytest.approx(1.0)
    assert m["compute_s"] > 0 and m["real_time_factor"] == pytest.approx(
        m["compute_s"] / 1.0, rel=1e-3
    )
    # streaming progress: several token-block reports, increasing, ending at 1
    fr = [f for f, _, _ in rec.calls]
    assert len([m for _, m, _ in rec.calls if "token" in m]) >= 4
    assert fr == sorted(fr) and fr[-1] == 1.0


def test_musicgen_seed_reproducible(make_ctx) -> None:
    a = TransformersMusicGen().run(
        "text_to_audio", {"prompt": "rock", "duration_s": 0.4, "seed": 7}, {}, make_ctx()[0]
    )
    x = sf.read(a.outputs["audio"])[0]
    b = TransformersMusicGen().run(
        "text_to_audio", {"prompt": "rock", "duration_s": 0.4, "seed": 7}, {}, make_ctx()[0]
    )
    y = sf.read(b.outputs["audio"])[0]
    np.testing.assert_array_equal(x, y)


def test_musicgen_continuation_keeps_prompt_audio(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "clip.wav", seconds=1.0, sample_rate=16000, channels=2)
    ctx, _ = make_ctx()
    out = TransformersMusicGen().run(
        "continuation", {"prompt": "jazz", "duration_s": 0.6}, {"audio": clip}, ctx
    )
    audio, sr = sf.read(out.outputs["audio"], always_2d=True)
    src, _ = sf.read(clip, always_2d=True)
    assert sr == tiny_models.TINY_SAMPLE_RATE and audio.shape[1] == 2
    assert audio.shape[0] == pytest.approx(1.6 * sr, abs=2)
    # the first second is the (resampled) original clip, untouched
    assert np.corrcoef(audio[: sr // 2, 0], src[::2][: sr // 2, 0])[0, 1] > 0.99
    assert out.metrics["generated_s"] == pytest.approx(0.6, abs=1e-3)


def test_musicgen_cancel_stops_within_half_second(make_ctx) -> None:
    ctx, rec = make_ctx(cancel_at=0.12)
    with pytest.raises(Cancelled):
        TransformersMusicGen().run("text_to_audio", {"prompt": "funk", "duration_s": 30.0}, {}, ctx)
    assert rec.cancelled_at is not None
    assert len([m for _, m, _ in rec.calls if "token" in m]) >= 2  # cancelled mid-generation
    assert time.monotonic() - rec.cancelled_at < 0.5
    assert not list(ctx.work_dir.glob("*.wav"))


def test_musicgen_bad_params(make_ctx) -> None:
    ctx, _ = make_ctx()
    with pytest.raises(ParameterError):
        TransformersMusicGen().run("text_to_audio", {"prompt": " "}, {}, ctx)
    with pytest.raises(ParameterError):
        TransformersMusicGen().run("text_to_audio", {"prompt": "x", "duration_s": 99}, {}, ctx)
    with pytest.raises(ParameterError):
        TransformersMusicGen().run("continuation", {"prompt": "x"}, {}, ctx)


def test_stable_audio_text_to_audio(make_ctx) -> None:
    ctx, rec = make_ctx()
    params = {
        "prompt": "ambient drum loop",
        "negative_prompt": "noise",
        "duration_s": 0.5,
        "steps": 4,
    }
    out = DiffusersStableAudio().run("text_to_audio", params, {}, ctx)
    audio, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert sr == tiny_models.TINY_SAMPLE_RATE and audio.shape == (sr // 2, 2)
    assert np.all(np.isfinite(audio))
    steps = [m for _, m, _ in rec.calls if m.startswith("diffusion step")]
    assert steps == [f"diffusion step {i}/4" for i in range(1, 5)]
    assert out.metrics["steps"] == 4 and out.metrics["duration_s"] == pytest.approx(0.5)


def test_stable_audio_seed_reproducible(make_ctx) -> None:
    p = {"prompt": "bass", "duration_s": 0.25, "steps": 3, "seed": 3}
    x = sf.read(DiffusersStableAudio().run("text_to_audio", p, {}, make_ctx()[0]).outputs["audio"])[
        0
    ]
    y = sf.read(DiffusersStableAudio().run("text_to_audio", p, {}, make_ctx()[0]).outputs["audio"])[
        0
    ]
    np.testing.assert_array_equal(x, y)


def test_stable_audio_cancel_mid_diffusion(make_ctx) -> None:
    ctx, rec = make_ctx(cancel_at=0.07)
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        DiffusersStableAudio().run(
            "text_to_audio", {"prompt": "x", "duration_s": 1.0, "steps": 200}, {}, ctx
        )
    assert time.monotonic() - rec.cancelled_at < 0.5
    assert time.monotonic() - t0 < 20
    assert len([m for _, m, _ in rec.calls if m.startswith("diffusion")]) < 200


def test_stable_audio_duration_beyond_model_max_is_refused(make_ctx) -> None:
    with pytest.raises(ParameterError):
        DiffusersStableAudio().run(
            "text_to_audio", {"prompt": "x", "duration_s": 5.0}, {}, make_ctx()[0]
        )
