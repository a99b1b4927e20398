"""Dynamics processors of the offline mastering chain.

Every processor here is stateful and streaming: feeding a signal in blocks of
any size gives the same output as one call on the whole signal, because all
per-sample state (filter memories, detector, gain reduction) lives in small
float64 arrays carried from call to call and the per-sample arithmetic does not
depend on where a block starts.  The recursive loops run in numba kernels
compiled once and cached on disk.

Arrays crossing these functions are ``block: (channels, frames) float32``.

Threading: each processor instance is for one thread at a time (the mastering
job's thread).  ``process`` allocates its output, so it is meant for offline
rendering, not for the real-time audio callback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numba import njit

from app.engine.errors import ParameterError

__all__ = [
    "Crossover3",
    "LinkedCompressor",
    "MultibandCompressor",
    "OversampledClipper",
    "soft_clip",
    "static_gain_db",
]

MIN_SAMPLE_RATE_HZ: Final = 8000
MAX_SAMPLE_RATE_HZ: Final = 192000
MAX_CHANNELS: Final = 64
MIN_CROSSOVER_HZ: Final = 20.0
#: Filter corners must stay below this fraction of the sample rate (bilinear warping).
MAX_CORNER_FRACTION: Final = 0.45
MIN_SIDECHAIN_HPF_HZ: Final = 10.0
#: Gain reduction below this is snapped to exactly 0 dB (a gain error of ~1e-8, far
#: below float32 resolution) so that release tails end and unity gain is exact.
GR_FLOOR_DB: Final = 1e-7
_LN10_OVER_20: Final = math.log(10.0) / 20.0
_BUTTERWORTH_Q: Final = 1.0 / math.sqrt(2.0)
_DETECTORS: Final = ("peak", "rms")


# --------------------------------------------------------------------------- validation


def _fail(message: str) -> ParameterError:
    return ParameterError(message)


def _check_finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise _fail(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _fail(f"{name} must be finite, got {value!r}")
    return value


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise _fail(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE_HZ <= sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise _fail(
            f"sample_rate must be {MIN_SAMPLE_RATE_HZ}–{MAX_SAMPLE_RATE_HZ} Hz, got {sample_rate}"
        )
    return int(sample_rate)


def _check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer):
        raise _fail(f"channels must be an integer, got {channels!r}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise _fail(f"channels must be 1–{MAX_CHANNELS}, got {channels}")
    return int(channels)


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.floating | np.integer):
        raise _fail(f"ratio must be a number, got {ratio!r}")
    ratio = float(ratio)
    # +inf is allowed: an ideal limiter curve.
    if math.isnan(ratio) or ratio < 1.0:
        raise _fail(f"ratio must be >= 1, got {ratio!r}")
    return ratio


def _check_curve(threshold_db: float, ratio: float, knee_db: float) -> tuple[float, float, float]:
    threshold_db = _check_finite("threshold_db", threshold_db)
    if not -120.0 <= threshold_db <= 24.0:
        raise _fail(f"threshold_db must be -120–24 dB, got {threshold_db}")
    ratio = _check_ratio(ratio)
    knee_db = _check_finite("knee_db", knee_db)
    if not 0.0 <= knee_db <= 48.0:
        raise _fail(f"knee_db must be 0–48 dB, got {knee_db}")
    return threshold_db, ratio, knee_db


def _check_block(block: np.ndarray, channels: int) -> np.ndarray:
    array = np.asarray(block)
    if array.ndim != 2 or array.shape[0] != channels:
        raise _fail(f"block must have shape ({channels}, frames), got {array.shape}")
    # Integer PCM would need scaling first; refusing it avoids a silent 90 dB error.
    if not np.issubdtype(array.dtype, np.floating):
        raise _fail(f"block must hold floating-point samples, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _time_coefficient(time_ms: float, sample_rate: int) -> float:
    """One-pole coefficient that covers 1 - 1/e (63 %) of a step in ``time_ms``."""
    return math.exp(-1000.0 / (time_ms * sample_rate))


# --------------------------------------------------------------------------- filter design


def _biquad_coefficients(kind: str, corner_hz: float, sample_rate: int, q: float) -> np.ndarray:
    """Normalised ``[b0, b1, b2, a1, a2]`` of a bilinear (pre-warped) 2nd-order section.

    The low-pass, high-pass and all-pass share their denominator for equal
    corner and Q, which makes LP² + HP² equal the all-pass exactly (the
    Linkwitz-Riley identity survives the bilinear transform).
    """
    omega = 2.0 * math.pi * corner_hz / sample_rate
    cos_w = math.cos(omega)
    alpha = math.sin(omega) / (2.0 * q)
    a0 = 1.0 + alpha
    if kind == "lowpass":
        b = ((1.0 - cos_w) / 2.0, 1.0 - cos_w, (1.0 - cos_w) / 2.0)
    elif kind == "highpass":
        b = ((1.0 + cos_w) / 2.0, -(1.0 + cos_w), (1.0 + cos_w) / 2.0)
    elif kind == "allpass":
        b = (1.0 - alpha, -2.0 * cos_w, 1.0 + alpha)
    else:  # pragma: no cover - internal misuse
        raise ValueError(kind)
    return np.array(
        [b[0] / a0, b[1] / a0, b[2] / a0, -2.0 * cos_w / a0, (1.0 - alpha) / a0],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- kernels


@njit(cache=True, fastmath=False, nogil=True)
def _gain_reduction_db(level_db, threshold_db, slope, knee_db):  # type: ignore[no-untyped-def]
    """Gain reduction (>= 0 dB) of the soft-knee curve; ``slope = 1/ratio - 1``."""
    over_db = level_db - threshold_db
    if 2.0 * over_db <= -knee_db:
        return 0.0
    if knee_db > 0.0 and 2.0 * over_db < knee_db:
        into_knee_db = over_db + 0.5 * knee_db
        return -slope * into_knee_db * into_knee_db / (2.0 * knee_db)
    return -slope * over_db


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _gain_step(  # type: ignore[no-untyped-def]
    power, gr_db, knee_start_power, db_per_neper_power, threshold_db, slope, knee_db,
    attack_coefficient, release_coefficient, makeup_db, makeup_gain, gr_floor_db, max_gr_db,
):  # fmt: skip
    """One sample of the gain computer: detector power -> smoothed gain reduction (dB) and
    the linear output gain. Shared by the per-channel and the fused stereo kernels.
    The target reduction never exceeds ``max_gr_db`` (the compressor's range)."""
    # Below the knee no logarithm is needed (the common case on quiet passages).
    if power <= knee_start_power:
        target_db = 0.0
    else:
        level_db = db_per_neper_power * math.log(power)
        target_db = _gain_reduction_db(level_db, threshold_db, slope, knee_db)
        if target_db > max_gr_db:
            target_db = max_gr_db
    coefficient = attack_coefficient if target_db > gr_db else release_coefficient
    gr_db = target_db + coefficient * (gr_db - target_db)
    if gr_db < gr_floor_db:
        return 0.0, makeup_gain
    return gr_db, math.exp((makeup_db - gr_db) * _LN10_OVER_20)


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _follow_threshold(slow_power, ref_db, max_follow_db, threshold_db, knee_db):  # type: ignore[no-untyped-def]
    """Threshold moved with the section level: ``threshold_db`` at the reference (loud)
    level, lower by as much as the slow level sits under it (at most ``max_follow_db``),
    higher by at most 3 dB.  Returns (threshold_db, knee start power)."""
    slow_db = 10.0 * math.log10(slow_power + 1e-20)
    offset = slow_db - ref_db
    if offset < -max_follow_db:
        offset = -max_follow_db
    elif offset > 3.0:
        offset = 3.0
    thr = threshold_db + offset
    return thr, 10.0 ** ((thr - 0.5 * knee_db) / 10.0)


#: Samples between updates of a section-following threshold (the slow level moves slowly).
FOLLOW_UPDATE_FRAMES: Final = 32


@njit(cache=True, fastmath=False, nogil=True, inline="always")
def _follow_step(  # type: ignore[no-untyped-def]
    instant, slow, counter, thr, knee_start_power, follow_coefficient, ref_db, max_follow_db, threshold_db, knee_db,
):  # fmt: skip
    """One sample of the section level; the threshold is recomputed every FOLLOW_UPDATE_FRAMES."""
    slow = instant + follow_coefficient * (slow - instant)
    counter += 1
    if counter >= FOLLOW_UPDATE_FRAMES:
        counter = 0
        thr, knee_start_power = _follow_threshold(slow, ref_db, max_follow_db, threshold_db, knee_db)
    return slow, counter, thr, knee_start_power


@njit(cache=True, fastmath=False, nogil=True)
def _detector_kernel(x, detector, hpf_coefficients, hpf_state, use_hpf, use_rms):  # type: ignore[no-untyped-def]
    """Per-sample detector input over channels: sum of squares (RMS) or max |x| (peak).

    Runs channel by channel so the side-chain filter memories stay in registers;
    ``hpf_state: (channels, 2)`` holds transposed-direct-form-II memories.
    """
    channels, frames = x.shape
    b0 = hpf_coefficients[0]
    b1 = hpf_coefficients[1]
    b2 = hpf_coefficients[2]
    a1 = hpf_coefficients[3]
    a2 = hpf_coefficients[4]
    detector[:] = 0.0
    for c in range(channels):
        s1 = hpf_state[c, 0]
        s2 = hpf_state[c, 1]
        for i in range(frames):
            v = np.float64(x[c, i])
            if use_hpf:
                y = b0 * v + s1
                s1 = b1 * v - a1 * y + s2
                s2 = b2 * v - a2 * y
                v = y
            if use_rms:
                detector[i] += v * v
            else:
                detector[i] = max(detector[i], abs(v))
        hpf_state[c, 0] = s1
        hpf_state[c, 1] = s2


@njit(cache=True, fastmath=False, nogil=True)
def _compressor_kernel(  # type: ignore[no-untyped-def]
    x,
    out,
    gr_out,
    detector,
    state,
    use_rms,
    rms_coefficient,
    threshold_db,
    slope,
    knee_db,
    knee_start_power,
    attack_coefficient,
    release_coefficient,
    makeup_db,
    gr_floor_db,
    max_gr_db,
    follow_coefficient,
    ref_db,
    max_follow_db,
):
    """Linked gain over ``x: (channels, n) float32``; writes ``out`` and ``gr_out``.

    ``detector`` comes from :func:`_detector_kernel`;
    ``state = [mean square of the RMS detector, gain reduction dB, slow mean square,
    frame counter]``.  ``follow_coefficient < 0``: fixed threshold.
    """
    channels, frames = x.shape
    inv_channels = 1.0 / channels
    db_per_neper_power = 10.0 / math.log(10.0)  # natural log is cheaper than log10
    makeup_gain = math.exp(makeup_db * _LN10_OVER_20)
    mean_square = state[0]
    gr_db = state[1]
    slow = state[2]
    counter = int(state[3])
    follow = follow_coefficient >= 0.0
    thr = threshold_db
    if follow:
        thr, knee_start_power = _follow_threshold(slow, ref_db, max_follow_db, threshold_db, knee_db)
    for i in range(frames):
        if use_rms:
            instant = detector[i] * inv_channels
            mean_square = instant + rms_coefficient * (mean_square - instant)
            power = mean_square
        else:
            instant = detector[i] * detector[i]
            power = instant
        if follow:
            slow, counter, thr, knee_start_power = _follow_step(
                instant, slow, counter, thr, knee_start_power, follow_coefficient, ref_db, max_follow_db,
                threshold_db, knee_db,
            )  # fmt: skip
        gr_db, gain = _gain_step(power, gr_db, knee_start_power, db_per_neper_power, thr, slope, knee_db,
                                 attack_coefficient, release_coefficient, makeup_db, makeup_gain, gr_floor_db,
                                 max_gr_db)  # fmt: skip
        gr_out[i] = gr_db
        for c in range(channels):
            out[c, i] = np.float64(x[c, i]) * gain
    state[0] = mean_square
    state[1] = gr_db
    state[2] = slow
    state[3] = counter


@njit(cache=True, fastmath=False, nogil=True)
def _stereo_compressor_kernel(  # type: ignore[no-untyped-def]
    x,
    out,
    gr_out,
    hpf_coefficients,
    hpf_state,
    use_hpf,
    state,
    use_rms,
    rms_coefficient,
    threshold_db,
    slope,
    knee_db,
    knee_start_power,
    attack_coefficient,
    release_coefficient,
    makeup_db,
    gr_floor_db,
    max_gr_db,
    follow_coefficient,
    ref_db,
    max_follow_db,
):
    """:func:`_detector_kernel` + :func:`_compressor_kernel` fused for two channels.

    Same arithmetic in the same order, so the same output bit for bit; but the
    recursions (two side-chain filters, the RMS detector, the gain smoothing) are
    latency-bound chains, and in one loop the CPU overlaps them with each other and
    with the logarithm and exponential instead of running them one after another.
    """
    frames = x.shape[1]
    b0 = hpf_coefficients[0]
    b1 = hpf_coefficients[1]
    b2 = hpf_coefficients[2]
    a1 = hpf_coefficients[3]
    a2 = hpf_coefficients[4]
    l1 = hpf_state[0, 0]
    l2 = hpf_state[0, 1]
    r1 = hpf_state[1, 0]
    r2 = hpf_state[1, 1]
    db_per_neper_power = 10.0 / math.log(10.0)
    makeup_gain = math.exp(makeup_db * _LN10_OVER_20)
    mean_square = state[0]
    gr_db = state[1]
    slow = state[2]
    counter = int(state[3])
    follow = follow_coefficient >= 0.0
    thr = threshold_db
    if follow:
        thr, knee_start_power = _follow_threshold(slow, ref_db, max_follow_db, threshold_db, knee_db)
    for i in range(frames):
        vl = np.float64(x[0, i])
        vr = np.float64(x[1, i])
        if use_hpf:
            yl = b0 * vl + l1
            yr = b0 * vr + r1
            l1 = b1 * vl - a1 * yl + l2
            r1 = b1 * vr - a1 * yr + r2
            l2 = b2 * vl - a2 * yl
            r2 = b2 * vr - a2 * yr
            vl = yl
            vr = yr
        if use_rms:
            instant = (vl * vl + vr * vr) * 0.5
            mean_square = instant + rms_coefficient * (mean_square - instant)
            power = mean_square
        else:
            peak = max(abs(vl), abs(vr))
            instant = peak * peak
            power = instant
        if follow:
            slow, counter, thr, knee_start_power = _follow_step(
                instant, slow, counter, thr, knee_start_power, follow_coefficient, ref_db, max_follow_db,
                threshold_db, knee_db,
            )  # fmt: skip
        gr_db, gain = _gain_step(power, gr_db, knee_start_power, db_per_neper_power, thr, slope, knee_db,
                                 attack_coefficient, release_coefficient, makeup_db, makeup_gain, gr_floor_db,
                                 max_gr_db)  # fmt: skip
        gr_out[i] = gr_db
        out[0, i] = np.float64(x[0, i]) * gain
        out[1, i] = np.float64(x[1, i]) * gain
    hpf_state[0, 0] = l1
    hpf_state[0, 1] = l2
    hpf_state[1, 0] = r1
    hpf_state[1, 1] = r2
    state[0] = mean_square
    state[1] = gr_db
    state[2] = slow
    state[3] = counter


@njit(cache=True, fastmath=False, nogil=True)
def _crossover_kernel(x, low, mid, high, coefficients, state):  # type: ignore[no-untyped-def]
    """3-band LR4 split of ``x: (channels, n)`` into ``low``, ``mid``, ``high``.

    ``coefficients: (5, 5)`` rows ``[b0, b1, b2, a1, a2]`` of LP@low, HP@low,
    LP@high, HP@high, AP@high.  ``state: (channels, 9, 2)`` TDF-II memories of
    the nine sections: low LP, low LP, low-band AP, HP@low, HP@low, mid LP,
    mid LP, high HP, high HP.  Filter memories are held in locals during the
    sample loop (written out by hand: numba keeps them in registers that way).
    """
    channels, frames = x.shape
    lb0, lb1, lb2 = coefficients[0, 0], coefficients[0, 1], coefficients[0, 2]
    la1, la2 = coefficients[0, 3], coefficients[0, 4]
    hb0, hb1, hb2 = coefficients[1, 0], coefficients[1, 1], coefficients[1, 2]
    ha1, ha2 = coefficients[1, 3], coefficients[1, 4]
    mb0, mb1, mb2 = coefficients[2, 0], coefficients[2, 1], coefficients[2, 2]
    ma1, ma2 = coefficients[2, 3], coefficients[2, 4]
    tb0, tb1, tb2 = coefficients[3, 0], coefficients[3, 1], coefficients[3, 2]
    ta1, ta2 = coefficients[3, 3], coefficients[3, 4]
    pb0, pb1, pb2 = coefficients[4, 0], coefficients[4, 1], coefficients[4, 2]
    pa1, pa2 = coefficients[4, 3], coefficients[4, 4]
    for c in range(channels):
        s0a, s0b = state[c, 0, 0], state[c, 0, 1]
        s1a, s1b = state[c, 1, 0], state[c, 1, 1]
        s2a, s2b = state[c, 2, 0], state[c, 2, 1]
        s3a, s3b = state[c, 3, 0], state[c, 3, 1]
        s4a, s4b = state[c, 4, 0], state[c, 4, 1]
        s5a, s5b = state[c, 5, 0], state[c, 5, 1]
        s6a, s6b = state[c, 6, 0], state[c, 6, 1]
        s7a, s7b = state[c, 7, 0], state[c, 7, 1]
        s8a, s8b = state[c, 8, 0], state[c, 8, 1]
        for i in range(frames):
            v = np.float64(x[c, i])
            # Low band: LR4 low-pass at low_hz, then the all-pass of the high split
            # so that its phase matches mid + high.
            y0 = lb0 * v + s0a
            s0a = lb1 * v - la1 * y0 + s0b
            s0b = lb2 * v - la2 * y0
            y1 = lb0 * y0 + s1a
            s1a = lb1 * y0 - la1 * y1 + s1b
            s1b = lb2 * y0 - la2 * y1
            y2 = pb0 * y1 + s2a
            s2a = pb1 * y1 - pa1 * y2 + s2b
            s2b = pb2 * y1 - pa2 * y2
            low[c, i] = y2
            # Upper part: LR4 high-pass at low_hz ...
            y3 = hb0 * v + s3a
            s3a = hb1 * v - ha1 * y3 + s3b
            s3b = hb2 * v - ha2 * y3
            y4 = hb0 * y3 + s4a
            s4a = hb1 * y3 - ha1 * y4 + s4b
            s4b = hb2 * y3 - ha2 * y4
            # ... split again at high_hz: mid = LR4 low-pass, high = LR4 high-pass.
            y5 = mb0 * y4 + s5a
            s5a = mb1 * y4 - ma1 * y5 + s5b
            s5b = mb2 * y4 - ma2 * y5
            y6 = mb0 * y5 + s6a
            s6a = mb1 * y5 - ma1 * y6 + s6b
            s6b = mb2 * y5 - ma2 * y6
            mid[c, i] = y6
            y7 = tb0 * y4 + s7a
            s7a = tb1 * y4 - ta1 * y7 + s7b
            s7b = tb2 * y4 - ta2 * y7
            y8 = tb0 * y7 + s8a
            s8a = tb1 * y7 - ta1 * y8 + s8b
            s8b = tb2 * y7 - ta2 * y8
            high[c, i] = y8
        state[c, 0, 0], state[c, 0, 1] = s0a, s0b
        state[c, 1, 0], state[c, 1, 1] = s1a, s1b
        state[c, 2, 0], state[c, 2, 1] = s2a, s2b
        state[c, 3, 0], state[c, 3, 1] = s3a, s3b
        state[c, 4, 0], state[c, 4, 1] = s4a, s4b
        state[c, 5, 0], state[c, 5, 1] = s5a, s5b
        state[c, 6, 0], state[c, 6, 1] = s6a, s6b
        state[c, 7, 0], state[c, 7, 1] = s7a, s7b
        state[c, 8, 0], state[c, 8, 1] = s8a, s8b


# --------------------------------------------------------------------------- public API


def static_gain_db(
    level_db: np.ndarray, *, threshold_db: float, ratio: float, knee_db: float
) -> np.ndarray:
    """Static soft-knee gain computer of :class:`LinkedCompressor`.

    Below ``threshold_db - knee_db/2`` the gain is 0 dB; above
    ``threshold_db + knee_db/2`` the output level follows
    ``threshold_db + (level_db - threshold_db) / ratio``; in between a quadratic
    joins the two with a continuous slope.

    Parameters
    ----------
    level_db : np.ndarray
        Detector levels in dBFS, any shape.
    threshold_db : float
        Threshold in dBFS (centre of the knee).
    ratio : float
        Compression ratio, >= 1 (``inf`` gives a limiter curve).
    knee_db : float
        Knee width in dB, >= 0 (0 is a hard knee).

    Returns
    -------
    np.ndarray
        Gain in dB (<= 0), float64, same shape as ``level_db``.

    Raises
    ------
    ParameterError
        If a curve parameter is out of range.
    """
    threshold_db, ratio, knee_db = _check_curve(threshold_db, ratio, knee_db)
    level = np.asarray(level_db, dtype=np.float64)
    slope = 1.0 / ratio - 1.0
    over_db = level - threshold_db
    gain_db = np.where(2.0 * over_db > -knee_db, slope * over_db, 0.0).astype(np.float64)
    if knee_db > 0.0:
        in_knee = np.abs(2.0 * over_db) < knee_db
        # Evaluated inside the knee only (outside, a tiny knee would overflow).
        into_knee_db = over_db[in_knee] + 0.5 * knee_db
        gain_db[in_knee] = slope * into_knee_db**2 / (2.0 * knee_db)
    # -0.0 -> 0.0 so callers can compare with == 0.
    return np.asarray(gain_db + 0.0, dtype=np.float64)


class LinkedCompressor:
    """Stereo-linked feed-forward compressor for bus glue.

    All channels receive the same gain, computed from one detector over all
    channels: ``'peak'`` (max |x| over channels, per sample) or ``'rms'``
    (mean square over channels, smoothed by a one-pole of ``rms_window_ms``).
    The level in dB goes through the soft-knee gain computer
    (:func:`static_gain_db`); the gain reduction in dB is smoothed by a one-pole
    that uses ``attack_ms`` while the reduction grows and ``release_ms`` while it
    shrinks (each reaches 63 % of a step in its time).  An optional 2nd-order
    Butterworth high-pass (``sidechain_hpf_hz``) filters the detector path only,
    so that bass does not pump the bus.  Zero latency.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz, 8000–192000.
    channels : int
        Number of channels, 1–64.
    threshold_db : float
        Threshold in dBFS (centre of the knee), -120–24.
    ratio : float
        Compression ratio, >= 1.
    attack_ms, release_ms : float
        Time constants of the gain-reduction smoothing in ms, > 0.
    knee_db : float
        Knee width in dB, 0–48.
    makeup_db : float
        Gain applied after compression in dB, -48–48.
    detector : {'rms', 'peak'}
        Level detector.
    rms_window_ms : float
        Time constant of the RMS detector in ms, > 0 (ignored for ``'peak'``).
    sidechain_hpf_hz : float or None
        Corner of the detector high-pass in Hz, 10 Hz – 0.45·sample_rate, or None.
    max_gr_db : float or None
        Range: the gain reduction never exceeds this many dB (None: unlimited).
    section_window_ms : float or None
        With a value, the threshold follows the music's section level: a slow mean
        square (this time constant) of the detector input is compared with
        ``section_ref_db`` (the level of the loud passages the threshold was set for)
        and the threshold moves by the difference (down at most ``max_follow_db``, up
        at most 3 dB).  A quiet intro's peaks are then treated like a chorus's,
        relative to their own level, so glue tightens transients without flattening
        the song's sections.

    Attributes
    ----------
    last_gain_reduction_db : np.ndarray
        ``(frames,) float32`` gain reduction in dB (>= 0) of the last processed block.

    Notes
    -----
    Input must be finite (the engine rejects NaN/Inf on load): a NaN sample
    would stay in the detector state until :meth:`reset`.
    One thread at a time; ``process`` allocates its output (offline use).
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        threshold_db: float,
        ratio: float,
        attack_ms: float,
        release_ms: float,
        knee_db: float = 6.0,
        makeup_db: float = 0.0,
        detector: str = "rms",
        rms_window_ms: float = 10.0,
        sidechain_hpf_hz: float | None = None,
        max_gr_db: float | None = None,
        section_window_ms: float | None = None,
        section_ref_db: float = -20.0,
        max_follow_db: float = 15.0,
    ) -> None:
        self.sample_rate = _check_sample_rate(sample_rate)
        self.channels = _check_channels(channels)
        self.threshold_db, self.ratio, self.knee_db = _check_curve(threshold_db, ratio, knee_db)
        self.attack_ms = _check_finite("attack_ms", attack_ms)
        self.release_ms = _check_finite("release_ms", release_ms)
        for name, value in (("attack_ms", self.attack_ms), ("release_ms", self.release_ms)):
            if value <= 0.0:
                raise _fail(f"{name} must be > 0 ms, got {value}")
        self.makeup_db = _check_finite("makeup_db", makeup_db)
        if not -48.0 <= self.makeup_db <= 48.0:
            raise _fail(f"makeup_db must be -48–48 dB, got {self.makeup_db}")
        if detector not in _DETECTORS:
            raise _fail(f"detector must be one of {_DETECTORS}, got {detector!r}")
        self.detector = detector
        self.rms_window_ms = _check_finite("rms_window_ms", rms_window_ms)
        if self.rms_window_ms <= 0.0:
            raise _fail(f"rms_window_ms must be > 0 ms, got {self.rms_window_ms}")
        self.sidechain_hpf_hz: float | None = None
        if sidechain_hpf_hz is not None:
            hpf_hz = _check_finite("sidechain_hpf_hz", sidechain_hpf_hz)
            top_hz = MAX_CORNER_FRACTION * self.sample_rate
            if not MIN_SIDECHAIN_HPF_HZ <= hpf_hz < top_hz:
                raise _fail(
                    f"sidechain_hpf_hz must be {MIN_SIDECHAIN_HPF_HZ:g}–{top_hz:g} Hz, got {hpf_hz}"
                )
            self.sidechain_hpf_hz = hpf_hz

        if max_gr_db is not None and not _check_finite("max_gr_db", max_gr_db) > 0.0:
            raise _fail(f"max_gr_db must be > 0 dB, got {max_gr_db}")
        self.max_gr_db = math.inf if max_gr_db is None else float(max_gr_db)
        if section_window_ms is not None and not _check_finite("section_window_ms", section_window_ms) > 0.0:
            raise _fail(f"section_window_ms must be > 0 ms, got {section_window_ms}")
        self.section_window_ms = section_window_ms
        self.section_ref_db = _check_finite("section_ref_db", section_ref_db)
        self.max_follow_db = _check_finite("max_follow_db", max_follow_db)
        if not 0.0 <= self.max_follow_db <= 60.0:
            raise _fail(f"max_follow_db must be 0-60 dB, got {max_follow_db}")
        self._follow_coefficient = (
            -1.0 if section_window_ms is None else _time_coefficient(float(section_window_ms), self.sample_rate)
        )
        self._slope = 1.0 / self.ratio - 1.0
        self._knee_start_power = 10.0 ** ((self.threshold_db - 0.5 * self.knee_db) / 10.0)
        self._attack_coefficient = _time_coefficient(self.attack_ms, self.sample_rate)
        self._release_coefficient = _time_coefficient(self.release_ms, self.sample_rate)
        self._rms_coefficient = _time_coefficient(self.rms_window_ms, self.sample_rate)
        if self.sidechain_hpf_hz is None:
            self._hpf_coefficients = np.zeros(5, dtype=np.float64)
        else:
            self._hpf_coefficients = _biquad_coefficients(
                "highpass", self.sidechain_hpf_hz, self.sample_rate, _BUTTERWORTH_Q
            )
        self._state = np.zeros(4, dtype=np.float64)
        self._hpf_state = np.zeros((self.channels, 2), dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget all history (detector, gain reduction, side-chain filter)."""
        self._state[:] = 0.0
        # The section level starts at the reference: nothing is assumed quiet before it is heard.
        self._state[2] = 10.0 ** (self.section_ref_db / 10.0)
        self._hpf_state[:] = 0.0
        self.last_gain_reduction_db = np.zeros(0, dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Compress one block.

        Parameters
        ----------
        block : np.ndarray
            ``(channels, frames)`` audio, float32 (float64 is converted).

        Returns
        -------
        np.ndarray
            ``(channels, frames) float32``, time-aligned with the input.

        Raises
        ------
        ParameterError
            If the block's shape does not match ``channels``.
        """
        x = _check_block(block, self.channels)
        out = np.empty_like(x)
        gain_reduction_db = np.empty(x.shape[1], dtype=np.float32)
        use_rms = self.detector == "rms"
        if self.channels == 2:
            _stereo_compressor_kernel(
                x, out, gain_reduction_db, self._hpf_coefficients, self._hpf_state,
                self.sidechain_hpf_hz is not None, self._state, use_rms, self._rms_coefficient,
                self.threshold_db, self._slope, self.knee_db, self._knee_start_power,
                self._attack_coefficient, self._release_coefficient, self.makeup_db, GR_FLOOR_DB,
                self.max_gr_db, self._follow_coefficient, self.section_ref_db, self.max_follow_db,
            )  # fmt: skip
            self.last_gain_reduction_db = gain_reduction_db
            return out
        detector = np.empty(x.shape[1], dtype=np.float64)
        _detector_kernel(
            x,
            detector,
            self._hpf_coefficients,
            self._hpf_state,
            self.sidechain_hpf_hz is not None,
            use_rms,
        )
        _compressor_kernel(
            x,
            out,
            gain_reduction_db,
            detector,
            self._state,
            use_rms,
            self._rms_coefficient,
            self.threshold_db,
            self._slope,
            self.knee_db,
            self._knee_start_power,
            self._attack_coefficient,
            self._release_coefficient,
            self.makeup_db,
            GR_FLOOR_DB,
            self.max_gr_db,
            self._follow_coefficient,
            self.section_ref_db,
            self.max_follow_db,
        )
        self.last_gain_reduction_db = gain_reduction_db
        return out


class Crossover3:
    """3-band Linkwitz-Riley 4th-order (24 dB/oct) crossover.

    The input is split at ``low_hz`` into low and upper parts, and the upper
    part again at ``high_hz`` into mid and high.  The low band also passes
    through the all-pass that the high split imposes on mid + high, so
    ``low + mid + high`` equals the input through an all-pass: flat magnitude.
    Each band is -6 dB at its crossover frequencies.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz, 8000–192000.
    channels : int
        Number of channels, 1–64.
    low_hz, high_hz : float
        Crossover frequencies in Hz, ``20 <= low_hz < high_hz < 0.45 * sample_rate``.

    Notes
    -----
    One thread at a time; ``split`` allocates its outputs (offline use).
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        low_hz: float = 120.0,
        high_hz: float = 4000.0,
    ) -> None:
        self.sample_rate = _check_sample_rate(sample_rate)
        self.channels = _check_channels(channels)
        self.low_hz = _check_finite("low_hz", low_hz)
        self.high_hz = _check_finite("high_hz", high_hz)
        top_hz = MAX_CORNER_FRACTION * self.sample_rate
        if not MIN_CROSSOVER_HZ <= self.low_hz < self.high_hz < top_hz:
            raise _fail(
                f"crossover needs {MIN_CROSSOVER_HZ:g} Hz <= low_hz < high_hz < {top_hz:g} Hz, "
                f"got low_hz={self.low_hz}, high_hz={self.high_hz}"
            )
        sr = self.sample_rate
        q = _BUTTERWORTH_Q
        self._coefficients = np.stack(
            [
                _biquad_coefficients("lowpass", self.low_hz, sr, q),
                _biquad_coefficients("highpass", self.low_hz, sr, q),
                _biquad_coefficients("lowpass", self.high_hz, sr, q),
                _biquad_coefficients("highpass", self.high_hz, sr, q),
                _biquad_coefficients("allpass", self.high_hz, sr, q),
            ]
        )
        self._state = np.zeros((self.channels, 9, 2), dtype=np.float64)

    def reset(self) -> None:
        """Clear the filter memories."""
        self._state[:] = 0.0

    def split(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split one block into bands.

        Parameters
        ----------
        block : np.ndarray
            ``(channels, frames)`` audio, float32.

        Returns
        -------
        tuple of np.ndarray
            ``(low, mid, high)``, each ``(channels, frames) float32``.

        Raises
        ------
        ParameterError
            If the block's shape does not match ``channels``.
        """
        x = _check_block(block, self.channels)
        low = np.empty_like(x)
        mid = np.empty_like(x)
        high = np.empty_like(x)
        _crossover_kernel(x, low, mid, high, self._coefficients, self._state)
        return low, mid, high


_BAND_KEYS: Final = frozenset(
    {
        "threshold_db",
        "ratio",
        "attack_ms",
        "release_ms",
        "knee_db",
        "makeup_db",
        "detector",
        "rms_window_ms",
    }
)
_REQUIRED_BAND_KEYS: Final = frozenset({"threshold_db", "ratio", "attack_ms", "release_ms"})


class MultibandCompressor:
    """Three-band compressor: :class:`Crossover3` + one :class:`LinkedCompressor` per band.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz, 8000–192000.
    channels : int
        Number of channels, 1–64.
    low_hz, high_hz : float
        Crossover frequencies in Hz (see :class:`Crossover3`).
    bands : Sequence of Mapping
        Three dicts (low, mid, high) of :class:`LinkedCompressor` keyword
        arguments: ``threshold_db``, ``ratio``, ``attack_ms``, ``release_ms``
        (required), ``knee_db``, ``makeup_db``, ``detector``, ``rms_window_ms``.

    Attributes
    ----------
    last_gain_reduction_db : np.ndarray
        ``(3, frames) float32`` gain reduction in dB per band of the last block.

    Notes
    -----
    With every band below threshold and no makeup, the output is the input
    through the crossover's all-pass (flat magnitude, zero latency).
    One thread at a time; ``process`` allocates its output (offline use).
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        low_hz: float = 120.0,
        high_hz: float = 4000.0,
        bands: Sequence[Mapping[str, Any]],
    ) -> None:
        self.crossover = Crossover3(sample_rate, channels, low_hz=low_hz, high_hz=high_hz)
        self.sample_rate = self.crossover.sample_rate
        self.channels = self.crossover.channels
        if isinstance(bands, Mapping | str) or len(bands) != 3:
            raise _fail("bands must be a sequence of three dicts (low, mid, high)")
        compressors = []
        for index, band in enumerate(bands):
            if not isinstance(band, Mapping):
                raise _fail(f"bands[{index}] must be a dict, got {type(band).__name__}")
            unknown = set(band) - _BAND_KEYS
            if unknown:
                raise _fail(f"bands[{index}] has unknown keys {sorted(unknown)}")
            missing = _REQUIRED_BAND_KEYS - set(band)
            if missing:
                raise _fail(f"bands[{index}] is missing {sorted(missing)}")
            compressors.append(LinkedCompressor(self.sample_rate, self.channels, **band))
        self.compressors: tuple[LinkedCompressor, ...] = tuple(compressors)
        self.last_gain_reduction_db = np.zeros((3, 0), dtype=np.float32)

    def reset(self) -> None:
        """Forget all history (crossover and the three compressors)."""
        self.crossover.reset()
        for compressor in self.compressors:
            compressor.reset()
        self.last_gain_reduction_db = np.zeros((3, 0), dtype=np.float32)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Compress one block band by band and sum the bands.

        Parameters
        ----------
        block : np.ndarray
            ``(channels, frames)`` audio, float32.

        Returns
        -------
        np.ndarray
            ``(channels, frames) float32``.

        Raises
        ------
        ParameterError
            If the block's shape does not match ``channels``.
        """
        bands = self.crossover.split(block)
        out = self.compressors[0].process(bands[0])
        gain_reduction_db = np.empty((3, out.shape[1]), dtype=np.float32)
        gain_reduction_db[0] = self.compressors[0].last_gain_reduction_db
        for index in (1, 2):
            out += self.compressors[index].process(bands[index])
            gain_reduction_db[index] = self.compressors[index].last_gain_reduction_db
        self.last_gain_reduction_db = gain_reduction_db
        return out


def soft_clip(
    block: np.ndarray, *, threshold_db: float = -1.0, ceiling_db: float = 0.0
) -> np.ndarray:
    """Memoryless, odd-symmetric soft clipper.

    ``|x| <= t`` passes unchanged; above, ``|y| = t + (c - t) * tanh((|x| - t) / (c - t))``
    with ``t``, ``c`` the linear threshold and ceiling.  The slope is 1 on both
    sides of ``t`` (continuous first derivative) and ``|y|`` approaches but
    never exceeds ``c``.

    Parameters
    ----------
    block : np.ndarray
        ``(channels, frames)`` audio (any shape is accepted), float32.
    threshold_db : float
        Start of the saturation in dBFS, below ``ceiling_db``.
    ceiling_db : float
        Highest output magnitude in dBFS, at most +24.

    Returns
    -------
    np.ndarray
        Clipped audio, float32, same shape; NaN stays NaN.

    Raises
    ------
    ParameterError
        If ``threshold_db >= ceiling_db`` or a value is not finite.
    """
    threshold_db = _check_finite("threshold_db", threshold_db)
    ceiling_db = _check_finite("ceiling_db", ceiling_db)
    if ceiling_db > 24.0:
        raise _fail(f"ceiling_db must be <= 24 dB, got {ceiling_db}")
    if not threshold_db < ceiling_db:
        raise _fail(f"threshold_db must be below ceiling_db, got {threshold_db} >= {ceiling_db}")
    x = np.asarray(block, dtype=np.float32)
    threshold = 10.0 ** (threshold_db / 20.0)
    ceiling = 10.0 ** (ceiling_db / 20.0)
    # Largest float32 not above the ceiling, so rounding to float32 cannot overshoot it.
    ceiling_f32 = np.float32(ceiling)
    if float(ceiling_f32) > ceiling:
        ceiling_f32 = np.nextafter(ceiling_f32, np.float32(0.0))
    magnitude = np.abs(x).astype(np.float64)
    span = ceiling - threshold
    # np.maximum keeps the tanh argument >= 0 where the identity branch is used anyway.
    saturated = threshold + span * np.tanh(np.maximum(magnitude - threshold, 0.0) / span)
    shaped = np.minimum(saturated.astype(np.float32), ceiling_f32)
    return np.where(magnitude <= threshold, x, np.copysign(shaped, x)).astype(np.float32)


# --------------------------------------------------------------------------- oversampled clipper

#: Input frames either side of an interpolated point that the clipper's filters reach.
CLIP_HALF_TAPS: Final = 12
#: Oversampling factor of the clipper.
CLIP_OVERSAMPLE: Final = 4
#: Corner of the DC blocker on the clipper's correction signal.
CLIP_DC_BLOCK_HZ: Final = 5.0


def _clip_prototype(half_taps: int, factor: int) -> np.ndarray:
    """Low-pass prototype at ``factor`` x the rate: cut at 0.45 of the input rate,
    Kaiser window (about 90 dB stop band), DC gain 1 (decimation); x factor interpolates."""
    n = 2 * half_taps * factor + 1
    cutoff = 0.45 / factor  # cycles per sample at the high rate
    t = np.arange(n) - (n - 1) / 2.0
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * np.kaiser(n, 9.0)
    return np.asarray(h / h.sum(), dtype=np.float64)


@njit(cache=True, fastmath=False, nogil=True)
def _clipper_kernel(xx, racc, proto, factor, half, threshold, span, ceiling, start, stop):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Adds the oversampled soft clipper's correction into ``racc`` for frames
    ``start .. stop-1`` of ``xx`` (channels, m) (each needs ``half`` frames of context).

    For every interpolated point between frame ``i`` and ``i + 1`` whose magnitude is
    over ``threshold``, the difference between the saturated and the plain value is
    filtered back to the input rate (scattered through the same low-pass) into the
    frames it reaches. Frames with no sample near the threshold are skipped, so the
    cost follows how often the signal is near the ceiling.
    """
    channels = xx.shape[0]
    guard = threshold * 0.6
    taps = proto.shape[0]
    centre = taps // 2
    for c in range(channels):
        for i in range(start, stop):
            if abs(xx[c, i]) < guard and abs(xx[c, i + 1]) < guard:
                continue
            for k in range(factor):
                # interpolated value at i + k / factor
                u = 0.0
                for j in range(i - half + 1, i + half + 1):
                    t = (i - j) * factor + k + centre
                    if 0 <= t < taps:
                        u += xx[c, j] * proto[t] * factor
                a = abs(u)
                if a <= threshold:
                    continue
                v = threshold + span * math.tanh((a - threshold) / span)
                if v > ceiling:
                    v = ceiling
                r = (v - a) if u > 0 else (a - v)
                q = i * factor + k
                for j in range(i - half + 1, i + half + 1):
                    t = j * factor - q + centre
                    if 0 <= t < taps:
                        racc[c, j] += r * proto[t]


@njit(cache=True, fastmath=False, nogil=True)
def _dc_block_kernel(r, out, x, state, coefficient):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out = x + DC-blocked r (one-pole high-pass per channel); state = (channels, 2)."""
    channels, n = r.shape
    for c in range(channels):
        prev_in = state[c, 0]
        prev_out = state[c, 1]
        for i in range(n):
            v = r[c, i]
            y = v - prev_in + coefficient * prev_out
            if v == 0.0 and prev_in == 0.0 and abs(y) < 1e-10:
                y = 0.0  # the tail has died away: exactly zero, so idle blocks can be skipped
            prev_in = v
            prev_out = y
            out[c, i] = np.float32(np.float64(x[c, i]) + y)
        state[c, 0] = prev_in
        state[c, 1] = prev_out


class OversampledClipper:
    """Soft clipper applied to the signal oversampled ``CLIP_OVERSAMPLE`` times.

    The fast first stage of the peak control: it rounds off single transients (a
    snare's first millisecond) that a limiter could only catch by ducking the whole
    mix.  Only the *correction* (saturated minus plain, non-zero near peaks) is
    computed at the high rate, band-limited back to the input rate (harmonics above
    0.45 fs are filtered out instead of folding back as aliases) and DC-blocked at
    ``CLIP_DC_BLOCK_HZ`` (clipping an asymmetric wave would otherwise add a DC step),
    then added to the input.  Saturation curve as :func:`soft_clip`.

    Latency :attr:`latency_frames`; :meth:`flush` returns the held-back frames.
    One thread at a time.
    """

    def __init__(self, sample_rate: int, channels: int, *, threshold_db: float, ceiling_db: float) -> None:
        self.sample_rate = _check_sample_rate(sample_rate)
        self.channels = _check_channels(channels)
        threshold_db = _check_finite("threshold_db", threshold_db)
        ceiling_db = _check_finite("ceiling_db", ceiling_db)
        if not threshold_db < ceiling_db <= 24.0:
            raise _fail(f"clipper threshold {threshold_db} dB must be below its ceiling {ceiling_db} dB (<= 24)")
        self.threshold = 10.0 ** (threshold_db / 20.0)
        self.ceiling = 10.0 ** (ceiling_db / 20.0)
        self.span = self.ceiling - self.threshold
        self.half = CLIP_HALF_TAPS
        self.factor = CLIP_OVERSAMPLE
        self.proto = _clip_prototype(self.half, self.factor)
        #: history frames kept = latency
        self.latency_frames = 2 * self.half
        self._dc = float(np.exp(-2.0 * np.pi * CLIP_DC_BLOCK_HZ / self.sample_rate))
        self.reset()

    def reset(self) -> None:
        p = self.latency_frames
        self._hist = np.zeros((self.channels, p), dtype=np.float32)
        self._racc = np.zeros((self.channels, p), dtype=np.float64)
        self._dc_state = np.zeros((self.channels, 2), dtype=np.float64)

    def process(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) float32 in -> (channels, n) float32 out, delayed by :attr:`latency_frames`."""
        x = _check_block(block, self.channels)
        n = x.shape[1]
        if n == 0:
            return np.zeros((self.channels, 0), dtype=np.float32)
        p, h = self.latency_frames, self.half
        xx = np.concatenate([self._hist, x], axis=1)
        racc = np.zeros((self.channels, p + n), dtype=np.float64)
        racc[:, :p] = self._racc
        # frames h .. n+h-1 have their look-ahead now; the correction of frame j is
        # complete once every frame up to j + h is done: frames 0 .. n-1 of xx.
        _clipper_kernel(xx, racc, self.proto, self.factor, h, self.threshold, self.span, self.ceiling, h, n + h)
        if not racc[:, :n].any() and not self._dc_state.any():
            out = np.ascontiguousarray(xx[:, :n])  # nothing clipped, nothing decaying: the input as it was
        else:
            out = np.empty((self.channels, n), dtype=np.float32)
            _dc_block_kernel(racc[:, :n], out, xx[:, :n], self._dc_state, self._dc)

        self._hist = np.ascontiguousarray(xx[:, n:])
        self._racc = np.ascontiguousarray(racc[:, n:])
        return out

    def flush(self) -> np.ndarray:
        """The last :attr:`latency_frames` frames (feeds silence through)."""
        return self.process(np.zeros((self.channels, self.latency_frames), dtype=np.float32))
