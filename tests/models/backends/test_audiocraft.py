"""AudioCraft-slot backend (extend, regenerate, melody, codec) on tiny random checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine.errors import ParameterError
from app.models.backends import _common as c
from app.models.backends.audiocraft import ENCODEC_32K, MUSICGEN_MELODY, TransformersAudioCraft
from app.models.backends.base import Cancelled
from tests.models.backends import tiny_models
from tests.models.backends.conftest import tone_wav

pytest.importorskip("transformers")  # tiny checkpoints are built with it

SR = tiny_models.TINY_SAMPLE_RATE


def test_status_missing_and_partial(find_weights) -> None:
    b = TransformersAudioCraft()
    st = b.status(device="cpu", find_weights=lambda s: None)
    assert st.state == "weights_missing" and st.weights == MUSICGEN_MELODY
    assert "audiocraft package pins torch" in st.detail and MUSICGEN_MELODY.url in st.detail
    only_codec = b.status(
        device="cpu", find_weights=lambda s: find_weights(s) if s == ENCODEC_32K else None
    )
    assert only_codec.state == "ready" and "tasks codec ready" in only_codec.detail
    assert "extend, regenerate, melody need more weights" in only_codec.detail
    assert b.status(device="cpu", find_weights=find_weights).state == "ready"


def test_extend(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=1.0, sample_rate=SR, channels=2)
    ctx, _ = make_ctx()
    out = TransformersAudioCraft().run(
        "extend", {"duration_s": 0.5, "prompt": "rock"}, {"audio": clip}, ctx
    )
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    x, _ = sf.read(clip, always_2d=True)
    assert sr == SR and y.shape == (int(1.5 * SR), 2)
    np.testing.assert_allclose(y[:SR], x, atol=1e-6)  # the original is kept bit-exact (float WAV)
    assert np.abs(y[SR:]).max() > 0


def test_regenerate_replaces_only_the_section(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=2.0, sample_rate=SR)
    ctx, _ = make_ctx()
    params = {"start_s": 0.75, "end_s": 1.25, "crossfade_s": 0.1, "prompt": "jazz"}
    out = TransformersAudioCraft().run("regenerate", params, {"audio": clip}, ctx)
    y = sf.read(out.outputs["audio"], always_2d=True)[0][:, 0]
    x = sf.read(clip, always_2d=True)[0][:, 0]
    assert y.shape == x.shape
    a, b, f = int(0.75 * SR), int(1.25 * SR), int(0.1 * SR)
    np.testing.assert_allclose(y[:a], x[:a], atol=1e-6)  # before: untouched
    np.testing.assert_allclose(y[b + f :], x[b + f :], atol=1e-6)  # after the crossfade: untouched
    assert np.abs(y[a:b] - x[a:b]).max() > 1e-3  # the section itself is new audio
    assert out.metrics["conditioned_on"] == "audio before the section"


def test_regenerate_from_start_needs_prompt(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=1.0, sample_rate=SR)
    with pytest.raises(ParameterError):
        TransformersAudioCraft().run(
            "regenerate", {"start_s": 0.0, "end_s": 0.5}, {"audio": clip}, make_ctx()[0]
        )
    out = TransformersAudioCraft().run(
        "regenerate",
        {"start_s": 0.0, "end_s": 0.5, "prompt": "funk"},
        {"audio": clip},
        make_ctx()[0],
    )
    assert out.metrics["conditioned_on"] == "prompt only"


def test_melody_conditioned_generation(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "m.wav", seconds=1.0, sample_rate=16000, freqs=(440.0,))
    ctx, rec = make_ctx()
    out = TransformersAudioCraft().run(
        "melody", {"prompt": "electronic", "duration_s": 0.8}, {"audio": clip}, ctx
    )
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert sr == SR and y.shape[0] == int(0.8 * SR)
    assert len([m for _, m, _ in rec.calls if "token" in m]) >= 3


def test_melody_chroma_follows_pitch() -> None:
    """The chroma conditioning marks the played pitch class (A for 440 Hz, C for 261.6 Hz)."""
    import torch

    cfg = {
        "sampling_rate": SR,
        "n_fft": 1024,
        "hop_length": 256,
        "num_chroma": 12,
        "chunk_length": 30,
    }
    t = np.arange(SR) / SR
    for freq, want in ((440.0, 9), (261.63, 0)):
        chroma = c.melody_chroma(
            np.sin(2 * np.pi * freq * t).astype(np.float32), SR, cfg, torch.device("cpu")
        )
        assert chroma.shape == (1, SR // 256 + 1, 12)
        assert torch.all(chroma.sum(-1) == 1)
        assert int(torch.mode(chroma[0].argmax(-1)).values) == want


def test_codec_round_trip(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=1.0, sample_rate=SR)
    ctx, _ = make_ctx()
    out = TransformersAudioCraft().run("codec", {}, {"audio": clip}, ctx)
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    codes = np.load(out.outputs["codes"])
    assert sr == SR and y.shape == (SR, 1)
    assert codes.shape == (tiny_models.TINY_CODEBOOKS, 50)
    assert codes.min() >= 0 and codes.max() < tiny_models.TINY_CODEBOOK_SIZE
    m = out.metrics
    assert m["codebooks"] == 2 and m["frame_rate_hz"] == 50 and np.isfinite(m["snr_db"])
    assert m["bitrate_kbps"] == pytest.approx(2 * 50 * 5 / 1000)


def test_regenerate_cancel(make_ctx, tmp_path: Path) -> None:
    clip = tone_wav(tmp_path / "c.wav", seconds=30.0, sample_rate=SR)
    ctx, rec = make_ctx(cancel_at=0.11)
    with pytest.raises(Cancelled):
        TransformersAudioCraft().run(
            "regenerate", {"start_s": 1.0, "end_s": 29.0}, {"audio": clip}, ctx
        )
    assert time.monotonic() - rec.cancelled_at < 0.5
