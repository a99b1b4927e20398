"""Contracts of app.engine.dither: grid, noise level and colour, independence, state."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.signal import welch

from app.engine.dither import Ditherer, noise_transfer_coefficients
from app.engine.errors import ParameterError

SR = 44100
LSB16 = 2.0**-15


def _sine(freq_hz: float, level_dbfs: float, frames: int, *, sr: int = SR) -> np.ndarray:
    t = np.arange(frames) / sr
    return (10.0 ** (level_dbfs / 20.0) * np.sin(2 * np.pi * freq_hz * t))[None, :]


def _coherent_freq(target_hz: float, frames: int, *, sr: int = SR) -> float:
    """A frequency with a whole number of cycles in ``frames`` (no spectral leakage)."""
    return round(target_hz * frames / sr) * sr / frames


def _db(power_ratio: float) -> float:
    return 10.0 * np.log10(power_ratio)


def _tpdf_rms(bits: int) -> float:
    """RMS of TPDF-dithered requantization error: uniform LSB²/12 + dither LSB²/6 = LSB²/4."""
    lsb = 2.0 ** -(bits - 1)
    return float(np.sqrt(lsb**2 / 12.0 + lsb**2 / 6.0))


@pytest.mark.parametrize("bits", [8, 16, 24])
@pytest.mark.parametrize("noise_shaping", [False, True])
def test_output_lies_on_the_bit_depth_grid(bits: int, noise_shaping: bool) -> None:
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 5000))
    y = Ditherer(2, bits=bits, noise_shaping=noise_shaping).process(x)
    codes = y * 2.0 ** (bits - 1)
    assert y.shape == x.shape and y.dtype == np.float64
    np.testing.assert_array_equal(codes, np.round(codes))


def test_noise_floor_of_16_bit_tpdf_is_flat_and_at_the_computed_level() -> None:
    frames = 2**18
    x = _sine(_coherent_freq(1000.0, frames), -110.0, frames)  # silence + a tiny sine
    error = (Ditherer(1, bits=16).process(x) - x)[0]
    expected_rms = _tpdf_rms(16)  # LSB/2 = 2**-16, i.e. 20*log10(2**-16) = -96.33 dBFS
    measured_rms = float(np.sqrt(np.mean(error**2)))
    assert 20 * np.log10(measured_rms / expected_rms) == pytest.approx(0.0, abs=0.1)
    # Flat: every 2.2 kHz band within 1 dB of the average.
    freqs, psd = welch(error, fs=SR, nperseg=4096)
    edges = np.linspace(0.0, SR / 2, 11)
    bands = [psd[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in itertools.pairwise(edges)]
    assert max(abs(_db(b / np.mean(bands))) for b in bands) < 1.0


def test_tpdf_error_is_uncorrelated_with_a_minus_90_dbfs_sine_unlike_rounding() -> None:
    frames = 2**18
    freq = _coherent_freq(1000.0, frames)
    x = _sine(freq, -90.0, frames)

    def harmonic_excess_db(y: np.ndarray) -> float:
        # Largest of harmonics 2..7 of the error, relative to the median noise density.
        freqs, psd = welch((y - x)[0], fs=SR, nperseg=8192, window="hann")
        floor = np.median(psd)
        peaks = [
            psd[np.argmin(np.abs(freqs - k * freq)) + np.arange(-1, 2)].max() for k in range(2, 8)
        ]
        return _db(max(peaks) / floor)

    rounded = Ditherer(1, bits=16, dither=False).process(x)
    dithered = Ditherer(1, bits=16).process(x)
    assert harmonic_excess_db(rounded) > 20.0  # plain rounding: distortion spikes
    assert harmonic_excess_db(dithered) < 4.0  # dither: only the flat floor
    error = (dithered - x)[0]
    assert abs(np.corrcoef(error, x[0])[0, 1]) < 0.01


def test_noise_shaping_moves_the_noise_above_10_khz() -> None:
    frames = 2**17
    x = _sine(_coherent_freq(1000.0, frames), -110.0, frames)
    spectra = {}
    for shaped in (False, True):
        error = (Ditherer(1, bits=16, noise_shaping=shaped, sample_rate=SR).process(x) - x)[0]
        spectra[shaped] = welch(error, fs=SR, nperseg=4096)
    freqs, flat = spectra[False]
    _, shaped = spectra[True]
    high = freqs >= 10_000
    assert flat[high].sum() / flat.sum() == pytest.approx((SR / 2 - 10_000) / (SR / 2), abs=0.03)
    assert shaped[high].sum() / shaped.sum() > 0.95
    sensitive = (freqs >= 1000) & (freqs < 5000)
    assert _db(shaped[sensitive].mean() / flat[sensitive].mean()) < -15.0
    # The measured shape follows the designed noise transfer function.
    ntf = noise_transfer_coefficients(SR)
    assert _db(shaped.sum() / flat.sum()) == pytest.approx(_db(float(np.sum(ntf**2))), abs=0.3)


@pytest.mark.parametrize("sample_rate", [8000, 44100, 48000, 96000, 192000])
def test_noise_shaping_stays_bounded_at_every_rate(sample_rate: int) -> None:
    x = np.random.default_rng(2).uniform(-0.9, 0.9, (2, 20000))
    y = Ditherer(2, bits=16, noise_shaping=True, sample_rate=sample_rate).process(x)
    bound = float(np.sum(np.abs(noise_transfer_coefficients(sample_rate)))) * 1.5 * LSB16
    assert np.max(np.abs(y - x)) <= bound + 1e-12


@pytest.mark.parametrize("block", [1, 64, 65, 8192, 8193])
@pytest.mark.parametrize("noise_shaping", [False, True])
def test_block_size_does_not_change_the_output(block: int, noise_shaping: bool) -> None:
    frames = 3000 if block == 1 else 20000
    x = np.random.default_rng(3).normal(0.0, 0.1, (2, frames))
    whole = Ditherer(2, bits=16, noise_shaping=noise_shaping, seed=7).process(x)
    ditherer = Ditherer(2, bits=16, noise_shaping=noise_shaping, seed=7)
    pieces = [ditherer.process(x[:, i : i + block]) for i in range(0, frames, block)]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)


def test_seed_makes_it_deterministic() -> None:
    x = _sine(440.0, -60.0, 4096)
    a = Ditherer(1, bits=16, seed=5).process(x)
    b = Ditherer(1, bits=16, seed=5).process(x)
    c = Ditherer(1, bits=16, seed=6).process(x)
    d = Ditherer(1, bits=16, seed=None).process(x)
    e = Ditherer(1, bits=16, seed=None).process(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(d, e)


def test_channels_get_independent_dither() -> None:
    x = np.zeros((2, 100_000))
    y = Ditherer(2, bits=16).process(x)
    assert abs(np.corrcoef(y[0], y[1])[0, 1]) < 0.02


def test_without_dither_on_grid_input_passes_unchanged() -> None:
    codes = np.random.default_rng(4).integers(-(2**23), 2**23, (2, 1000))
    x = codes / 2.0**23
    np.testing.assert_array_equal(Ditherer(2, bits=24, dither=False).process(x), x)


def test_values_are_not_clipped() -> None:
    x = np.array([[1.5, -2.0, 0.999]])
    y = Ditherer(1, bits=16, dither=False).process(x)
    np.testing.assert_array_equal(y, np.round(x * 32768) / 32768)


def test_empty_block() -> None:
    assert Ditherer(3, bits=16).process(np.zeros((3, 0))).shape == (3, 0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (2, 64), elements=st.floats(-1.0, 1.0)))
def test_tpdf_error_never_exceeds_one_and_a_half_lsb(x: np.ndarray) -> None:
    y = Ditherer(2, bits=16, seed=0).process(x)
    assert np.max(np.abs(y - x)) <= 1.5 * LSB16 + 1e-15


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0,), {"bits": 16}),
        ((2,), {"bits": 4}),
        ((2,), {"bits": 40}),
        ((2,), {"bits": 16.0}),
        ((True,), {"bits": 16}),
    ],
)
def test_bad_construction_is_a_parameter_error(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ParameterError):
        Ditherer(*args, **kwargs)


@pytest.mark.parametrize(
    "block", [np.zeros((3, 10)), np.zeros(10), np.zeros((2, 10), dtype=np.int16)]
)
def test_bad_block_is_a_parameter_error(block: np.ndarray) -> None:
    with pytest.raises(ParameterError):
        Ditherer(2, bits=16).process(block)
