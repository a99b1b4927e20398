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
    survivors = [s for s in starts if np.abs(y[0, s - 5 : s + 15] - x[s - 5 : s + 15]).max() >= 0.1]
    assert len(survivors) <= 2  # at most two of the weakest clicks left


def test_declick_clean_audio_untouched() -> None:
    x = _music(seed=3)
    y, n = aces.declick(x[None], SR)
    assert n <= 1
    assert np.mean(np.abs(y[0] - x) > 1e-4) < 1e-4


def test_denoise_raises_snr() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(8 * SR) / SR
    gate = ((t % 0.75) < 0.5).astype(float)  # notes with pauses
    clean = gate * (0.3 * np.sin(2 * np.pi * 330 * t) + 0.15 * np.sin(2 * np.pi * 660 * t))
    noisy = clean + 0.02 * rng.standard_normal((2, t.size))  # about -34 dBFS white noise
    res = aces.denoise(noisy, SR)
    assert res.applied, res.detail
    snr = lambda est: _db(_rms(clean) / _rms(est - clean))  # noqa: E731
    assert snr(res.audio[0]) > snr(noisy[0]) + 4
    assert res.noise_floor_before_db == pytest.approx(-34, abs=3)  # the estimate finds the real level
    assert res.noise_floor_after_db < res.noise_floor_before_db - 6  # noise let through by the gains


def _program(seconds: float = 10.0) -> np.ndarray:
    from tests import material

    x, sr = sf.read(material.program(seconds, SR, seed=0, style="pop"), dtype="float32", always_2d=True)
    assert sr == SR
    return np.ascontiguousarray(x.T)


def test_clean_music_passes_bit_identical() -> None:
    """Do no harm: a clean rendered mix is not denoised, de-clicked or de-clipped at all."""
    x = _program()
    est = aces.estimate_noise(x)
    assert not est.present and "music, not a steady noise" in est.detail
    y, rep = aces.repair(x, SR)
    assert y is x and not rep.changed
    assert rep.metrics["clicks_fixed"] == 0 and rep.metrics["clipped_samples_fixed"] == 0
    assert rep.notes[-1] == "nothing repaired: the input passes through unchanged"


def test_declip_finds_noisy_plateaus_at_any_level() -> None:
    """Clipped at -12 dBFS, then white noise at -40 dBFS: the plateaus are not exactly flat."""
    x = _program()[0]
    x = x / np.abs(x).max()
    level = 10 ** (-12 / 20)
    rng = np.random.default_rng(3)
    d = np.clip(x, -level, level) + 0.01 * rng.standard_normal(x.size)
    found = aces.detect_clip_levels(d)
    assert {lv.sign for lv in found} == {1, -1}
    for lv in found:
        assert lv.noisy and lv.level == pytest.approx(level, rel=0.03)
        assert lv.tolerance / 3 == pytest.approx(0.01, rel=0.3)  # the spread is the added noise
    assert aces.detect_clip_levels(x + 0.01 * rng.standard_normal(x.size)) == []  # noise alone: no clip


def test_declip_reconstruction_never_overshoots() -> None:
    x = _program()[0]
    x = x / np.abs(x).max()
    level = 10 ** (-6 / 20)
    fixed, n = aces.declip(np.clip(x, -level, level)[None])
    assert n > 100
    cap = level * 10 ** (aces.MAX_DECLIP_OVERSHOOT_DB / 20)
    assert np.abs(fixed).max() <= cap + 1e-6
    assert _rms(fixed[0] - x) < _rms(np.clip(x, -level, level) - x)  # closer to the truth


def test_corrective_eq_removes_hum_and_dc() -> None:
    seconds = 10.0
    t = np.arange(int(seconds * SR)) / SR
    x = _music(seconds) + 0.05 * np.sin(2 * np.pi * 50 * t) + 0.1
    y, info = aces.corrective_eq(x[None], SR)
    assert info["hum_hz"] == 50.0
    spec = np.abs(np.fft.rfft(y[0, SR : 2 * SR]))
    before = np.abs(np.fft.rfft(x[SR : 2 * SR] - x.mean()))
    assert _db(spec[50] / before[50]) < -20  # hum down by more than 20 dB
    assert abs(float(y.mean())) < 1e-3
    assert _db(spec[220] / before[220]) == pytest.approx(0, abs=0.5)  # music untouched


def test_corrective_eq_leaves_clean_music_alone() -> None:
    x = _program()
    y, info = aces.corrective_eq(x, SR)
    assert info["hum_hz"] is None and info["dc_removed"] == [0.0, 0.0]
    np.testing.assert_array_equal(y, x)


def _snr(ref: np.ndarray, est: np.ndarray) -> float:
    return _db(_rms(ref) / _rms(ref - est))


def _damaged_file(path: Path) -> tuple[Path, np.ndarray]:
    """A rendered mix peaking at 0 dBFS, clipped at -6 dBFS, then 10 clicks and -40 dBFS white noise."""
    clean = _program()
    clean = clean / np.abs(clean).max()
    clipped = np.clip(clean, -0.5, 0.5)
    d, _ = _clicky(clipped[0], 10, seed=4)
    d = np.stack([d, clipped[1] + (d - clipped[0])])
    rng = np.random.default_rng(5)
    d = d + 0.01 * rng.standard_normal(d.shape)
    sf.write(path, d.T.astype(np.float32), SR, subtype="FLOAT")
    return path, clean


def test_enhance_backend_end_to_end(make_ctx, tmp_path: Path) -> None:
    src, clean = _damaged_file(tmp_path / "damaged.wav")
    ctx, rec = make_ctx()
    out = aces.DspEnhancer().run(
        "enhance",
        {"target": "streaming", "style": "balanced", "level": "light"},
        {"audio": src},
        ctx,
    )
    m = out.metrics
    # clicks under 25x the local residual (0.25 over this noise) are left alone by design
    assert m["clipped_samples_fixed"] > 100 and m["clicks_fixed"] >= 1
    assert m["noise_floor_after_dbfs"] < m["noise_floor_before_dbfs"] - 6
    assert m["repaired"] and "steady noise floor" in m["denoise"]
    assert m["clipped_samples_before"] >= m["clipped_samples_fixed"]  # noisy plateaus counted too
    damaged = sf.read(src, dtype="float32", always_2d=True)[0].T
    repaired = sf.read(out.outputs["repaired"], dtype="float32", always_2d=True)[0].T
    assert _snr(clean, repaired) > _snr(clean, damaged) + 1.5  # measured against the clean source
    assert m["loudness_lufs"] == pytest.approx(-14.0, abs=0.5) and m["true_peak_dbtp"] <= -0.9
    y, sr = sf.read(out.outputs["audio"], always_2d=True)
    assert sr == SR and analysis.integrated_loudness(y.T.astype(np.float32), sr) == pytest.approx(
        -14.0, abs=0.5
    )
    fr = [f for f, _, _ in rec.calls]
    assert fr == sorted(fr) and fr[-1] == 1.0


def test_enhance_clean_input_says_why(make_ctx, tmp_path: Path) -> None:
    src = tmp_path / "clean.wav"
    x = _program()
    sf.write(src, x.T, SR, subtype="FLOAT")
    ctx, _ = make_ctx()
    out = aces.DspEnhancer().run("enhance", {"steps": ["declip", "declick", "denoise", "eq"]}, {"audio": src}, ctx)
    assert out.metrics["repaired"] is False
    assert out.metrics["repair_summary"].startswith("no repair needed: no clipping found; no clicks found")
    y = sf.read(out.outputs["audio"], dtype="float32", always_2d=True)[0].T
    np.testing.assert_array_equal(y, x)


def test_enhance_cancel(make_ctx, tmp_path: Path) -> None:
    src, _ = _damaged_file(tmp_path / "damaged.wav")
    ctx, _ = make_ctx(cancel_at=0.2)
    with pytest.raises(Cancelled):
        aces.DspEnhancer().run("enhance", {}, {"audio": src}, ctx)
    assert not (ctx.work_dir / "enhanced.wav").exists()
