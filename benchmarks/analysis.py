"""Time integrated loudness + loudness range + true peak of a 4-minute track.

Run from the repository root::

    python benchmarks/analysis.py

The signal is a 4-minute 44.1 kHz stereo song rendered by :mod:`tests.material`
(fluidsynth) when that is available, else a synthetic music-like signal. Each
measurement is the median of 5 runs after one warm-up (numba kernels compiled,
caches warm), in-process. Prints a table, the verdict against the 0.5 s target
for our I + LRA + TP, the streaming true-peak meter's speed (the mastering
limiter's path, target >= 100x realtime at 48 kHz stereo) and how our figures
compare with libebur128 (pyebur128) on the same signal. Exits 1 if a target or a
check fails.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import analysis as an

DURATION_S = 240.0
SAMPLE_RATE_HZ = 44_100
TARGET_S = 0.5
LIMITER_TARGET_X_REALTIME = 100.0
RUNS = 5


def synthetic_music(sample_rate: int, duration_s: float, seed: int = 0) -> np.ndarray:
    """Stereo chords with harmonics plus noise hits, in sections of varying level."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * duration_s)
    out = np.zeros((2, n))
    chord_frames = 2 * sample_rate
    t = np.arange(chord_frames) / sample_rate
    decay = np.minimum(1.0, t / 0.02) * np.exp(-t * 0.8)
    for i0 in range(0, n, chord_frames):
        m = min(chord_frames, n - i0)
        root = 110.0 * 2.0 ** (rng.integers(0, 12) / 12)
        chord = sum(
            np.sin(2 * np.pi * root * ratio * h * t[:m] + rng.uniform(0, 2 * np.pi)) / h
            for ratio in (1.0, 1.26, 1.5, 2.0)
            for h in range(1, 6)
        )
        pan = rng.uniform(0.3, 0.7)
        out[0, i0 : i0 + m] += chord * decay[:m] * pan
        out[1, i0 : i0 + m] += chord * decay[:m] * (1 - pan)
    hit = int(0.2 * sample_rate)
    shape = np.exp(-np.arange(hit) / (0.03 * sample_rate))
    for i0 in range(0, n, sample_rate // 2):
        m = min(hit, n - i0)
        out[:, i0 : i0 + m] += 0.8 * rng.standard_normal(m) * shape[:m]
    sections = 10.0 ** (rng.uniform(-12, 0, int(np.ceil(duration_s / 4))) / 20)
    out *= np.repeat(sections, 4 * sample_rate)[:n]
    return (out * (0.5 / np.abs(out).max())).astype(np.float32)


def load_signal() -> tuple[np.ndarray, str]:
    try:
        import soundfile

        from tests.material import program

        path = program(DURATION_S, SAMPLE_RATE_HZ, seed=0)
        data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
        if sample_rate != SAMPLE_RATE_HZ:
            raise RuntimeError(f"unexpected rate {sample_rate}")
        return np.ascontiguousarray(data.T), f"tests.material.program({DURATION_S:g} s, seed 0)"
    except Exception as exc:  # fluidsynth, SoundFont or tests.material missing
        return synthetic_music(
            SAMPLE_RATE_HZ, DURATION_S
        ), f"synthetic (material unavailable: {exc})"


def median_time(fn: Callable[[], object]) -> tuple[float, object]:
    result = fn()  # warm-up: compiles numba kernels, fills caches
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ours_i_lra_tp(audio: np.ndarray) -> tuple[float, float, float]:
    meter = an.LoudnessMeter(SAMPLE_RATE_HZ, audio.shape[0])
    meter.process(audio)
    peak = an.true_peak(audio, SAMPLE_RATE_HZ)
    return meter.integrated_lufs, meter.loudness_range_lu, float(an.gain_to_db(peak))


def ours_i_lra(audio: np.ndarray) -> tuple[float, float]:
    meter = an.LoudnessMeter(SAMPLE_RATE_HZ, audio.shape[0])
    meter.process(audio)
    return meter.integrated_lufs, meter.loudness_range_lu


def ebur128_i_lra_tp(interleaved: np.ndarray, channels: int) -> tuple[float, float, float]:
    import pyebur128

    modes = pyebur128.MeasurementMode
    state = pyebur128.R128State(
        channels, SAMPLE_RATE_HZ, modes.MODE_I | modes.MODE_LRA | modes.MODE_TRUE_PEAK
    )
    state.add_frames(interleaved, interleaved.shape[0] // channels)
    peak = max(pyebur128.get_true_peak(state, c) for c in range(channels))
    return (
        pyebur128.get_loudness_global(state),
        pyebur128.get_loudness_range(state),
        float(an.gain_to_db(peak)),
    )


def limiter_path_x_realtime() -> float:
    """TruePeakMeter.process on 48 kHz stereo in 4096-frame blocks, as the limiter calls it."""
    sample_rate = 48_000
    audio = synthetic_music(sample_rate, 60.0, seed=1)
    blocks = [audio[:, i : i + 4096] for i in range(0, audio.shape[1], 4096)]

    def run() -> None:
        meter = an.TruePeakMeter(sample_rate, 2)
        for block in blocks:
            meter.process(block)
        meter.flush()

    seconds, _ = median_time(run)
    return 60.0 / seconds


def main() -> int:
    audio, source = load_signal()
    audio_s = audio.shape[1] / SAMPLE_RATE_HZ
    print(f"signal: {source}")
    print(
        f"        {audio.shape[0]} ch, {SAMPLE_RATE_HZ} Hz, {audio_s:.1f} s; median of {RUNS} runs after a warm-up\n"
    )

    rows: list[tuple[str, str, float]] = []
    t_ours, ours = median_time(lambda: ours_i_lra_tp(audio))
    rows.append(("ours (app.engine.analysis)", "I + LRA + TP", t_ours))
    t, _ = median_time(lambda: ours_i_lra(audio))
    rows.append(("ours", "I + LRA", t))
    t, _ = median_time(lambda: an.true_peak(audio, SAMPLE_RATE_HZ))
    rows.append(("ours", "TP", t))

    reference = None
    try:
        interleaved = np.ascontiguousarray(audio.T).ravel()  # prepared outside the timing
        t, reference = median_time(lambda: ebur128_i_lra_tp(interleaved, audio.shape[0]))
        rows.append(("pyebur128 (libebur128)", "I + LRA + TP", t))
    except ImportError:
        print("pyebur128 not installed: skipped")
    try:
        import pyloudnorm

        meter = pyloudnorm.Meter(SAMPLE_RATE_HZ)
        transposed = np.ascontiguousarray(audio.T)
        t, _ = median_time(lambda: meter.integrated_loudness(transposed))
        rows.append(("pyloudnorm", "I only (no LRA/TP)", t))
    except ImportError:
        print("pyloudnorm not installed: skipped")

    print(f"{'implementation':<28} {'measures':<20} {'median s':>9} {'x realtime':>11}")
    print("-" * 71)
    for name, what, seconds in rows:
        print(f"{name:<28} {what:<20} {seconds:>9.3f} {audio_s / seconds:>11.0f}")

    ok = True
    verdict = "PASS" if t_ours <= TARGET_S else "FAIL"
    ok &= t_ours <= TARGET_S
    print(f"\nI + LRA + TP target <= {TARGET_S} s: {verdict} ({t_ours:.3f} s)")

    x_rt = limiter_path_x_realtime()
    verdict = "PASS" if x_rt >= LIMITER_TARGET_X_REALTIME else "FAIL"
    ok &= x_rt >= LIMITER_TARGET_X_REALTIME
    print(
        f"TruePeakMeter.process, 48 kHz stereo, 4096-frame blocks: {x_rt:.0f}x realtime "
        f"(target >= {LIMITER_TARGET_X_REALTIME:.0f}x): {verdict}"
    )

    integrated, lra, tp = ours
    print(f"\nours:      I {integrated:8.3f} LUFS   LRA {lra:6.2f} LU   TP {tp:7.3f} dBTP")
    if reference is not None:
        ref_i, ref_lra, ref_tp = reference
        print(f"pyebur128: I {ref_i:8.3f} LUFS   LRA {ref_lra:6.2f} LU   TP {ref_tp:7.3f} dBTP")
        # libebur128 measures LRA on 3 s windows every 1 s, we every 0.1 s (Tech
        # 3342 2016), so LRA may differ by a few tenths of an LU on real music.
        checks = [
            ("I", abs(integrated - ref_i), 0.01, "LU"),
            ("LRA", abs(lra - ref_lra), 1.0, "LU"),
            ("TP", abs(tp - ref_tp), 0.2, "dB"),
        ]
        for name, diff, tol, unit in checks:
            good = diff <= tol
            ok &= good
            print(
                f"  {name:<4} |diff| {diff:6.3f} {unit} (tolerance {tol:g}): {'ok' if good else 'MISMATCH'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
