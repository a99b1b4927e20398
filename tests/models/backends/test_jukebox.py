"""Jukebox slot: melody-conditioned style transfer + mastering, on the tiny MusicGen-Melody."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import analysis
from app.engine.errors import ParameterError
from app.models.backends.audiocraft import MUSICGEN_MELODY
from app.models.backends.jukebox import MelodyStyleTransfer, style_prompt
from tests.models.backends.conftest import tone_wav


def test_status() -> None:
    pytest.importorskip("transformers")  # without it the state is package_missing
    st = MelodyStyleTransfer().status(device="cpu", find_weights=lambda s: None)
    assert st.state == "weights_missing" and st.weights == MUSICGEN_MELODY
    assert st.to_dict()["weights"]["size_bytes"] > 1e9


def test_style_prompt() -> None:
    assert (
        style_prompt("jazz", 120.4, "A minor", "with brass")
        == "jazz, with brass, in A minor, 120 bpm"
    )
    assert style_prompt("rock", None, None) == "rock"


def _beat_track(path: Path, sr: int = 22050, seconds: float = 4.0, bpm: float = 120.0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.2 * np.sin(2 * np.pi * 220.0 * t)
    period = 60.0 / bpm
    env = np.exp(-((t % period) / 0.03))
    y += 0.5 * env * np.sin(2 * np.pi * 60.0 * t)
    sf.write(path, np.stack([y, y], axis=1).astype(np.float32), sr, subtype="FLOAT")
    return path


def test_style_transfer_masters_the_result(make_ctx, tmp_path: Path, find_weights) -> None:
    assert MelodyStyleTransfer().status(device="cpu", find_weights=find_weights).state == "ready"
    src = _beat_track(tmp_path / "song.wav")
    ctx, rec = make_ctx()
    params = {"target_genre": "jazz", "duration_s": 2.0, "target": "streaming"}
    out = MelodyStyleTransfer().run("style_transfer", params, {"audio": src}, ctx)
    m = out.metrics
    assert m["prompt"].startswith("jazz") and "bpm" in m["prompt"]
    assert m["source_tempo_bpm"] == pytest.approx(120, abs=3)
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert y.shape[0] == pytest.approx(2.0 * sr, abs=2)
    # the mastered output really is at the streaming target, measured independently
    assert analysis.integrated_loudness(y.T.astype(np.float32), sr) == pytest.approx(-14.0, abs=0.5)
    assert m["loudness_lufs"] == pytest.approx(-14.0, abs=0.5) and m["true_peak_dbtp"] <= -0.9
    assert out.outputs["raw"].is_file()
    assert any("token" in msg for _, msg, _ in rec.calls)


def test_style_transfer_needs_genre(make_ctx, tmp_path: Path) -> None:
    src = tone_wav(tmp_path / "a.wav", seconds=1.0, sample_rate=8000)
    with pytest.raises(ParameterError):
        MelodyStyleTransfer().run("style_transfer", {}, {"audio": src}, make_ctx()[0])
