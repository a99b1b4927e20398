"""Benchmark `amc master` against Matchering 2.0 on synthesized program material.

    python benchmarks/mastering.py [--quick] [--runs 3] [--json results.json]

For each case (a 4-minute 44.1 kHz and a 7-minute 48 kHz mix; 30 s with --quick)
and a loud reference at the same rate, both tools master the same input:

* ``amc master IN -o OUT --reference REF --report R.json`` (default target
  "streaming": -14 LUFS integrated, -1 dBTP ceiling), ``--runs`` times;
* Matchering (GPLv3: run from ``benchmarks/.venv-matchering``, made by
  ``benchmarks/setup_matchering.sh``, as a separate process; never imported here).

Measured: wall time (median over runs), peak RSS of the child process tree
(``os.wait4`` on that child only), x-realtime = duration / wall, and of each output,
measured here with pyebur128: integrated loudness, true peak, sample rate.

Prints a table, the speed ratio and PASS/FAIL lines for: >= 10x faster than
Matchering, peak RSS <= 500 MB on the 7-minute mix, loudness within +-0.2 LU of
the target, true peak <= ceiling, sample rate kept. Exit status 0 even when a
target is missed (this is a measurement); 1 when a run crashes or writes no
output; 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.material, run from any directory

from tests import material  # noqa: E402

MATCHERING_PYTHON = ROOT / "benchmarks" / ".venv-matchering" / "bin" / "python"
TARGET_LUFS = -14.0  # amc's default target, "streaming"
CEILING_DBTP = -1.0
LOUDNESS_TOLERANCE_LU = 0.2
MIN_SPEEDUP = 10.0
MAX_RSS_MB_LONG = 500.0
REFERENCE_DURATION_S = 180.0  # a full song; --quick uses the case's own duration

# Runs in Matchering's venv: argv = target reference output.
MATCHERING_DRIVER = """\
import sys
import matchering as mg
mg.log(lambda message: print(message, file=sys.stderr))
mg.process(target=sys.argv[1], reference=sys.argv[2], results=[mg.pcm24(sys.argv[3])])
"""


@dataclass
class Case:
    name: str
    duration_s: float
    sample_rate: int


@dataclass
class Measured:
    """One tool on one case."""

    tool: str
    case: str
    duration_s: float
    wall_s: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    integrated_lufs: float = float("nan")
    true_peak_dbtp: float = float("nan")
    sample_rate: int = 0
    error: str = ""

    @property
    def median_wall_s(self) -> float:
        return statistics.median(self.wall_s) if self.wall_s else float("nan")

    @property
    def x_realtime(self) -> float:
        return self.duration_s / self.median_wall_s if self.wall_s else float("nan")


def find_amc() -> list[str] | None:
    """The command that runs amc: .venv/bin/amc, else `amc` on PATH."""
    local = ROOT / ".venv" / "bin" / "amc"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local)]
    found = shutil.which("amc")
    return [found] if found else None


def run_measured(cmd: list[str], log_path: pathlib.Path) -> tuple[int, float, float]:
    """Run ``cmd``; return (exit code, wall seconds, peak RSS MB of that child and its descendants).

    ``os.wait4`` reports the rusage of exactly this child (including the children it
    waited for), unlike RUSAGE_CHILDREN of this process, which would mix in earlier runs.
    """
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; tell Popen
    rss_mb = usage.ru_maxrss / 1024.0  # Linux: KiB
    if sys.platform == "darwin":
        rss_mb = usage.ru_maxrss / (1024.0 * 1024.0)  # macOS: bytes
    return proc.returncode, wall, rss_mb


def measure_output(path: pathlib.Path) -> tuple[float, float, int]:
    """(integrated LUFS, true peak dBTP, sample rate) of an audio file, by pyebur128."""
    import pyebur128

    audio, sample_rate = sf.read(path, dtype="float64", always_2d=True)
    mode = pyebur128.MeasurementMode.MODE_I | pyebur128.MeasurementMode.MODE_TRUE_PEAK
    meter = pyebur128.R128State(audio.shape[1], sample_rate, mode)
    block = 1 << 20  # feed in blocks: the interleaved float64 copy stays small
    for start in range(0, len(audio), block):
        chunk = np.ascontiguousarray(audio[start : start + block])
        meter.add_frames(chunk.ravel(), len(chunk))
    loudness = float(pyebur128.get_loudness_global(meter))
    peak = max(pyebur128.get_true_peak(meter, ch) for ch in range(audio.shape[1]))
    return loudness, float(20 * np.log10(max(peak, 1e-12))), int(sample_rate)


def _tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def bench_amc(
    amc: list[str], case: Case, mix: pathlib.Path, ref: pathlib.Path, work: pathlib.Path, runs: int
) -> Measured:
    result = Measured("amc", case.name, case.duration_s)
    out = None
    for run in range(runs):
        out = work / f"{case.name}-amc-{run}.wav"
        report = work / f"{case.name}-amc-{run}.json"
        log = work / f"{case.name}-amc-{run}.log"
        out.unlink(missing_ok=True)  # left by an earlier --keep run; amc refuses to overwrite
        report.unlink(missing_ok=True)
        cmd = [
            *amc,
            "master",
            str(mix),
            "-o",
            str(out),
            "--reference",
            str(ref),
            "--report",
            str(report),
        ]
        code, wall, rss = run_measured(cmd, log)
        if code != 0 or not out.is_file():
            result.error = f"exit {code}: {' '.join(cmd)}\n{_tail(log)}"
            return result
        try:
            json.loads(report.read_text())
        except (OSError, ValueError) as exc:
            result.error = f"no valid --report JSON ({exc})"
            return result
        result.wall_s.append(wall)
        result.peak_rss_mb = max(result.peak_rss_mb, rss)
        if run < runs - 1:
            out.unlink()  # keep the disk use to one output per case
    assert out is not None
    result.integrated_lufs, result.true_peak_dbtp, result.sample_rate = measure_output(out)
    return result


def bench_matchering(
    case: Case, mix: pathlib.Path, ref: pathlib.Path, work: pathlib.Path, runs: int
) -> Measured:
    result = Measured("matchering", case.name, case.duration_s)
    driver = work / "matchering_driver.py"
    driver.write_text(MATCHERING_DRIVER)
    out = None
    for run in range(runs):
        out = work / f"{case.name}-matchering-{run}.wav"
        log = work / f"{case.name}-matchering-{run}.log"
        out.unlink(missing_ok=True)
        cmd = [str(MATCHERING_PYTHON), str(driver), str(mix), str(ref), str(out)]
        code, wall, rss = run_measured(cmd, log)
        if code != 0 or not out.is_file():
            result.error = f"exit {code}: {' '.join(cmd)}\n{_tail(log)}"
            return result
        result.wall_s.append(wall)
        result.peak_rss_mb = max(result.peak_rss_mb, rss)
        if run < runs - 1:
            out.unlink()
    assert out is not None
    result.integrated_lufs, result.true_peak_dbtp, result.sample_rate = measure_output(out)
    return result


def _f(value: float, digits: int = 2) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


def print_table(rows: list[Measured]) -> None:
    header = (
        "case",
        "tool",
        "runs",
        "wall s (median)",
        "x-realtime",
        "peak RSS MB",
        "LUFS",
        "dBTP",
        "out Hz",
    )
    body = [
        (m.case, m.tool, str(len(m.wall_s)), _f(m.median_wall_s), _f(m.x_realtime, 1), _f(m.peak_rss_mb, 0),
         _f(m.integrated_lufs), _f(m.true_peak_dbtp), str(m.sample_rate or "-"))
        for m in rows
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    for i, row in enumerate([header, *body]):
        print(
            "  ".join(
                cell.rjust(w) if j > 1 else cell.ljust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def verdicts(
    cases: list[Case], ours: dict[str, Measured], theirs: dict[str, Measured], long_case: str
) -> list[tuple[bool, str]]:
    lines: list[tuple[bool, str]] = []
    for case in cases:
        a = ours.get(case.name)
        if a is None or a.error:
            continue
        b = theirs.get(case.name)
        if b is not None and not b.error:
            ratio = b.median_wall_s / a.median_wall_s
            lines.append(
                (
                    ratio >= MIN_SPEEDUP,
                    f"{case.name}: {ratio:.1f}x faster than Matchering (need >= {MIN_SPEEDUP:g}x)",
                )
            )
        error = a.integrated_lufs - TARGET_LUFS
        lines.append(
            (
                abs(error) <= LOUDNESS_TOLERANCE_LU,
                f"{case.name}: loudness {a.integrated_lufs:.2f} LUFS, error {error:+.2f} LU (need within ±{LOUDNESS_TOLERANCE_LU} LU of {TARGET_LUFS:g})",
            )
        )
        margin = CEILING_DBTP - a.true_peak_dbtp
        lines.append(
            (
                margin >= 0,
                f"{case.name}: true peak {a.true_peak_dbtp:.2f} dBTP, margin {margin:+.2f} dB to the {CEILING_DBTP:g} dBTP ceiling",
            )
        )
        lines.append(
            (
                a.sample_rate == case.sample_rate,
                f"{case.name}: output at {a.sample_rate} Hz, input at {case.sample_rate} Hz",
            )
        )
        if case.name == long_case:
            lines.append(
                (
                    a.peak_rss_mb <= MAX_RSS_MB_LONG,
                    f"{case.name}: peak RSS {a.peak_rss_mb:.0f} MB (need <= {MAX_RSS_MB_LONG:g} MB)",
                )
            )
    return lines


def _finite(value: object) -> object:
    """NaN/inf -> None, numpy scalars -> Python, recursively, so the JSON file is valid JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="30 s programs instead of 4 and 7 minutes"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="amc runs per case; the median wall time is reported"
    )
    parser.add_argument("--matchering-runs", type=int, default=1, help="Matchering runs per case")
    parser.add_argument(
        "--skip",
        choices=["amc", "matchering"],
        action="append",
        default=[],
        help="leave a tool out",
    )
    parser.add_argument("--json", type=pathlib.Path, help="also write the measurements here")
    parser.add_argument("--keep", type=pathlib.Path, help="keep outputs and logs in this folder")
    args = parser.parse_args(argv)

    if args.quick:
        cases = [Case("30s-44k1", 30.0, 44100), Case("30s-48k", 30.0, 48000)]
    else:
        cases = [Case("4min-44k1", 240.0, 44100), Case("7min-48k", 420.0, 48000)]
    long_case = cases[-1].name

    amc = None
    if "amc" not in args.skip:
        amc = find_amc()
        if amc is None:
            print(
                "amc not found: run scripts/setup.sh (creates .venv/bin/amc) or put amc on PATH",
                file=sys.stderr,
            )
            return 2
    if "matchering" not in args.skip and not MATCHERING_PYTHON.is_file():
        print(
            "Matchering is not set up: run benchmarks/setup_matchering.sh (or pass --skip matchering)",
            file=sys.stderr,
        )
        return 2

    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; amc: {' '.join(amc) if amc else 'skipped'}"
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="amc-bench-") if args.keep is None else None
    work = pathlib.Path(work_ctx.name) if work_ctx else args.keep
    ours: dict[str, Measured] = {}
    theirs: dict[str, Measured] = {}
    rows: list[Measured] = []
    crashed = False
    try:
        for case in cases:
            started = time.perf_counter()
            mix = material.program(case.duration_s, case.sample_rate)
            ref_duration = case.duration_s if args.quick else REFERENCE_DURATION_S
            ref = material.reference(ref_duration, case.sample_rate)
            print(
                f"[{case.name}] material ready in {time.perf_counter() - started:.1f} s: {mix.name}, reference {ref.name}",
                flush=True,
            )
            if amc is not None:
                m = bench_amc(amc, case, mix, ref, work, args.runs)
                ours[case.name] = m
                rows.append(m)
                print(
                    f"[{case.name}] amc: {'FAILED ' + m.error.splitlines()[0] if m.error else f'{m.median_wall_s:.2f} s'}",
                    flush=True,
                )
            if "matchering" not in args.skip:
                m = bench_matchering(case, mix, ref, work, args.matchering_runs)
                theirs[case.name] = m
                rows.append(m)
                print(
                    f"[{case.name}] matchering: {'FAILED ' + m.error.splitlines()[0] if m.error else f'{m.median_wall_s:.2f} s'}",
                    flush=True,
                )
            crashed |= any(r.error for r in rows if r.case == case.name)
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()

    print()
    print_table(rows)
    for m in theirs.values():
        if not m.error:
            print(
                f"Matchering {m.case}: matches the reference's loudness, not a target; output at {m.sample_rate} Hz"
            )
    print()
    for case in cases:
        a, b = ours.get(case.name), theirs.get(case.name)
        if a and b and not a.error and not b.error:
            print(f"{case.name}: Matchering time / ours = {b.median_wall_s / a.median_wall_s:.1f}")
    results = verdicts(cases, ours, theirs, long_case)
    for ok, line in results:
        print(f"{'PASS' if ok else 'FAIL'}  {line}")
    for m in rows:
        if m.error:
            print(f"CRASH {m.tool} on {m.case}: {m.error}")
    if args.json:
        payload = {
            "cases": [asdict(c) for c in cases],
            "results": [
                asdict(m) | {"median_wall_s": m.median_wall_s, "x_realtime": m.x_realtime}
                for m in rows
            ],
            "verdicts": [{"pass": ok, "what": line} for ok, line in results],
        }
        args.json.write_text(json.dumps(_finite(payload), indent=2))
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
