"""Our loudness meter against libebur128 (pyebur128) at every sample rate from 8 to 192 kHz.

Run from the repository root::

    python benchmarks/loudness_rates.py [SECONDS]

At 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 176400 and 192000 Hz,
on pink noise, noise whose level jumps every second, a synthetic music-like signal and
a song rendered by :mod:`tests.material` (fluidsynth; rendered at up to 96 kHz and
resampled with soxr above), each SECONDS long (default 30): the differences (ours minus
libebur128) of integrated loudness, loudness range, the last momentary and short-term
values, and true peak. ``LRA*`` is our LRA computed libebur128's way (3 s windows every
1 s, nearest-rank percentiles) from our short-term powers: it isolates the filter from
the LRA method (we use a window every 0.1 s). Exits 1 if an integrated, momentary or
short-term difference exceeds 0.1 LU.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import analysis as an
from tests.engine.test_analysis import enveloped_noise, libebur128_style_lra, music_like, pink_noise

RATES_HZ = (8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000)
TOLERANCE_LU = 0.1
KEYS = ("I", "LRA", "LRA*", "M", "S", "TP")


def reference(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    import pyebur128

    modes = pyebur128.MeasurementMode
    state = pyebur128.R128State(
        audio.shape[0],
        sample_rate,
        modes.MODE_I | modes.MODE_LRA | modes.MODE_TRUE_PEAK | modes.MODE_M | modes.MODE_S,
    )
    state.add_frames(np.ascontiguousarray(audio.T, dtype=np.float64).ravel(), audio.shape[1])
    peak = max(pyebur128.get_true_peak(state, c) for c in range(audio.shape[0]))
    lra = pyebur128.get_loudness_range(state)
    return {
        "I": pyebur128.get_loudness_global(state),
        "LRA": lra,
        "LRA*": lra,
        "M": pyebur128.get_loudness_momentary(state),
        "S": pyebur128.get_loudness_shortterm(state),
        "TP": 20.0 * math.log10(peak),
    }


def ours(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    meter = an.LoudnessMeter(sample_rate, audio.shape[0])
    meter.process(audio)
    return {
        "I": meter.integrated_lufs,
        "LRA": meter.loudness_range_lu,
        "LRA*": libebur128_style_lra(meter.short_term_powers),
        "M": float(meter.momentary_lufs[-1]),
        "S": float(meter.short_term_lufs[-1]),
        "TP": float(an.gain_to_db(an.true_peak(audio, sample_rate))),
    }


def rendered_song(sample_rate: int, duration_s: float) -> np.ndarray | None:
    try:
        import soundfile
        import soxr

        from tests import material

        path = material.program(duration_s, min(sample_rate, 96_000), seed=0)
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        if rate != sample_rate:
            data = soxr.resample(data, rate, sample_rate, quality="VHQ")
        return np.ascontiguousarray(data.T, dtype=np.float32)
    except Exception as exc:  # fluidsynth or its SoundFont missing
        print(f"  (no rendered song at {sample_rate} Hz: {exc})")
        return None


def main() -> int:
    duration_s = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    print(f"ours minus libebur128 (pyebur128), {duration_s:g} s signals; LU, TP in dB\n")
    print(f"{'signal':<9}{'rate':>7} " + " ".join(f"{k:>8}" for k in KEYS) + f"  {'I LUFS':>7}")
    worst = dict.fromkeys(KEYS, 0.0)
    for sr in RATES_HZ:
        signals = {
            "pink": pink_noise(sr, duration_s, 1),
            "noise": enveloped_noise(sr, duration_s, 11),
            "music": music_like(sr, duration_s, 5),
        }
        song = rendered_song(sr, duration_s)
        if song is not None:
            signals["song"] = song
        for name, audio in signals.items():
            ref, got = reference(audio, sr), ours(audio, sr)
            diff = {k: got[k] - ref[k] for k in KEYS}
            for k in KEYS:
                worst[k] = max(worst[k], abs(diff[k]))
            cells = " ".join(f"{diff[k]:>+8.3f}" for k in KEYS)
            print(f"{name:<9}{sr:>7} {cells}  {got['I']:>7.2f}")
    print("\nworst |difference|: " + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))
    ok = max(worst["I"], worst["M"], worst["S"]) <= TOLERANCE_LU
    print(f"integrated, momentary, short-term within {TOLERANCE_LU} LU at every rate: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
