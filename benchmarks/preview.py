"""Time the mastering preview: the loudest 30 s of a mix rendered through its plan.

    python benchmarks/preview.py [--duration 420] [--rate 48000]

The Studio re-renders this on every parameter change, so it must take well under a
second.  Prints the median of 5 warm runs (after one warm-up) and the loudness /
true peak of the rendered excerpt.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.engine import analysis  # noqa: E402
from app.engine.mastering import chain  # noqa: E402
from app.engine.mastering.planner import MasterSettings  # noqa: E402
from tests import material  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=420.0)
    ap.add_argument("--rate", type=int, default=48000)
    args = ap.parse_args()
    mix = material.program(args.duration, args.rate)
    plan, before, _ = chain.plan_for_file(mix, MasterSettings())
    chain.preview(mix, plan, before)  # warm-up (numba cache load, FFT plans)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        _src, out, start = chain.preview(mix, plan, before)
        times.append(time.perf_counter() - t)
    lu = analysis.integrated_loudness(out, args.rate)
    tp = 20 * __import__("math").log10(analysis.true_peak(out, args.rate))
    med = statistics.median(times)
    print(f"mix: {args.duration:g} s at {args.rate} Hz; preview = loudest 30 s from {start / args.rate:.1f} s")
    print(f"preview render (read + plan render + gain solve): median {med:.3f} s, min {min(times):.3f}, max {max(times):.3f}")
    print(f"excerpt: {lu:.2f} LUFS (the loudest part of a {plan.loudness.target_lufs:g} LUFS master), "
          f"true peak {tp:.2f} dBTP (ceiling {plan.limiter.ceiling_dbtp:g})")  # fmt: skip
    print(f"preview well under a second: {'PASS' if med < 0.5 else 'FAIL'} (bar: 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
