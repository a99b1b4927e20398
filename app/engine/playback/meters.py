"""Real-time output meters: sample peak, true peak, momentary/short-term LUFS, correlation.

Fed on the audio thread with every rendered block; all state is preallocated
and the per-sample work runs in the analysis module's own numba kernels
(K-weighting and the 4x true-peak interpolator), so the figures agree with
:mod:`app.engine.analysis` by construction.

The meters work on the BS.1770 100 ms sub-block grid of the *output stream*
(frames rendered since the last reset). Each time a sub-block completes, a new
immutable :class:`MeterReading` is built and published by reference swap (an
atomic store in CPython): a reader on any thread gets either the previous or the
new object, never a torn one, and never waits. Between completions the same
object is reused, so steady-state publishing allocates one small object at 10 Hz.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from app.engine import analysis

__all__ = ["MeterReading", "OutputMeters"]

#: Sub-blocks in the correlation window (400 ms, like the momentary loudness).
CORRELATION_SUB_BLOCKS = 4
_TP_OVERSAMPLE = 4


@dataclass(frozen=True, slots=True)
class MeterReading:
    """Meter values at the end of the latest complete 100 ms sub-block.

    Attributes
    ----------
    sample_peak_dbfs : tuple of float
        Per channel (L, R), the largest ``|x|`` of the latest sub-block, dBFS.
    true_peak_dbtp : tuple of float
        Per channel, 4x-oversampled true peak of the latest sub-block, dBTP.
    true_peak_max_dbtp : float
        Largest true peak since the last reset (peak hold), dBTP.
    momentary_lufs : float
        Loudness of the last 400 ms (fewer after a reset: what exists), LUFS.
    short_term_lufs : float
        Loudness of the last 3 s (fewer after a reset), LUFS.
    correlation : float or None
        Pearson correlation of L and R over the last 400 ms; None when a side is silent.
    frames : int
        Output frames metered since the reset, up to the end of that sub-block.
    """

    sample_peak_dbfs: tuple[float, float] = (-math.inf, -math.inf)
    true_peak_dbtp: tuple[float, float] = (-math.inf, -math.inf)
    true_peak_max_dbtp: float = -math.inf
    momentary_lufs: float = -math.inf
    short_term_lufs: float = -math.inf
    correlation: float | None = None
    frames: int = 0


def _db(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0.0 else -math.inf


def _lufs(power: float) -> float:
    return analysis.LOUDNESS_OFFSET_DB + 10.0 * math.log10(power) if power > 0.0 else -math.inf


@njit(cache=True)  # audio thread: keeps the GIL (one entry per segment, see tracks._mix_kernel)
def _segment_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    x, m, kactive, kcoef, kstate, kweights, seg_end, seg_energy, peak, corr, tp_buf, taps, off, keep, tp_out, tpeak
):
    """Meter ``x[:, :m]``: K-weighted energy into ``seg_energy[0]``, per-channel sample
    peak into ``peak``, correlation sums (s0, s1, s00, s11, s01) into ``corr``, and
    per-channel true peak into ``tpeak`` (``tp_buf[c, 0]`` carries ``keep`` frames of history).
    """
    seg_end[0] = m
    seg_energy[0] = 0.0
    analysis._kweight_kernel(x, kactive, kcoef, kstate, kweights, seg_end, seg_energy)
    for c in range(2):
        pk = peak[c]
        for i in range(m):
            a = abs(x[c, i])
            if a > pk:
                pk = a
        peak[c] = pk
    for i in range(m):
        a = np.float64(x[0, i])
        b = np.float64(x[1, i])
        corr[0] += a
        corr[1] += b
        corr[2] += a * a
        corr[3] += b * b
        corr[4] += a * b
    for c in range(2):
        buf = tp_buf[c]
        for i in range(m):
            buf[0, keep + i] = x[c, i]
        analysis._tp_kernel(buf[:, : keep + m], taps, off, tp_out[:m])
        t = tpeak[c]
        for i in range(m):
            if tp_out[i] > t:
                t = tp_out[i]
        tpeak[c] = t
        for i in range(keep):  # forward copy: source index m + i >= destination i
            buf[0, i] = buf[0, m + i]


class OutputMeters:
    """Streaming meters over the engine's (2, n) output (audio thread only).

    Parameters
    ----------
    sample_rate : int
        Hz.
    max_block_frames : int
        Largest block :meth:`process` will be given.
    """

    def __init__(self, sample_rate: int, max_block_frames: int) -> None:
        self.sample_rate = int(sample_rate)
        sos = analysis.k_weighting_sos(self.sample_rate)
        self._kcoef = np.ascontiguousarray(sos[:, [0, 1, 2, 4, 5]])
        self._kweights = analysis.channel_weights(2)
        self._kactive = np.arange(2, dtype=np.int64)
        self._taps = analysis._design_interpolator(_TP_OVERSAMPLE)
        self._tp_off = analysis.TP_TAPS_PER_PHASE // 2 - 1
        self._tp_keep = self._taps.shape[1] - 1
        cap = int(max_block_frames)
        # per-channel true peak: one mono buffer per channel (history + block)
        self._tp_buf = np.zeros((2, 1, self._tp_keep + cap), dtype=np.float32)
        self._tp_out = np.zeros(cap, dtype=np.float32)
        self._seg_end = np.zeros(1, dtype=np.int64)
        self._seg_energy = np.zeros(1, dtype=np.float64)
        self._kstate = np.zeros((2, 4), dtype=np.float64)
        self._peak = np.zeros(2, dtype=np.float64)
        self._tpeak = np.zeros(2, dtype=np.float64)
        self._corr = np.zeros(5, dtype=np.float64)
        n_hist = analysis.SHORT_TERM_SUB_BLOCKS
        self._energy = np.zeros(n_hist, dtype=np.float64)  # ring of sub-block energies
        self._lengths = np.zeros(n_hist, dtype=np.float64)
        self._corr_ring = np.zeros((CORRELATION_SUB_BLOCKS, 6), dtype=np.float64)
        self.reading = MeterReading()
        self.reset()

    def reset(self) -> None:
        """Clear history, holds and the sub-block grid (audio thread)."""
        self._tp_buf[:] = 0.0
        self._kstate[:] = 0.0
        self._peak[:] = 0.0
        self._tpeak[:] = 0.0
        self._corr[:] = 0.0
        self._energy[:] = 0.0
        self._lengths[:] = 0.0
        self._corr_ring[:] = 0.0
        self._open_energy = 0.0
        self._open_frames = 0
        self._frames = 0
        self._complete = 0
        self._tp_max = 0.0
        self.reading = MeterReading()

    def _boundary(self, k: int) -> int:
        return (k * self.sample_rate + 5) // 10  # the analysis module's grid (half-up)

    def process(self, x: np.ndarray) -> None:
        """Meter ``x`` (2, n) float32, n <= ``max_block_frames`` (audio thread)."""
        n = x.shape[1]
        done = 0
        while done < n:
            nxt = self._boundary(self._complete + 1) - self._frames
            m = min(n - done, nxt)
            self._segment(x[:, done : done + m], m)
            done += m
            self._frames += m
            if m == nxt:
                self._close_sub_block()

    def _segment(self, x: np.ndarray, m: int) -> None:
        _segment_kernel(x, m, self._kactive, self._kcoef, self._kstate, self._kweights, self._seg_end,
                        self._seg_energy, self._peak, self._corr, self._tp_buf, self._taps, self._tp_off,
                        self._tp_keep, self._tp_out, self._tpeak)  # fmt: skip
        self._open_energy += self._seg_energy[0]
        self._open_frames += m

    def _close_sub_block(self) -> None:
        k = self._complete % analysis.SHORT_TERM_SUB_BLOCKS
        self._energy[k] = self._open_energy
        self._lengths[k] = self._open_frames
        ck = self._complete % CORRELATION_SUB_BLOCKS
        self._corr_ring[ck, :5] = self._corr
        self._corr_ring[ck, 5] = self._open_frames
        self._complete += 1
        self._tp_max = max(self._tp_max, self._tpeak[0], self._tpeak[1])
        # momentary: the last 4 sub-blocks; short-term: the last 30 (or what exists)
        idx_m = [(self._complete - 1 - j) % analysis.SHORT_TERM_SUB_BLOCKS for j in range(analysis.MOMENTARY_SUB_BLOCKS)]
        e_m = sum(self._energy[i] for i in idx_m)
        l_m = sum(self._lengths[i] for i in idx_m)
        e_s, l_s = float(self._energy.sum()), float(self._lengths.sum())
        s0, s1, s00, s11, s01, cnt = (float(v) for v in self._corr_ring.sum(axis=0))
        corr = None
        if cnt > 0:
            var0 = s00 / cnt - (s0 / cnt) ** 2
            var1 = s11 / cnt - (s1 / cnt) ** 2
            if var0 > 1e-20 and var1 > 1e-20:
                cov = s01 / cnt - (s0 / cnt) * (s1 / cnt)
                corr = max(-1.0, min(1.0, cov / math.sqrt(var0 * var1)))
        self.reading = MeterReading(
            sample_peak_dbfs=(_db(self._peak[0]), _db(self._peak[1])),
            true_peak_dbtp=(_db(self._tpeak[0]), _db(self._tpeak[1])),
            true_peak_max_dbtp=_db(self._tp_max),
            momentary_lufs=_lufs(e_m / l_m) if l_m else -math.inf,
            short_term_lufs=_lufs(e_s / l_s) if l_s else -math.inf,
            correlation=corr,
            frames=self._frames,
        )
        self._open_energy = 0.0
        self._open_frames = 0
        self._peak[:] = 0.0
        self._tpeak[:] = 0.0
        self._corr[:] = 0.0
