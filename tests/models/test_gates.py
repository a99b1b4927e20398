"""Quality gates on synthetic signals: each defect fails its own gate and only that one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import analysis
from app.models import gates
from tests.models.orchestra_backends import SR, synth_music


def _by_name(results: list[gates.GateResult]) -> dict[str, gates.GateResult]:
    return {r.name: r for r in results}


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    return synth_music(3.0, 11)


def _gates(x: np.ndarray, requested_s: float | None = 3.0) -> dict[str, gates.GateResult]:
    return _by_name(gates.generated_gates("unused", requested_s=requested_s, analysis_result=analysis.analyze(x, SR),
                                          clap_skipped_reason="CLAP weights missing"))


def test_music_like_signal_passes_every_gate(music: np.ndarray) -> None:
    res = _gates(music)
    assert gates.all_passed(list(res.values()))
    ran = {k: r for k, r in res.items() if k != "prompt_adherence"}
    assert all(r.passed for r in ran.values()), [r.detail for r in ran.values() if not r.passed]
    assert res["prompt_adherence"].skipped and not res["prompt_adherence"].passed  # skipped, never passed
    assert gates.summary(list(res.values())).endswith("prompt adherence: skipped (CLAP weights missing)")
    assert res["prompt_adherence"].detail == "skipped: CLAP weights missing"
    assert res["prompt_adherence"].value is None


def test_silence_fails_silence_and_loudness(music: np.ndarray) -> None:
    res = _gates(np.zeros_like(music))
    assert not res["silence"].passed and res["silence"].detail == "the audio is silent"
    assert not res["loudness"].passed
    assert res["duration"].passed and res["clipping"].passed


def test_mostly_silent_fails(music: np.ndarray) -> None:
    x = music.copy()
    x[:, : int(0.7 * x.shape[1])] = 0.0
    res = _gates(x)
    assert not res["silence"].passed
    assert res["silence"].value == pytest.approx(0.7, abs=0.05)


def test_clipped_signal_fails_clipping_and_true_peak(music: np.ndarray) -> None:
    x = np.clip(music * 8.0, -1.0, 1.0)
    res = _gates(x)
    assert not res["clipping"].passed
    assert res["clipping"].value > gates.CLIPPING_MAX_SAMPLE_FRACTION
    assert res["silence"].passed and res["duration"].passed


def test_float_overs_fail_true_peak(music: np.ndarray) -> None:
    res = _gates(music * 4.0)  # peaks at +6 dBFS in a float file (the engine counts those as clipped too)
    assert not res["true_peak"].passed
    assert res["true_peak"].value > gates.GENERATED_TRUE_PEAK_MAX_DBTP
    assert res["duration"].passed and res["spectral_balance"].passed


def test_too_loud_fails_loudness(music: np.ndarray) -> None:
    # a full-scale square wave: no clipping runs at 0.99, but far too loud and too bright
    t = np.arange(music.shape[1]) / SR
    sq = 0.99 * np.sign(np.sin(2 * np.pi * 220 * t))
    res = _gates(np.stack([sq, sq]).astype(np.float32))
    assert not res["loudness"].passed
    assert res["loudness"].value > gates.GENERATED_LOUDNESS_MAX_LUFS


@pytest.mark.parametrize(
    ("psd_slope_db_per_oct", "ok"),
    [(-6.0, True), (-3.0, True), (0.0, False), (-16.0, False)],  # music-like, pink, white (hiss), rumble
)
def test_spectral_tilt(psd_slope_db_per_oct: float, ok: bool) -> None:
    rng = np.random.default_rng(0)
    n = SR * 3
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    y = np.fft.irfft(spec * f ** (psd_slope_db_per_oct / (20 * np.log10(2))), n)
    y = 0.3 * y / np.abs(y).max()
    res = _gates(np.stack([y, y]).astype(np.float32))
    assert res["spectral_balance"].passed is ok, res["spectral_balance"].detail
    tilt = res["spectral_balance"].value["tilt_db_per_oct"]
    # 1/3-octave band power grows 3 dB/oct faster than the power spectral density
    if psd_slope_db_per_oct > -10:
        assert tilt == pytest.approx(psd_slope_db_per_oct + 3.0, abs=0.6)


def test_pure_tone_fails_band_share() -> None:
    t = np.arange(SR * 2) / SR
    y = 0.5 * np.sin(2 * np.pi * 1000 * t)
    res = _gates(np.stack([y, y]).astype(np.float32), requested_s=None)
    assert not res["spectral_balance"].passed
    assert res["spectral_balance"].value["mid"] > gates.SPECTRAL_MAX_BAND_SHARE
    assert res["duration"].skipped and not res["duration"].passed  # skipped is never passed


@pytest.mark.parametrize(("requested_s", "ok"), [(3.0, True), (3.4, True), (5.0, False), (2.0, False)])
def test_duration(music: np.ndarray, requested_s: float, ok: bool) -> None:
    assert _gates(music, requested_s)["duration"].passed is ok


def test_prompt_adherence_judges_a_given_score() -> None:
    assert gates.prompt_adherence_gate(0.35).passed
    bad = gates.prompt_adherence_gate(0.05)
    assert not bad.passed and not bad.skipped


def test_master_gates_and_file_path(tmp_path: Path, music: np.ndarray) -> None:
    p = tmp_path / "m.wav"
    sf.write(p, music.T, SR, subtype="FLOAT")
    a = gates.analyze_path(p)
    res = _by_name(gates.master_gates(p, target_lufs=a.integrated_lufs, ceiling_dbtp=-1.0))
    assert res["loudness_target"].passed and res["true_peak"].passed
    res = _by_name(gates.master_gates(p, target_lufs=-14.0, ceiling_dbtp=-8.0))
    assert not res["loudness_target"].passed  # ~-18 LUFS is not within 0.2 LU of -14
    assert not res["true_peak"].passed  # -6 dBTP is over an -8 dBTP ceiling
    d = res["spectral_balance"].to_dict()
    assert set(d) == {"name", "passed", "value", "threshold", "detail", "skipped"}
