"""The live master chain: the offline mastering stages, run in real time at a fixed latency.

:class:`LiveMasterChain` wraps :class:`~app.engine.mastering.chain.PreChain` (linear-phase
mid/side EQ, glue compressor, multiband) and :class:`~app.engine.mastering.chain.FinalStage`
(gain, soft clip, true-peak look-ahead limiter) exactly as the renderer uses them, so
what the user hears is what ``master_file`` writes (before dither).

Why a FIFO with an internal block
---------------------------------
The EQ is a ~170 ms linear-phase FIR done by FFT overlap-save; per call it transforms
``taps + block`` frames, so at 256-frame callbacks it would redo an ~8k-point FFT every
callback. The chain instead collects ``internal_block_frames`` (default 1024) and runs
the stages once per internal block: the FFT work comes in bursts every few callbacks
and costs ~4x less in total. Two more effects:

* The stages always see the same block length, so the output does not depend on the
  callback's block size (live playback == offline bounce, sample for sample).
* Latency is fixed: ``latency_frames = internal_block - 1 + FIR latency + limiter
  look-ahead + true-peak meter look-ahead``. The output is exactly the offline
  chain's latency-trimmed output delayed by ``latency_frames``; the engine delays the
  dry (source) path by the same amount, so A/B switching stays time-aligned.

Allocation: the reused offline stages allocate their working arrays (a few tens of KB)
once per internal block. That is bounded and measured by ``benchmarks/playback.py``;
everything this wrapper owns is preallocated.

:class:`ThreadedMasterChain` runs a chain on a worker thread behind lock-free rings
(+~43 ms latency): the callback then only copies, which keeps it steady when a busy
UI thread makes every GIL hand-over slow. Offline bounces use the inline chain; both
produce the same samples (the threaded one ``slack_frames`` later).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
from numba import njit

from app.engine.errors import ParameterError
from app.engine.mastering.chain import FinalStage, PreChain
from app.engine.mastering.plan import MasteringPlan

__all__ = ["DEFAULT_INTERNAL_BLOCK_FRAMES", "LiveMasterChain", "ThreadedMasterChain"]

DEFAULT_INTERNAL_BLOCK_FRAMES = 1024


@njit(cache=True)  # audio thread: GIL held (see engine._copy_kernel)
def _ring_write(ring, start, x, m):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """ring[:, (start + i) % cap] = x[:, i] for i < m."""
    cap = ring.shape[1]
    for i in range(m):
        q = (start + i) % cap
        ring[0, q] = x[0, i]
        ring[1, q] = x[1, i]


@njit(cache=True)
def _ring_read(ring, j0, lo, hi, out, m):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out[:, i] = ring[:, (j0 + i) % cap] for j0 + i in [lo, hi), zeros elsewhere (i < m)."""
    cap = ring.shape[1]
    for i in range(m):
        j = j0 + i
        if lo <= j < hi:
            q = j % cap
            out[0, i] = ring[0, q]
            out[1, i] = ring[1, q]
        else:
            out[0, i] = 0.0
            out[1, i] = 0.0


@njit(cache=True)  # audio thread: GIL held (see engine._copy_kernel)
def _copy_cols(src, s0, dst, d0, n):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """dst[:, d0:d0 + n] = src[:, s0:s0 + n] for two rows."""
    for i in range(n):
        dst[0, d0 + i] = src[0, s0 + i]
        dst[1, d0 + i] = src[1, s0 + i]


class LiveMasterChain:
    """A mastering plan as a fixed-latency real-time processor on (2, n) float32 blocks.

    Parameters
    ----------
    plan : MasteringPlan
        The plan (its sample rate must be the engine's; a mono plan is run as stereo).
    gain_db : float or None
        Gain into the limiter, dB. ``None`` uses ``plan.loudness.gain_db`` (the solved
        gain of a finished master), and 0 dB if the plan has none.
    internal_block_frames : int, keyword-only
        Frames per stage run (see the module notes), 64..16384.

    Attributes
    ----------
    latency_frames : int
        Output frame ``t`` is the offline chain's output for input frame ``t - latency_frames``.

    Notes
    -----
    Build it off the audio thread (designing the FIRs takes tens of ms) and hand it to
    the engine with ``SetMasterChain``; after that only the audio thread calls
    :meth:`process`. Not thread-safe.
    """

    def __init__(self, plan: MasteringPlan, gain_db: float | None = None, *,
                 internal_block_frames: int = DEFAULT_INTERNAL_BLOCK_FRAMES) -> None:  # fmt: skip
        if not isinstance(plan, MasteringPlan):
            raise ParameterError("LiveMasterChain needs a MasteringPlan")
        plan.validate()
        if plan.channels != 2:
            plan = replace(plan, channels=2)
        n = int(internal_block_frames)
        if not 64 <= n <= 16384:
            raise ParameterError(f"internal_block_frames must be 64..16384, got {internal_block_frames}")
        if gain_db is None:
            gain_db = plan.loudness.gain_db if plan.loudness.gain_db is not None else 0.0
        self.plan = plan
        self.gain_db = float(gain_db)
        self.sample_rate = plan.sample_rate
        self.internal_block_frames = n
        self._pre = PreChain(plan)
        self._pre.fir.fft_workers = 1  # the audio thread must not fan out to a thread pool
        self._final = FinalStage(plan, self.gain_db)
        chain_latency = self._pre.latency_frames + self._final.latency_frames + self._final.meter.latency_frames
        self.latency_frames = n - 1 + chain_latency
        self._in = np.zeros((2, n), dtype=np.float32)
        self._fill = 0
        cap = self.latency_frames + 2 * n + 16
        self._ring = np.zeros((2, cap), dtype=np.float32)  # output FIFO
        self._read = 0
        self._avail = self.latency_frames  # pre-filled with silence: the fixed latency
        self.underflows = 0

    def _push(self, y: np.ndarray) -> None:
        cap = self._ring.shape[1]
        m = y.shape[1]
        w = (self._read + self._avail) % cap
        first = min(m, cap - w)
        self._ring[:, w : w + first] = y[:, :first]
        if m > first:
            self._ring[:, : m - first] = y[:, first:]
        self._avail += m

    def _pop(self, out: np.ndarray, m: int) -> None:
        cap = self._ring.shape[1]
        take = min(m, self._avail)
        # frames [read, read + take) of the ring; past them (cannot happen with the
        # latency above) silence, counted
        _ring_read(self._ring, self._read, self._read, self._read + take, out, m)
        if take < m:
            self.underflows += 1
        self._read = (self._read + take) % cap
        self._avail -= take

    def process(self, x: np.ndarray, out: np.ndarray) -> None:
        """Process ``x`` (2, m) float32 into ``out`` (2, m) float32 (audio thread; may alias)."""
        m = x.shape[1]
        n = self.internal_block_frames
        done = 0
        while done < m:
            k = min(m - done, n - self._fill)
            _copy_cols(x, done, self._in, self._fill, k)
            self._fill += k
            if self._fill == n:
                self._push(self._final.process(self._pre.process(self._in)))
                # the offline stages keep every block's gain reduction for the report;
                # live that would grow for as long as playback runs
                self._pre.compressor_gr_db.clear()
                self._final.limiter_gr_db.clear()
                self._fill = 0
            self._pop(out[:, done:], k)
            done += k


#: Default slack of the threaded chain: how far its worker may fall behind (frames at 48 kHz: ~43 ms).
DEFAULT_WORKER_SLACK_S = 0.043


class ThreadedMasterChain:
    """A :class:`LiveMasterChain` run on its own worker thread, behind lock-free rings.

    The audio callback only copies its block into an input ring and the block from
    ``slack_frames`` ago out of an output ring; the chain's bursts (FFTs, numba kernels,
    each a GIL release and re-acquisition) happen on the worker. That keeps the
    callback short and steady even when a busy UI thread makes every GIL hand-over
    wait a switch interval; the price is ``slack_frames`` more latency, which is
    included in :attr:`latency_frames` (so A/B stays aligned).

    Output frame ``t`` is the inner chain's output for input frame ``t - slack_frames``
    as long as the worker keeps up; otherwise the missing frames play as silence and
    are counted in :attr:`underflows` (alignment is kept: frames are addressed by index).

    Parameters
    ----------
    chain : LiveMasterChain
        The chain to run (this object owns it from now on).
    slack_frames : int, keyword-only
        Extra latency the worker may use; default ~43 ms.
    poll_s : float, keyword-only
        How long the idle worker sleeps between looks at the input ring.

    Notes
    -----
    Threads: :meth:`process` on the audio thread only; :meth:`close` (and
    :meth:`wait_idle`) on any other. The rings are single-producer/single-consumer;
    each index is a Python int written by one side only, and the GIL orders the
    array writes before the index update. The engine calls :meth:`close` from
    ``Engine.collect`` when the chain is replaced.
    """

    def __init__(self, chain: LiveMasterChain, *, slack_frames: int | None = None,
                 poll_s: float = 0.001, max_block_frames: int = 8192) -> None:  # fmt: skip
        if not isinstance(chain, LiveMasterChain):
            raise ParameterError("ThreadedMasterChain wraps a LiveMasterChain")
        self.chain = chain
        self.sample_rate = chain.sample_rate
        w = round(DEFAULT_WORKER_SLACK_S * chain.sample_rate) if slack_frames is None else int(slack_frames)
        if w < 1:
            raise ParameterError("slack_frames must be >= 1")
        self.slack_frames = w
        self.latency_frames = chain.latency_frames + w
        cap = 4 * (w + max_block_frames)
        self._cap = cap
        self._in = np.zeros((2, cap), dtype=np.float32)
        self._out = np.zeros((2, cap), dtype=np.float32)
        self._chunk = 2048
        self._x = np.zeros((2, self._chunk), dtype=np.float32)
        self._y = np.zeros((2, self._chunk), dtype=np.float32)
        self._in_w = 0  # audio thread writes
        self._in_r = 0  # worker writes
        self._out_w = 0  # worker writes
        self.underflows = 0  # audio thread
        self.lost_frames = 0  # worker: input overwritten before it was processed
        self._poll_s = float(poll_s)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="amc-master-chain", daemon=True)
        self._thread.start()

    # ---- audio thread

    def process(self, x: np.ndarray, out: np.ndarray) -> None:
        """Queue ``x`` (2, m) and write the output for the same frames into ``out`` (may alias)."""
        m = x.shape[1]
        t = self._in_w
        _ring_write(self._in, t, x, m)
        self._in_w = t + m
        j0 = t - self.slack_frames
        hi = min(j0 + m, self._out_w)
        _ring_read(self._out, j0, 0, hi, out, m)  # frames before index 0: start-up silence
        if hi < j0 + m:
            self.underflows += 1

    # ---- worker

    def _run(self) -> None:
        cap = self._cap
        while not self._stop:
            avail = self._in_w - self._in_r
            if avail <= 0:
                time.sleep(self._poll_s)
                continue
            if avail > cap - 2 * self._chunk:  # overrun: jump ahead, silence the gap
                skip = avail - (cap - 2 * self._chunk)
                self._write_out(self._in_r, None, skip)
                self._in_r += skip
                self.lost_frames += skip
                avail -= skip
            n = min(avail, self._chunk)
            r = self._in_r
            p = r % cap
            first = min(n, cap - p)
            self._x[:, :first] = self._in[:, p : p + first]
            if n > first:
                self._x[:, first:n] = self._in[:, : n - first]
            self.chain.process(self._x[:, :n], self._y[:, :n])
            self._write_out(r, self._y, n)
            self._in_r = r + n

    def _write_out(self, start: int, y: np.ndarray | None, n: int) -> None:
        cap = self._cap
        done = 0
        while done < n:
            q = (start + done) % cap
            k = min(n - done, cap - q)
            if y is None:
                self._out[:, q : q + k] = 0.0
            else:
                self._out[:, q : q + k] = y[:, done : done + k]
            done += k
        self._out_w = start + n

    # ---- any other thread

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until the worker has processed everything queued (tests, offline use)."""
        end = time.monotonic() + timeout_s
        while self._in_r < self._in_w:
            if time.monotonic() > end:
                return False
            time.sleep(0.0002)
        return True

    def close(self) -> None:
        """Stop the worker thread (idempotent)."""
        self._stop = True
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
