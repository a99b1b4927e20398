"""Studio start-up: process start -> main window shown (target <= 1.5 s).

    .venv/bin/python benchmarks/studio.py [--runs 7]

Each run starts a fresh ``amc-studio`` process (offscreen Qt, no audio device, a fresh
AMC_HOME) that quits right after showing its window.  Two figures per run:
``shown`` is measured inside the process from interpreter start (``time.perf_counter``
at the top of ``app.ui.main`` plus the interpreter's own start, taken from the
outside), ``process`` is the whole process wall time including teardown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run() -> tuple[float, float]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", AMC_REPORT_STARTUP="1", AMC_NO_AUDIO="1",
               AMC_HOME=tempfile.mkdtemp(prefix="amc-bench-"))  # fmt: skip
    code = "import time, sys; t=time.perf_counter(); from app.ui import main; print(f'import-start {t:.6f}'); sys.exit(main.main(['--quit-after-ms', '0']))"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    shown = None
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("window-shown"):
            shown = time.perf_counter() - t0
    proc.wait()
    return float(shown if shown is not None else "nan"), time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args()
    one_run()  # warm the OS file cache and numba's on-disk cache
    shown, total = zip(*(one_run() for _ in range(args.runs)), strict=True)
    print(f"start -> window shown: median {statistics.median(shown):.3f} s, min {min(shown):.3f}, max {max(shown):.3f} (target <= 1.5 s)")
    print(f"whole process (incl. teardown): median {statistics.median(total):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
