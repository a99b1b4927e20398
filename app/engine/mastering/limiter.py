"""True-peak look-ahead limiter.

Why the output never exceeds the ceiling
----------------------------------------
Input: per-frame true peaks ``p[n]`` (oversampled, max over channels) and the
required gain ``r[n] = min(1, c / p[n])`` for ceiling ``c``.

1. *Hold*: ``h[m] = min(r[m-K .. m+L+K])`` — a sliding minimum that looks ``L`` frames
   ahead (the look-ahead) and ``K`` frames either side (the interpolation filter's reach,
   so the gain is flat across every sample that shapes an inter-sample peak).
2. *Release*: ``g[m] = min(h[m], rel[m])``, where ``rel`` recovers from ``g[m-1]`` toward
   unity.  Program-dependent: a *sustained* gain ``s`` follows ``g`` down slowly
   (``sustain_ms``) and recovers slowly (``release_ms``); below ``s`` the gain recovers
   fast (``transient_release_ms``).  An isolated transient's dip is therefore short,
   while a dense loud passage settles on a steady reduction instead of pumping at the
   beat.  Whatever ``rel`` is, ``g <= h``, which is all the proof below needs.
3. *Attack*: ``s[m] = mean(g[m-L .. m])``, a box average that turns the hold's steps
   into ramps of length ``L``.

For a peak at frame ``q``, every ``m`` in ``[q-L-K, q+K]`` has ``q`` inside its hold
window, so ``g[m] <= r[q]``; the box average at any frame within ``K`` of ``q`` only
averages such ``g``, hence ``s <= r[q]`` across the whole neighbourhood of the peak.
Output = ``s * x`` delayed by ``L + K``: the peak comes out at or under the ceiling.
A small ``margin_db`` absorbs the difference between oversampling filters of
different meters; the renderer still measures the written output and corrects.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from app.engine.errors import ParameterError

#: Frames either side of a peak held at the peak's gain (covers a 4x interpolator's reach).
GUARD_FRAMES = 8


@njit(cache=True, nogil=True)
def _envelope_kernel(
    src: np.ndarray,
    scale: float,
    ceiling: float,
    from_peaks: bool,
    out: np.ndarray,
    dq_idx: np.ndarray,
    dq_val: np.ndarray,
    box: np.ndarray,
    istate: np.ndarray,
    fstate: np.ndarray,
    window: int,
    box_len: int,
    release_coef: float,
    fast_coef: float,
    sustain_coef: float,
) -> None:  # pragma: no cover - compiled
    """Streaming hold -> release -> box-average over required gains.

    ``src`` holds the required gains, or with ``from_peaks`` true peaks that are turned
    into required gains on the fly exactly as :meth:`LimiterEnvelope.required_gain`
    does for ``src * scale`` (saving three array passes; ``scale`` and ``ceiling`` are
    unused otherwise).  ``out[i]`` is the smoothed gain for the frame ``window - 1 - K``
    frames before frame ``i`` (the caller delays the audio by the same amount).
    istate = [t, head, count, box_pos]; fstate = [g_prev, box_sum, sustained gain].
    ``fast_coef < 0`` turns the program-dependent release off (one release, ``release_coef``).
    """
    t = istate[0]
    head = istate[1]
    count = istate[2]
    box_pos = istate[3]
    g_prev = fstate[0]
    box_sum = fstate[1]
    g_sus = fstate[2]
    dual = fast_coef >= 0.0
    cap = dq_idx.shape[0]
    # Ring indices wrap by comparison, not ``%``: an integer division per deque step
    # cost more than the rest of the loop.  ``back`` is the newest entry's slot.
    back = head + count - 1
    if back >= cap:
        back -= cap
    elif back < 0:
        back += cap
    for i in range(src.shape[0]):
        if from_peaks:
            p = np.float64(src[i]) * scale
            if p < 1e-12:
                p = 1e-12
            v = ceiling / p
            if v > 1.0:
                v = 1.0
        else:
            v = src[i]
        # push back, popping larger-or-equal values (monotonic deque of minima)
        while count > 0 and dq_val[back] >= v:
            count -= 1
            back -= 1
            if back < 0:
                back = cap - 1
        back += 1
        if back == cap:
            back = 0
        dq_idx[back] = t
        dq_val[back] = v
        count += 1
        # drop the front when it left the window
        while dq_idx[head] <= t - window:
            head += 1
            if head == cap:
                head = 0
            count -= 1
        h = dq_val[head]
        # release toward unity, never above the hold
        if dual:
            g_sus = 1.0 - (1.0 - g_sus) * release_coef
            if g_prev < g_sus:
                rel = g_sus - (g_sus - g_prev) * fast_coef
            else:
                rel = 1.0 - (1.0 - g_prev) * release_coef
        else:
            rel = 1.0 - (1.0 - g_prev) * release_coef
        g = h if h < rel else rel
        if dual and g < g_sus:
            g_sus = g + (g_sus - g) * sustain_coef
        g_prev = g
        # box average of length box_len
        box_sum += g - box[box_pos]
        box[box_pos] = g
        box_pos += 1
        if box_pos == box_len:
            box_pos = 0
        s = box_sum / box_len
        out[i] = s if s < 1.0 else 1.0
        t += 1
    istate[0] = t
    istate[1] = head
    istate[2] = count
    istate[3] = box_pos
    fstate[0] = g_prev
    fstate[1] = box_sum
    fstate[2] = g_sus


class LimiterEnvelope:
    """Streaming gain envelope from per-frame true peaks; delay :attr:`latency_frames`.

    Call :meth:`process` with the peaks of each block (already scaled by any gain that
    precedes the limiter); it returns one gain per frame for the audio delayed by
    ``latency_frames``.  Not thread-safe.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        ceiling_dbtp: float = -1.0,
        lookahead_ms: float = 5.0,
        release_ms: float = 120.0,
        margin_db: float = 0.05,
        guard_frames: int = GUARD_FRAMES,
        transient_release_ms: float | None = None,
        sustain_ms: float = 250.0,
    ) -> None:
        if not 8000 <= sample_rate <= 192000:
            raise ParameterError(f"sample rate {sample_rate} Hz is outside 8-192 kHz")
        if not 0.5 <= lookahead_ms <= 50.0:
            raise ParameterError(f"look-ahead {lookahead_ms} ms must be within 0.5-50 ms")
        if release_ms <= 0:
            raise ParameterError(f"release {release_ms} ms must be > 0")
        if transient_release_ms is not None and not 0 < transient_release_ms <= release_ms:
            raise ParameterError(
                f"transient release {transient_release_ms} ms must be > 0 and at most the release ({release_ms} ms)"
            )
        if sustain_ms <= 0:
            raise ParameterError(f"sustain time {sustain_ms} ms must be > 0")
        if ceiling_dbtp > 0.0 or margin_db < 0.0:
            raise ParameterError("the ceiling must be <= 0 dBTP and the margin >= 0 dB")
        self.sample_rate = int(sample_rate)
        self.ceiling_dbtp = float(ceiling_dbtp)
        self.ceiling = 10.0 ** ((ceiling_dbtp - margin_db) / 20.0)
        self.lookahead_frames = max(1, round(lookahead_ms * 1e-3 * sample_rate))
        self.guard_frames = int(guard_frames)
        self._window = self.lookahead_frames + 2 * self.guard_frames + 1
        self._box_len = self.lookahead_frames + 1
        #: frames between a required gain entering and its smoothed gain leaving
        self.latency_frames = self.lookahead_frames + self.guard_frames
        self._release = float(np.exp(-1.0 / (release_ms * 1e-3 * sample_rate)))
        self._fast = (
            -1.0 if transient_release_ms is None else float(np.exp(-1.0 / (transient_release_ms * 1e-3 * sample_rate)))
        )
        self._sustain = float(np.exp(-1.0 / (sustain_ms * 1e-3 * sample_rate)))
        self.reset()

    def reset(self) -> None:
        cap = self._window + 2
        self._dq_idx = np.zeros(cap, dtype=np.int64)
        self._dq_val = np.ones(cap, dtype=np.float64)
        self._box = np.ones(self._box_len, dtype=np.float64)
        self._istate = np.zeros(4, dtype=np.int64)
        # Unity history: the virtual frames before the signal need no reduction.
        self._fstate = np.array([1.0, float(self._box_len), 1.0], dtype=np.float64)

    def required_gain(self, peaks: np.ndarray) -> np.ndarray:
        """r = min(1, ceiling / peak) as float64."""
        p = np.asarray(peaks, dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.minimum(1.0, self.ceiling / np.maximum(p, 1e-12))

    def process(self, peaks: np.ndarray) -> np.ndarray:
        """(n,) linear per-frame true peaks -> (n,) float64 gains for the delayed frames."""
        p = np.ascontiguousarray(peaks, dtype=np.float64)  # one compiled specialisation
        out = np.empty(p.shape[0], dtype=np.float64)
        _envelope_kernel(
            p, 1.0, self.ceiling, True, out, self._dq_idx, self._dq_val, self._box, self._istate,
            self._fstate, self._window, self._box_len, self._release, self._fast, self._sustain,
        )  # fmt: skip
        return out


class DelayLine:
    """Fixed delay of (channels, n) blocks; returns as many frames as it gets."""

    def __init__(self, channels: int, delay_frames: int) -> None:
        self._buf = np.zeros((channels, delay_frames), dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        d = self._buf.shape[1]
        if d == 0:
            return block.astype(np.float32, copy=False)
        x = np.concatenate([self._buf, block.astype(np.float32, copy=False)], axis=1)
        self._buf = x[:, x.shape[1] - d :].copy()
        return x[:, : block.shape[1]]


def limit(
    audio: np.ndarray,
    sample_rate: int,
    *,
    ceiling_dbtp: float = -1.0,
    lookahead_ms: float = 5.0,
    release_ms: float = 120.0,
    margin_db: float = 0.05,
    oversample: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Limit a whole signal (offline, no latency in the result).

    Parameters
    ----------
    audio : (channels, frames) float
    Returns
    -------
    out : (channels, frames) float32, true peak <= ceiling_dbtp (by the project's meter)
    gain_reduction_db : (frames,) float32, >= 0
    """
    from app.engine.analysis import true_peak_frames

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2:
        raise ParameterError("audio must be (channels, frames)")
    env = LimiterEnvelope(
        sample_rate, ceiling_dbtp=ceiling_dbtp, lookahead_ms=lookahead_ms,
        release_ms=release_ms, margin_db=margin_db,
    )  # fmt: skip
    peaks = true_peak_frames(x, sample_rate, oversample=oversample)
    d = env.latency_frames
    gains = np.concatenate([env.process(peaks), env.process(np.zeros(d))])[d:]
    out = (x * gains[None, :]).astype(np.float32)
    return out, (-20.0 * np.log10(np.maximum(gains, 1e-12))).astype(np.float32)
