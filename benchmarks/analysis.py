"""Time `amc analyze` (the whole command) and the meter core on a 4-minute track.

Run from the repository root::

    python benchmarks/analysis.py

The signal is a 4-minute 44.1 kHz stereo song rendered by :mod:`tests.material`
(fluidsynth) when that is available, else a synthetic music-like signal, written
as a float WAV.

1. **The whole command**, ``python -m app.cli analyze FILE --json``: wall time from
   process start to exit and peak RSS (``os.wait4``), median of 5 runs after one
   warm-up (numba's on-disk cache and the page cache filled), against the issue's
   bar of 0.5 s and 300 MB; once with ``--musical`` (tempo and key, librosa); and the
   same for a process that reads the file in blocks into pyebur128 (libebur128:
   I + LRA + TP) and prints the three figures.
2. **The meter core**, in-process on the decoded signal (median of 5 runs after a
   warm-up): our I + LRA + TP, our every-meter :class:`Analyzer` (what the command
   runs), pyebur128 and pyloudnorm; the streaming true-peak meter's speed (the
   mastering limiter's path, target >= 100x realtime at 48 kHz stereo); and how
   our figures compare with libebur128's.

The machine's load average is printed: on a shared machine the wall times move
with it. Exits 1 if a target or a check fails.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import analysis as an

ROOT = Path(__file__).resolve().parents[1]
DURATION_S = 240.0
SAMPLE_RATE_HZ = 44_100
TARGET_S = 0.5
COMMAND_TARGET_S = 0.5
COMMAND_TARGET_MB = 300.0
LIMITER_TARGET_X_REALTIME = 100.0
RUNS = 5

#: The libebur128 equivalent of the command: the file read in blocks, I + LRA + TP printed.
PYEBUR128_COMMAND = """
import sys, numpy as np, soundfile as sf, pyebur128
m = pyebur128.MeasurementMode
with sf.SoundFile(sys.argv[1]) as f:
    st = pyebur128.R128State(f.channels, f.samplerate, m.MODE_I | m.MODE_LRA | m.MODE_TRUE_PEAK)
    for block in f.blocks(65536, dtype="float64"):
        st.add_frames(np.ascontiguousarray(block).ravel(), block.shape[0])
    tp = max(pyebur128.get_true_peak(st, c) for c in range(f.channels))
print(pyebur128.get_loudness_global(st), pyebur128.get_loudness_range(st), 20 * np.log10(tp))
"""


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


def load_signal(folder: Path) -> tuple[np.ndarray, Path, str]:
    """The 4-minute signal, decoded, and a float WAV of it."""
    import soundfile

    try:
        from tests.material import program

        path = program(DURATION_S, SAMPLE_RATE_HZ, seed=0)
        data, sample_rate = soundfile.read(path, dtype="float32", always_2d=True)
        if sample_rate != SAMPLE_RATE_HZ:
            raise RuntimeError(f"unexpected rate {sample_rate}")
        return np.ascontiguousarray(data.T), path, f"tests.material.program({DURATION_S:g} s, seed 0)"
    except Exception as exc:  # fluidsynth, SoundFont or tests.material missing
        audio = synthetic_music(SAMPLE_RATE_HZ, DURATION_S)
        path = folder / "synthetic.wav"
        soundfile.write(path, audio.T, SAMPLE_RATE_HZ, subtype="FLOAT")
        return audio, path, f"synthetic (material unavailable: {exc})"


#: CPU seconds (this process, every thread) of the last median_time's runs, median.
last_cpu_s = 0.0


def median_time(fn: Callable[[], object]) -> tuple[float, object]:
    global last_cpu_s
    result = fn()  # warm-up: compiles numba kernels, fills caches
    times, cpu = [], []
    for _ in range(RUNS):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    last_cpu_s = statistics.median(cpu)
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


#: Runs the measured command from a small interpreter (no numpy, ~10 MB): a child's peak
#: RSS counts the memory it shares with its parent until it execs, so the benchmark's own
#: process (the decoded signal, numba) must not be the one that forks it.
WAIT4_HELPER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
sys.stdout.write(f"{wall} {usage.ru_maxrss} {cpu} {os.waitstatus_to_exitcode(status)}\\n")
sys.stdout.buffer.write(out)
"""


def run_command(argv: list[str]) -> tuple[float, float, float, str]:
    """Run a process to its end: (wall s from start to exit, peak RSS MB, CPU s, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WAIT4_HELPER, *argv], capture_output=True, cwd=ROOT, env=env)
    head, _, out = done.stdout.decode().partition("\n")
    wall, max_rss_kib, cpu, code = head.split()
    if int(code) != 0:
        raise RuntimeError(f"{argv[2:]} exited with {code}")
    return float(wall), int(max_rss_kib) / 1024.0, float(cpu), out  # ru_maxrss: KiB on Linux


def median_command(argv: list[str], runs: int = RUNS) -> tuple[float, float, float, float, float, str]:
    """(median wall, min wall, max wall, max peak RSS MB, median CPU s, last stdout) after a warm-up."""
    run_command(argv)
    results = [run_command(argv) for _ in range(runs)]
    walls = [r[0] for r in results]
    cpu = statistics.median(r[2] for r in results)
    return statistics.median(walls), min(walls), max(walls), max(r[1] for r in results), cpu, results[-1][3]


def time_commands(path: Path) -> bool:
    py = sys.executable
    print(f"whole command, {path.name} ({path.stat().st_size / 1e6:.0f} MB float WAV); "
          f"wall from process start to exit, peak RSS and CPU (user + system) from os.wait4; "
          f"median of {RUNS} runs after a warm-up")  # fmt: skip
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs)\n")
    rows = []
    med, lo, hi, rss, cpu, out = median_command([py, "-m", "app.cli", "analyze", str(path), "--json", "-q"])
    rows.append(("amc analyze --json (default)", med, lo, hi, rss, cpu))
    ours_ok = med <= COMMAND_TARGET_S and rss <= COMMAND_TARGET_MB
    d = json.loads(out)
    *musical, _ = median_command([py, "-m", "app.cli", "analyze", str(path), "--json", "-q", "--musical"], runs=1)
    rows.append(("amc analyze --json --musical", *musical))
    ref = None
    try:
        import pyebur128  # noqa: F401

        *reference, out_r = median_command([py, "-c", PYEBUR128_COMMAND, str(path)])
        rows.append(("pyebur128 (I+LRA+TP) script", *reference))
        ref = [float(v) for v in out_r.split()]
    except ImportError:
        print("pyebur128 not installed: skipped")
    print(f"{'command':<32} {'median s':>9} {'min-max s':>13} {'peak RSS MB':>12} {'CPU s':>7}")
    print("-" * 78)
    for name, m, a, b, r, c in rows:
        print(f"{name:<32} {m:>9.2f} {f'{a:.2f}-{b:.2f}':>13} {r:>12.0f} {c:>7.2f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    verdict = "PASS" if ours_ok else "FAIL"
    print(f"\namc analyze target <= {COMMAND_TARGET_S} s and <= {COMMAND_TARGET_MB:.0f} MB: {verdict} "
          f"({med:.2f} s, {rss:.0f} MB)")  # fmt: skip
    if ref is not None:
        print(f"command figures: amc I {d['integrated_lufs']:.3f} LRA {d['loudness_range_lu']:.2f} "
              f"TP {d['true_peak_dbtp']:.3f}; pyebur128 I {ref[0]:.3f} LRA {ref[1]:.2f} TP {ref[2]:.3f}")  # fmt: skip
    print()
    return ours_ok


def analyzer_all(audio: np.ndarray) -> an.Analysis:
    analyzer = an.Analyzer(SAMPLE_RATE_HZ, audio.shape[0], keep_musical=False)
    for start in range(0, audio.shape[1], 65536):
        analyzer.process(audio[:, start : start + 65536])
    return analyzer.result()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="amc-bench-") as folder:
        audio, path, source = load_signal(Path(folder))
        audio_s = audio.shape[1] / SAMPLE_RATE_HZ
        print(f"signal: {source}")
        print(f"        {audio.shape[0]} ch, {SAMPLE_RATE_HZ} Hz, {audio_s:.1f} s\n")
        ok = time_commands(path)
    return meter_core(audio, audio_s) and ok


def meter_core(audio: np.ndarray, audio_s: float) -> bool:
    print(f"meter core, in-process on the decoded signal; median of {RUNS} runs after a warm-up")
    rows: list[tuple[str, str, float, float]] = []
    t_ours, ours = median_time(lambda: ours_i_lra_tp(audio))
    rows.append(("ours (app.engine.analysis)", "I + LRA + TP", t_ours, last_cpu_s))
    t, _ = median_time(lambda: analyzer_all(audio))
    rows.append(("ours, Analyzer", "every meter (*)", t, last_cpu_s))
    t, _ = median_time(lambda: ours_i_lra(audio))
    rows.append(("ours", "I + LRA", t, last_cpu_s))
    t, _ = median_time(lambda: an.true_peak(audio, SAMPLE_RATE_HZ))
    rows.append(("ours", "TP", t, last_cpu_s))

    reference = None
    try:
        interleaved = np.ascontiguousarray(audio.T).ravel()  # prepared outside the timing
        t, reference = median_time(lambda: ebur128_i_lra_tp(interleaved, audio.shape[0]))
        rows.append(("pyebur128 (libebur128)", "I + LRA + TP", t, last_cpu_s))
    except ImportError:
        print("pyebur128 not installed: skipped")
    try:
        import pyloudnorm

        meter = pyloudnorm.Meter(SAMPLE_RATE_HZ)
        transposed = np.ascontiguousarray(audio.T)
        t, _ = median_time(lambda: meter.integrated_loudness(transposed))
        rows.append(("pyloudnorm", "I only (no LRA/TP)", t, last_cpu_s))
    except ImportError:
        print("pyloudnorm not installed: skipped")

    print(f"{'implementation':<28} {'measures':<20} {'median s':>9} {'x realtime':>11} {'CPU s':>7}")
    print("-" * 79)
    for name, what, seconds, cpu in rows:
        print(f"{name:<28} {what:<20} {seconds:>9.3f} {audio_s / seconds:>11.0f} {cpu:>7.3f}")
    print("(*) what `amc analyze` runs: I, LRA, M/S max, TP, sample peak, DC, clipping, silence, stereo, spectrum")

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
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
