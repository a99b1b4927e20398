"""Real-time playback benchmark: callback cost and underruns with a busy main thread.

Usage::

    .venv/bin/python benchmarks/playback.py                 # both parts, 60 s run
    .venv/bin/python benchmarks/playback.py --seconds 10    # shorter run
    .venv/bin/python benchmarks/playback.py --stream        # part 2 on the real default
                                                            # output device (needs a sound card)

Scene: 48 kHz, 256-frame callbacks (5.33 ms), 8 stereo audio tracks (panned, looped)
+ the live master chain (linear-phase M/S EQ, glue compressor, multiband, true-peak
limiter) on the master side of the A/B, output meters on.

Part 1 - callback cost: ``Engine.render(256, out=...)`` timed back to back on one
thread; figures are fractions of the buffer period (target <= 0.20): median, p99,
max, and the mean (the chain's FFT bursts run every 4th callback, see
:mod:`app.engine.playback.master`).

Part 2 - underruns while the main thread does pure-Python work (a stand-in for a
busy UI), for ``--seconds`` at each ``sys.setswitchinterval`` tried, with the master
chain inline in the callback and on its own worker thread (:class:`ThreadedMasterChain`,
+43 ms latency). The audio
thread is a *paced device model*: callback k starts at ``t0 + k * period`` (or when
the previous one ends), and an underrun is counted when it finishes after
``t0 + (k + buffer_periods) * period``, the moment a device with that much
buffering would have run dry (then the clock re-syncs). This stands in for a sound
card where none exists: ALSA's ``null`` PCM (used by the tests) has no clock and
consumes audio as fast as it is rendered, so it cannot underrun. With ``--stream``
the same run uses :class:`AudioOutput` on the default device and reports PortAudio's
own ``output_underflow`` count instead.

The switch interval matters because the callback thread must win the GIL back from
the busy main thread after sleeping and after every GIL-releasing numba kernel or
FFT; CPython hands it over only after the interval (5 ms by default, about one whole
buffer period at 256 frames).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

from app.engine.mastering.plan import MasteringPlan, MultibandStage
from app.engine.playback import (
    AddTrack,
    AudioOutput,
    AudioTrack,
    Engine,
    LiveMasterChain,
    Play,
    SetLoop,
    SetMasterChain,
    SetMonitor,
    ThreadedMasterChain,
)

SR = 48000
BLOCK = 256
PERIOD_S = BLOCK / SR
TRACK_S = 10


def build_engine(threaded: bool = False) -> Engine:
    rng = np.random.default_rng(7)
    eng = Engine(SR, block_frames=BLOCK)
    for k in range(8):
        x = (0.05 * rng.standard_normal((2, TRACK_S * SR))).astype(np.float32)
        eng.send(AddTrack(AudioTrack(f"t{k}", x, pan=-0.7 + 0.2 * k, gain_db=-float(k))))
    p = MasteringPlan(sample_rate=SR, channels=2)
    p.eq.freqs_hz = [60.0, 250.0, 1000.0, 4000.0, 12000.0]
    p.eq.mid_gain_db = [1.0, -0.5, 0.0, 1.0, 2.0]
    p.eq.side_gain_db = [-2.0, 0.0, 0.5, 1.0, 1.5]
    p.multiband = MultibandStage(enabled=True)
    chain: LiveMasterChain | ThreadedMasterChain
    if threaded:
        # on its own thread: bigger internal blocks mean fewer GIL hand-overs per second
        chain = ThreadedMasterChain(LiveMasterChain(p, 6.0, internal_block_frames=4096))
    else:
        chain = LiveMasterChain(p, 6.0)
    eng.send(SetMasterChain(chain))
    eng.send(SetMonitor("master"))
    eng.send(SetLoop(0, TRACK_S * SR))
    eng.send(Play())
    out = np.zeros((2, BLOCK), dtype=np.float32)
    for _ in range(400):  # compile/load kernels, fill the chain
        eng.render(BLOCK, out=out)
        if isinstance(chain, ThreadedMasterChain):
            chain.wait_idle()  # paced warm-up: the worker keeps up
    return eng


def stats(loads: np.ndarray) -> str:
    return (
        f"median {np.median(loads):6.1%}  p99 {np.percentile(loads, 99):6.1%}  "
        f"max {loads.max():6.1%}  mean {loads.mean():6.1%}  (n={loads.size})"
    )


def part1(blocks: int) -> None:
    eng = build_engine()
    out = np.zeros((2, BLOCK), dtype=np.float32)
    t = np.empty(blocks)
    cpu = np.empty(blocks)
    for i in range(blocks):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        eng.render(BLOCK, out=out)
        t[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
    print("part 1, callback cost / period (8 stereo tracks + live chain), one thread, nothing else in-process:")
    print(f"  wall {stats(t / PERIOD_S)}")
    # thread CPU time leaves out preemption by other processes (e.g. on a shared machine)
    print(f"  cpu  {stats(cpu / PERIOD_S)}")


def busy_ui(stop: threading.Event) -> int:
    """Pure-Python work that holds the GIL as much as it can."""
    n = 0
    while not stop.is_set():
        s = 0
        for i in range(2000):
            s += i * i % 7
        n += 1
    return n


def paced_run(seconds: float, buffer_periods: int, threaded: bool) -> tuple[int, np.ndarray, int, int]:
    eng = build_engine(threaded)
    out = np.zeros((2, BLOCK), dtype=np.float32)
    n_blocks = int(seconds / PERIOD_S)
    loads = np.zeros(n_blocks)
    underruns = 0
    stop = threading.Event()

    def audio() -> None:
        nonlocal underruns
        t0 = time.perf_counter()
        for k in range(n_blocks):
            start = t0 + k * PERIOD_S
            now = time.perf_counter()
            if start > now:
                time.sleep(start - now)
            c0 = time.perf_counter()
            eng.render(BLOCK, out=out)
            c1 = time.perf_counter()
            loads[k] = (c1 - c0) / PERIOD_S
            if c1 > t0 + (k + buffer_periods) * PERIOD_S:
                underruns += 1
                t0 = c1 - (k + 1) * PERIOD_S  # the device restarts from here
        stop.set()

    th = threading.Thread(target=audio, name="amc-audio-model")
    th.start()
    ui_loops = busy_ui(stop)
    th.join()
    return underruns, loads, ui_loops, eng.snapshot().skipped


def stream_run(seconds: float, threaded: bool) -> tuple[int, np.ndarray, int, int]:
    eng = build_engine(threaded)
    stop = threading.Event()
    with AudioOutput(eng, blocksize=BLOCK) as ao:
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        ui_loops = busy_ui(stop)
    return ao.underruns, ao.load_history(), ui_loops, eng.snapshot().skipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--blocks", type=int, default=20000, help="part 1 callbacks")
    ap.add_argument("--buffer-periods", type=int, default=2, help="device buffering in the paced model")
    ap.add_argument("--intervals-ms", default="5,0.5", help="sys.setswitchinterval values to try")
    ap.add_argument("--chain", choices=["inline", "threaded", "both"], default="both",
                    help="part 2: master chain in the callback, on its worker thread, or both runs")
    ap.add_argument("--stream", action="store_true", help="part 2 on the real default output device")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {SR} Hz, {BLOCK}-frame callbacks ({PERIOD_S * 1e3:.2f} ms)")
    part1(args.blocks)
    default = sys.getswitchinterval()
    modes = {"inline": [False], "threaded": [True], "both": [False, True]}[args.chain]
    for threaded in modes:
        for ms in (float(v) for v in args.intervals_ms.split(",")):
            sys.setswitchinterval(ms / 1e3)
            if args.stream:
                under, loads, ui, skipped = stream_run(args.seconds, threaded)
                how = "PortAudio output_underflow"
            else:
                under, loads, ui, skipped = paced_run(args.seconds, args.buffer_periods, threaded)
                how = f"paced device model, {args.buffer_periods} periods buffered"
            print(
                f"part 2, chain {'threaded' if threaded else 'inline'}, {args.seconds:.0f} s, busy main "
                f"thread, switchinterval {ms} ms ({how}):\n"
                f"  underruns {under}, chain-worker underflows {skipped}, UI work loops {ui}\n"
                f"  callback {stats(loads)}"
            )
    sys.setswitchinterval(default)


if __name__ == "__main__":
    main()
