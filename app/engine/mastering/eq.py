"""Tonal EQ: style target curves, reference matching, and the linear-phase mid/side filter.

Every linear part of the chain is folded into one linear-phase FIR per mid and side
channel: DC/sub-sonic high-pass, the EQ curve, the mono-bass high-pass on the side
channel and the stereo width gain.  One FFT convolution does them all, with no phase
shift between the bands and no added noise.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from app.engine.errors import ParameterError

#: ISO 266 preferred 1/3-octave centre frequencies, 20 Hz to 20 kHz.
THIRD_OCTAVE_CENTERS_HZ: tuple[float, ...] = (
    20, 25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630, 800,
    1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
)  # fmt: skip

#: Band range whose mean level anchors a spectrum (the "loudness" of the tonal balance).
ANCHOR_BAND_HZ = (100.0, 8000.0)


def band_centers_hz(sample_rate: int) -> np.ndarray:
    """1/3-octave centres that fit below 0.45 x ``sample_rate``."""
    c = np.asarray(THIRD_OCTAVE_CENTERS_HZ, dtype=np.float64)
    return c[c < 0.45 * sample_rate]


def smooth_to_bands_db(freqs_hz: np.ndarray, power: np.ndarray, centers_hz: np.ndarray) -> np.ndarray:
    """Average a power spectrum over 1/3-octave bands around ``centers_hz``; returns dB.

    Bands with no FFT bin inside take the nearest bin (low bands at coarse resolution).
    """
    out = np.empty(len(centers_hz), dtype=np.float64)
    half = 2.0 ** (1.0 / 6.0)
    for i, fc in enumerate(centers_hz):
        sel = (freqs_hz >= fc / half) & (freqs_hz < fc * half)
        p = power[sel].mean() if np.any(sel) else power[np.argmin(np.abs(freqs_hz - fc))]
        out[i] = 10.0 * np.log10(max(float(p), 1e-30))
    return out


def _anchor(centers_hz: np.ndarray, level_db: np.ndarray) -> float:
    sel = (centers_hz >= ANCHOR_BAND_HZ[0]) & (centers_hz <= ANCHOR_BAND_HZ[1])
    return float(level_db[sel].mean())


def style_target_db(centers_hz: np.ndarray, style: str) -> np.ndarray:
    """Target long-term 1/3-octave band levels (dB, arbitrary reference) for a style.

    The base shape is the broad average of modern commercial masters: full lows
    40-120 Hz, a gentle decline of about 2 dB/octave through the mids, about 4.5
    dB/octave from 1 kHz to 10 kHz and a steeper roll-off of the air band.  Styles
    add broad shelves and bells on top.
    """
    f = np.asarray(centers_hz, dtype=np.float64)
    lf = np.log2(f / 1000.0)
    base = np.select(
        [f < 40.0, f < 120.0, f < 1000.0],
        [6.0 + 12.0 * np.log2(np.maximum(f, 1.0) / 40.0), np.full_like(f, 6.0), 6.0 * (-lf) / np.log2(1000.0 / 120.0)],
        default=-4.5 * lf,
    )
    base = base - np.where(f > 10000.0, 4.0 * np.log2(f / 10000.0), 0.0)

    def shelf(fc: float, gain_db: float, *, high: bool) -> np.ndarray:
        x = np.log2(f / fc) * 2.0
        s = 1.0 / (1.0 + np.exp(-x if high else x))
        return gain_db * s

    def bell(fc: float, gain_db: float, octaves: float) -> np.ndarray:
        return gain_db * np.exp(-0.5 * (np.log2(f / fc) / (octaves / 2.355)) ** 2)

    offsets = {
        "balanced": np.zeros_like(f),
        "professional": np.zeros_like(f),
        "warm": shelf(200.0, 1.5, high=False) + shelf(6000.0, -1.5, high=True),
        "bright": shelf(5000.0, 2.0, high=True) + shelf(120.0, -0.5, high=False),
        "punchy": bell(70.0, 1.5, 1.0) + bell(300.0, -1.0, 1.0) + bell(3000.0, 1.0, 1.5),
        "creative": shelf(100.0, 2.0, high=False) + shelf(10000.0, 2.0, high=True) + bell(800.0, -1.0, 2.0),
    }
    if style not in offsets:
        raise ParameterError(f"unknown style {style!r}; choose one of {', '.join(offsets)}")
    return base + offsets[style]


def _smooth_neighbours(x: np.ndarray) -> np.ndarray:
    """1-2-1 smoothing across neighbouring bands (ends reflect), keeps moves broad."""
    if len(x) < 3:
        return x.copy()
    p = np.concatenate([x[:1], x, x[-1:]])
    return 0.25 * p[:-2] + 0.5 * p[1:-1] + 0.25 * p[2:]


def _smooth_light(x: np.ndarray) -> np.ndarray:
    """1-6-1 smoothing across neighbouring bands: takes the edge off band-to-band jitter
    while keeping a 1/3-octave match close (reference matching)."""
    if len(x) < 3:
        return x.copy()
    p = np.concatenate([x[:1], x, x[-1:]])
    return 0.125 * p[:-2] + 0.75 * p[1:-1] + 0.125 * p[2:]


def _limit_moves(
    centers_hz: np.ndarray, moves_db: np.ndarray, in_db: np.ndarray, *, max_move_db: float,
    max_cut_db: float | None = None,
) -> np.ndarray:  # fmt: skip
    """Cap moves at ±max_move_db (cuts at ``max_cut_db`` when given); never boost bands the
    input barely has (noise, not music)."""
    moves = np.clip(moves_db, -(max_move_db if max_cut_db is None else max_cut_db), max_move_db)
    rel = in_db - _anchor(centers_hz, in_db)
    # Boosting a band that sits 35 dB under the mids only raises hiss or rumble.
    quiet = rel < -35.0
    moves = np.where(quiet & (moves > 0), 0.0, moves)
    # Extremes get at most half the boost: small speakers and codecs punish them.
    extreme = (centers_hz < 40.0) | (centers_hz > 16000.0)
    moves = np.where(extreme & (moves > 0), moves * 0.5, moves)
    return moves


def style_moves_db(
    centers_hz: np.ndarray,
    mid_db: np.ndarray,
    *,
    style: str,
    amount: float,
    max_move_db: float,
) -> np.ndarray:
    """EQ moves (dB per band) that bring the input's mid spectrum ``amount`` of the way to the style target."""
    target = style_target_db(centers_hz, style)
    diff = (target - _anchor(centers_hz, target)) - (mid_db - _anchor(centers_hz, mid_db))
    moves = _smooth_neighbours(diff) * float(amount)
    return _limit_moves(centers_hz, moves, mid_db, max_move_db=max_move_db)


def spectral_tilt_db_per_oct(centers_hz: np.ndarray, level_db: np.ndarray) -> float:
    """Least-squares slope (dB per octave) of a 1/3-octave spectrum over 100 Hz-10 kHz."""
    f = np.asarray(centers_hz, dtype=np.float64)
    sel = (f >= 100.0) & (f <= 10000.0) & np.isfinite(level_db) & (np.asarray(level_db) > -250.0)
    if np.count_nonzero(sel) < 3:
        return 0.0
    slope, _ = np.polyfit(np.log2(f[sel] / 1000.0), np.asarray(level_db, dtype=np.float64)[sel], 1)
    return float(slope)


def _trend_db(centers_hz: np.ndarray, level_db: np.ndarray, *, octaves: float = 1.0) -> np.ndarray:
    """The spectrum smoothed with a Gaussian of ``octaves`` standard deviation in log-frequency."""
    x = np.log2(np.asarray(centers_hz, dtype=np.float64))
    w = np.exp(-0.5 * ((x[:, None] - x[None, :]) / octaves) ** 2)
    return (w @ level_db) / w.sum(axis=1)


def style_offsets_db(centers_hz: np.ndarray, style: str) -> np.ndarray:
    """The style's own broad shelves and bells (dB), without the base curve."""
    f = np.asarray(centers_hz, dtype=np.float64)
    return style_target_db(f, style) - style_target_db(f, "balanced")


def tone_moves_db(
    centers_hz: np.ndarray,
    mid_db: np.ndarray,
    *,
    style: str,
    family: str,
    target_tilt_db_per_oct: float,
    amount: float,
    max_move_db: float,
) -> tuple[np.ndarray, list[str]]:
    """EQ moves measured against the mix's own balance, and the reasons in words.

    Three parts, each scaled by ``amount``: (1) a tilt around 1 kHz that brings the
    mix's long-term slope (100 Hz-10 kHz) toward the family's target, at most ±1 dB per
    octave; (2) half of the narrow bumps and dips against the mix's own smoothed trend
    (resonances, at most ±2 dB); (3) the style's shelves and bells.  No boost goes into
    sub-bass the mix does not have, and below 60 Hz only electronic and hip-hop get any.
    """
    f = np.asarray(centers_hz, dtype=np.float64)
    level = np.asarray(mid_db, dtype=np.float64)
    rel = level - _anchor(f, level)
    tilt_mix = spectral_tilt_db_per_oct(f, level)
    tilt_change = float(np.clip(target_tilt_db_per_oct - tilt_mix, -1.0, 1.0))
    octs = np.clip(np.log2(f / 1000.0), np.log2(100.0 / 1000.0), np.log2(10000.0 / 1000.0))
    tilt = tilt_change * octs
    trend = _trend_db(f, rel)
    corrective = np.clip(-0.5 * (rel - trend), -2.0, 2.0)
    corrective = np.where((f >= 60.0) & (f <= 12000.0), corrective, 0.0)
    moves = (tilt + _smooth_neighbours(corrective) + style_offsets_db(f, style)) * float(amount)
    notes = [
        f"the mix's tilt {tilt_mix:+.1f} dB/oct, {family} target {target_tilt_db_per_oct:+.1f}: "
        f"{tilt_change * amount:+.1f} dB/oct around 1 kHz"
    ]
    bumps = np.abs(corrective) >= 1.0
    if np.any(bumps):
        notes.append("resonances evened out at " + ", ".join(f"{fc:g} Hz" for fc in f[bumps][:4]))
    sub = f < 60.0
    lacks_sub = float(np.mean(rel[(f >= 30.0) & (f < 60.0)])) < -10.0 if np.any((f >= 30) & (f < 60)) else True
    if family not in ("electronic", "hip-hop") or lacks_sub:
        if np.any(sub & (moves > 0)):
            notes.append("no boost below 60 Hz" + (" (the mix has little sub-bass)" if lacks_sub else ""))
        moves = np.where(sub & (moves > 0), 0.0, moves)
    if family in ("acoustic-orchestral", "speech"):
        moves = np.where((f < 120.0) & (moves > 0), moves * 0.5, moves)
    if style != "balanced":
        notes.append(f"{style} style shelves on top")
    return _limit_moves(f, moves, level, max_move_db=max_move_db), notes


def reference_moves_db(
    centers_hz: np.ndarray,
    in_mid_db: np.ndarray,
    in_side_db: np.ndarray,
    ref_mid_db: np.ndarray,
    ref_side_db: np.ndarray,
    *,
    amount: float,
    max_move_db: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mid and side moves toward a reference (already averaged over references, 1/3-octave).

    Mid is matched in shape (both anchored on their own mid level).  Side is anchored on
    the *mid* level of the same track, so the side/mid ratio per band — the width of
    each band — is what gets matched.  ``amount`` of the way there: the target is
    ``input + amount x (reference - input)`` in those terms.

    The result is judged anchored on its own new mid level, which the moves shift; so
    the moves are refined a few times against the predicted result (bands held back by
    a cap would otherwise pull every other band off its target).  Boosts are capped at
    ``max_move_db``; side cuts (narrowing an image wider than the reference's, always
    safe) may go twice as deep.
    """
    f = np.asarray(centers_hz, dtype=np.float64)
    in_a, ref_a = _anchor(f, in_mid_db), _anchor(f, ref_mid_db)
    a = float(amount)
    want_mid = (in_mid_db - in_a) + a * ((ref_mid_db - ref_a) - (in_mid_db - in_a))
    want_side = (in_side_db - in_a) + a * ((ref_side_db - ref_a) - (in_side_db - in_a))
    side_floor = in_side_db + (in_a - _anchor(f, in_side_db))
    d_mid = want_mid - (in_mid_db - in_a)
    d_side = want_side - (in_side_db - in_a)
    mid = side = np.zeros_like(f)
    for _ in range(4):
        mid = _limit_moves(f, _smooth_light(d_mid), in_mid_db, max_move_db=max_move_db)
        # A near-mono input has no side to shape: boosting it only raises noise and phase junk.
        side = _limit_moves(f, _smooth_light(d_side), side_floor, max_move_db=max_move_db, max_cut_db=2.0 * max_move_db)
        out_a = _anchor(f, in_mid_db + mid)
        d_mid = d_mid + (want_mid - (in_mid_db + mid - out_a))
        d_side = d_side + (want_side - (in_side_db + side - out_a))
    return mid, side


# ------------------------------------------------------------------ FIR design


def fir_length(sample_rate: int) -> int:
    """Odd tap count giving ~6 Hz resolution (about 170 ms), enough for 1/3 octave at 20 Hz."""
    n = round(sample_rate * 0.17)
    return n if n % 2 == 1 else n + 1


def design_linear_phase(
    sample_rate: int,
    centers_hz: np.ndarray,
    gains_db: np.ndarray,
    *,
    highpass_hz: float = 0.0,
    highpass_order: int = 2,
    gain: float = 1.0,
    numtaps: int | None = None,
) -> np.ndarray:
    """Linear-phase FIR (float64 taps) with the EQ curve, a Butterworth-shaped high-pass and a gain.

    The curve is interpolated in log-frequency between band centres and held flat
    outside them.  With ``highpass_hz > 0`` the DC gain is forced to exactly zero.
    """
    numtaps = numtaps or fir_length(sample_rate)
    nyq = sample_rate / 2.0
    grid = np.linspace(0.0, nyq, 4097)
    lg = np.log2(np.maximum(grid, 1.0))
    curve_db = np.interp(lg, np.log2(centers_hz), gains_db) if len(centers_hz) else np.zeros_like(grid)
    mag = gain * 10.0 ** (curve_db / 20.0)
    if highpass_hz > 0:
        with np.errstate(divide="ignore"):
            ratio = np.where(grid > 0, highpass_hz / np.maximum(grid, 1e-9), np.inf)
        mag = mag / np.sqrt(1.0 + ratio ** (2 * highpass_order))
    # Frequency sampling: the desired magnitude on a dense grid, a linear-phase term for
    # a centred impulse, inverse FFT, then a Kaiser window to tame the truncation ripple.
    nfft = 1 << int(np.ceil(np.log2(4 * numtaps)))
    f = np.linspace(0.0, nyq, nfft // 2 + 1)
    desired = np.interp(f, grid, mag) * np.exp(-1j * np.pi * (numtaps - 1) / 2.0 * f / nyq)
    window = np.kaiser(numtaps, 8.0)
    taps = np.fft.irfft(desired, nfft)[:numtaps] * window
    if highpass_hz > 0:
        # Windowing leaks a little DC back in; cancel it with a scaled window (affects only ~DC).
        taps = taps - window * (taps.sum() / window.sum())
    return taps


def frequency_response_db(taps: np.ndarray, sample_rate: int, freqs_hz: np.ndarray) -> np.ndarray:
    """Magnitude response (dB) of FIR ``taps`` at ``freqs_hz`` (direct DTFT)."""
    w = 2.0 * np.pi * np.asarray(freqs_hz, dtype=np.float64) / sample_rate
    h = np.exp(-1j * np.outer(w, np.arange(len(taps)))) @ np.asarray(taps, dtype=np.float64)
    return 20.0 * np.log10(np.maximum(np.abs(h), 1e-12))


#: Transforms per FFT call from which pocketfft's vectorised path pays (see MidSideFIR._segments).
_MIN_TRANSFORMS = 4


class MidSideFIR:
    """Streaming linear-phase filtering of mid and side with separate FIRs.

    Stereo input is converted to mid = (L+R)/2 and side = (L-R)/2, filtered, and
    converted back.  Mono and multichannel (> 2) input get ``mid_taps`` on every
    channel.  Output is delayed by :attr:`latency_frames`; :meth:`process` returns as
    many frames as it is given (overlap-save with carried history).

    Not thread-safe; one instance per render.
    """

    def __init__(self, sample_rate: int, channels: int, *, mid_taps: np.ndarray, side_taps: np.ndarray) -> None:
        if len(mid_taps) != len(side_taps) or len(mid_taps) % 2 == 0:
            raise ParameterError("mid and side FIRs must have the same odd length")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.numtaps = len(mid_taps)
        self.latency_frames = (self.numtaps - 1) // 2
        self._mid = np.asarray(mid_taps, dtype=np.float64)
        self._side = np.asarray(side_taps, dtype=np.float64)
        self._hist = np.zeros((channels, self.numtaps - 1), dtype=np.float32)
        self._spec_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        #: threads per FFT; 1 when the caller already runs this filter on its own thread
        self.fft_workers = 2

    def _spectra(self, nfft: int) -> tuple[np.ndarray, np.ndarray]:
        if nfft not in self._spec_cache:
            self._spec_cache.clear()
            self._spec_cache[nfft] = (
                scipy.fft.rfft(self._mid, nfft).astype(np.complex64),
                scipy.fft.rfft(self._side, nfft).astype(np.complex64),
            )
        return self._spec_cache[nfft]

    def process(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) float -> (channels, n) float32, delayed by ``latency_frames``."""
        n = block.shape[1]
        if n == 0:
            return np.zeros((self.channels, 0), dtype=np.float32)
        x = np.concatenate([self._hist, block.astype(np.float32, copy=False)], axis=1)
        self._hist = x[:, -(self.numtaps - 1):].copy() if self.numtaps > 1 else self._hist
        if self.channels == 2:
            ms = np.empty_like(x)
            np.add(x[0], x[1], out=ms[0])
            np.subtract(x[0], x[1], out=ms[1])
            ms *= 0.5
            y = self._convolve(ms, n, mid_rows=1)
            out = np.empty((2, n), dtype=np.float32)
            np.add(y[0], y[1], out=out[0])
            np.subtract(y[0], y[1], out=out[1])
            return out
        return self._convolve(x, n, mid_rows=self.channels).astype(np.float32)

    def _segments(self, rows: int, n: int) -> int:
        """How many overlap-save segments to cut ``n`` output frames of ``rows`` signals into.

        pocketfft vectorises across transforms (several rows at once) but runs one or two
        long transforms scalar: a stereo 64k-frame block as four transforms of half the
        length costs about a third of two long ones.  So a long block is halved until
        there are at least four transforms, as long as each segment stays at least twice
        the filter's length (shorter, the overlap costs more than the vectorisation
        saves; the live chain's short blocks keep one segment).
        """
        k = 1
        while rows * k < _MIN_TRANSFORMS and -(-n // (2 * k)) >= 2 * self.numtaps:
            k *= 2
        return k

    def _convolve(self, sig: np.ndarray, n: int, *, mid_rows: int) -> np.ndarray:
        """Overlap-save: the ``n`` valid outputs of ``sig`` (rows, n + numtaps - 1) through the
        mid taps (first ``mid_rows`` rows) and the side taps (the rest), float32 or float64."""
        rows, t = sig.shape[0], self.numtaps
        k = self._segments(rows, n)
        seg = -(-n // k)  # outputs per segment (the last may be shorter)
        nfft = scipy.fft.next_fast_len(seg + t - 1, real=True)
        hm, hs = self._spectra(nfft)
        if k == 1:
            spec = scipy.fft.rfft(sig, nfft, axis=1, workers=self.fft_workers)
            spec[:mid_rows] *= hm
            spec[mid_rows:] *= hs
            y = scipy.fft.irfft(spec, nfft, axis=1, workers=self.fft_workers)
            return y[:, t - 1 : t - 1 + n]
        frames = np.zeros((rows, k, nfft), dtype=np.float32)
        for j in range(k):
            part = sig[:, j * seg : min((j + 1) * seg, n) + t - 1]
            frames[:, j, : part.shape[1]] = part
        spec = scipy.fft.rfft(frames, axis=2, overwrite_x=True, workers=self.fft_workers)
        spec[:mid_rows] *= hm
        spec[mid_rows:] *= hs
        y = scipy.fft.irfft(spec, nfft, axis=2, overwrite_x=True, workers=self.fft_workers)
        return y[:, :, t - 1 : t - 1 + seg].reshape(rows, k * seg)[:, :n]

    def reset(self) -> None:
        self._hist[:] = 0.0
