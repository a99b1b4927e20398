"""The synthesized program material is plausible music at the level a mix arrives at mastering."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests import material


def _loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    import pyebur128

    meter = pyebur128.R128State(audio.shape[1], sample_rate, pyebur128.MeasurementMode.MODE_I)
    meter.add_frames(np.ascontiguousarray(audio, dtype=np.float64).ravel(), audio.shape[0])
    return float(pyebur128.get_loudness_global(meter))


def _check(
    path,
    sample_rate: int,
    duration_s: float,
    loudness_lufs: tuple[float, float],
    crest_db: tuple[float, float],
) -> None:
    info = sf.info(str(path))
    assert info.channels == 2
    assert info.samplerate == sample_rate
    assert info.frames == round(duration_s * sample_rate)
    audio, _ = sf.read(path, dtype="float64", always_2d=True)
    assert np.all(np.isfinite(audio))
    peak = np.max(np.abs(audio))
    rms = np.sqrt(np.mean(audio**2))
    assert rms > 1e-3, "silent"
    crest = 20 * np.log10(peak / rms)
    assert crest_db[0] <= crest <= crest_db[1], crest
    lufs = _loudness_lufs(audio, sample_rate)
    assert loudness_lufs[0] <= lufs <= loudness_lufs[1], lufs
    # A mix, not two copies of one channel and not anti-phase.
    correlation = np.corrcoef(audio[:, 0], audio[:, 1])[0, 1]
    assert 0.3 < correlation < 0.999, correlation
    # Music lives in the low/mid band, with air on top: not noise, not a sine.
    spectrum = np.abs(np.fft.rfft(audio[: 2**18].mean(axis=1))) ** 2
    freqs = np.fft.rfftfreq(min(2**18, len(audio)), 1 / sample_rate)
    low_mid = spectrum[(freqs >= 40) & (freqs < 2000)].sum()
    high = spectrum[(freqs >= 2000) & (freqs < 16000)].sum()
    assert 1e-3 < high / low_mid < 0.5


@pytest.mark.parametrize("fixture, rate", [("program_44k_30s", 44100), ("program_48k_30s", 48000)])
def test_program_is_an_unmastered_stereo_mix(request, fixture, rate):
    path = request.getfixturevalue(fixture)
    _check(path, rate, 30.0, loudness_lufs=(-20.5, -15.5), crest_db=(12.0, 22.0))
    peak_dbfs = 20 * np.log10(np.max(np.abs(sf.read(path, always_2d=True)[0])))
    assert -6.5 <= peak_dbfs <= -2.5


def test_reference_is_loud_and_mastered(reference_48k_30s):
    _check(reference_48k_30s, 48000, 30.0, loudness_lufs=(-9.5, -7.5), crest_db=(7.0, 14.0))


def test_material_is_cached_and_seeded(program_44k_30s):
    assert material.program(30.0, 44100) == program_44k_30s  # same parameters -> same cached file
    other = material.program(8.0, 44100, seed=5, style="ballad")
    again = material.program(8.0, 44100, seed=5, style="ballad")
    assert other == again and other != program_44k_30s
    assert sf.info(str(other)).frames == 8 * 44100


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="style"):
        material.program(30.0, 44100, style="polka")
    with pytest.raises(ValueError, match="sample_rate"):
        material.program(30.0, 1000)
