"""Contracts of the dynamics processors (app.engine.mastering.dynamics).

Grids follow the engine's test style: sample rates x block sizes (1, 64, 65,
8192, 8193) x channel counts (1, 2, 6).  All randomness is seeded.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.engine.errors import ParameterError
from app.engine.mastering import dynamics
from app.engine.mastering.dynamics import (
    Crossover3,
    LinkedCompressor,
    MultibandCompressor,
    soft_clip,
    static_gain_db,
)

SAMPLE_RATES_HZ = (44100, 48000, 96000)
BLOCK_SIZES = (1, 64, 65, 8192, 8193)
CHANNEL_COUNTS = (1, 2, 6)
#: Long enough for several full and partial blocks of 8193 frames.
STREAM_FRAMES = 20000
#: One-frame blocks cost a Python call per frame; a shorter stream still walks
#: through attack, hold and release.
STREAM_FRAMES_BLOCK_1 = 4000

HYPOTHESIS = settings(max_examples=150, deadline=None, derandomize=True)

BANDS = (
    {"threshold_db": -30.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 50.0},
    {"threshold_db": -30.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 50.0},
    {"threshold_db": -30.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 50.0},
)


# --------------------------------------------------------------------------- helpers


def textbook_gain_db(level_db: float, threshold_db: float, ratio: float, knee_db: float) -> float:
    """Soft-knee gain computer written from the textbook piecewise output level."""
    over = level_db - threshold_db
    if 2.0 * over < -knee_db:
        out_db = level_db
    elif 2.0 * abs(over) <= knee_db and knee_db > 0.0:
        out_db = level_db + (1.0 / ratio - 1.0) * (over + knee_db / 2.0) ** 2 / (2.0 * knee_db)
    else:
        out_db = threshold_db + over / ratio
    return out_db - level_db


def bursty_noise(sample_rate: int, channels: int, frames: int, seed: int = 0) -> np.ndarray:
    """Noise whose level jumps between quiet, medium and loud segments."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((channels, frames))
    segment = max(frames // 7, 1)
    levels_db = np.array([-50.0, -6.0, -30.0, 0.0, -60.0, -12.0, -3.0, -40.0])
    envelope = 10.0 ** (levels_db[np.minimum(np.arange(frames) // segment, 7)] / 20.0)
    # Channels differ in level so that linking matters.
    per_channel = 10.0 ** (-3.0 * np.arange(channels) / 20.0)
    return (0.5 * noise * envelope * per_channel[:, None]).astype(np.float32)


def sine(freq_hz: float, amplitude: float, sample_rate: int, frames: int) -> np.ndarray:
    t = np.arange(frames) / sample_rate
    return amplitude * np.sin(2.0 * np.pi * freq_hz * t)


def in_blocks(block_size: int, x: np.ndarray):
    for start in range(0, x.shape[1], block_size):
        yield x[:, start : start + block_size]


def response_db(impulse_response: np.ndarray, freq_hz: float, sample_rate: int) -> float:
    """Magnitude of a filter at one exact frequency from its impulse response."""
    n = np.arange(impulse_response.size)
    value = np.sum(impulse_response * np.exp(-2j * np.pi * freq_hz * n / sample_rate))
    return 20.0 * math.log10(abs(value))


def stream_frames(block_size: int) -> int:
    return STREAM_FRAMES_BLOCK_1 if block_size == 1 else STREAM_FRAMES


# --------------------------------------------------------------------------- static curve


@pytest.mark.parametrize("threshold_db", [-40.0, -18.0, -3.0])
@pytest.mark.parametrize("ratio", [1.0, 1.5, 4.0, 20.0, math.inf])
@pytest.mark.parametrize("knee_db", [0.0, 2.0, 6.0, 12.0])
def test_static_curve_matches_textbook_soft_knee(threshold_db, ratio, knee_db):
    levels_db = np.linspace(-80.0, 12.0, 2001)
    # Include the knee edges exactly.
    levels_db = np.concatenate([levels_db, threshold_db + np.array([-0.5, 0.0, 0.5]) * knee_db])
    got = static_gain_db(levels_db, threshold_db=threshold_db, ratio=ratio, knee_db=knee_db)
    want = [textbook_gain_db(level, threshold_db, ratio, knee_db) for level in levels_db]
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-9)
    assert got.shape == levels_db.shape
    assert np.all(got <= 0.0)


@HYPOTHESIS
@given(
    threshold_db=st.floats(-100.0, 0.0),
    ratio=st.floats(1.0, 100.0),
    knee_db=st.floats(0.0, 24.0),
)
def test_static_curve_is_monotone_and_continuous(threshold_db, ratio, knee_db):
    levels_db = np.linspace(-120.0, 20.0, 14001)
    gain_db = static_gain_db(levels_db, threshold_db=threshold_db, ratio=ratio, knee_db=knee_db)
    assert np.all(gain_db <= 0.0)
    assert np.all(np.diff(gain_db) <= 1e-12)  # more level never means less reduction
    assert np.all(np.diff(levels_db + gain_db) >= -1e-12)  # output level never decreases
    # Continuous: the step between neighbouring levels is bounded by the level step.
    assert np.max(np.abs(np.diff(gain_db))) <= 0.01 + 1e-9


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
def test_linked_compressor_block_size_does_not_change_output(sample_rate, block_size, channels):
    x = bursty_noise(sample_rate, channels, stream_frames(block_size), seed=block_size)
    configs = (
        {"detector": "rms"},
        {"detector": "peak", "sidechain_hpf_hz": 100.0, "knee_db": 0.0, "makeup_db": 3.0},
    )
    for config in configs:
        kwargs = {"threshold_db": -24.0, "ratio": 4.0, "attack_ms": 2.0, "release_ms": 30.0}
        whole = LinkedCompressor(sample_rate, channels, **kwargs, **config)
        want = whole.process(x)
        want_gr = whole.last_gain_reduction_db
        streamed = LinkedCompressor(sample_rate, channels, **kwargs, **config)
        outs, grs = [], []
        for block in in_blocks(block_size, x):
            outs.append(streamed.process(block))
            grs.append(streamed.last_gain_reduction_db)
        got = np.concatenate(outs, axis=1)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(np.concatenate(grs), want_gr, rtol=1e-6, atol=1e-6)
        assert want_gr.max() > 6.0  # the signal did drive the compressor


@pytest.mark.parametrize("block_size", [1, 65, 8193])
@pytest.mark.parametrize(
    "config",
    [
        {"detector": "rms", "sidechain_hpf_hz": 90.0},
        {"detector": "rms", "knee_db": 0.0},
        {"detector": "peak", "sidechain_hpf_hz": 100.0, "knee_db": 0.0, "makeup_db": 3.0},
        {"detector": "peak", "makeup_db": -2.0},
        {"detector": "rms", "max_gr_db": 7.0, "section_window_ms": 300.0, "section_ref_db": -14.0},
        {"detector": "peak", "section_window_ms": 50.0, "section_ref_db": -30.0, "max_follow_db": 6.0},
    ],
)
def test_stereo_compressor_kernel_equals_the_per_channel_kernels(config, block_size):
    """Stereo takes a fused kernel; it must give the general (any channel count) path's
    output bit for bit, with the state carried the same way across blocks."""
    sample_rate = 48000
    x = bursty_noise(sample_rate, 2, 30000, seed=block_size)
    kwargs = {"threshold_db": -24.0, "ratio": 4.0, "attack_ms": 2.0, "release_ms": 30.0, **config}
    fused = LinkedCompressor(sample_rate, 2, **kwargs)
    ref = LinkedCompressor(sample_rate, 2, **kwargs)  # its state, stepped by the general kernels
    use_hpf = ref.sidechain_hpf_hz is not None
    use_rms = ref.detector == "rms"
    most_gr = 0.0
    for block in in_blocks(block_size, x):
        got = fused.process(block)
        want = np.empty_like(block)
        want_gr = np.empty(block.shape[1], dtype=np.float32)
        detector = np.empty(block.shape[1])
        dynamics._detector_kernel(
            block, detector, ref._hpf_coefficients, ref._hpf_state, use_hpf, use_rms
        )
        dynamics._compressor_kernel(
            block, want, want_gr, detector, ref._state, use_rms, ref._rms_coefficient,
            ref.threshold_db, ref._slope, ref.knee_db, ref._knee_start_power,
            ref._attack_coefficient, ref._release_coefficient, ref.makeup_db, dynamics.GR_FLOOR_DB,
            ref.max_gr_db, ref._follow_coefficient, ref.section_ref_db, ref.max_follow_db,
        )  # fmt: skip
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(fused.last_gain_reduction_db, want_gr)
        most_gr = max(most_gr, float(want_gr.max()))
    np.testing.assert_array_equal(fused._hpf_state, ref._hpf_state)
    np.testing.assert_array_equal(fused._state, ref._state)
    assert most_gr > 6.0  # the signal did drive the compressor


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
def test_crossover_block_size_does_not_change_output(sample_rate, block_size, channels):
    x = bursty_noise(sample_rate, channels, stream_frames(block_size), seed=1)
    want = Crossover3(sample_rate, channels, low_hz=150.0, high_hz=3000.0).split(x)
    crossover = Crossover3(sample_rate, channels, low_hz=150.0, high_hz=3000.0)
    parts = [crossover.split(block) for block in in_blocks(block_size, x)]
    for band in range(3):
        got = np.concatenate([part[band] for part in parts], axis=1)
        np.testing.assert_allclose(got, want[band], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
def test_multiband_block_size_does_not_change_output(sample_rate, block_size, channels):
    x = bursty_noise(sample_rate, channels, stream_frames(block_size), seed=2)
    whole = MultibandCompressor(sample_rate, channels, bands=BANDS)
    want = whole.process(x)
    want_gr = whole.last_gain_reduction_db
    streamed = MultibandCompressor(sample_rate, channels, bands=BANDS)
    outs, grs = [], []
    for block in in_blocks(block_size, x):
        outs.append(streamed.process(block))
        grs.append(streamed.last_gain_reduction_db)
    np.testing.assert_allclose(np.concatenate(outs, axis=1), want, rtol=1e-6, atol=1e-8)
    got_gr = np.concatenate(grs, axis=1)
    assert got_gr.shape == (3, x.shape[1])
    np.testing.assert_allclose(got_gr, want_gr, rtol=1e-6, atol=1e-6)


def test_reset_forgets_history():
    x = bursty_noise(48000, 2, 6000)
    compressor = LinkedCompressor(
        48000,
        2,
        threshold_db=-20.0,
        ratio=3.0,
        attack_ms=5.0,
        release_ms=80.0,
        sidechain_hpf_hz=80.0,
    )
    first = compressor.process(x)
    compressor.reset()
    np.testing.assert_array_equal(compressor.process(x), first)
    multiband = MultibandCompressor(48000, 2, bands=BANDS)
    first = multiband.process(x)
    multiband.reset()
    np.testing.assert_array_equal(multiband.process(x), first)


# --------------------------------------------------------------------------- linked compressor


@pytest.mark.parametrize("channels", [2, 6])
@pytest.mark.parametrize("detector", ["rms", "peak"])
def test_every_channel_gets_the_same_gain(channels, detector):
    sample_rate = 48000
    frames = sample_rate // 2
    x = np.zeros((channels, frames))
    x[0] = sine(997.0, 0.9, sample_rate, frames)  # loud left channel
    for c in range(1, channels):
        x[c] = sine(331.0 * c, 0.01, sample_rate, frames)  # quiet others (-40 dBFS)
    x = x.astype(np.float32)
    kwargs = {
        "threshold_db": -20.0,
        "ratio": 4.0,
        "attack_ms": 5.0,
        "release_ms": 100.0,
        "makeup_db": 2.0,
        "detector": detector,
    }
    linked = LinkedCompressor(sample_rate, channels, **kwargs)
    y = linked.process(x)
    gr_db = linked.last_gain_reduction_db.astype(np.float64)
    gain = 10.0 ** ((2.0 - gr_db) / 20.0)
    # Every channel, the quiet ones included, is scaled by the one gain.
    np.testing.assert_allclose(y, x * gain, rtol=2e-5, atol=1e-8)
    # The RMS detector averages the power over channels, so more quiet channels
    # mean less reduction; the peak detector follows the loudest channel.
    settled = slice(frames // 2, None)
    assert gr_db[settled].min() > (8.0 if detector == "peak" or channels == 2 else 3.0)

    # Contrast: compressing each channel on its own leaves the quiet channel alone.
    for c in range(1, channels):
        alone = LinkedCompressor(sample_rate, 1, **kwargs)
        alone.process(x[c : c + 1])
        assert alone.last_gain_reduction_db.max() == 0.0


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize("attack_ms", [1.0, 5.0, 20.0])
def test_attack_time_constant(sample_rate, attack_ms):
    frames_quiet = sample_rate // 10
    frames_loud = int(sample_rate * attack_ms * 10 / 1000)
    x = np.concatenate([np.full(frames_quiet, 0.01), np.full(frames_loud, 1.0)])
    x = np.tile(x, (2, 1)).astype(np.float32)  # a DC step: the peak level is exact
    compressor = LinkedCompressor(
        sample_rate,
        2,
        threshold_db=-20.0,
        ratio=4.0,
        attack_ms=attack_ms,
        release_ms=200.0,
        detector="peak",
    )
    compressor.process(x)
    gr_db = compressor.last_gain_reduction_db[frames_quiet:]
    final_db = -float(static_gain_db(np.array(0.0), threshold_db=-20.0, ratio=4.0, knee_db=6.0))
    assert gr_db[-1] == pytest.approx(final_db, abs=1e-3)
    reached_ms = (np.argmax(gr_db >= 0.632 * final_db) + 1) / sample_rate * 1000.0
    assert reached_ms == pytest.approx(attack_ms, rel=0.2)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize("release_ms", [20.0, 100.0, 400.0])
def test_release_time_constant(sample_rate, release_ms):
    frames_loud = sample_rate // 10
    frames_quiet = int(sample_rate * release_ms * 4 / 1000)
    x = np.concatenate([np.full(frames_loud, 1.0), np.full(frames_quiet, 0.001)])
    x = np.tile(x, (2, 1)).astype(np.float32)
    compressor = LinkedCompressor(
        sample_rate,
        2,
        threshold_db=-20.0,
        ratio=4.0,
        attack_ms=1.0,
        release_ms=release_ms,
        detector="peak",
    )
    compressor.process(x)
    gr_db = compressor.last_gain_reduction_db
    start_db = float(gr_db[frames_loud - 1])
    assert start_db > 10.0
    tail = gr_db[frames_loud:]
    fallen_ms = (np.argmax(tail <= (1.0 - 0.632) * start_db) + 1) / sample_rate * 1000.0
    assert fallen_ms == pytest.approx(release_ms, rel=0.2)


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
@pytest.mark.parametrize(
    ("threshold_db", "ratio", "knee_db"),
    [(-20.0, 4.0, 6.0), (-12.0, 2.0, 0.0), (-30.0, 10.0, 12.0)],
)
def test_steady_state_gain_reduction_of_a_sine_matches_static_curve(
    sample_rate, channels, threshold_db, ratio, knee_db
):
    frames = sample_rate  # 1 s: many release time constants
    for level_db in (-40.0, threshold_db - 2.0, threshold_db, threshold_db + 3.0, -3.0):
        amplitude = math.sqrt(2.0) * 10.0 ** (level_db / 20.0)  # sine RMS == level_db
        x = np.tile(sine(1000.0, amplitude, sample_rate, frames), (channels, 1)).astype(np.float32)
        compressor = LinkedCompressor(
            sample_rate,
            channels,
            threshold_db=threshold_db,
            ratio=ratio,
            knee_db=knee_db,
            attack_ms=10.0,
            release_ms=100.0,
            detector="rms",
            rms_window_ms=10.0,
        )
        compressor.process(x)
        measured_db = float(np.mean(compressor.last_gain_reduction_db[-frames // 5 :]))
        expected_db = -float(
            static_gain_db(
                np.array(level_db), threshold_db=threshold_db, ratio=ratio, knee_db=knee_db
            )
        )
        assert measured_db == pytest.approx(expected_db, abs=0.1), level_db


@pytest.mark.parametrize("level_db", [-30.0, -21.0, -15.0, -1.0])
def test_peak_detector_steady_state_matches_static_curve(level_db):
    sample_rate = 48000
    amplitude = 10.0 ** (level_db / 20.0)
    square = amplitude * np.sign(sine(440.0, 1.0, sample_rate, sample_rate) + 1e-9)
    x = np.tile(square, (2, 1)).astype(np.float32)
    compressor = LinkedCompressor(
        sample_rate,
        2,
        threshold_db=-18.0,
        ratio=3.0,
        attack_ms=3.0,
        release_ms=50.0,
        detector="peak",
    )
    compressor.process(x)
    expected_db = -float(
        static_gain_db(np.array(level_db), threshold_db=-18.0, ratio=3.0, knee_db=6.0)
    )
    assert compressor.last_gain_reduction_db[-1] == pytest.approx(expected_db, abs=1e-3)


def test_below_threshold_is_bit_transparent_with_zero_latency():
    x = bursty_noise(48000, 2, 8000) * np.float32(0.01)  # peaks far below -20 dBFS
    compressor = LinkedCompressor(
        48000,
        2,
        threshold_db=-10.0,
        ratio=4.0,
        attack_ms=5.0,
        release_ms=50.0,
        sidechain_hpf_hz=100.0,
    )
    np.testing.assert_array_equal(compressor.process(x), x)
    assert np.all(compressor.last_gain_reduction_db == 0.0)
    makeup = LinkedCompressor(
        48000, 2, threshold_db=-10.0, ratio=4.0, attack_ms=5.0, release_ms=50.0, makeup_db=6.0
    )
    np.testing.assert_allclose(makeup.process(x), x * 10.0 ** (6.0 / 20.0), rtol=1e-6)


def test_sidechain_high_pass_keeps_bass_from_pumping():
    sample_rate = 48000
    frames = sample_rate
    kwargs = {"threshold_db": -20.0, "ratio": 4.0, "attack_ms": 5.0, "release_ms": 100.0}
    bass = np.tile(sine(40.0, 0.7, sample_rate, frames), (2, 1)).astype(np.float32)
    plain = LinkedCompressor(sample_rate, 2, **kwargs)
    filtered = LinkedCompressor(sample_rate, 2, **kwargs, sidechain_hpf_hz=100.0)
    plain.process(bass)
    filtered.process(bass)
    settled = slice(frames // 2, None)
    assert plain.last_gain_reduction_db[settled].mean() > 8.0
    assert (
        filtered.last_gain_reduction_db[settled].mean()
        < 0.25 * plain.last_gain_reduction_db[settled].mean()
    )
    # Mid-range content still drives the detector as before.
    mids = np.tile(sine(2000.0, 0.7, sample_rate, frames), (2, 1)).astype(np.float32)
    plain.reset()
    filtered.reset()
    plain.process(mids)
    filtered.process(mids)
    assert filtered.last_gain_reduction_db[settled].mean() == pytest.approx(
        plain.last_gain_reduction_db[settled].mean(), abs=0.2
    )


# --------------------------------------------------------------------------- crossover


def crossover_impulse_responses(sample_rate, low_hz, high_hz, frames=1 << 16):
    impulse = np.zeros((1, frames), dtype=np.float32)
    impulse[0, 0] = 1.0
    crossover = Crossover3(sample_rate, 1, low_hz=low_hz, high_hz=high_hz)
    return [band[0].astype(np.float64) for band in crossover.split(impulse)]


CROSSOVER_PAIRS_HZ = [(120.0, 4000.0), (20.0, 600.0), (300.0, 12000.0)]


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize(("low_hz", "high_hz"), CROSSOVER_PAIRS_HZ)
def test_crossover_bands_sum_to_flat_magnitude(sample_rate, low_hz, high_hz):
    low, mid, high = crossover_impulse_responses(sample_rate, low_hz, high_hz)
    total = low + mid + high
    spectrum = np.fft.rfft(total)
    freqs_hz = np.fft.rfftfreq(total.size, 1.0 / sample_rate)
    audible = (freqs_hz >= 20.0) & (freqs_hz <= 20000.0)
    magnitude_db = 20.0 * np.log10(np.abs(spectrum[audible]))
    assert np.max(np.abs(magnitude_db)) < 0.01
    # The crossover frequencies themselves, off the FFT grid.
    for freq_hz in (low_hz, high_hz):
        assert abs(response_db(total, freq_hz, sample_rate)) < 0.01


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize(("low_hz", "high_hz"), CROSSOVER_PAIRS_HZ)
def test_crossover_bands_are_minus_6_db_at_their_crossover(sample_rate, low_hz, high_hz):
    low, mid, high = crossover_impulse_responses(sample_rate, low_hz, high_hz)
    minus_6_db = 20.0 * math.log10(0.5)
    assert response_db(low, low_hz, sample_rate) == pytest.approx(minus_6_db, abs=0.05)
    assert response_db(mid, low_hz, sample_rate) == pytest.approx(minus_6_db, abs=0.05)
    assert response_db(mid, high_hz, sample_rate) == pytest.approx(minus_6_db, abs=0.05)
    assert response_db(high, high_hz, sample_rate) == pytest.approx(minus_6_db, abs=0.05)
    # 24 dB/oct: two octaves past a corner a band is down about 48 dB.
    assert response_db(low, 4.0 * low_hz, sample_rate) < -45.0
    assert response_db(high, high_hz / 4.0, sample_rate) < -45.0
    # Pass bands are flat (geometric centre of the mid band, far ends of the others).
    centre_hz = math.sqrt(low_hz * high_hz)
    assert response_db(mid, centre_hz, sample_rate) == pytest.approx(0.0, abs=0.1)
    assert response_db(low, low_hz / 8.0, sample_rate) == pytest.approx(0.0, abs=0.01)


# --------------------------------------------------------------------------- multiband


@pytest.mark.parametrize("loud_band", [0, 1, 2])
def test_multiband_reduces_only_the_loud_band(loud_band):
    sample_rate = 48000
    frames = sample_rate
    # Two octaves from the crossovers: a turned-down band holds too little of the
    # neighbours' tones (< -45 dB) to change them.
    freqs_hz = (30.0, 1000.0, 16000.0)
    amplitudes = [10.0 ** (-50.0 / 20.0)] * 3
    amplitudes[loud_band] = 10.0 ** (-6.0 / 20.0)
    mono = sum(sine(f, a, sample_rate, frames) for f, a in zip(freqs_hz, amplitudes, strict=True))
    x = np.tile(mono, (2, 1)).astype(np.float32)
    multiband = MultibandCompressor(sample_rate, 2, low_hz=120.0, high_hz=4000.0, bands=BANDS)
    y = multiband.process(x)
    settled = slice(frames // 2, None)
    gr_db = multiband.last_gain_reduction_db[:, settled].mean(axis=1)
    for band in range(3):
        if band == loud_band:
            assert gr_db[band] > 10.0
        else:
            assert gr_db[band] < 0.05
    # The quiet tones come out at their input level; the loud one is turned down.
    tail_in, tail_out = x[0, settled].astype(np.float64), y[0, settled].astype(np.float64)
    for band, freq_hz in enumerate(freqs_hz):
        change_db = response_db(tail_out, freq_hz, sample_rate) - response_db(
            tail_in, freq_hz, sample_rate
        )
        if band == loud_band:
            assert change_db < -10.0
        else:
            assert change_db == pytest.approx(0.0, abs=0.1)


def test_multiband_below_threshold_is_the_crossover_sum():
    x = bursty_noise(48000, 2, 1 << 15, seed=5) * np.float32(0.001)
    bands = [dict(band, threshold_db=-10.0) for band in BANDS]
    multiband = MultibandCompressor(48000, 2, bands=bands)
    y = multiband.process(x)
    assert np.all(multiband.last_gain_reduction_db == 0.0)
    # Unity gain in every band leaves the crossover's all-pass sum (flat, tested above).
    low, mid, high = (band.astype(np.float64) for band in Crossover3(48000, 2).split(x))
    np.testing.assert_allclose(y, low + mid + high, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------- soft clip


soft_clip_params = st.tuples(st.floats(-12.0, 6.0), st.floats(0.5, 24.0)).map(
    lambda pair: (pair[0] - pair[1], pair[0])
)  # (threshold_db, ceiling_db)

audio_blocks = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 3), st.integers(1, 64)),
    elements=st.floats(-8.0, 8.0, width=32),
)


@HYPOTHESIS
@given(block=audio_blocks, params=soft_clip_params)
def test_soft_clip_never_exceeds_ceiling_and_is_odd(block, params):
    threshold_db, ceiling_db = params
    y = soft_clip(block, threshold_db=threshold_db, ceiling_db=ceiling_db)
    assert y.dtype == np.float32 and y.shape == block.shape
    assert np.all(np.abs(y.astype(np.float64)) <= 10.0 ** (ceiling_db / 20.0))
    np.testing.assert_array_equal(
        soft_clip(-block, threshold_db=threshold_db, ceiling_db=ceiling_db), -y
    )
    # Monotone: a louder input is never a quieter output.
    ramp = np.sort(block.ravel())[None, :]
    assert np.all(np.diff(soft_clip(ramp, threshold_db=threshold_db, ceiling_db=ceiling_db)) >= 0.0)


@HYPOTHESIS
@given(block=audio_blocks, params=soft_clip_params)
def test_soft_clip_is_identity_below_threshold(block, params):
    threshold_db, ceiling_db = params
    y = soft_clip(block, threshold_db=threshold_db, ceiling_db=ceiling_db)
    below = np.abs(block.astype(np.float64)) <= 10.0 ** (threshold_db / 20.0)
    np.testing.assert_array_equal(y[below], block[below])
    assert np.all(np.abs(y[~below]) <= np.abs(block[~below]))
    # Clearly above the threshold the reduction is visible even in float32.
    t, c = 10.0 ** (threshold_db / 20.0), 10.0 ** (ceiling_db / 20.0)
    clearly = np.abs(block.astype(np.float64)) > t + 0.1 * (c - t)
    assert np.all(np.abs(y[clearly]) < np.abs(block[clearly]))


def one_sided_slopes(function, x0: float, step: float) -> tuple[float, float]:
    points = np.array([[x0 - step, x0, x0 + step]], dtype=np.float32)
    values = function(points)[0].astype(np.float64)
    xs = points[0].astype(np.float64)
    return (values[1] - values[0]) / (xs[1] - xs[0]), (values[2] - values[1]) / (xs[2] - xs[1])


@HYPOTHESIS
@given(params=soft_clip_params, position=st.floats(-0.5, 3.0))
@example(params=(-1.0, 0.0), position=0.0)
@example(params=(-6.5, -6.0), position=0.0)
def test_soft_clip_has_continuous_slope(params, position):
    threshold_db, ceiling_db = params
    threshold = 10.0 ** (threshold_db / 20.0)
    x0 = threshold * (1.0 + position)  # position 0 is the threshold itself
    step = 2e-4
    left, right = one_sided_slopes(
        lambda b: soft_clip(b, threshold_db=threshold_db, ceiling_db=ceiling_db), x0, step
    )
    assert abs(left - right) < 0.02
    assert -1e-3 <= right <= 1.0 + 0.02

    # The check is sharp enough to catch a hard clipper's kink.
    hard_left, hard_right = one_sided_slopes(
        lambda b: np.clip(b, -threshold, threshold), threshold, step
    )
    assert abs(hard_left - hard_right) > 0.5


def test_soft_clip_handles_infinite_and_nan_input():
    x = np.array([[np.inf, -np.inf, 1e30, np.nan, 0.0]], dtype=np.float32)
    y = soft_clip(x, threshold_db=-3.0, ceiling_db=-0.1)
    ceiling = 10.0 ** (-0.1 / 20.0)
    assert y[0, 0] <= ceiling and y[0, 0] == pytest.approx(ceiling, rel=1e-6)
    assert y[0, 1] == -y[0, 0]
    assert np.isnan(y[0, 3]) and y[0, 4] == 0.0


# --------------------------------------------------------------------------- NaN safety


def extreme_inputs(sample_rate: int, channels: int) -> dict[str, np.ndarray]:
    frames = sample_rate // 4
    rng = np.random.default_rng(7)
    square = np.sign(sine(60.0, 1.0, sample_rate, frames) + 1e-9)
    return {
        "silence": np.zeros((channels, frames), dtype=np.float32),
        "dc_full_scale": np.ones((channels, frames), dtype=np.float32),
        "square_full_scale": np.tile(square, (channels, 1)).astype(np.float32),
        "noise_full_scale": np.clip(
            rng.standard_normal((channels, frames)) * 4.0, -1.0, 1.0
        ).astype(np.float32),
        "silence_after_loud": np.concatenate(
            [np.ones((channels, frames // 2)), np.zeros((channels, frames // 2))], axis=1
        ).astype(np.float32),
    }


@pytest.mark.parametrize("sample_rate", SAMPLE_RATES_HZ)
@pytest.mark.parametrize("channels", CHANNEL_COUNTS)
def test_no_nan_for_silence_or_full_scale(sample_rate, channels):
    compressors = [
        LinkedCompressor(
            sample_rate, channels, threshold_db=-20.0, ratio=4.0, attack_ms=1.0, release_ms=50.0
        ),
        LinkedCompressor(
            sample_rate,
            channels,
            threshold_db=-120.0,
            ratio=math.inf,
            knee_db=0.0,
            attack_ms=0.01,
            release_ms=0.01,
            makeup_db=48.0,
            detector="peak",
            sidechain_hpf_hz=0.44 * sample_rate,
        ),
    ]
    multiband = MultibandCompressor(
        sample_rate, channels, low_hz=20.0, high_hz=0.44 * sample_rate, bands=BANDS
    )
    crossover = Crossover3(sample_rate, channels)
    for name, x in extreme_inputs(sample_rate, channels).items():
        for compressor in compressors:
            compressor.reset()
            assert np.all(np.isfinite(compressor.process(x))), name
            assert np.all(np.isfinite(compressor.last_gain_reduction_db)), name
            assert np.all(compressor.last_gain_reduction_db >= 0.0), name
        multiband.reset()
        assert np.all(np.isfinite(multiband.process(x))), name
        assert np.all(np.isfinite(multiband.last_gain_reduction_db)), name
        crossover.reset()
        assert all(np.all(np.isfinite(band)) for band in crossover.split(x)), name
        assert np.all(np.isfinite(soft_clip(x))), name
    assert multiband.process(np.zeros((channels, 0), dtype=np.float32)).shape == (channels, 0)


# --------------------------------------------------------------------------- bad input


GOOD = {"threshold_db": -20.0, "ratio": 4.0, "attack_ms": 10.0, "release_ms": 100.0}


@pytest.mark.parametrize(
    ("args", "changes"),
    [
        ((48000, 2), {"ratio": 0.5}),
        ((48000, 2), {"ratio": float("nan")}),
        ((48000, 2), {"attack_ms": 0.0}),
        ((48000, 2), {"release_ms": -5.0}),
        ((48000, 2), {"knee_db": -1.0}),
        ((48000, 2), {"threshold_db": float("inf")}),
        ((48000, 2), {"makeup_db": 100.0}),
        ((48000, 2), {"detector": "vu"}),
        ((48000, 2), {"rms_window_ms": 0.0}),
        ((48000, 2), {"sidechain_hpf_hz": 30000.0}),
        ((48000, 2), {"sidechain_hpf_hz": 0.0}),
        ((4000, 2), {}),
        ((400000, 2), {}),
        ((48000.0, 2), {}),
        ((48000, 0), {}),
        ((48000, True), {}),
    ],
)
def test_linked_compressor_rejects_bad_parameters(args, changes):
    with pytest.raises(ParameterError) as info:
        LinkedCompressor(*args, **{**GOOD, **changes})
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize(
    ("low_hz", "high_hz"), [(10.0, 4000.0), (4000.0, 120.0), (500.0, 500.0), (120.0, 22000.0)]
)
def test_crossover_rejects_bad_frequencies(low_hz, high_hz):
    with pytest.raises(ParameterError):
        Crossover3(48000, 2, low_hz=low_hz, high_hz=high_hz)
    with pytest.raises(ParameterError):
        MultibandCompressor(48000, 2, low_hz=low_hz, high_hz=high_hz, bands=BANDS)


@pytest.mark.parametrize(
    "bands",
    [
        BANDS[:2],
        [*BANDS[:2], {**GOOD, "sidechain_hpf_hz": 100.0}],
        [*BANDS[:2], {"threshold_db": -20.0, "ratio": 2.0}],
        [*BANDS[:2], "loud"],
        BANDS[0],
    ],
)
def test_multiband_rejects_bad_bands(bands):
    with pytest.raises(ParameterError):
        MultibandCompressor(48000, 2, bands=bands)


def test_blocks_of_the_wrong_shape_are_rejected():
    compressor = LinkedCompressor(48000, 2, **GOOD)
    for bad in (
        np.zeros(64, np.float32),
        np.zeros((3, 64), np.float32),
        np.zeros((2, 4, 4)),
        np.zeros((2, 64), np.int16),
    ):
        with pytest.raises(ParameterError):
            compressor.process(bad)
    with pytest.raises(ParameterError):
        Crossover3(48000, 2).split(np.zeros((1, 64), np.float32))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_db": 0.0, "ceiling_db": 0.0},
        {"threshold_db": -1.0, "ceiling_db": -3.0},
        {"threshold_db": float("nan")},
        {"ceiling_db": 30.0, "threshold_db": 20.0},
    ],
)
def test_soft_clip_rejects_bad_parameters(kwargs):
    with pytest.raises(ParameterError):
        soft_clip(np.zeros((2, 8), np.float32), **kwargs)


def test_static_gain_rejects_bad_parameters():
    with pytest.raises(ParameterError):
        static_gain_db(np.zeros(3), threshold_db=-20.0, ratio=0.9, knee_db=6.0)
    with pytest.raises(ParameterError):
        static_gain_db(np.zeros(3), threshold_db=-20.0, ratio=2.0, knee_db=-6.0)


# --------------------------------------------------------------------------- layering


def test_module_imports_only_engine_code():
    tree = ast.parse(Path(dynamics.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    ours = {name for name in imported if name.split(".")[0] == "app"}
    assert all(name.startswith("app.engine") for name in ours), ours
    assert not {name.split(".")[0] for name in imported} & {"torch", "PyQt5", "PyQt6", "PySide6"}
