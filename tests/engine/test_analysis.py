"""Tests of app.engine.analysis: loudness, true peak, spectrum, musical analysis.

The EBU test signals are synthesised here from their definitions (EBU Tech 3341
v4 Table 1 cases 1-6, 9, 12, 15-19; EBU Tech 3342 cases 1-4), never downloaded,
and checked at 44.1, 48 and 96 kHz with the documents' tolerances: M/S/I
+-0.1 LU, LRA +-1 LU, true peak +0.2/-0.4 dB.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pyebur128
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import analysis as an
from app.engine.errors import AudioInputError, ParameterError

RATES_HZ = (44_100, 48_000, 96_000)
LU_TOL = 0.1
LRA_TOL = 1.0
TP_TOL_HIGH_DB = 0.2
TP_TOL_LOW_DB = 0.4
BLOCK_SIZES = (1, 64, 65, 8192, 8193)


# ----------------------------------------------------------------------------- signals


def tone_segments(
    sample_rate: int,
    segments: list[tuple[float, float]],
    *,
    channels: int = 2,
    freq_hz: float = 1000.0,
) -> np.ndarray:
    """Continuous-phase sine, segment k lasting round(d_k * sr) frames at level_k dBFS (peak)."""
    lengths = [round(duration * sample_rate) for duration, _ in segments]
    gains = np.repeat([an.db_to_gain(level) for _, level in segments], lengths)
    n = int(sum(lengths))
    sine = np.sin(2.0 * np.pi * freq_hz * np.arange(n) / sample_rate) * gains
    return np.tile(sine.astype(np.float32), (channels, 1))


def faded_sine(
    sample_rate: int, *, cycles_per_sample: float, amplitude: float, phase_deg: float
) -> np.ndarray:
    """1 s stereo sine with 20 ms raised-cosine fades.

    The fades model the steady-state tones of Tech 3341 cases 15-19: an abrupt
    start would add a band-limited step whose ringing (Gibbs) is a real
    inter-sample peak up to +0.7 dB above the tone (libebur128 reads it too).
    """
    n = sample_rate
    fade = int(0.02 * sample_rate)
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    env[:fade] = ramp
    env[-fade:] = ramp[::-1]
    sine = (
        amplitude
        * np.sin(2.0 * np.pi * cycles_per_sample * np.arange(n) + np.deg2rad(phase_deg))
        * env
    )
    return np.tile(sine.astype(np.float32), (2, 1))


def music_like(sample_rate: int, duration_s: float, seed: int) -> np.ndarray:
    """Stereo chords with harmonics, panned, plus noise 'drum' hits, in sections of varying level."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * duration_s)
    t = np.arange(n) / sample_rate
    out = np.zeros((2, n))
    for start in np.arange(0.0, duration_s, 2.0):
        i0, i1 = int(start * sample_rate), min(n, int((start + 2.0) * sample_rate))
        tt = t[i0:i1] - start
        root = 110.0 * 2.0 ** (rng.integers(0, 12) / 12)
        chord = np.zeros(i1 - i0)
        for ratio in (1.0, 1.26, 1.5, 2.0):
            for h in range(1, 6):
                chord += np.sin(2 * np.pi * root * ratio * h * tt + rng.uniform(0, 2 * np.pi)) / h
        chord *= np.minimum(1.0, tt / 0.02) * np.exp(-tt * 0.8)
        pan = rng.uniform(0.3, 0.7)
        out[0, i0:i1] += chord * pan
        out[1, i0:i1] += chord * (1 - pan)
    hit = int(0.2 * sample_rate)
    for beat in np.arange(0.0, duration_s, 0.5):
        i0 = int(beat * sample_rate)
        m = min(n - i0, hit)
        out[:, i0 : i0 + m] += (
            0.8 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.03 * sample_rate))
        )
    sections = 10.0 ** (rng.uniform(-12, 0, int(np.ceil(duration_s / 4))) / 20)
    out *= np.repeat(sections, int(4 * sample_rate))[:n]
    return (out * (0.5 / np.abs(out).max())).astype(np.float32)


def enveloped_noise(
    sample_rate: int, duration_s: float, seed: int, *, channels: int = 2
) -> np.ndarray:
    """Gaussian noise whose level jumps every second (-26..0 dB)."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * duration_s)
    env = np.repeat(10.0 ** (rng.uniform(-26, 0, int(np.ceil(duration_s))) / 20), sample_rate)[:n]
    return (rng.standard_normal((channels, n)) * 0.1 * env).astype(np.float32)


def ebur128_reference(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Integrated loudness, LRA and true peak (dBTP) from libebur128 (pyebur128)."""
    modes = pyebur128.MeasurementMode
    state = pyebur128.R128State(
        audio.shape[0], sample_rate, modes.MODE_I | modes.MODE_LRA | modes.MODE_TRUE_PEAK
    )
    state.add_frames(np.ascontiguousarray(audio.T, dtype=np.float64).ravel(), audio.shape[1])
    peak = max(pyebur128.get_true_peak(state, c) for c in range(audio.shape[0]))
    return {
        "integrated_lufs": pyebur128.get_loudness_global(state),
        "loudness_range_lu": pyebur128.get_loudness_range(state),
        "true_peak_dbtp": float(an.gain_to_db(peak)),
    }


def libebur128_style_lra(short_term_powers: np.ndarray) -> float:
    """LRA as libebur128 computes it: 3 s windows every 1 s, nearest-rank percentiles."""
    z = short_term_powers[::10]  # windows ending at 3, 4, 5 ... s
    z = z[z > an._lufs_to_power(-70.0)]
    gate = an._lufs_to_power(float(an._power_to_lufs(z.mean())) - 20.0)
    levels = np.sort(an._power_to_lufs(z[z > gate]))
    low = levels[int((levels.shape[0] - 1) * 0.10 + 0.5)]
    high = levels[int((levels.shape[0] - 1) * 0.95 + 0.5)]
    return float(high - low)


def measure(audio: np.ndarray, sample_rate: int) -> an.LoudnessMeter:
    meter = an.LoudnessMeter(sample_rate, audio.shape[0])
    meter.process(audio)
    return meter


@pytest.fixture(scope="module")
def music_48k() -> np.ndarray:
    return music_like(48_000, 30.0, seed=3)


# ----------------------------------------------------------------------------- K-weighting


def test_k_weighting_reproduces_bs1770_tables_at_48k() -> None:
    sos = an.k_weighting_sos(48_000)
    np.testing.assert_allclose(sos[0, [0, 1, 2, 4, 5]], an._BS1770_SHELF_48K, atol=2e-9)
    np.testing.assert_allclose(sos[1, [4, 5]], an._BS1770_HIGHPASS_48K[3:], atol=1e-12)
    np.testing.assert_allclose(sos[1, :3], [1.0, -2.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("sample_rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000])
def test_1khz_tone_reads_the_same_at_every_rate(sample_rate: int) -> None:
    audio = tone_segments(sample_rate, [(5.0, -23.0)])
    meter = measure(audio, sample_rate)
    assert meter.integrated_lufs == pytest.approx(-23.0, abs=0.05)
    np.testing.assert_allclose(meter.momentary_lufs, -23.0, atol=0.05)


# ----------------------------------------------------------------------------- EBU Tech 3341

EBU_3341_STEREO = {
    1: [(20.0, -23.0)],
    2: [(20.0, -33.0)],
    3: [(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)],
    4: [(10.0, -72.0), (10.0, -36.0), (60.0, -23.0), (10.0, -36.0), (10.0, -72.0)],
    5: [(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)],
}


@pytest.mark.parametrize("sample_rate", RATES_HZ)
@pytest.mark.parametrize("case", [1, 2])
def test_ebu_3341_cases_1_2_momentary_short_term_integrated(sample_rate: int, case: int) -> None:
    expected = {1: -23.0, 2: -33.0}[case]
    meter = measure(tone_segments(sample_rate, EBU_3341_STEREO[case]), sample_rate)
    np.testing.assert_allclose(meter.momentary_lufs, expected, atol=LU_TOL)
    np.testing.assert_allclose(meter.short_term_lufs, expected, atol=LU_TOL)
    assert meter.integrated_lufs == pytest.approx(expected, abs=LU_TOL)
    assert meter.momentary_max_lufs == pytest.approx(expected, abs=LU_TOL)
    assert meter.short_term_max_lufs == pytest.approx(expected, abs=LU_TOL)


@pytest.mark.parametrize("sample_rate", RATES_HZ)
@pytest.mark.parametrize("case", [3, 4, 5])
def test_ebu_3341_cases_3_4_5_gating(sample_rate: int, case: int) -> None:
    meter = measure(tone_segments(sample_rate, EBU_3341_STEREO[case]), sample_rate)
    assert meter.integrated_lufs == pytest.approx(-23.0, abs=LU_TOL)


@pytest.mark.parametrize("sample_rate", RATES_HZ)
def test_ebu_3341_case_6_five_channels(sample_rate: int) -> None:
    # L, R at -28 dBFS, C at -24 dBFS, Ls, Rs at -30 dBFS (order L R C Ls Rs).
    levels = [-28.0, -28.0, -24.0, -30.0, -30.0]
    audio = np.concatenate([tone_segments(sample_rate, [(20.0, lv)], channels=1) for lv in levels])
    assert measure(audio, sample_rate).integrated_lufs == pytest.approx(-23.0, abs=LU_TOL)
    # The 6-channel WAVE_FORMAT_EXTENSIBLE variant: 5.1 with a silent LFE in slot 4.
    six = np.insert(audio, 3, np.zeros(audio.shape[1], dtype=np.float32), axis=0)
    assert measure(six, sample_rate).integrated_lufs == pytest.approx(-23.0, abs=LU_TOL)


@pytest.mark.parametrize("sample_rate", RATES_HZ)
def test_ebu_3341_case_9_short_term_constant_after_3s(sample_rate: int) -> None:
    audio = tone_segments(sample_rate, [(1.34, -20.0), (1.66, -30.0)] * 5)
    meter = measure(audio, sample_rate)
    short_term = meter.short_term_lufs  # value 0 is the window ending at 3 s
    assert short_term.shape[0] == 121
    np.testing.assert_allclose(short_term, -23.0, atol=LU_TOL)


@pytest.mark.parametrize("sample_rate", RATES_HZ)
def test_ebu_3341_case_12_momentary_constant_after_1s(sample_rate: int) -> None:
    audio = tone_segments(sample_rate, [(0.18, -20.0), (0.22, -30.0)] * 25)
    momentary = measure(audio, sample_rate).momentary_lufs
    np.testing.assert_allclose(momentary[6:], -23.0, atol=LU_TOL)  # windows ending at >= 1 s


TP_CASES = {
    # case: (frequency as a fraction of fs, amplitude, phase in degrees, expected dBTP)
    15: (1 / 4, 0.50, 0.0, -6.0),
    16: (1 / 4, 0.50, 45.0, -6.0),
    17: (1 / 6, 0.50, 60.0, -6.0),
    18: (1 / 8, 0.50, 67.5, -6.0),
    19: (1 / 4, 1.41, 45.0, 3.0),
}


@pytest.mark.parametrize("sample_rate", RATES_HZ)
@pytest.mark.parametrize("case", sorted(TP_CASES))
def test_ebu_3341_true_peak_cases_15_to_19(sample_rate: int, case: int) -> None:
    fraction, amplitude, phase, expected = TP_CASES[case]
    audio = faded_sine(
        sample_rate, cycles_per_sample=fraction, amplitude=amplitude, phase_deg=phase
    )
    measured = an.gain_to_db(an.true_peak(audio, sample_rate))
    assert expected - TP_TOL_LOW_DB <= measured <= expected + TP_TOL_HIGH_DB
    if case != 15:  # the sample peak alone would miss these
        assert an.gain_to_db(np.abs(audio).max()) < expected - TP_TOL_LOW_DB


# ----------------------------------------------------------------------------- EBU Tech 3342

EBU_3342 = {
    1: ([(20.0, -20.0), (20.0, -30.0)], 10.0),
    2: ([(20.0, -20.0), (20.0, -15.0)], 5.0),
    3: ([(20.0, -40.0), (20.0, -20.0)], 20.0),
    4: ([(20.0, -50.0), (20.0, -35.0), (20.0, -20.0), (20.0, -35.0), (20.0, -50.0)], 15.0),
}


@pytest.mark.parametrize("sample_rate", RATES_HZ)
@pytest.mark.parametrize("case", sorted(EBU_3342))
def test_ebu_3342_loudness_range(sample_rate: int, case: int) -> None:
    segments, expected = EBU_3342[case]
    audio = tone_segments(sample_rate, segments)
    assert an.loudness_range(audio, sample_rate) == pytest.approx(expected, abs=LRA_TOL)


# ----------------------------------------------------------------------------- agreement with libebur128


@pytest.mark.parametrize("sample_rate", [44_100, 48_000])
@pytest.mark.parametrize("kind", ["noise", "music"])
def test_agrees_with_pyebur128(sample_rate: int, kind: str) -> None:
    audio = (
        enveloped_noise(sample_rate, 30.0, seed=11)
        if kind == "noise"
        else music_like(sample_rate, 30.0, seed=5)
    )
    ref = ebur128_reference(audio, sample_rate)
    meter = measure(audio, sample_rate)
    # The filters are libebur128's at every rate (the same within 3e-12 relative).
    assert meter.integrated_lufs == pytest.approx(ref["integrated_lufs"], abs=0.01)
    assert libebur128_style_lra(meter.short_term_powers) == pytest.approx(
        ref["loudness_range_lu"], abs=0.05
    )
    assert meter.loudness_range_lu == pytest.approx(ref["loudness_range_lu"], abs=LRA_TOL)
    assert an.gain_to_db(an.true_peak(audio, sample_rate)) == pytest.approx(
        ref["true_peak_dbtp"], abs=0.25
    )


def test_agrees_with_pyebur128_on_rendered_music() -> None:
    material = pytest.importorskip("tests.material")
    soundfile = pytest.importorskip("soundfile")
    try:
        path = material.program(30.0, 44_100, seed=0)
    except RuntimeError as exc:  # fluidsynth or SoundFont missing
        pytest.skip(str(exc))
    data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = np.ascontiguousarray(data.T)
    ref = ebur128_reference(audio, sample_rate)
    meter = measure(audio, sample_rate)
    assert meter.integrated_lufs == pytest.approx(ref["integrated_lufs"], abs=0.01)
    assert libebur128_style_lra(meter.short_term_powers) == pytest.approx(
        ref["loudness_range_lu"], abs=0.05
    )
    assert an.gain_to_db(an.true_peak(audio, sample_rate)) == pytest.approx(
        ref["true_peak_dbtp"], abs=0.2
    )


def pink_noise(sample_rate: int, duration_s: float, seed: int) -> np.ndarray:
    """Stereo pink (1/f power) noise, peak 0.25."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * duration_s)
    spectrum = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    freqs[0] = freqs[1]
    x = np.fft.irfft(spectrum / np.sqrt(freqs), n=n, axis=1)
    return (0.25 * x / np.abs(x).max()).astype(np.float32)


EVERY_RATE_HZ = (8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000)


@pytest.mark.parametrize("sample_rate", EVERY_RATE_HZ)
@pytest.mark.parametrize("kind", ["pink", "music"])
def test_loudness_agrees_with_pyebur128_at_every_rate(sample_rate: int, kind: str) -> None:
    """Integrated, last momentary and last short-term loudness within 0.1 LU of libebur128 at
    every rate: the K-weighting is re-derived per rate from the same analog prototype."""
    duration_s = 6.0  # a whole number of 100 ms blocks: the last M and S windows coincide
    audio = pink_noise(sample_rate, duration_s, 1) if kind == "pink" else music_like(sample_rate, duration_s, 5)
    modes = pyebur128.MeasurementMode
    state = pyebur128.R128State(2, sample_rate, modes.MODE_I | modes.MODE_M | modes.MODE_S)
    state.add_frames(np.ascontiguousarray(audio.T, dtype=np.float64).ravel(), audio.shape[1])
    meter = measure(audio, sample_rate)
    assert meter.integrated_lufs == pytest.approx(pyebur128.get_loudness_global(state), abs=LU_TOL)
    assert meter.momentary_lufs[-1] == pytest.approx(pyebur128.get_loudness_momentary(state), abs=LU_TOL)
    assert meter.short_term_lufs[-1] == pytest.approx(pyebur128.get_loudness_shortterm(state), abs=LU_TOL)


def test_mono_agrees_with_pyebur128() -> None:
    audio = enveloped_noise(48_000, 20.0, seed=4, channels=1)
    ref = ebur128_reference(audio, 48_000)
    assert an.integrated_loudness(audio, 48_000) == pytest.approx(ref["integrated_lufs"], abs=1e-6)


def test_5_1_weights_and_lfe_exclusion_agree_with_pyebur128() -> None:
    audio = enveloped_noise(48_000, 20.0, seed=9, channels=6)
    ref = ebur128_reference(audio, 48_000)
    assert an.integrated_loudness(audio, 48_000) == pytest.approx(ref["integrated_lufs"], abs=1e-6)
    louder_lfe = audio.copy()
    louder_lfe[3] *= 8.0
    assert an.integrated_loudness(louder_lfe, 48_000) == pytest.approx(
        ref["integrated_lufs"], abs=1e-6
    )


def test_channel_weights() -> None:
    np.testing.assert_array_equal(an.channel_weights(2), [1.0, 1.0])
    np.testing.assert_array_equal(an.channel_weights(5), [1.0, 1.0, 1.0, 1.41, 1.41])
    np.testing.assert_array_equal(an.channel_weights(6), [1.0, 1.0, 1.0, 0.0, 1.41, 1.41])
    np.testing.assert_array_equal(an.channel_weights(8), np.ones(8))


def test_other_channel_counts_weigh_every_channel_one() -> None:
    mono = tone_segments(48_000, [(5.0, -30.0)], channels=1)
    three = np.tile(mono, (3, 1))
    expected = an.integrated_loudness(mono, 48_000) + 10 * math.log10(3)
    assert an.integrated_loudness(three, 48_000) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- streaming


def _streamed(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[:, i : i + size] for i in range(0, audio.shape[1], size)]


@pytest.fixture(scope="module")
def short_program() -> tuple[np.ndarray, int]:
    # 11025 Hz: sub-blocks alternate 1102/1103 frames, the awkward case of the grid.
    sample_rate = 11_025
    return music_like(sample_rate, 4.0, seed=8), sample_rate


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_loudness_streaming_matches_one_shot(
    short_program: tuple[np.ndarray, int], block_size: int
) -> None:
    audio, sample_rate = short_program
    whole = measure(audio, sample_rate)
    meter = an.LoudnessMeter(sample_rate, 2)
    for block in _streamed(audio, block_size):
        meter.process(block)
    assert meter.frames_processed == audio.shape[1]
    np.testing.assert_allclose(meter.momentary_lufs, whole.momentary_lufs, atol=1e-9)
    np.testing.assert_allclose(meter.short_term_lufs, whole.short_term_lufs, atol=1e-9)
    assert meter.integrated_lufs == pytest.approx(whole.integrated_lufs, abs=1e-9)
    assert meter.loudness_range_lu == pytest.approx(whole.loudness_range_lu, abs=1e-9)


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_true_peak_streaming_matches_one_shot(
    short_program: tuple[np.ndarray, int], block_size: int
) -> None:
    audio, sample_rate = short_program
    whole = an.true_peak_frames(audio, sample_rate)
    meter = an.TruePeakMeter(sample_rate, 2)
    parts = [meter.process(block) for block in _streamed(audio, block_size)]
    parts.append(meter.flush())
    streamed = np.concatenate(parts)
    assert streamed.shape == (audio.shape[1],)
    np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-9)
    assert meter.peak == pytest.approx(float(whole.max()), rel=1e-6)


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_spectrum_streaming_matches_one_shot(
    short_program: tuple[np.ndarray, int], block_size: int
) -> None:
    audio, sample_rate = short_program
    whole = an.SpectrumAccumulator(sample_rate, 2)
    whole.process(audio)
    streamed = an.SpectrumAccumulator(sample_rate, 2)
    for block in _streamed(audio, block_size):
        streamed.process(block)
    np.testing.assert_allclose(streamed.psd_mid, whole.psd_mid, rtol=1e-9, atol=1e-20)
    np.testing.assert_allclose(streamed.psd_side, whole.psd_side, rtol=1e-9, atol=1e-20)


@pytest.mark.parametrize("block_size", [64, 8193])
def test_analyzer_streaming_matches_one_shot(
    short_program: tuple[np.ndarray, int], block_size: int
) -> None:
    audio, sample_rate = short_program
    whole = an.analyze(audio, sample_rate).to_dict()
    streamed = an.analyze_blocks(_streamed(audio, block_size), sample_rate, 2).to_dict()
    assert streamed.keys() == whole.keys()
    for name, value in whole.items():
        if isinstance(value, float):
            assert streamed[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
        elif name == "spectrum":
            for band_key in ("mid_db", "side_db"):
                np.testing.assert_allclose(streamed[name][band_key], value[band_key], atol=1e-6)
        elif name == "short_term_series":
            np.testing.assert_allclose(streamed[name], value, atol=1e-9)
        elif name == "dc_offset":
            np.testing.assert_allclose(streamed[name], value, atol=1e-12)
        else:
            assert streamed[name] == value, name


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30))
def test_true_peak_meter_emits_one_value_per_frame(sizes: list[int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    audio = rng.uniform(-1, 1, (2, sum(sizes))).astype(np.float32)
    meter = an.TruePeakMeter(48_000, 2)
    outputs, fed = [], 0
    for size in sizes:
        outputs.append(meter.process(audio[:, fed : fed + size]))
        fed += size
        assert sum(o.shape[0] for o in outputs) == max(0, fed - meter.latency_frames)
    outputs.append(meter.flush())
    streamed = np.concatenate(outputs)
    assert streamed.shape == (audio.shape[1],)
    np.testing.assert_allclose(streamed, an.true_peak_frames(audio, 48_000), rtol=1e-6)


def test_true_peak_frames_are_aligned_with_the_input() -> None:
    audio = np.zeros((2, 200), dtype=np.float32)
    audio[1, 120] = 0.8
    peaks = an.true_peak_frames(audio, 48_000)
    assert peaks.shape == (200,)
    assert int(np.argmax(peaks)) == 120
    assert peaks[120] == pytest.approx(0.8)
    assert peaks[:100].max() < 1e-6 and peaks[140:].max() < 1e-6
    # Interpolated sub-samples never read below the samples they sit between.
    audio = music_like(48_000, 1.0, seed=2)
    peaks = an.true_peak_frames(audio, 48_000)
    assert np.all(peaks >= np.abs(audio).max(axis=0) - 1e-7)


def test_true_peak_meter_oversample_one_is_sample_peak() -> None:
    audio = music_like(44_100, 1.0, seed=1)
    peaks = an.true_peak_frames(audio, 44_100, oversample=1)
    np.testing.assert_array_equal(peaks, np.abs(audio).max(axis=0))
    assert an.true_peak(audio, 44_100, oversample=8) >= an.true_peak(audio, 44_100, oversample=1)


# ----------------------------------------------------------------------------- edge cases


def test_silence_reads_minus_infinity_and_serialises() -> None:
    audio = np.zeros((2, 48_000 * 5), dtype=np.float32)
    meter = measure(audio, 48_000)
    assert meter.integrated_lufs == -math.inf
    assert meter.loudness_range_lu == 0.0
    assert meter.momentary_max_lufs == -math.inf
    result = an.analyze(audio, 48_000, musical=True)
    assert result.true_peak_dbtp == -math.inf
    assert result.silence == {"leading_s": 5.0, "trailing_s": 5.0, "fraction": 1.0}
    assert result.tempo_bpm is None and result.key is None
    as_dict = result.to_dict()
    json.dumps(as_dict, allow_nan=False)
    assert as_dict["integrated_lufs"] is None and as_dict["plr_db"] is None


def test_short_input_has_no_gating_blocks() -> None:
    audio = tone_segments(48_000, [(0.3, -20.0)])
    meter = measure(audio, 48_000)
    assert meter.momentary_lufs.shape == (0,)
    assert meter.integrated_lufs == -math.inf
    spectrum = an.analyze(audio, 48_000).spectrum
    assert spectrum["centers_hz"][17] == 1000.0
    assert spectrum["mid_db"][17] == pytest.approx(-20.0 - 3.01, abs=0.2)


@pytest.mark.parametrize("sample_rate", [8_000, 192_000])
def test_extreme_rates_analyse(sample_rate: int) -> None:
    audio = music_like(sample_rate, 4.0, seed=6)
    result = an.analyze(audio, sample_rate)
    assert math.isfinite(result.integrated_lufs)
    assert result.true_peak_dbtp >= result.sample_peak_dbfs - 1e-6
    assert all(c < sample_rate / 2 for c in result.spectrum["centers_hz"])
    if sample_rate == 8_000:
        assert result.spectrum["centers_hz"][-1] == 3150.0


def test_clipping_runs_across_blocks() -> None:
    audio = np.zeros((2, 1000), dtype=np.float32)
    audio[0, 100:105] = 1.0  # run of 5: counted
    audio[0, 200:202] = 1.0  # run of 2: too short
    audio[0, 300:303] = -1.0  # run of 3 (negative): counted
    audio[1, 510:514] = 0.99995  # run of 4 split by the block boundary at 512: counted
    audio[1, 997:] = 1.0  # run of 3 still open at the end: counted
    result = an.analyze_blocks(_streamed(audio, 512), 48_000, 2)
    assert result.clipped_runs == {"runs": 4, "samples": 5 + 3 + 4 + 3}


@pytest.mark.parametrize("level_dbfs", [-0.0, -3.0, -6.0, -12.0])
def test_clipping_found_at_any_level(level_dbfs: float) -> None:
    """A mix clipped below full scale has its plateaus at its own peak: they are counted."""
    sr = 48_000
    t = np.arange(sr) / sr
    x = 0.9 * np.sin(2 * np.pi * 100 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    level = 10 ** (level_dbfs / 20) * 0.6
    clipped = np.clip(x, -level, level).astype(np.float32)
    result = an.analyze(np.stack([clipped, clipped]), sr)
    expected = int(np.sum(np.abs(clipped) >= np.float32(level) * (1 - 1e-6)))
    assert result.clipped_runs["runs"] > 50
    assert result.clipped_runs["samples"] == pytest.approx(2 * expected, rel=0.01)
    clean = an.analyze(np.stack([x, x]).astype(np.float32), sr)  # the unclipped sine: no runs
    assert clean.clipped_runs == {"runs": 0, "samples": 0}


def test_dc_offset_rms_and_crest() -> None:
    rng = np.random.default_rng(3)
    audio = (rng.standard_normal((2, 48_000)) * 0.01).astype(np.float32)
    audio[0] += 0.1
    audio[1] -= 0.05
    result = an.analyze(audio, 48_000)
    np.testing.assert_allclose(result.dc_offset, [0.1, -0.05], atol=2e-4)
    sine = tone_segments(48_000, [(2.0, -6.0)])
    result = an.analyze(sine, 48_000)
    assert result.rms_dbfs == pytest.approx(-6.0 - 3.0103, abs=0.01)
    assert result.crest_factor_db == pytest.approx(3.0103, abs=0.01)
    assert result.plr_db == pytest.approx(result.true_peak_dbtp - result.integrated_lufs)


def test_leading_trailing_silence() -> None:
    sample_rate = 48_000
    tone = tone_segments(sample_rate, [(2.0, -20.0)])
    audio = np.concatenate(
        [np.zeros((2, sample_rate), np.float32), tone, np.zeros((2, sample_rate // 2), np.float32)],
        axis=1,
    )
    result = an.analyze(audio, sample_rate)
    assert result.silence["leading_s"] == pytest.approx(1.0, abs=1e-3)
    assert result.silence["trailing_s"] == pytest.approx(0.5, abs=1e-3)
    assert result.silence["fraction"] == pytest.approx(1.5 / 3.5, abs=1e-9)
    assert result.duration_s == pytest.approx(3.5)


# Hann leakage spans +-2 bins (+-11.7 Hz at 48 kHz), wider than the 14.6 Hz
# band at 63 Hz, so low bands hold only part of a sine's power.
@pytest.mark.parametrize(
    ("freq_hz", "band_hz", "tol_db"),
    [(63.0, 63.0, 0.5), (1000.0, 1000.0, 0.05), (5000.0, 5000.0, 0.05)],
)
def test_spectrum_of_a_sine_lands_in_its_third_octave(
    freq_hz: float, band_hz: float, tol_db: float
) -> None:
    audio = tone_segments(48_000, [(3.0, -6.0)], freq_hz=freq_hz)
    acc = an.SpectrumAccumulator(48_000, 2)
    acc.process(audio)
    centers, mid_db, side_db = acc.third_octave()
    assert centers[int(np.argmax(mid_db))] == band_hz
    assert mid_db.max() == pytest.approx(-6.0 - 3.0103, abs=tol_db)  # the sine's mean square
    assert np.all(side_db == -np.inf)
    assert float(acc.psd_mid.sum()) == pytest.approx(10 ** ((-6.0 - 3.0103) / 10), rel=0.01)
    assert acc.n_fft == 8192 and acc.freqs_hz.shape == (4097,)


def test_spectrum_of_mono_has_zero_side() -> None:
    acc = an.SpectrumAccumulator(44_100, 1)
    acc.process(tone_segments(44_100, [(1.0, -10.0)], channels=1))
    _, mid_db, side_db = acc.third_octave()
    assert np.isfinite(mid_db).any() and np.all(side_db == -np.inf)


def test_correlation_and_width() -> None:
    rng = np.random.default_rng(5)
    noise = (rng.standard_normal(48_000) * 0.1).astype(np.float32)
    same = an.analyze(np.stack([noise, noise]), 48_000)
    assert same.correlation == pytest.approx(1.0, abs=1e-9)
    assert same.width == pytest.approx(0.0, abs=1e-9)
    inverted = an.analyze(np.stack([noise, -noise]), 48_000)
    assert inverted.correlation == pytest.approx(-1.0, abs=1e-9)
    assert inverted.width is None  # no mid at all
    independent = an.analyze((rng.standard_normal((2, 48_000)) * 0.1).astype(np.float32), 48_000)
    assert abs(independent.correlation) < 0.05
    assert independent.width == pytest.approx(1.0, abs=0.05)
    mono = an.analyze(noise[None, :], 48_000)
    assert mono.correlation is None and mono.width is None


def test_analysis_to_dict_is_json_safe(music_48k: np.ndarray) -> None:
    result = an.analyze(music_48k, 48_000)
    data = result.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["sample_rate"] == 48_000
    assert isinstance(data["dc_offset"], list) and len(data["dc_offset"]) == 2
    assert set(data["spectrum"]) == {"centers_hz", "mid_db", "side_db"}
    assert len(data["short_term_series"]) == 271
    assert data["tempo_bpm"] is None and data["beats_s"] is None and data["key"] is None
    meter = measure(music_48k, 48_000)
    assert result.integrated_lufs == pytest.approx(meter.integrated_lufs, abs=1e-9)
    assert result.loudness_range_lu == pytest.approx(meter.loudness_range_lu, abs=1e-9)


# ----------------------------------------------------------------------------- musical


def test_tempo_of_a_click_track() -> None:
    sample_rate = 44_100
    n = sample_rate * 20
    click_t = np.arange(int(0.03 * sample_rate)) / sample_rate
    click = np.sin(2 * np.pi * 1000 * click_t) * np.exp(-click_t * 150)
    track = np.zeros(n)
    for beat_s in np.arange(0.25, 19.9, 0.5):  # 120 BPM
        i = int(beat_s * sample_rate)
        track[i : i + click.shape[0]] += click
    audio = (np.stack([track, track]) * 0.5).astype(np.float32)
    result = an.analyze(audio, sample_rate, musical=True)
    assert result.tempo_bpm == pytest.approx(120.0, abs=2.0)
    assert result.beats_s is not None and len(result.beats_s) >= 30
    assert np.median(np.diff(result.beats_s)) == pytest.approx(0.5, abs=0.03)


def test_key_of_a_c_major_progression() -> None:
    sample_rate = 22_050

    def note(midi: int, duration_s: float) -> np.ndarray:
        t = np.arange(int(duration_s * sample_rate)) / sample_rate
        f = 440.0 * 2 ** ((midi - 69) / 12)
        partials = sum(np.sin(2 * np.pi * f * h * t) / h**1.5 for h in range(1, 5))
        return partials * np.minimum(1.0, t / 0.01) * np.exp(-t * 0.7)

    chords = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)] * 3  # I IV V I in C
    song = np.concatenate([sum(note(m, 1.0) for m in (ch[0] - 12, *ch)) for ch in chords])
    audio = (np.stack([song, song]) * 0.1).astype(np.float32)
    analyzer = an.Analyzer(sample_rate, 2)
    analyzer.process(audio)
    assert analyzer.result(musical=True).key == "C major"
    assert analyzer.result().key is None  # musical analysis only when asked


def test_musical_needs_the_copy() -> None:
    analyzer = an.Analyzer(48_000, 2, keep_musical=False)
    analyzer.process(np.zeros((2, 100), np.float32))
    with pytest.raises(ParameterError):
        analyzer.result(musical=True)


# ----------------------------------------------------------------------------- bad input and helpers


def test_bad_inputs_raise_the_projects_errors() -> None:
    good = np.zeros((2, 100), np.float32)
    nan = good.copy()
    nan[1, 5] = np.nan
    with pytest.raises(AudioInputError):
        an.integrated_loudness(nan, 48_000)
    with pytest.raises(AudioInputError):
        an.true_peak(np.zeros((2, 100), np.int16), 48_000)
    with pytest.raises(AudioInputError):
        an.integrated_loudness(np.zeros(100, np.float32), 48_000)
    with pytest.raises(AudioInputError, match="transpose"):
        an.LoudnessMeter(48_000, 2).process(np.zeros((100, 2), np.float32))
    with pytest.raises(AudioInputError):
        an.TruePeakMeter(48_000, 2).process(np.full((2, 10), np.inf, np.float32))
    with pytest.raises(AudioInputError):
        an.analyze(np.zeros((2, 0), np.float32), 48_000)
    with pytest.raises(ParameterError):
        an.LoudnessMeter(4_000, 2)
    with pytest.raises(ParameterError):
        an.LoudnessMeter(44_100.5, 2)  # type: ignore[arg-type]
    with pytest.raises(ParameterError):
        an.TruePeakMeter(48_000, 0)
    with pytest.raises(ParameterError):
        an.TruePeakMeter(48_000, 2, oversample=0)
    with pytest.raises(ParameterError):
        an.SpectrumAccumulator(48_000, 2, n_fft=1001)
    assert issubclass(ParameterError, ValueError)


def test_db_helpers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert an.gain_to_db(0.0) == -math.inf
        np.testing.assert_array_equal(an.gain_to_db(np.array([0.0, 1.0])), [-math.inf, 0.0])
    assert an.db_to_gain(-math.inf) == 0.0
    assert an.gain_to_db(an.db_to_gain(-6.0)) == pytest.approx(-6.0)
    assert an.gain_to_db(-0.5) == pytest.approx(-6.0206, abs=1e-4)


def test_gated_mean_power_gates() -> None:
    loud = an._lufs_to_power(-20.0)
    quiet = an._lufs_to_power(-35.0)  # below -20 - 10: gated out relatively
    silent = an._lufs_to_power(-80.0)  # below the absolute gate
    assert an.gated_mean_power(np.array([loud, loud, quiet, silent])) == pytest.approx(loud)
    assert an.gated_mean_power(np.array([silent])) == 0.0
    assert an.gated_mean_power(np.array([loud, quiet]), relative_gate_lu=-20.0) == pytest.approx(
        (loud + quiet) / 2
    )


@pytest.mark.parametrize("oversample", [2, 4, 8])
@pytest.mark.parametrize("frames", [1, 100, 2047, 2048, 5000])
def test_true_peak_kernel_16_tap_path_equals_the_general_loop(oversample: int, frames: int) -> None:
    """The unrolled 16-tap branch against the kernel's general loop (taps padded with a
    zero to 17, which takes the general path) bit for bit, and both against float64."""
    rng = np.random.default_rng(frames + oversample)
    taps = an._design_interpolator(oversample)
    assert taps.shape[1] == an.TP_TAPS_PER_PHASE == 16
    padded = np.concatenate([taps, np.zeros((taps.shape[0], 1), np.float32)], axis=1)
    buf = (0.6 * rng.standard_normal((2, frames + 16))).astype(np.float32)
    off = an.TP_TAPS_PER_PHASE // 2 - 1
    fast = np.empty(frames, np.float32)
    general = np.empty(frames, np.float32)
    an._tp_kernel(buf, taps, off, fast)
    an._tp_kernel(buf, padded, off, general)
    np.testing.assert_array_equal(fast, general)
    b64 = buf.astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(b64[:, : frames + 15], 16, axis=1)
    sub = np.einsum("cfk,pk->cpf", windows, taps.astype(np.float64))  # (ch, phase, frame)
    want = np.maximum(np.abs(sub).max(axis=(0, 1)), np.abs(b64[:, off : off + frames]).max(axis=0))
    np.testing.assert_allclose(fast, want, rtol=2e-6, atol=1e-7)
