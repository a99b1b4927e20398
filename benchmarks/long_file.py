"""Master a 60-minute mix and report wall time and peak memory (bounded-memory check).

    python benchmarks/long_file.py [--minutes 60] [--rate 48000]

The mix is the 7-minute program from tests/material.py repeated (streamed to disk,
never held in memory).  ``amc master`` runs as a child process; its peak RSS comes
from ``os.wait4``.  Memory must not grow with length: compare with the 7-minute
figure of benchmarks/mastering.py.  The child's temporary folder is a fresh one
(``TMPDIR``), polled every 0.1 s: the peak size of its scratch is printed too
(target: <= 500 MB for 60 minutes).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import material  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=int, default=48000)
    args = ap.parse_args()
    amc = ROOT / ".venv" / "bin" / "amc"
    amc_cmd = [str(amc)] if amc.exists() else [shutil.which("amc") or "amc"]
    src = material.program(420.0, args.rate)
    total = int(args.minutes * 60 * args.rate)
    with tempfile.TemporaryDirectory(prefix="amc-long-") as tmp:
        mix = pathlib.Path(tmp) / "long-mix.wav"
        with sf.SoundFile(mix, "w", args.rate, 2, subtype="PCM_24") as out:
            written = 0
            while written < total:
                for block in sf.blocks(str(src), blocksize=1 << 18, dtype="float32", always_2d=True):
                    block = block[: total - written]
                    out.write(block)
                    written += len(block)
                    if written >= total:
                        break
        master = pathlib.Path(tmp) / "long-master.wav"
        scratch_root = pathlib.Path(tmp) / "tmpdir"
        scratch_root.mkdir()
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.1):
                size = 0
                for f in scratch_root.rglob("*"):
                    try:
                        size += f.stat().st_size if f.is_file() else 0
                    except OSError:
                        pass
                peak[0] = max(peak[0], size)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t = time.perf_counter()
        proc = subprocess.Popen([*amc_cmd, "master", str(mix), "-o", str(master), "-q"],
                                env={**os.environ, "TMPDIR": str(scratch_root)})  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        done.set()
        watcher.join()
        left = list(scratch_root.iterdir())
        if os.waitstatus_to_exitcode(status) != 0:
            print("amc master failed", file=sys.stderr)
            return 1
        info = sf.info(master)
        print(f"mix: {args.minutes:g} min at {args.rate} Hz, 24-bit stereo ({mix.stat().st_size / 1e9:.2f} GB)")
        print(f"amc master: {wall:.1f} s wall ({args.minutes * 60 / wall:.0f}x realtime), "
              f"peak RSS {usage.ru_maxrss / 1024:.0f} MB; output {info.samplerate} Hz, {info.duration / 60:.1f} min")  # fmt: skip
        print(f"scratch: peak {peak[0] / 1e6:.0f} MB in TMPDIR (target <= 500 MB), {len(left)} entries left after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
