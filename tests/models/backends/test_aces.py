"""ACES slot: each DSP repair measurably improves synthetic damage; the backend masters the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import analysis
from app.models.backends import aces
from app.models.backends.base import Cancelled

SR = 44100


def _db(x: float) -> float:
    return float(20 * np.log10(x))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _music(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Two partials with a slow vibrato and a little noise, ``(frames,)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    vib = 0.002 * np.sin(2 * np.pi * 5 * t)
    x = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + vib)) + 0.2 * np.sin(2 * np.pi * 523.25 * t + 1)
    return x + 0.002 * rng.standard_normal(t.size)


def test_status_is_dsp_and_ready() -> None:
    st = aces.DspEnhancer().status(device="cpu", find_weights=lambda s: None)
    assert (
        st.state == "ready"
        and "DSP only" in st.detail
        and "no learned-enhancement weights" in st.detail
    )


def test_declip_restores_peaks() -> None:
    t = np.arange(SR) / SR
    clean = 0.6 * np.sin(2 * np.pi * 220 * t) + 0.4 * np.sin(2 * np.pi * 331 * t + 1)
    clean *= 1.5 / np.abs(clean).max()  # 3.5 dB over full scale
    clipped = np.clip(clean, -1.0, 1.0)
    fixed, n = aces.declip(clipped[None])
    over = np.abs(clean) > 1.0
    assert n == pytest.approx(int(over.sum()), rel=0.02)
    err_before = _rms((clipped - clean)[over])
    err_after = _rms((fixed[0] - clean)[over])
    assert _db(err_after) < _db(err_before) - 20  # reconstruction error down by > 20 dB
    assert _db(np.abs(fixed).max()) == pytest.approx(_db(1.5), abs=0.5)  # peaks back within 0.5 dB
    below = np.abs(clipped) < 0.999
    np.testing.assert_allclose(
        fixed[0][below], clipped[below], atol=1e-6
    )  # unclipped samples untouched


def test_declip_leaves_unclipped_audio_alone() -> None:
    x = _music()[None] * 0.9
    y, n = aces.declip(x)
    assert n == 0
    np.testing.assert_allclose(y, x, atol=1e-7)


def _clicky(x: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add ``count`` sharp clicks (1-8 samples, 0.15-0.5 amplitude); returns (damaged, click starts)."""
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(np.arange(2000, x.size - 2000, 500), count, replace=False))
    d = x.copy()
    for s in starts:
        length = int(rng.integers(1, 9))
        d[s : s + length] += (
            rng.choice([-1, 1]) * rng.uniform(0.15, 0.5) * rng.uniform(0.5, 1.0, length)
        )
    return d, starts


def test_declick_removes_clicks() -> None:
    x = _music()
    d, starts = _clicky(x, 25, seed=1)
    y, n = aces.declick(d[None], SR)
    assert n >= 23  # nearly all found ...
    assert n <= 27  # ... and not many false ones
    err_before, err_after = _rms(d - x), _rms(y[0] - x)
    assert _db(err_after) < _db(err_before) - 15
    for s in starts:  # no click survives above the signal's own level
        assert np.abs(y[0, s - 5 : s + 15] - x[s - 5 : s + 15]).max() < 0.1


def test_declick_clean_audio_untouched() -> None:
    x = _music(seed=3)
    y, n = aces.declick(x[None], SR)
    assert n <= 1
    assert np.mean(np.abs(y[0] - x) > 1e-4) < 1e-4


def test_denoise_raises_snr() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(3 * SR) / SR
    gate = ((t % 0.75) < 0.5).astype(float)  # notes with pauses: the pauses give the noise profile
    clean = gate * (0.3 * np.sin(2 * np.pi * 330 * t) + 0.15 * np.sin(2 * np.pi * 660 * t))
    noisy = clean + 0.02 * rng.standard_normal(t.size)  # about -34 dBFS white noise
    res = aces.denoise(np.stack([noisy, noisy]), SR)
    assert res.applied
    snr = lambda est: _db(_rms(clean) / _rms(est - clean))  # noqa: E731
    assert snr(res.audio[0]) > snr(noisy) + 10
    assert res.noise_floor_after_db < res.noise_floor_before_db - 15


def test_denoise_skips_without_quiet_passage() -> None:
    x = _music()[None]
    res = aces.denoise(x, SR)
    assert not res.applied and "skipped" in res.detail
    np.testing.assert_array_equal(res.audio, x.astype(np.float32))


def test_corrective_eq_removes_hum_and_dc() -> None:
    t = np.arange(2 * SR) / SR
    x = _music() + 0.05 * np.sin(2 * np.pi * 50 * t) + 0.1
    y, info = aces.corrective_eq(x[None], SR)
    assert info["hum_hz"] == 50.0
    spec = np.abs(np.fft.rfft(y[0, SR // 2 : SR // 2 + SR]))
    before = np.abs(np.fft.rfft(x[SR // 2 : SR // 2 + SR] - x.mean()))
    assert _db(spec[50] / before[50]) < -20  # hum down by more than 20 dB
    assert abs(float(y.mean())) < 1e-3
    assert _db(spec[220] / before[220]) == pytest.approx(0, abs=0.5)  # music untouched


def _damaged_file(path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    t = np.arange(4 * SR) / SR
    gate = ((t % 1.0) < 0.7).astype(float)
    clean = gate * _music(4.0) * 2.5
    d, _ = _clicky(clean, 10, seed=4)
    d = np.clip(d + 0.01 * rng.standard_normal(t.size), -0.8, 0.8)
    sf.write(path, np.stack([d, d], 1).astype(np.float32), SR, subtype="FLOAT")
    return path, clean


def test_enhance_backend_end_to_end(make_ctx, tmp_path: Path) -> None:
    src, _ = _damaged_file(tmp_path / "damaged.wav")
    ctx, rec = make_ctx()
    out = aces.DspEnhancer().run(
        "enhance",
        {"target": "streaming", "style": "balanced", "level": "light"},
        {"audio": src},
        ctx,
    )
    m = out.metrics
    assert m["clipped_samples_fixed"] > 100 and m["clicks_fixed"] >= 8
    assert m["noise_floor_after_db"] < m["noise_floor_before_db"] - 10
    assert m["loudness_lufs"] == pytest.approx(-14.0, abs=0.5) and m["true_peak_dbtp"] <= -0.9
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert sr == SR and analysis.integrated_loudness(y.T.astype(np.float32), sr) == pytest.approx(
        -14.0, abs=0.5
    )
    assert out.outputs["repaired"].is_file()
    fr = [f for f, _, _ in rec.calls]
    assert fr == sorted(fr) and fr[-1] == 1.0


def test_enhance_cancel(make_ctx, tmp_path: Path) -> None:
    src, _ = _damaged_file(tmp_path / "damaged.wav")
    ctx, _ = make_ctx(cancel_at=0.2)
    with pytest.raises(Cancelled):
        aces.DspEnhancer().run("enhance", {}, {"audio": src}, ctx)
    assert not (ctx.work_dir / "enhanced.wav").exists()
