"""The mastering renderer: plan in, master out — streamed, bounded memory, exact on spec.

Passes over a file (blocks of ``BLOCK_FRAMES``; memory does not grow with length):

A. *analyse* the input (loudness, true peak, spectrum...)  -> plan
B. *pre-chain*: linear-phase mid/side EQ (with high-pass, mono bass, width) ->
   linked glue compressor -> optional multiband; the result goes to a scratch file
   together with its per-frame true peaks and K-weighted power.
C. *solve* the gain into the limiter that lands the integrated loudness on target,
   on the scratch data (cheap: the limiter envelope and loudness gating only).
D. *render*: gain -> optional soft clip -> true-peak look-ahead limiter -> dither /
   quantise -> atomic writer; the written samples themselves are measured.  If the
   measured loudness is off by more than ``SOLVE_TOLERANCE_LU`` or a true peak is over
   the ceiling, the pass is thrown away and redone with the correction (rare).

The same stage classes render in memory for the preview and for tests.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from app.engine import analysis, audio_io
from app.engine.errors import AudioInputError, ParameterError, ProcessingError
from app.engine.file_analysis import analyze_file
from app.engine.mastering.dynamics import (
    LinkedCompressor,
    MultibandCompressor,
    OversampledClipper,
)
from app.engine.mastering.eq import MidSideFIR, design_linear_phase
from app.engine.mastering.limiter import DelayLine, LimiterEnvelope, _envelope_kernel
from app.engine.mastering.plan import MasteringPlan
from app.engine.mastering.planner import MasterSettings, SpectrumBands, average_spectra, make_plan

BLOCK_FRAMES = 65536
#: Aim well inside the ±0.2 LU contract so meters with other filters agree too.
SOLVE_TOLERANCE_LU = 0.05
MAX_RENDER_PASSES = 4
MIN_DURATION_S = 0.4
PREVIEW_SECONDS = 30.0

ProgressFn = Callable[[float, str], None]


#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_allocator_tuned = False


def _keep_freed_blocks_mapped() -> None:
    """Ask glibc to keep freed block buffers instead of handing them back to the kernel.

    A render allocates and frees block-sized arrays (0.5-2 MB) on several threads.  With
    glibc's default, adaptive thresholds the freed memory at the top of each arena is
    returned to the kernel and faulted in again on the next block: on a 7-minute master
    that was ~200 000 page faults and a sixth of the CPU time (system time).  Fixed
    thresholds (mmap only above 8 MB, trim only above 16 MB free) keep the pages; peak
    memory barely changes.  Process-wide, once; a no-op off glibc.
    """
    global _allocator_tuned
    if _allocator_tuned or not sys.platform.startswith("linux"):
        return
    _allocator_tuned = True
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl & co: leave their allocator alone
            return
        libc.mallopt(_M_MMAP_THRESHOLD, 8 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 16 << 20)
    except (OSError, AttributeError):
        pass


class Cancelled(Exception):
    """Raised through the renderer when the progress callback asks to stop."""


def _noop_progress(fraction: float, message: str) -> None:
    return None


# ============================================================================ stages


class PreChain:
    """EQ/filter/imager FIR -> linked compressor -> multiband, streaming, latency-trimmed.

    :meth:`process` returns the processed frames available so far (the first call
    returns ``latency_frames`` fewer); :meth:`flush` returns the rest, so the total
    output equals the total input, frame-aligned.
    """

    def __init__(self, plan: MasteringPlan) -> None:
        sr, ch = plan.sample_rate, plan.channels
        eq = plan.eq
        freqs = np.asarray(eq.freqs_hz, dtype=np.float64)
        mid_g = np.asarray(eq.mid_gain_db if eq.enabled else np.zeros(len(freqs)), dtype=np.float64)
        side_g = np.asarray(eq.side_gain_db if eq.enabled else np.zeros(len(freqs)), dtype=np.float64)
        hp = plan.filter.highpass_hz
        mid_taps = design_linear_phase(sr, freqs, mid_g, highpass_hz=hp)
        if ch == 2:
            mono = plan.imager.mono_bass_hz
            side_taps = design_linear_phase(
                sr, freqs, side_g,
                highpass_hz=max(hp, mono or 0.0), highpass_order=4 if mono else 2,
                gain=plan.imager.width,
            )  # fmt: skip
        else:
            side_taps = mid_taps
        self.fir = MidSideFIR(sr, ch, mid_taps=mid_taps, side_taps=side_taps)
        self.latency_frames = self.fir.latency_frames
        self._to_skip = self.latency_frames
        c = plan.compressor
        self.comp = (
            LinkedCompressor(
                sr, ch, threshold_db=c.threshold_db, ratio=c.ratio, attack_ms=c.attack_ms,
                release_ms=c.release_ms, knee_db=c.knee_db, makeup_db=c.makeup_db,
                detector="rms", sidechain_hpf_hz=c.sidechain_hpf_hz, max_gr_db=c.max_gr_db,
                section_window_ms=c.section_window_ms,
                section_ref_db=c.section_ref_db if c.section_ref_db is not None else c.threshold_db,
            )
            if c.enabled
            else None
        )
        m = plan.multiband
        self.multiband = (
            MultibandCompressor(
                sr, ch, low_hz=m.low_hz, high_hz=m.high_hz,
                bands=[
                    dict(threshold_db=b.threshold_db, ratio=b.ratio, attack_ms=b.attack_ms,
                         release_ms=b.release_ms, knee_db=b.knee_db, makeup_db=b.makeup_db)
                    for b in m.bands
                ],
            )
            if m.enabled
            else None
        )
        self.compressor_gr_db: list[np.ndarray] = []

    def _dynamics(self, x: np.ndarray) -> np.ndarray:
        if self.comp is not None and x.shape[1]:
            x = self.comp.process(x)
            self.compressor_gr_db.append(self.comp.last_gain_reduction_db.copy())
        if self.multiband is not None and x.shape[1]:
            x = self.multiband.process(x)
        return x

    def linear(self, block: np.ndarray) -> np.ndarray:
        """The FIR stage alone (latency-trimmed); feed its output to :meth:`dynamics` in order."""
        y = self.fir.process(block)
        if self._to_skip:
            k = min(self._to_skip, y.shape[1])
            y = y[:, k:]
            self._to_skip -= k
        return y

    def linear_flush(self) -> np.ndarray:
        tail = self.fir.process(np.zeros((self.fir.channels, self.latency_frames), dtype=np.float32))
        return tail[:, self._to_skip :]

    def dynamics(self, y: np.ndarray) -> np.ndarray:
        return self._dynamics(y)

    def process(self, block: np.ndarray) -> np.ndarray:
        return self._dynamics(self.linear(block))

    def flush(self) -> np.ndarray:
        return self._dynamics(self.linear_flush())


class FinalStage:
    """Gain -> optional oversampled soft clip -> true-peak limiter, streaming, latency-trimmed.

    Peaks are measured live on the limiter's input with the project's true-peak meter,
    so the limiter's guarantee is against exactly that signal.
    """

    def __init__(self, plan: MasteringPlan, gain_db: float, *, ceiling_offset_db: float = 0.0) -> None:
        sr, ch = plan.sample_rate, plan.channels
        lim = plan.limiter
        self.gain = float(10.0 ** (gain_db / 20.0))
        self.ceiling_dbtp = lim.ceiling_dbtp + ceiling_offset_db
        sc = plan.soft_clip
        self.clipper = (
            OversampledClipper(sr, ch, threshold_db=self.ceiling_dbtp + sc.threshold_db,
                               ceiling_db=self.ceiling_dbtp + sc.ceiling_db)
            if sc.enabled
            else None
        )  # fmt: skip
        self.meter = analysis.TruePeakMeter(sr, ch, oversample=lim.oversample)
        self.env = _limiter_envelope(plan, ceiling_dbtp=self.ceiling_dbtp)
        clip_latency = self.clipper.latency_frames if self.clipper is not None else 0
        self.latency_frames = self.env.latency_frames + clip_latency
        self._delay = DelayLine(ch, self.env.latency_frames)
        self._pending: list[np.ndarray] = []
        self._to_skip = self.latency_frames
        self._channels = ch
        self.limiter_gr_db: list[np.ndarray] = []
        self._reused = False

    def _input(self, block: np.ndarray) -> np.ndarray:
        y = block * np.float32(self.gain)
        if self.clipper is not None:
            y = self.clipper.process(y)
        return y.astype(np.float32, copy=False)

    def _emit(self, peaks: np.ndarray) -> np.ndarray:
        k = len(peaks)
        frames = _pop_frames(self._pending, k, self._channels)
        gains = self.env.process(peaks)
        audio = self._delay.process(frames)
        out = audio * gains[None, :].astype(np.float32)
        gr = gains
        if self._to_skip:
            s = min(self._to_skip, out.shape[1])
            out, gr = out[:, s:], gr[s:]
            self._to_skip -= s
        if gr.size:
            self.limiter_gr_db.append(gr.astype(np.float32))
        return out

    @property
    def can_reuse_peaks(self) -> bool:
        """Without a clipper the limiter input is ``gain * x``, so the true peaks of ``x`` scale exactly."""
        return self.clipper is None

    def prepare(self, block: np.ndarray, peaks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """First half of :meth:`process`: gain, clipper and the limiter input's true peaks.

        Calls must come in order, but may run on another thread than :meth:`limit`
        (the renderer overlaps the two)."""
        y = self._input(block)
        if peaks is not None and self.can_reuse_peaks:
            self._reused = True
            return y, peaks.astype(np.float64) * self.gain
        return y, self.meter.process(y)

    def limit(self, y: np.ndarray, peaks: np.ndarray) -> np.ndarray:
        """Second half of :meth:`process`: the limiter over what :meth:`prepare` returned."""
        self._pending.append(y)
        return self._emit(peaks)

    def process(self, block: np.ndarray, peaks: np.ndarray | None = None) -> np.ndarray:
        """Limit ``block``; ``peaks`` (per-frame true peaks of ``block``) skips the live meter."""
        return self.limit(*self.prepare(block, peaks))

    def flush(self) -> np.ndarray:
        parts = []
        if self.clipper is not None:
            tail = self.clipper.flush()
            self._pending.append(tail)
            parts.append(self._emit(self.meter.process(tail)))
        parts.append(self._emit(np.zeros(0) if self._reused else self.meter.flush()))
        d = self.env.latency_frames
        self._pending.append(np.zeros((self._channels, d), dtype=np.float32))
        parts.append(self._emit(np.zeros(d, dtype=np.float64)))
        return np.concatenate(parts, axis=1)


def _limiter_envelope(plan: MasteringPlan, *, ceiling_dbtp: float | None = None) -> LimiterEnvelope:
    lim = plan.limiter
    return LimiterEnvelope(
        plan.sample_rate, ceiling_dbtp=lim.ceiling_dbtp if ceiling_dbtp is None else ceiling_dbtp,
        lookahead_ms=lim.lookahead_ms, release_ms=lim.release_ms, margin_db=lim.margin_db,
        transient_release_ms=lim.transient_release_ms, sustain_ms=lim.sustain_ms,
    )  # fmt: skip


def _pop_frames(pending: list[np.ndarray], k: int, channels: int) -> np.ndarray:
    """Remove and return the first ``k`` frames of a FIFO of (channels, n) blocks."""
    if k == 0:
        return np.zeros((channels, 0), dtype=np.float32)
    out, got = [], 0
    while got < k:
        b = pending[0]
        take = min(k - got, b.shape[1])
        out.append(b[:, :take])
        if take == b.shape[1]:
            pending.pop(0)
        else:
            pending[0] = b[:, take:]
        got += take
    return out[0] if len(out) == 1 else np.concatenate(out, axis=1)


# ============================================================================ two cores


class _InOrder:
    """Runs one stateful consumer on a second thread, in submission order, at most
    ``depth`` blocks behind the producer (so memory stays bounded).

    The numba kernels release the GIL and so do FFTs and file I/O, so the producer's
    DSP and the consumer's metering/writing really run at the same time.
    """

    def __init__(self, depth: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amc-chain")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def finish(self) -> None:
        """Wait for everything submitted; re-raise the first consumer error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> _InOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.finish()
            return
        # Unwinding already: drop what has not started, let the rest end, keep the
        # original exception (a consumer error now would only hide it).
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


# ============================================================================ loudness model


def _integrated_from_subblocks(z: np.ndarray) -> float:
    """Integrated loudness (LUFS) from 100 ms sub-block mean powers: 400 ms blocks at
    75 % overlap, gated by the analysis module's BS.1770-4 gates."""
    if len(z) < 4:
        return -math.inf
    c = np.concatenate([[0.0], np.cumsum(z, dtype=np.float64)])
    power = analysis.gated_mean_power((c[4:] - c[:-4]) / 4.0)
    return float(analysis.LOUDNESS_OFFSET_DB + 10.0 * np.log10(power)) if power > 0 else -math.inf


def _subblock_edges(total_frames: int, sample_rate: int) -> np.ndarray:
    n = int(total_frames * 10 // sample_rate)
    return np.round(np.arange(n + 1) * sample_rate / 10.0).astype(np.int64)


#: Moving-average length (10 Hz points) that smooths the section ride.
RIDE_SMOOTH_POINTS = 21


def section_ride_db(src_st_lufs: np.ndarray, pre_st_lufs: np.ndarray, *, max_db: float) -> np.ndarray:
    """The section ride: per 10 Hz short-term window, the dB that put the processed
    signal's section loudness back at the source's pattern.

    Windows more than 20 LU under the source's loudest, or silent, take their nearest
    neighbour's value; the curve is smoothed over ~2 s, its power-weighted mean removed
    (the level is the loudness solve's job) and clamped to ±``max_db``.
    """
    src = np.asarray(src_st_lufs, dtype=np.float64)
    pre = np.asarray(pre_st_lufs, dtype=np.float64)
    n = min(len(src), len(pre))
    src, pre = src[:n], pre[:n]
    ok = np.isfinite(src) & np.isfinite(pre)
    if np.count_nonzero(ok) < 2:
        return np.zeros(n)
    ok &= src > float(np.max(src[ok])) - 20.0
    idx = np.arange(n)
    good = idx[ok]
    d = np.interp(idx, good, (src - pre)[good])
    k = min(RIDE_SMOOTH_POINTS, n if n % 2 else n - 1)
    if k >= 3:
        d = np.convolve(np.pad(d, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
    w = 10.0 ** (src[ok] / 10.0)
    d = d - float(np.sum(w * d[ok]) / np.sum(w))
    return np.clip(d, -max_db, max_db)


class RideCurve:
    """Per-frame linear gains from a 10 Hz section-ride curve (window k is centred at
    k / 10 + 1.5 s; linear interpolation between centres, held at the ends)."""

    def __init__(self, ride_db: np.ndarray, sample_rate: int, frames: int) -> None:
        self.db = np.asarray(ride_db, dtype=np.float64)
        self.centres = (np.arange(len(self.db)) / 10.0 + 1.5) * sample_rate
        # one gain per STEP_FRAMES, computed once for the whole signal (4 bytes per 64 frames)
        steps = np.arange(frames // self.STEP_FRAMES + 1, dtype=np.float64) * self.STEP_FRAMES + self.STEP_FRAMES / 2
        self._coarse = (
            (10.0 ** (np.interp(steps, self.centres, self.db) / 20.0)).astype(np.float32)
            if self.db.size
            else np.ones(1, dtype=np.float32)
        )

    #: frames per computed gain step (the curve moves at most ~3 dB over seconds, so a step of
    #: 64 frames changes the gain by well under 0.001 dB)
    STEP_FRAMES = 64

    def gains(self, start_frame: int, n: int) -> np.ndarray:
        """(n,) float32 gains from ``start_frame``; read-only, so threads may share the curve."""
        if self.db.size == 0:
            return np.ones(n, dtype=np.float32)
        k = self.STEP_FRAMES
        first, last = start_frame // k, (start_frame + n - 1) // k + 1
        coarse = self._coarse[first:last]
        if coarse.size < last - first:  # past the end of the signal: the last value held
            coarse = np.concatenate([coarse, np.full(last - first - coarse.size, self._coarse[-1], np.float32)])
        fine = np.repeat(coarse, k)
        off = start_frame - first * k
        return fine[off : off + n]

    @property
    def max_abs_db(self) -> float:
        return float(np.max(np.abs(self.db))) if self.db.size else 0.0


def _short_term_from_subblocks(z: np.ndarray) -> np.ndarray:
    """Short-term loudness (LUFS, 3 s windows at 10 Hz) from 100 ms sub-block mean powers."""
    if len(z) < 30:
        return np.zeros(0)
    c = np.concatenate([[0.0], np.cumsum(z, dtype=np.float64)])
    p = (c[30:] - c[:-30]) / 30.0
    with np.errstate(divide="ignore"):
        return analysis.LOUDNESS_OFFSET_DB + 10.0 * np.log10(p)


def ride_in_memory(source: np.ndarray, processed: np.ndarray, plan: MasteringPlan) -> np.ndarray:
    """``processed`` with the plan's section ride applied (measured against ``source``)."""
    if not plan.section_ride.enabled:
        return processed
    sr = plan.sample_rate
    metres = []
    for a in (source, processed):
        m = analysis.LoudnessMeter(sr, a.shape[0])
        m.process(a)
        metres.append(m.short_term_lufs)
    ride = RideCurve(section_ride_db(metres[0], metres[1], max_db=plan.section_ride.max_db), sr, processed.shape[1])
    return (processed * ride.gains(0, processed.shape[1])[None, :]).astype(np.float32)


#: Largest pre-limiter audio kept on disk between the passes (bytes); longer mixes run the
#: pre-chain again in the render pass instead (so scratch stays bounded whatever the length).
SCRATCH_AUDIO_BUDGET_BYTES = 256 << 20
#: Frames per stored K-weighted power sum (the model spreads each sum evenly over its frames).
POWER_GROUP_FRAMES = 16
SCRATCH_PREFIX = "amc-scratch-"
_OWNER_FILE = "owner.pid"


def sweep_stale_scratch(folder: Path | None = None, *, min_age_s: float = 60.0) -> int:
    """Remove scratch folders left by renders that were killed (their owner process is gone).

    A folder whose ``owner.pid`` names a live process is kept; one without that file
    counts as stale once it is ``min_age_s`` old.  Returns how many were removed.
    """
    root = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed = 0
    try:
        entries = list(root.glob(f"{SCRATCH_PREFIX}*"))
    except OSError:
        return 0
    for d in entries:
        try:
            if not d.is_dir() or d.is_symlink():
                continue
            owner = d / _OWNER_FILE
            if owner.exists():
                pid = int(owner.read_text().strip() or "0")
                if pid > 0 and pid != os.getpid():
                    try:
                        os.kill(pid, 0)
                        continue  # alive: someone is rendering
                    except ProcessLookupError:
                        pass
                    except PermissionError:
                        continue  # another user's live process
                elif pid == os.getpid():
                    continue
            elif time.time() - d.stat().st_mtime < min_age_s:
                continue
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
        except (OSError, ValueError):
            continue
    return removed


class ScratchTrack:
    """What the render pass needs from the pre-chain pass, on disk, bounded in size.

    - per-frame true peaks: float32 when the audio is kept, else float16 rounded up (2 bytes
      a frame);
    - K-weighted power summed over groups of :data:`POWER_GROUP_FRAMES` frames;
    - the pre-limiter audio (float32, a file per channel) only when ``keep_audio``:
      the caller keeps it for mixes under :data:`SCRATCH_AUDIO_BUDGET_BYTES` and runs the
      pre-chain again for longer ones, so a 60-minute stereo mix needs about 380 MB.

    The page cache holds the files, the process's memory does not.  The folder carries
    the owner's pid, so :func:`sweep_stale_scratch` can remove it if the process is
    killed; :meth:`close` deletes it.
    """

    def __init__(self, channels: int, folder: Path | None = None, *, keep_audio: bool = True) -> None:
        sweep_stale_scratch(folder)
        self._dir = tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=folder)
        d = Path(self._dir.name)
        (d / _OWNER_FILE).write_text(str(os.getpid()))
        self.channels = channels
        self.frames = 0
        self.has_audio = keep_audio
        self.paths = {"p": d / ("p.f32" if keep_audio else "p.f16"), "w": d / "w.f32"}
        if keep_audio:
            self.paths.update({f"x{c}": d / f"x{c}.f32" for c in range(channels)})
        self._fh = {k: open(v, "wb") for k, v in self.paths.items()}  # closed in finish()
        self._w_rest = np.zeros(0, dtype=np.float64)

    def write(self, key: str, data: np.ndarray) -> None:
        if key == "x":
            if self.has_audio:
                for c in range(self.channels):
                    row = np.ascontiguousarray(data[c], dtype=np.float32)
                    self._fh[f"x{c}"].write(memoryview(row).cast("B"))  # no extra copy
            self.frames += data.shape[1]
            return
        if key == "p":
            if self.has_audio:  # short mixes: exact float32 (also the cheapest to read back)
                a = np.ascontiguousarray(data, dtype=np.float32)
            else:
                # float16 rounds to nearest: scale up by its relative spacing first so no
                # peak is ever stored lower than it was (the limiter and the model stay safe)
                a = np.ascontiguousarray((np.asarray(data, dtype=np.float64) * (1.0 + 2.0**-10)).astype(np.float16))
            self._fh["p"].write(memoryview(a).cast("B"))
            return
        w = np.concatenate([self._w_rest, np.asarray(data, dtype=np.float64)])
        k = len(w) // POWER_GROUP_FRAMES
        sums = w[: k * POWER_GROUP_FRAMES].reshape(k, POWER_GROUP_FRAMES).sum(axis=1).astype(np.float32)
        self._fh["w"].write(memoryview(np.ascontiguousarray(sums)).cast("B"))
        self._w_rest = w[k * POWER_GROUP_FRAMES :]

    def finish(self) -> None:
        if self._w_rest.size:
            last = np.array([self._w_rest.sum() * POWER_GROUP_FRAMES / self._w_rest.size], dtype=np.float32)
            self._fh["w"].write(memoryview(last).cast("B"))
            self._w_rest = np.zeros(0, dtype=np.float64)
        for f in self._fh.values():
            f.close()

    @property
    def nbytes(self) -> int:
        """Bytes on disk now."""
        return sum(p.stat().st_size for p in self.paths.values() if p.exists())

    def blocks(self, key: str, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """``"x"``: (channels, n) C-contiguous float32 blocks; ``"p"``, ``"w"``: (n,) float32
        (``"w"`` spread evenly over each group's frames)."""
        if key == "x":
            if not self.has_audio:
                raise ProcessingError("this scratch track keeps no audio")
            return self._audio_blocks(block_frames)
        if key == "p":
            return self._peak_blocks(block_frames)
        return self._power_blocks(block_frames)

    def _peak_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        dtype = np.float32 if self.has_audio else np.float16
        with open(self.paths["p"], "rb") as f:
            while True:
                a = np.fromfile(f, dtype=dtype, count=block_frames)
                if a.size == 0:
                    return
                yield a if dtype == np.float32 else a.astype(np.float32)

    def _power_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        g = POWER_GROUP_FRAMES
        groups = max(1, block_frames // g)
        left = self.frames
        with open(self.paths["w"], "rb") as f:
            while left > 0:
                a = np.fromfile(f, dtype=np.float32, count=groups)
                if a.size == 0:
                    raise ProcessingError("the scratch file ended early (is the disk full?)")
                per_frame = np.repeat(a / np.float32(g), g)[:left]
                left -= per_frame.size
                yield per_frame

    def _audio_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        files = [open(self.paths[f"x{c}"], "rb") for c in range(self.channels)]
        try:
            left = self.frames
            while left > 0:
                n = min(block_frames, left)
                out = np.empty((self.channels, n), dtype=np.float32)
                for c, f in enumerate(files):
                    if f.readinto(memoryview(out[c]).cast("B")) != out[c].nbytes:
                        raise ProcessingError("the scratch file ended early (is the disk full?)")
                left -= n
                yield out
        finally:
            for f in files:
                f.close()

    def close(self) -> None:
        for f in self._fh.values():
            if not f.closed:
                f.close()
        self._dir.cleanup()


@njit(cache=True, nogil=True)
def _subblock_sums_kernel(energy, edges, k, pos, total, cum):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """One block of :meth:`SubblockAccumulator.add`: the block's running sum (from 0, in
    float64, in order, as ``np.cumsum`` adds) is recorded on top of ``total`` at every
    sub-block edge it crosses, starting with edge ``k``; returns the new total."""
    n = energy.shape[0]
    c = 0.0
    for i in range(n):
        c += np.float64(energy[i])
        while k < edges.shape[0] and edges[k] - pos - 1 == i:
            cum[k] = total + c
            k += 1
    return total + c


class SubblockAccumulator:
    """Sums per-frame energies into 100 ms sub-blocks (edges at round(k * sr / 10)), streaming."""

    def __init__(self, total_frames: int, sample_rate: int) -> None:
        self.edges = _subblock_edges(total_frames, sample_rate)
        self._cum = np.zeros(len(self.edges), dtype=np.float64)
        self._total = 0.0
        self._pos = 0

    def add(self, energy: np.ndarray) -> None:
        """Energies of the next ``len(energy)`` frames."""
        n = len(energy)
        if n == 0:
            return
        lo = int(np.searchsorted(self.edges, self._pos, side="right"))
        e = np.ascontiguousarray(energy)
        if e.dtype not in (np.float32, np.float64):
            e = e.astype(np.float64)
        self._total = _subblock_sums_kernel(e, self.edges, lo, self._pos, self._total, self._cum)
        self._pos += n

    def mean_power(self) -> np.ndarray:
        return np.diff(self._cum) / np.maximum(np.diff(self.edges), 1)


@njit(cache=True, nogil=True)
def _model_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    peaks, scale, ceiling, w, g2, dq_idx, dq_val, box, istate, fstate, window, box_len, release,
    fast, sustain, gains, wring, mstate, sums, mins, edges, total,
):  # fmt: skip
    """Limiter envelope for true peaks ``peaks * scale`` and, fused, the sub-block
    energies of gain² x g2 x w and the smallest limiter gain of every sub-block.

    ``w`` enters a delay ring of the envelope's latency so each gain meets its own frame.
    mstate = [output frame position, sub-block index, ring position].
    """
    _envelope_kernel(
        peaks, scale, ceiling, True, gains, dq_idx, dq_val, box, istate, fstate, window, box_len,
        release, fast, sustain,
    )  # fmt: skip
    d = wring.shape[0]
    pos = mstate[0]
    k = mstate[1]
    r = mstate[2]
    last = sums.shape[0] - 1
    for i in range(peaks.shape[0]):
        wd = wring[r] if d > 0 else w[i]
        if d > 0:
            wring[r] = w[i]
            r += 1
            if r == d:
                r = 0
        if pos >= 0 and pos < total:
            while k < last and edges[k + 1] <= pos:
                k += 1
            if pos < edges[k + 1]:
                sums[k] += gains[i] * gains[i] * g2 * wd
                if gains[i] < mins[k]:
                    mins[k] = gains[i]
        pos += 1
    mstate[0] = pos
    mstate[1] = k
    mstate[2] = r


@dataclass(frozen=True)
class Prediction:
    """What gain + clipper + limiter would do, predicted from the scratch data."""

    gain_db: float
    lufs: float
    limiter_max_db: float
    limiter_over_1db_pct: float
    clip_max_db: float

    def within(self, plan: MasteringPlan) -> bool:
        """True when the peak control stays inside the plan's dynamics budget."""
        ld = plan.loudness
        return (
            self.limiter_max_db <= ld.max_limiter_gr_db + 1e-3
            and self.limiter_over_1db_pct <= ld.max_limiter_over_1db_pct + 1e-6
            and (not plan.soft_clip.enabled or self.clip_max_db <= ld.max_clip_db + 1e-3)
        )

    def excess_db(self, plan: MasteringPlan) -> float:
        """About how many dB the gain must come down to be within the budget (>= 0)."""
        ld = plan.loudness
        over = max(self.limiter_max_db - ld.max_limiter_gr_db, 0.0)
        if plan.soft_clip.enabled:
            over = max(over, self.clip_max_db - ld.max_clip_db)
        if self.limiter_over_1db_pct > ld.max_limiter_over_1db_pct:
            over = max(over, 0.5)
        return over


def section_contrast_lu(short_term_lufs: Sequence[float | None], integrated_lufs: float) -> float | None:
    """Loudest minus quietest 10 s section (LU) from the 10 Hz short-term series: each
    section's loudness is the power mean of its 3 s windows; sections more than 20 LU
    under the integrated loudness (silence, fades) are left out.  None under two sections."""
    st = np.asarray([v if v is not None else -np.inf for v in short_term_lufs], dtype=np.float64)
    k = len(st) // 100
    if k < 2 or not np.isfinite(integrated_lufs):
        return None
    p = np.where(np.isfinite(st[: k * 100]), 10.0 ** (st[: k * 100] / 10.0), 0.0).reshape(k, 100).mean(axis=1)
    with np.errstate(divide="ignore"):
        levels = 10.0 * np.log10(p)
    keep = levels[np.isfinite(levels) & (levels >= integrated_lufs - 20.0)]
    return round(float(keep.max() - keep.min()), 2) if keep.size >= 2 else None


def gr_stats(gr_db_100ms: np.ndarray) -> dict[str, float]:
    """Max, mean and % of time over 1 dB of a gain-reduction series (100 ms maxima, dB)."""
    a = np.asarray(gr_db_100ms, dtype=np.float64)
    if a.size == 0:
        return {"max_db": 0.0, "mean_db": 0.0, "over_1db_pct": 0.0}
    return {
        "max_db": round(float(a.max()), 3),
        "mean_db": round(float(a.mean()), 3),
        "over_1db_pct": round(float(np.mean(a > 1.0) * 100.0), 2),
    }


def _clip_peaks(peaks: np.ndarray, plan: MasteringPlan) -> tuple[np.ndarray, float]:
    """Per-frame true peaks (linear, float64, after the gain) through the clipper's curve (that
    of :func:`~app.engine.mastering.dynamics.soft_clip`, relative to the limiter ceiling), in
    place; returns them and the deepest reduction in dB (0 when nothing reaches the clipper)."""
    lim, sc = plan.limiter, plan.soft_clip
    thr = 10.0 ** ((lim.ceiling_dbtp + sc.threshold_db) / 20.0)
    ceil = 10.0 ** ((lim.ceiling_dbtp + sc.ceiling_db) / 20.0)
    hot = np.flatnonzero(peaks > thr)
    if hot.size == 0:
        return peaks, 0.0
    raw = peaks[hot]
    shaped = np.minimum(thr + (ceil - thr) * np.tanh((raw - thr) / (ceil - thr)), ceil)
    peaks[hot] = shaped
    return peaks, float(np.max(20.0 * np.log10(raw / shaped)))


def predict(
    scratch: ScratchTrack, plan: MasteringPlan, gain_db: float, ride: RideCurve | None = None
) -> Prediction:
    """Predicted loudness and peak-control figures after gain + clipper + limiter, from the
    scratch peaks and power.

    The limiter's gain changes slowly compared with the K-weighting filter, so the
    output power is modelled as envelope² x gain² x the input's K-weighted power.  The
    clipper is modelled on the per-frame true peaks with its own curve.
    """
    sr = plan.sample_rate
    g = 10.0 ** (gain_db / 20.0)
    sc = plan.soft_clip
    env = _limiter_envelope(plan)
    d = env.latency_frames
    edges = _subblock_edges(scratch.frames, sr)
    if len(edges) < 5:  # fewer than four 100 ms sub-blocks: no 400 ms gating block
        return Prediction(gain_db, -math.inf, 0.0, 0.0, 0.0)
    sums = np.zeros(len(edges) - 1, dtype=np.float64)
    mins = np.ones(len(edges) - 1, dtype=np.float64)
    wring = np.zeros(d, dtype=np.float32)
    mstate = np.array([-d, 0, 0], dtype=np.int64)
    clip_max = 0.0

    def run(pk: np.ndarray, scale: float, w: np.ndarray) -> None:
        gains = np.empty(pk.shape[0], dtype=np.float64)
        _model_kernel(
            pk, scale, env.ceiling, w, g * g, env._dq_idx, env._dq_val, env._box, env._istate, env._fstate,
            env._window, env._box_len, env._release, env._fast, env._sustain, gains, wring, mstate, sums,
            mins, edges, scratch.frames,
        )  # fmt: skip

    thr = 10.0 ** ((plan.limiter.ceiling_dbtp + sc.threshold_db) / 20.0)
    pos = 0
    for p, w in zip(scratch.blocks("p"), scratch.blocks("w"), strict=True):
        if ride is not None:
            rg = ride.gains(pos, p.shape[0])
            pos += p.shape[0]
            p = p * rg
            w = w * (rg * rg)
        if not sc.enabled:
            run(p, g, w)  # the kernel scales the float32 peaks itself, as float64
            continue
        if float(p.max(initial=0.0)) * g <= thr:  # nothing reaches the clipper in this block
            run(p, g, w)
            continue
        pk, depth = _clip_peaks(p.astype(np.float64) * g, plan)
        clip_max = max(clip_max, depth)
        run(pk, 1.0, w)
    run(np.zeros(d), 1.0, np.zeros(d, dtype=np.float32))
    lufs = _integrated_from_subblocks(sums / np.maximum(np.diff(edges), 1))
    st = gr_stats(_gains_to_gr_db(mins))
    return Prediction(gain_db, lufs, st["max_db"], st["over_1db_pct"], clip_max)


def guard_gain_db(
    evaluate: Callable[[float], Prediction], plan: MasteringPlan, target_gain_db: float, at_target: Prediction
) -> tuple[float, Prediction]:
    """The dynamics guard: the largest gain <= ``target_gain_db`` whose peak control stays
    within the plan's budget (``at_target`` is the prediction at the target gain).

    The figures only grow with the gain, so a bracket is narrowed to 0.2 dB; each step
    tries the gain the estimated excess points at, bisecting when that is not inside.
    """
    if at_target.within(plan):
        return target_gain_db, at_target
    hi, best = target_gain_db, None
    lo = target_gain_db - max(at_target.excess_db(plan), 0.25)
    for _ in range(6):  # find a gain that is inside the budget
        p = evaluate(lo)
        if p.within(plan):
            best = p
            break
        hi, lo = lo, lo - 2.0 * max(p.excess_db(plan), 0.5)
    if best is None:
        raise ProcessingError("the dynamics guard found no gain within its budget (is the mix clipped already?)")
    hi_excess = None
    while hi - lo > 0.2:
        mid = 0.5 * (lo + hi)
        if hi_excess is not None and lo + 0.1 < hi - hi_excess < hi - 0.1:
            mid = hi - hi_excess  # where the excess measured at ``hi`` says the budget ends
        p = evaluate(mid)
        if p.within(plan):
            lo, best = mid, p
        else:
            hi, hi_excess = mid, p.excess_db(plan)
    return lo, best


# ============================================================================ results


@dataclass
class MasterResult:
    """What a master produced, with everything a report or a UI shows."""

    input: Path | None
    output: Path | None
    plan: MasteringPlan
    before: analysis.Analysis
    after: analysis.Analysis
    passes: int
    elapsed_s: float
    limiter_gr_db: np.ndarray = field(repr=False)  # (k,) max gain reduction per 100 ms
    compressor_gr_db: np.ndarray = field(repr=False)  # (k,) max per 100 ms
    target_spectrum: SpectrumBands | None = field(default=None, repr=False)

    @property
    def loudness_error_lu(self) -> float:
        return float(self.after.integrated_lufs - self.plan.loudness.target_lufs)

    @property
    def guard(self) -> dict[str, Any]:
        """What the dynamics guard decided: ``engaged`` (landed below the target), the target,
        where the master landed, and why in words."""
        ld = self.plan.loudness
        engaged = ld.aim_lufs is not None
        reason = next((n for n in self.plan.notes if n.startswith("dynamics guard:")), None)
        return {
            "enabled": bool(ld.guard),
            "engaged": engaged,
            "target_lufs": ld.target_lufs,
            "landed_lufs": round(float(self.after.integrated_lufs), 3),
            "reason": reason if engaged else None,
        }

    @property
    def true_peak_margin_db(self) -> float:
        return float(self.plan.limiter.ceiling_dbtp - self.after.true_peak_dbtp)

    def to_report(self) -> dict[str, Any]:
        return {
            "input": str(self.input) if self.input else None,
            "output": str(self.output) if self.output else None,
            "target": {
                "name": self.plan.target,
                "lufs": self.plan.loudness.target_lufs,
                "ceiling_dbtp": self.plan.limiter.ceiling_dbtp,
            },
            "result": {
                "limiter_gr": gr_stats(self.limiter_gr_db),
                "compressor_gr": gr_stats(self.compressor_gr_db),
                "guard": self.guard,
                "sections": {
                    "lra_before_lu": self.before.loudness_range_lu,
                    "lra_after_lu": self.after.loudness_range_lu,
                    "contrast_before_lu": section_contrast_lu(self.before.short_term_series, self.before.integrated_lufs),
                    "contrast_after_lu": section_contrast_lu(self.after.short_term_series, self.after.integrated_lufs),
                },
                "loudness_error_lu": round(self.loudness_error_lu, 3),
                "true_peak_margin_db": round(self.true_peak_margin_db, 3),
                "within_spec": bool(
                    abs(self.loudness_error_lu) <= self.plan.loudness.tolerance_lu and self.true_peak_margin_db >= 0
                ),
                "render_passes": self.passes,
                "elapsed_s": round(self.elapsed_s, 3),
            },
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "plan": self.plan.to_dict(),
        }


class _GrTracker:
    """Keeps gain-reduction chunks decimated as they arrive (bounded memory): the maximum
    per 100 ms.

    With ``from_gains`` the chunks are linear gains instead of dB: their minimum per
    100 ms is kept and only those are turned into dB (the conversion is monotonic, so
    the result is the same as converting every frame first, at a fraction of the work).
    """

    def __init__(self, sample_rate: int, *, from_gains: bool = False) -> None:
        self.sr = sample_rate
        self.parts: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._n = 0
        self._from_gains = from_gains

    def add(self, chunk: np.ndarray) -> None:
        self._pending.append(chunk)
        self._n += len(chunk)
        if self._n >= self.sr * 10:
            self._drain()

    def _reduce(self, a: np.ndarray, axis: int | None = None) -> np.ndarray:
        return a.min(axis=axis) if self._from_gains else a.max(axis=axis)

    def _drain(self) -> None:
        hop = max(1, self.sr // 10)
        a = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        k = len(a) // hop
        if k:
            self.parts.append(self._reduce(a[: k * hop].reshape(k, hop), axis=1))
        rest = a[k * hop :]
        self._pending, self._n = ([rest] if rest.size else []), rest.size

    def result(self) -> np.ndarray:
        self._drain()
        if self._pending:
            last = self._pending[0]
            self.parts.append(np.array([self._reduce(last)], dtype=last.dtype))
            self._pending, self._n = [], 0
        out = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        return _gains_to_gr_db(out) if self._from_gains else out


def _gains_to_gr_db(gains: np.ndarray) -> np.ndarray:
    return (-20.0 * np.log10(np.maximum(gains, 1e-9))).astype(np.float32)


# ============================================================================ analysis helpers


def spectrum_of(a: analysis.Analysis) -> SpectrumBands:
    sp = a.spectrum
    return SpectrumBands(
        np.asarray(sp["centers_hz"], dtype=np.float64),
        np.asarray([v if v is not None else -300.0 for v in sp["mid_db"]], dtype=np.float64),
        np.asarray([v if v is not None else -300.0 for v in sp["side_db"]], dtype=np.float64),
    )


def _check_masterable(info: audio_io.AudioInfo, before: analysis.Analysis) -> None:
    if info.duration_s < MIN_DURATION_S:
        raise AudioInputError(
            f"{info.path.name}: {info.duration_s:.3f} s is too short to master "
            f"(loudness needs at least {MIN_DURATION_S} s)"
        )
    if before.integrated_lufs is None or not np.isfinite(before.integrated_lufs):
        raise AudioInputError(f"{info.path.name}: the file is silent (below -70 LUFS): nothing to master")


# ============================================================================ mastering a file


def plan_for_file(
    path: Path,
    settings: MasterSettings,
    *,
    references: Sequence[Path] = (),
    before: analysis.Analysis | None = None,
    progress: ProgressFn | None = None,
) -> tuple[MasteringPlan, analysis.Analysis, SpectrumBands | None]:
    """Analyse ``path`` (and references) and decide the plan."""
    progress = progress or _noop_progress
    info = audio_io.probe(path)
    # The references are analysed on a thread of their own while the input is: each
    # analysis alone leaves part of the second core idle.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="amc-ref") as pool:
        ref_jobs = [pool.submit(analyze_file, Path(r), true_peak=False) for r in references]
        try:
            if before is None:
                before = analyze_file(path, progress=lambda f, m: progress(0.2 * f, m))
            _check_masterable(info, before)
        except BaseException:
            for job in ref_jobs:
                job.cancel()
            raise
        ref_analyses = [job.result() for job in ref_jobs]
    ref_spectra = []
    for r, ra in zip(references, ref_analyses, strict=True):
        if ra.integrated_lufs is None or not np.isfinite(ra.integrated_lufs):
            raise AudioInputError(f"reference {Path(r).name} is silent")
        ref_spectra.append(spectrum_of(ra))
    plan = make_plan(
        sample_rate=info.sample_rate,
        channels=info.channels,
        integrated_lufs=before.integrated_lufs,
        loudness_range_lu=before.loudness_range_lu if before.loudness_range_lu is not None else math.nan,
        short_term_lufs=np.asarray([v if v is not None else -np.inf for v in before.short_term_series]),
        correlation=before.correlation,
        spectrum=spectrum_of(before),
        settings=settings,
        references=ref_spectra,
        reference_names=[Path(r).name for r in references],
        true_peak_dbtp=before.true_peak_dbtp if np.isfinite(before.true_peak_dbtp) else None,
    )
    target_spec = None
    if ref_spectra:
        target_spec = average_spectra(ref_spectra, np.asarray(plan.eq.freqs_hz))
    return plan, before, target_spec


def _pre_chain_pass(
    path: Path, plan: MasteringPlan, scratch: ScratchTrack, progress: ProgressFn, total: int
) -> tuple[_GrTracker, float, np.ndarray]:
    """Pass B; returns the compressor's gain reduction, the pre-limiter integrated loudness and
    its short-term loudness series (10 Hz)."""
    pre = PreChain(plan)
    pre.fir.fft_workers = 1  # the FIR has a thread of its own here
    tp = analysis.TruePeakMeter(plan.sample_rate, plan.channels, oversample=plan.limiter.oversample)
    kw = analysis.KWeightedPower(plan.sample_rate, plan.channels)
    comp_gr = _GrTracker(plan.sample_rate)
    loud = SubblockAccumulator(total, plan.sample_rate)

    def take(y: np.ndarray) -> None:
        if y.shape[1] == 0:
            return
        scratch.write("x", y)
        scratch.write("p", tp.process(y))
        w = kw.process(y)
        scratch.write("w", w)
        loud.add(w)

    def dynamics(linear_out: np.ndarray, bg: _InOrder) -> None:
        y = pre.dynamics(linear_out)
        for gr in pre.compressor_gr_db:
            comp_gr.add(gr)
        pre.compressor_gr_db.clear()
        bg.submit(take, y)

    # Three stages on two cores: FIR (thread), compressor (here), metering + scratch (thread).
    done = 0
    linear: deque[Future[np.ndarray]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="amc-fir") as fir, _InOrder(3) as bg:
        for block in audio_io.iter_blocks(path, block_frames=BLOCK_FRAMES):
            linear.append(fir.submit(pre.linear, block))
            if len(linear) >= 3:
                dynamics(linear.popleft().result(), bg)
            done += block.shape[1]
            progress(0.2 + 0.35 * done / max(total, 1), "processing EQ and dynamics")
        while linear:
            dynamics(linear.popleft().result(), bg)
        dynamics(pre.linear_flush(), bg)
    scratch.write("p", tp.flush())
    scratch.finish()
    z = loud.mean_power()
    return comp_gr, _integrated_from_subblocks(z), _short_term_from_subblocks(z)


def solve_gain_db(
    scratch: ScratchTrack,
    plan: MasteringPlan,
    first_guess_db: float,
    ride: RideCurve | None = None,
    seen: list[Prediction] | None = None,
) -> float:
    """Gain before the limiter that lands the modelled loudness on target.

    The model is smooth and nearly linear in the gain, so it is evaluated at two gains
    at once (two threads; the kernels release the GIL) and interpolated; a second
    round around the estimate runs only when the target was outside the first
    bracket.  Falls back to secant steps if something is odd (e.g. a heavy soft clip).
    Every prediction made is appended to ``seen`` (the dynamics guard reuses them).
    """
    target = plan.loudness.target_lufs
    seen = seen if seen is not None else []

    def one(g: float) -> float:
        p = predict(scratch, plan, g, ride)
        seen.append(p)
        return p.lufs

    def pair(a: float, b: float) -> tuple[float, float]:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="amc-solve") as pool:
            fa = pool.submit(one, a)
            fb = pool.submit(one, b)
            return fa.result(), fb.result()

    def interpolate(a: float, la: float, b: float, lb: float) -> float:
        slope = (lb - la) / (b - a) if abs(b - a) > 1e-9 else 1.0
        slope = float(np.clip(slope, 0.05, 1.5))
        return float(np.clip(a + (target - la) / slope, -60.0, 60.0))

    g0 = float(np.clip(first_guess_db, -60.0, 60.0))
    g1 = g0 + 1.0
    l0, l1 = pair(g0, g1)
    if not (np.isfinite(l0) and np.isfinite(l1)):
        raise ProcessingError("the processed signal is silent: cannot reach the loudness target")
    g = interpolate(g0, l0, g1, l1)
    if min(l0, l1) - 0.01 <= target <= max(l0, l1) + 0.01:
        return g
    # Extrapolated: bracket the estimate tightly and interpolate again.
    a, b = g - 0.25, g + 0.25
    la, lb = pair(a, b)
    g = interpolate(a, la, b, lb)
    for _ in range(8):  # rare: secant steps until the model agrees
        lg = one(g)
        if abs(lg - target) <= SOLVE_TOLERANCE_LU / 2:
            break
        g, a, la = interpolate(a, la, g, lg), g, lg
    return g


def _pre_chain_again(path: Path, plan: MasteringPlan) -> Iterator[tuple[np.ndarray, None]]:
    """The pre-chain's output once more (same blocks, same state: the same samples as pass B),
    for mixes too long to keep it on disk."""
    pre = PreChain(plan)
    for block in audio_io.iter_blocks(path, block_frames=BLOCK_FRAMES):
        y = pre.process(block)
        pre.compressor_gr_db.clear()  # recorded in pass B already; kept, it would grow with length
        if y.shape[1]:
            yield y, None
    y = pre.flush()
    pre.compressor_gr_db.clear()
    if y.shape[1]:
        yield y, None


def _render_pass(
    path: Path,
    scratch: ScratchTrack,
    plan: MasteringPlan,
    gain_db: float,
    writer: audio_io.AudioWriter,
    ceiling_offset_db: float,
    progress: ProgressFn,
    p_from: float,
    ride: RideCurve | None = None,
) -> tuple[analysis.Analysis, np.ndarray]:
    final = FinalStage(plan, gain_db, ceiling_offset_db=ceiling_offset_db)
    an = analysis.Analyzer(plan.sample_rate, plan.channels, keep_musical=False)
    gr = _GrTracker(plan.sample_rate, from_gains=True)
    done = 0

    def write(y: np.ndarray) -> None:
        meter.submit(an.process, writer.write(y))  # meter exactly what was written

    def take(y: np.ndarray) -> None:
        if y.shape[1]:
            bg.submit(write, y)
        for g in final.limiter_gr_db:
            gr.add(g)  # gains: decimated first, turned into dB on the 100 ms maxima only
        final.limiter_gr_db.clear()

    # Three stages: limiting (here), writing (thread), metering (thread; its true peak and
    # spectrum have threads of their own).  ``meter`` is fed only by the writer's thread.
    with _InOrder(depth=3) as meter, _InOrder(depth=3) as bg:
        source = (
            zip(scratch.blocks("x"), scratch.blocks("p"), strict=True)
            if scratch.has_audio
            else _pre_chain_again(path, plan)
        )
        def prepare(x: np.ndarray, p: np.ndarray | None, start: int) -> tuple[np.ndarray, np.ndarray]:
            if ride is not None:
                rg = ride.gains(start, x.shape[1])
                x = x * rg[None, :]
                p = None if p is None else p * rg
            return final.prepare(x, p)

        # Gain, ride, clipper and true-peak metering (one thread) overlap the limiter (here).
        prepared: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="amc-clip") as clip:
            for x, p in source:
                prepared.append(clip.submit(prepare, x, p, done))
                done += x.shape[1]
                if len(prepared) >= 2:
                    take(final.limit(*prepared.popleft().result()))
                progress(p_from + (0.98 - p_from) * done / max(scratch.frames, 1), "limiting and writing")
            while prepared:
                take(final.limit(*prepared.popleft().result()))
        take(final.flush())
    return an.result(), gr.result()


def _with_guard(plan: MasteringPlan, at_target: Prediction, chosen: Prediction) -> MasteringPlan:
    """Record the guard's decision in the plan (aim and a note in words) when it engaged."""
    if chosen.gain_db >= at_target.gain_db - 1e-6:
        return plan
    ld = plan.loudness
    why = [f"the limiter would reduce up to {at_target.limiter_max_db:.1f} dB "
           f"(over 1 dB {at_target.limiter_over_1db_pct:.0f} % of the time)"]  # fmt: skip
    if plan.soft_clip.enabled:
        why.append(f"the clipper {at_target.clip_max_db:.1f} dB")
    note = (
        f"dynamics guard: reaching {ld.target_lufs:g} LUFS needs more peak control than the "
        f"{plan.level} budget allows ({', '.join(why)}; budget: limiter {ld.max_limiter_gr_db:g} dB, "
        f"over 1 dB {ld.max_limiter_over_1db_pct:g} % of the time"
        + (f", clipper {ld.max_clip_db:g} dB" if plan.soft_clip.enabled else "")
        + f"): the master lands at about {chosen.lufs:.1f} LUFS instead, keeping the music's punch "
        f"(streaming services only turn loud masters down). Ask for loudness first to reach the target."
    )
    return replace(plan, loudness=replace(ld, aim_lufs=round(float(chosen.lufs), 3)), notes=[*plan.notes, note])


def master_file(
    path: Path | str,
    output: Path | str,
    settings: MasterSettings | None = None,
    *,
    references: Sequence[Path | str] = (),
    plan: MasteringPlan | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    scratch_dir: Path | None = None,
) -> MasterResult:
    """Master one file to ``output`` (atomic; never overwrites an input unless ``force``).

    Raises
    ------
    AudioInputError, AudioOutputError, ParameterError, ProcessingError
    """
    t0 = time.perf_counter()
    _keep_freed_blocks_mapped()
    path, output = Path(path), Path(output)
    settings = settings or MasterSettings()
    progress = progress or _noop_progress
    refs = [Path(r) for r in references]
    info = audio_io.probe(path)
    fmt = audio_io.OUTPUT_FORMATS.get(plan.output.format if plan else settings.output_format)
    if fmt is None:
        raise ParameterError(f"unknown output format {settings.output_format!r}")
    audio_io.check_output_path(output, protect=[path, *refs], force=force)

    target_spec = None
    if plan is None:
        plan, before, target_spec = plan_for_file(path, settings, references=refs, progress=progress)
    else:
        plan.validate()
        if plan.sample_rate != info.sample_rate or plan.channels != info.channels:
            raise ParameterError(
                f"the plan is for {plan.channels} ch / {plan.sample_rate} Hz but {path.name} is "
                f"{info.channels} ch / {info.sample_rate} Hz"
            )
        before = analyze_file(path, progress=lambda f, m: progress(0.2 * f, m))
        _check_masterable(info, before)

    keep_audio = info.frames * plan.channels * 4 <= SCRATCH_AUDIO_BUDGET_BYTES
    scratch = ScratchTrack(plan.channels, scratch_dir, keep_audio=keep_audio)
    try:
        comp_gr, pre_lufs, pre_st = _pre_chain_pass(path, plan, scratch, progress, info.frames)
        ride = None
        if plan.section_ride.enabled:
            src_st = np.asarray([v if v is not None else -np.inf for v in before.short_term_series])
            ride = RideCurve(
                section_ride_db(src_st, pre_st, max_db=plan.section_ride.max_db), plan.sample_rate, info.frames
            )
            if ride.max_abs_db < 0.05:
                ride = None  # nothing to put back
            elif plan.loudness.gain_db is None:  # a fresh plan: say what the ride did
                plan = replace(plan, notes=[*plan.notes, f"section ride measured: at most {ride.max_abs_db:.1f} dB"])
        progress(0.56, "solving loudness through the limiter")
        gain_db = plan.loudness.gain_db
        prediction = None
        if gain_db is None:
            if not np.isfinite(pre_lufs):
                raise ProcessingError("the processed signal is silent: cannot reach the loudness target")
            seen: list[Prediction] = []
            gain_db = solve_gain_db(scratch, plan, plan.loudness.target_lufs - pre_lufs, ride, seen)
            # The figures only grow with the gain: a prediction the solve made at this gain
            # or above that is inside the budget settles it without another pass.
            settled = any(p.gain_db >= gain_db and p.within(plan) for p in seen)
            if plan.loudness.guard and not settled:
                progress(0.58, "checking the dynamics budget")
                at = predict(scratch, plan, gain_db, ride)
                gain_db, prediction = guard_gain_db(lambda g: predict(scratch, plan, g, ride), plan, gain_db, at)
                plan = _with_guard(plan, at, prediction)
        aim = plan.loudness.aim_lufs if plan.loudness.aim_lufs is not None else plan.loudness.target_lufs
        ceiling_offset = 0.0
        tol = plan.loudness.tolerance_lu
        passes = 0
        while True:
            passes += 1
            writer = audio_io.AudioWriter(
                output, sample_rate=plan.sample_rate, channels=plan.channels, fmt=fmt,
                protect=[path, *refs], force=force, dither=plan.output.dither,
                noise_shaping=plan.output.noise_shaping,
            )  # fmt: skip
            try:
                after, lim_gr = _render_pass(path, scratch, plan, gain_db, writer, ceiling_offset, progress, 0.6, ride)
            except BaseException:
                writer.abort()
                raise
            err = after.integrated_lufs - aim
            over = after.true_peak_dbtp - plan.limiter.ceiling_dbtp
            good_loudness = abs(err) <= SOLVE_TOLERANCE_LU or (passes >= MAX_RENDER_PASSES and abs(err) <= tol)
            if good_loudness and over <= 0.0:
                writer.commit()
                break
            writer.abort()
            if passes >= MAX_RENDER_PASSES:
                raise ProcessingError(
                    f"could not meet the target after {passes} passes "
                    f"(loudness off by {err:+.2f} LU, true peak {after.true_peak_dbtp:.2f} dBTP)"
                )
            if over > 0.0:
                ceiling_offset -= over + 0.02
            if abs(err) > SOLVE_TOLERANCE_LU:
                gain_db -= err
            progress(0.6, f"correcting ({err:+.2f} LU, {over:+.2f} dB TP) and rendering again")
    finally:
        scratch.close()
    plan = replace(plan, loudness=replace(plan.loudness, gain_db=float(gain_db)))
    if plan.loudness.aim_lufs is not None:
        plan = replace(plan, loudness=replace(plan.loudness, aim_lufs=round(float(after.integrated_lufs), 3)))
    progress(1.0, "done")
    return MasterResult(
        input=path,
        output=output,
        plan=plan,
        before=before,
        after=after,
        passes=passes,
        elapsed_s=time.perf_counter() - t0,
        limiter_gr_db=lim_gr,
        compressor_gr_db=comp_gr.result(),
        target_spectrum=target_spec,
    )


# ============================================================================ album mode


def master_album(
    paths: Sequence[Path | str],
    out_dir: Path | str,
    settings: MasterSettings | None = None,
    *,
    references: Sequence[Path | str] = (),
    force: bool = False,
    progress: ProgressFn | None = None,
    suffix: str = "-master",
) -> list[MasterResult]:
    """Master an album: one tonal plan for all tracks, relative loudness kept.

    The loudest track lands on the target; every other track keeps its distance to it
    (a ballad 4 LU under the single stays 4 LU under).  EQ is computed once from the
    power-averaged spectrum of all tracks, so the tone is consistent.
    """
    settings = settings or MasterSettings()
    progress = progress or _noop_progress
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ParameterError(f"album mode writes into a folder: {out_dir} is not an existing folder")
    paths = [Path(p) for p in paths]
    infos = [audio_io.probe(p) for p in paths]
    rates = {(i.sample_rate, i.channels) for i in infos}
    if len(rates) != 1:
        raise ParameterError("album tracks must share sample rate and channel count (they are mastered as a set)")
    fmt_name = settings.output_format
    fmt = audio_io.OUTPUT_FORMATS[fmt_name]
    outs = [out_dir / f"{p.stem}{suffix}{fmt.extension}" for p in paths]
    for o in outs:
        audio_io.check_output_path(o, protect=[*paths, *map(Path, references)], force=force)
    befores = []
    for k, p in enumerate(paths):
        befores.append(analyze_file(p, progress=lambda f, m, k=k: progress(0.15 * (k + f) / len(paths), m)))
    for info, b in zip(infos, befores, strict=True):
        _check_masterable(info, b)
    loudest = max(b.integrated_lufs for b in befores)
    album_spec = _album_spectrum([spectrum_of(b) for b in befores])
    st = np.concatenate([np.asarray([v if v is not None else -np.inf for v in b.short_term_series]) for b in befores])
    lra = max((b.loudness_range_lu or 0.0) for b in befores)
    corr = float(np.mean([b.correlation for b in befores if b.correlation is not None] or [1.0]))
    ref_spectra = [spectrum_of(analyze_file(Path(r))) for r in references]
    album_plan = make_plan(
        sample_rate=infos[0].sample_rate, channels=infos[0].channels, integrated_lufs=loudest,
        loudness_range_lu=lra, short_term_lufs=st, correlation=corr, spectrum=album_spec,
        settings=settings, references=ref_spectra, reference_names=[Path(r).name for r in references],
        true_peak_dbtp=max(b.true_peak_dbtp for b in befores),
    )  # fmt: skip
    results = []
    for k, (p, o, b) in enumerate(zip(paths, outs, befores, strict=True)):
        offset = b.integrated_lufs - loudest
        track_plan = replace(
            album_plan,
            loudness=replace(album_plan.loudness, target_lufs=round(album_plan.loudness.target_lufs + offset, 3)),
            notes=[*album_plan.notes, f"album: {offset:+.1f} LU relative to the loudest track, kept"],
        )
        lo, hi = 0.15 + 0.85 * k / len(paths), 0.15 + 0.85 * (k + 1) / len(paths)
        results.append(
            master_file(p, o, settings, plan=track_plan, force=force,
                        progress=lambda f, m, lo=lo, hi=hi: progress(lo + (hi - lo) * f, m))
        )  # fmt: skip
    return results


def _album_spectrum(spectra: Sequence[SpectrumBands]) -> SpectrumBands:
    c = spectra[0].centers_hz
    mids = np.mean([10 ** (s.on(c).mid_db / 10) for s in spectra], axis=0)
    sides = np.mean([10 ** (s.on(c).side_db / 10) for s in spectra], axis=0)
    return SpectrumBands(c, 10 * np.log10(np.maximum(mids, 1e-30)), 10 * np.log10(np.maximum(sides, 1e-30)))


# ============================================================================ in memory / preview


def render_array(audio: np.ndarray, plan: MasteringPlan, *, gain_db: float | None = None) -> tuple[np.ndarray, float]:
    """Render a whole in-memory signal through the plan (same stages as the file path).

    Returns ``(out (channels, frames) float32, gain_db used)``.  Without ``gain_db`` (and
    none recorded in the plan) the gain is solved on this signal.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != plan.channels:
        raise ParameterError(f"audio must be ({plan.channels}, frames)")
    pre = PreChain(plan)
    y = ride_in_memory(x, np.concatenate([pre.process(x), pre.flush()], axis=1), plan)
    gain = gain_db if gain_db is not None else plan.loudness.gain_db
    if gain is None:
        gain = _solve_in_memory(y, plan)
    final = FinalStage(plan, gain)
    out = np.concatenate([final.process(y), final.flush()], axis=1)
    return out, float(gain)


def _solve_in_memory(y: np.ndarray, plan: MasteringPlan) -> float:
    target = plan.loudness.target_lufs
    pre = analysis.integrated_loudness(y, plan.sample_rate)
    if not np.isfinite(pre):
        raise ProcessingError("the processed signal is silent: cannot reach the loudness target")
    peaks = (
        analysis.true_peak_frames(y, plan.sample_rate, oversample=plan.limiter.oversample)
        if plan.loudness.guard and plan.soft_clip.enabled
        else None
    )
    g = target - pre
    last = None
    for _ in range(8):
        last = predict_in_memory(y, peaks, plan, g)
        err = last.lufs - target
        if abs(err) <= SOLVE_TOLERANCE_LU / 2:
            break
        g -= err
    if plan.loudness.guard:

        def evaluate(gain_db: float) -> Prediction:
            return predict_in_memory(y, peaks, plan, gain_db)

        at = last if last is not None and last.gain_db == g else evaluate(g)
        g, _ = guard_gain_db(evaluate, plan, g, at)  # the solve's last render is the first check
    return g


def predict_in_memory(y: np.ndarray, peaks: np.ndarray | None, plan: MasteringPlan, gain_db: float) -> Prediction:
    """:class:`Prediction` of an in-memory signal by rendering it (exact, for short excerpts).

    ``peaks`` (per-frame true peaks of ``y``) are needed for the clipper's figure only."""
    return render_predicted(y, peaks, plan, gain_db)[0]


def render_predicted(
    y: np.ndarray, peaks: np.ndarray | None, plan: MasteringPlan, gain_db: float
) -> tuple[Prediction, np.ndarray]:
    """Gain + clipper + limiter over ``y``: the figures of :class:`Prediction` and the audio."""
    final = FinalStage(plan, gain_db)
    out = np.concatenate([final.process(y), final.flush()], axis=1)
    tracker = _GrTracker(plan.sample_rate, from_gains=True)
    for chunk in final.limiter_gr_db:
        tracker.add(chunk)
    st = gr_stats(tracker.result())
    clip_max = 0.0
    if plan.soft_clip.enabled and peaks is not None:
        clip_max = _clip_peaks(peaks.astype(np.float64) * 10.0 ** (gain_db / 20.0), plan)[1]
    lufs = analysis.integrated_loudness(out, plan.sample_rate)
    return Prediction(gain_db, lufs, st["max_db"], st["over_1db_pct"], clip_max), out


def loudest_window(short_term_lufs: Sequence[float | None], sample_rate: int, *, seconds: float = PREVIEW_SECONDS) -> int:
    """Start frame of the ``seconds``-long window with the highest mean short-term loudness.

    ``short_term_lufs`` is the 10 Hz short-term series (value k covers the 3 s from k / 10 s).
    """
    st = np.asarray([v if v is not None else -np.inf for v in short_term_lufs], dtype=np.float64)
    if st.size == 0:
        return 0
    power = np.where(np.isfinite(st), 10 ** (st / 10), 0.0)
    win = max(1, int(seconds * 10))
    if len(power) <= win:
        return 0
    c = np.concatenate([[0.0], np.cumsum(power)])
    k = int(np.argmax(c[win:] - c[:-win]))
    return int(k / 10.0 * sample_rate)


def preview(
    path: Path | str, plan: MasteringPlan, before: analysis.Analysis, *, seconds: float = PREVIEW_SECONDS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Render the loudest ``seconds`` of ``path`` with ``plan``.

    Returns ``(source excerpt, mastered excerpt, start frame)``, both (channels, n) float32.
    Uses the plan's solved gain when present, so the preview plays at the master's loudness.
    """
    start = loudest_window(before.short_term_series, plan.sample_rate, seconds=seconds)
    n = int(seconds * plan.sample_rate)
    info = audio_io.probe(Path(path))
    src, _ = audio_io.read(Path(path), start_frame=start, frames=min(n, info.frames - start))
    if plan.loudness.gain_db is None:
        # No full render yet: the excerpt keeps its distance to the whole track's loudness
        # (the loudest 30 s of a master sit above its integrated loudness).
        offset = analysis.integrated_loudness(src, plan.sample_rate) - before.integrated_lufs
        if np.isfinite(offset):
            plan = replace(plan, loudness=replace(plan.loudness, target_lufs=plan.loudness.target_lufs + offset))
    out, _ = render_array(src, plan)
    return src, out, start

