"""The listening benchmark's metrics (benchmarks/sound_metrics.py) on synthetic signals whose
answer is known: each test fails if a definition drifts."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from scipy import signal

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import sound_metrics as sm

SR = 44100


def _music(seconds: float = 20.0, sr: int = SR, seed: int = 1) -> np.ndarray:
    """Stereo low-passed noise with a 160 bpm 'kick' envelope: broadband, rhythmic, not static."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sr)
    t = np.arange(n) / sr
    b, a = signal.butter(1, 2000, fs=sr)
    x = signal.lfilter(b, a, rng.standard_normal((n, 2)), axis=0) * 0.1
    return x * (0.5 + np.exp(-(t % 0.375) * 20))[:, None]


def _gain_db(seconds: float, sr: int, depth_db: float, rate_hz: float) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return -depth_db / 2 * (1 + np.cos(2 * np.pi * rate_hz * t))


def test_beat_rate_modulation_reads_the_theoretical_rms_of_a_known_modulation() -> None:
    x = _music()
    g = 10 ** (_gain_db(20, SR, 3.0, 2.66) / 20)[:, None]
    # 3 dB peak-to-peak sine in dB: rms 1.5 / sqrt(2) = 1.061 dB
    assert sm.beat_rate_modulation(x, SR, x * g, SR) == pytest.approx(1.5 / np.sqrt(2), rel=0.05)
    g6 = 10 ** (_gain_db(20, SR, 6.0, 2.66) / 20)[:, None]
    assert sm.beat_rate_modulation(x, SR, x * g6, SR) == pytest.approx(3 / np.sqrt(2), rel=0.05)


def test_beat_rate_modulation_ignores_static_gain_eq_delay_and_resampling() -> None:
    x = _music()
    assert sm.beat_rate_modulation(x, SR, x * 0.25, SR) < 0.02
    b, a = signal.butter(2, [500, 3000], btype="bandpass", fs=SR)
    eq = 0.5 * x + signal.lfilter(b, a, x, axis=0)  # a +6 dB presence bump, a -6 dB rest
    assert sm.beat_rate_modulation(x, SR, eq, SR) < 0.05
    g = 10 ** (_gain_db(20, SR, 3.0, 2.66) / 20)[:, None]
    delayed = np.concatenate([np.zeros((300, 2)), x * g])[: len(x)]
    resampled = signal.resample_poly(x * g, 160, 147, axis=0)  # 44.1 -> 48 kHz
    assert sm.beat_rate_modulation(x, SR, delayed, SR) == pytest.approx(1.061, rel=0.05)
    assert sm.beat_rate_modulation(x, SR, resampled, 48000) == pytest.approx(1.061, rel=0.05)


def test_beat_rate_modulation_leaves_out_slow_fades() -> None:
    x = _music(30)
    fade = np.linspace(0.0, -6.0, len(x))  # 6 dB over 30 s: 0.03 Hz, below the band
    assert sm.beat_rate_modulation(x, SR, x * (10 ** (fade / 20))[:, None], SR) < 0.05


def test_section_contrast_reads_a_quiet_intro() -> None:
    x = _music(60)
    intro = x.copy()
    intro[: 20 * SR] *= 10 ** (-10 / 20)  # two 10 s sections 10 dB down
    assert sm.section_contrast(intro, SR) == pytest.approx(10.0, abs=0.2)
    assert sm.section_contrast(x, SR) < 0.3
    # a section 30 dB down is under the -20 LU relative gate: left out
    fade = x.copy()
    fade[-10 * SR :] *= 10 ** (-30 / 20)
    assert sm.section_contrast(fade, SR) < 0.3


def test_k_weighted_loudness_agrees_with_libebur128() -> None:
    x = _music(20)
    _, _, integrated = sm.section_loudness(x, SR)
    assert integrated == pytest.approx(sm.loudness(x, SR).integrated_lufs, abs=0.05)
    x48 = _music(20, 48000)
    _, _, integrated48 = sm.section_loudness(x48, 48000)
    assert integrated48 == pytest.approx(sm.loudness(x48, 48000).integrated_lufs, abs=0.05)


def test_low_end_correlation() -> None:
    x = _music()
    assert abs(sm.low_end_correlation(x, SR)) < 0.1  # independent channels
    assert sm.low_end_correlation(np.c_[x[:, 0], x[:, 0]], SR) == pytest.approx(1.0)
    assert sm.low_end_correlation(np.c_[x[:, 0], -x[:, 0]], SR) == pytest.approx(-1.0)


def test_spectrum_distance_ignores_level_and_sees_tone_and_width() -> None:
    x = _music()
    ref = sm.band_spectra(x, SR)
    mid, side = sm.spectrum_distance(sm.band_spectra(x * 3, SR), ref)
    assert mid < 1e-6 and side < 1e-6
    # a high-frequency lift is a tone change of the mid and of the side
    sos = signal.butter(4, 2000, btype="highpass", fs=SR, output="sos")
    brighter = x + signal.sosfilt(sos, x, axis=0)
    mid, side = sm.spectrum_distance(sm.band_spectra(brighter, SR), ref)
    assert mid > 1.0 and side > 1.0
    # narrower: side -6 dB, mid unchanged
    m, s = 0.5 * (x[:, 0] + x[:, 1]), 0.5 * (x[:, 0] - x[:, 1])
    narrow = np.c_[m + 0.5 * s, m - 0.5 * s]
    mid, side = sm.spectrum_distance(sm.band_spectra(narrow, SR), ref)
    assert mid < 0.01
    assert side == pytest.approx(6.02, abs=0.05)
    # exactly mono: the side is floored at 60 dB under the mid, not at -inf
    _, side_mono = sm.band_spectra(np.c_[m, m], SR)
    assert np.all(side_mono == sm.BAND_FLOOR_DB)
