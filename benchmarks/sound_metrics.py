"""What `benchmarks/sound.py` measures on a master, as plain functions of sample arrays.

Every function takes audio as float64 arrays shaped ``(frames, channels)`` (mono is
treated as two identical channels where stereo is needed) and a sample rate, and is
checked on synthetic signals by ``tests/test_sound_metrics.py``.

Definitions
-----------
* **Integrated loudness, true peak, LRA**: libebur128 through pyebur128
  (BS.1770-4 gating, 4x oversampled true peak, EBU Tech 3342 loudness range).
* **Section contrast** (LU): the programme is cut into consecutive 10 s sections from
  t = 0 (a last section shorter than 5 s is dropped). Each section's loudness is its
  BS.1770 gated loudness: K-weighted mean square over the 400 ms blocks (75 % overlap)
  of that section above the -70 LUFS absolute gate and above the section's own -10 LU
  relative gate. Sections quieter than the whole programme's integrated loudness
  minus 20 LU (silence, fade tails: the relative gate of EBU Tech 3342's LRA) are left
  out. Contrast = loudest section - quietest section. An intro at -22 LUFS before a
  chorus at -12 LUFS reads 10 LU; a master that lifts the intro by 4 dB reads 6 LU.
* **Short-term loudness** (for plots): K-weighted mean square over 3 s, every 100 ms.
* **Beat-rate gain modulation** (dB rms): how much the master's gain moves at rhythmic
  rates against the source it was made from, tone changes excluded:

  1. both signals are summed to mono power per frame later, so first the source is
     resampled to the output's rate if they differ, and the output is aligned to the
     source (integer lag from the cross-correlation of the first 20 s, +-0.5 s);
  2. **EQ match**: the source's long-term spectrum is matched to the output's by a
     linear-phase FIR (8191 taps; magnitude = sqrt of the ratio of their Welch power
     spectra, smoothed over 1/3 octave on a log-frequency axis, limited to +-30 dB),
     applied to every source channel with zero delay: a static EQ and a static gain
     change now cancel exactly;
  3. frame levels: power summed over channels, 20 ms rectangular frames every 10 ms,
     in dB, for the output and the EQ-matched source; d(t) = output - source;
  4. d(t) is band-passed 0.5-10 Hz (2nd-order Butterworth per edge, zero phase);
  5. the result is the rms of the band-passed d(t) over the *non-silent* frames: those
     where the EQ-matched source is above -70 dBFS and within 40 dB of its 95th-
     percentile frame level, excluding the first and last second (filter edges).
     Silent frames are filled with the median of d before filtering so that the
     noise floor's random level ratio does not leak into the band.

  Theory: a sinusoidal gain modulation of peak-to-peak depth D dB at a rate inside the
  band reads D / (2 sqrt 2) (3 dB peak-to-peak at 2.66 Hz -> 1.06 dB); any static gain
  or EQ reads ~0. A limiter that dips 3 dB on every kick reads roughly 0.8-1.2 dB.
* **Low-end correlation**: Pearson correlation (zero-mean cosine) of L and R after a
  4th-order Butterworth low-pass at 120 Hz (zero phase), over the whole file. 1 = mono
  bass, 0 = unrelated channels.
* **Mid / side spectrum and the distance to a reference**: mid = (L+R)/2,
  side = (L-R)/2; Welch power spectra (Hann, 2^15-sample segments at 44.1/48 kHz,
  scaled with the rate), summed into the IEC 1/3-octave bands 40 Hz - 16 kHz (27
  bands, edges at fc * 2^(+-1/6)), in dB (floor -150 dB). Both the mid and the side
  spectrum of a track are normalised by the same anchor: the mean of that track's
  *mid* band levels over 100 Hz - 8 kHz, so the side curve shows the width per band
  (as `amc master --plot` draws it); normalised levels are floored at -60 dB, so a band
  made exactly mono (side -inf) counts as 60 dB under the mid, not as -150 dB, and one
  inaudible band cannot swamp the rest. Distance (dB) = rms over the 27 bands of
  (track - reference), separately for mid and for side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

__all__ = [
    "THIRD_OCTAVE_CENTERS",
    "Loudness",
    "band_spectra",
    "beat_rate_modulation",
    "k_weight",
    "loudness",
    "low_end_correlation",
    "section_contrast",
    "section_loudness",
    "short_term_loudness",
    "spectrum_distance",
]

# IEC 61260 nominal 1/3-octave centres, 40 Hz - 16 kHz (exact: 1000 * 2^(k/3))
THIRD_OCTAVE_CENTERS = 1000.0 * 2.0 ** (np.arange(-14, 13) / 3.0)
SECTION_S = 10.0
MIN_SECTION_S = 5.0
ABS_GATE_LUFS = -70.0
SECTION_RELATIVE_GATE_LU = -20.0
BAND_FLOOR_DB = -60.0  # normalised band levels are floored here (see band_spectra)


def _stereo(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    return x


# --- loudness ------------------------------------------------------------------------------


@dataclass
class Loudness:
    integrated_lufs: float
    true_peak_dbtp: float
    lra_lu: float


def loudness(x: np.ndarray, sr: int) -> Loudness:
    """Integrated loudness, true peak and LRA by libebur128 (pyebur128)."""
    import pyebur128

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    mode = (
        pyebur128.MeasurementMode.MODE_I
        | pyebur128.MeasurementMode.MODE_LRA
        | pyebur128.MeasurementMode.MODE_TRUE_PEAK
    )
    meter = pyebur128.R128State(x.shape[1], int(sr), mode)
    block = 1 << 20
    for start in range(0, len(x), block):
        chunk = np.ascontiguousarray(x[start : start + block])
        meter.add_frames(chunk.ravel(), len(chunk))
    peak = max(pyebur128.get_true_peak(meter, ch) for ch in range(x.shape[1]))
    return Loudness(
        float(pyebur128.get_loudness_global(meter)),
        float(20 * np.log10(max(peak, 1e-12))),
        float(pyebur128.get_loudness_range(meter)),
    )


def k_weight(x: np.ndarray, sr: int) -> np.ndarray:
    """BS.1770 K-weighting (shelf + RLB high-pass) at any rate, as libebur128 designs it."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sr)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    b1 = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]
    a1 = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sr)
    a0 = 1 + k / q + k * k
    b2 = [1.0, -2.0, 1.0]
    a2 = [1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    sos = np.array([[*b1, *a1], [*b2, *a2]])
    return signal.sosfilt(sos, np.asarray(x, dtype=np.float64), axis=0)


def _block_powers(kw: np.ndarray, sr: int, window_s: float, hop_s: float) -> np.ndarray:
    """Channel-summed K-weighted mean square of windows of ``window_s`` every ``hop_s``."""
    power = (kw**2).sum(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    win, hop = round(window_s * sr), round(hop_s * sr)
    if len(power) < win:
        return np.zeros(0)
    starts = np.arange(0, len(power) - win + 1, hop)
    return (csum[starts + win] - csum[starts]) / win


def _lufs(power: np.ndarray | float) -> np.ndarray | float:
    return -0.691 + 10 * np.log10(np.maximum(power, 1e-30))


def _gated(blocks: np.ndarray) -> float:
    """BS.1770 gated loudness of 400 ms block powers (absolute -70, relative -10 LU)."""
    blocks = blocks[_lufs(blocks) > ABS_GATE_LUFS]
    if blocks.size == 0:
        return float("-inf")
    rel = _lufs(blocks.mean()) - 10.0
    blocks = blocks[_lufs(blocks) > rel]
    return float(_lufs(blocks.mean())) if blocks.size else float("-inf")


def short_term_loudness(
    x: np.ndarray, sr: int, hop_s: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(times at window ends in s, short-term loudness in LUFS over 3 s windows)."""
    x = np.asarray(x, dtype=np.float64)
    p = _block_powers(k_weight(x[:, None] if x.ndim == 1 else x, sr), sr, 3.0, hop_s)
    t = 3.0 + hop_s * np.arange(len(p))
    return t, np.asarray(_lufs(p))


def section_loudness(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(section start times s, gated loudness per 10 s section LUFS, integrated LUFS)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    kw = k_weight(x, sr)
    blocks_all = _block_powers(kw, sr, 0.4, 0.1)
    integrated = _gated(blocks_all)
    sec = round(SECTION_S * sr)
    starts, levels = [], []
    for s in range(0, len(kw), sec):
        part = kw[s : s + sec]
        if len(part) < MIN_SECTION_S * sr:
            break
        starts.append(s / sr)
        levels.append(_gated(_block_powers(part, sr, 0.4, 0.1)))
    return np.asarray(starts), np.asarray(levels), integrated


def section_contrast(x: np.ndarray, sr: int) -> float:
    """Loudest minus quietest 10 s section (LU); see the module docstring. NaN if < 2 sections."""
    _, levels, integrated = section_loudness(x, sr)
    keep = levels[np.isfinite(levels) & (levels >= integrated + SECTION_RELATIVE_GATE_LU)]
    if keep.size < 2:
        return float("nan")
    return float(keep.max() - keep.min())


# --- beat-rate gain modulation ---------------------------------------------------------------


def _align(source: np.ndarray, output: np.ndarray, sr: int, max_lag_s: float = 0.5) -> np.ndarray:
    """``output`` shifted so that it lines up with ``source`` (same length as ``source``)."""
    n = min(len(source), len(output), round(20 * sr))
    a, b = source[:n].mean(axis=1), output[:n].mean(axis=1)
    corr = signal.fftconvolve(b, a[::-1], mode="full")  # index n-1 = lag 0
    lags = np.arange(-(n - 1), n)
    max_lag = round(max_lag_s * sr)
    sel = np.abs(lags) <= max_lag
    lag = int(lags[sel][np.argmax(corr[sel])]) if np.any(a) and np.any(b) else 0
    # output[t + lag] ~ source[t]
    shifted = np.zeros_like(source)
    src_idx = np.arange(len(source))
    out_idx = src_idx + lag
    ok = (out_idx >= 0) & (out_idx < len(output))
    shifted[src_idx[ok]] = output[out_idx[ok]]
    return shifted


def _match_filter(source: np.ndarray, output: np.ndarray, sr: int, taps: int = 8191) -> np.ndarray:
    """Linear-phase FIR taking the source's long-term spectrum to the output's (1/3-oct smooth)."""
    nper = 8192
    f, ps = signal.welch(source.mean(axis=1), sr, nperseg=nper)
    _, po = signal.welch(output.mean(axis=1), sr, nperseg=nper)
    ratio_db = 10 * np.log10(np.maximum(po, 1e-30) / np.maximum(ps, 1e-30))
    # smooth over 1/3 octave on a log-frequency axis
    logf = np.log2(np.maximum(f, f[1]))
    grid = np.linspace(logf[1], logf[-1], 2048)
    on_grid = np.interp(grid, logf[1:], ratio_db[1:])
    step = grid[1] - grid[0]
    sigma = (1.0 / 3.0) / 2.355 / step  # FWHM 1/3 octave
    smooth = ndimage.gaussian_filter1d(on_grid, sigma, mode="nearest")
    gain_db = np.clip(np.interp(logf, grid, smooth), -30.0, 30.0)
    gain_db[0] = gain_db[1]
    return signal.firwin2(taps, f / (sr / 2), 10 ** (gain_db / 20), window="hann")


def _frame_db(x: np.ndarray, sr: int, frame_s: float = 0.02, hop_s: float = 0.01) -> np.ndarray:
    power = (x**2).sum(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(power)])
    win, hop = round(frame_s * sr), round(hop_s * sr)
    starts = np.arange(0, len(power) - win + 1, hop)
    return 10 * np.log10(np.maximum((csum[starts + win] - csum[starts]) / win, 1e-20))


def _resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    if sr_from == sr_to:
        return x
    g = math.gcd(int(sr_from), int(sr_to))
    return signal.resample_poly(x, sr_to // g, sr_from // g, axis=0)


def beat_rate_modulation(
    source: np.ndarray, source_sr: int, output: np.ndarray, output_sr: int, *, detail: bool = False
) -> float | tuple[float, np.ndarray, np.ndarray]:
    """dB rms, 0.5-10 Hz, of output level minus EQ-matched source level (module docstring).

    With ``detail`` also returns (frame times s, band-passed difference dB) for plots.
    """
    src = _stereo(source)
    out = _stereo(output)
    src = _resample(src, source_sr, output_sr)
    sr = output_sr
    out = _align(src, out, sr)
    fir = _match_filter(src, out, sr)
    matched = signal.fftconvolve(src, fir[:, None], mode="same", axes=0)
    ls, lo = _frame_db(matched, sr), _frame_db(out, sr)
    ref_level = np.percentile(ls, 95)
    loud = (ls > -70.0) & (ls > ref_level - 40.0)
    edge = 100  # frames = 1 s at a 10 ms hop
    valid = loud.copy()
    valid[:edge] = False
    valid[-edge:] = False
    if valid.sum() < 200:
        return (float("nan"), np.zeros(0), np.zeros(0)) if detail else float("nan")
    d = lo - ls
    d = np.where(loud, d, np.median(d[loud]))
    sos = signal.butter(2, [0.5, 10.0], btype="bandpass", fs=100.0, output="sos")
    band = signal.sosfiltfilt(sos, d, padtype="odd", padlen=min(len(d) - 1, 600))
    value = float(np.sqrt(np.mean(band[valid] ** 2)))
    if detail:
        return value, 0.01 * np.arange(len(band)) + 0.01, np.where(valid, band, np.nan)
    return value


# --- stereo low end, spectra ---------------------------------------------------------------


def low_end_correlation(x: np.ndarray, sr: int, cutoff_hz: float = 120.0) -> float:
    """Correlation of L and R below ``cutoff_hz`` (1 = mono bass); NaN for silence or mono input."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1 or x.shape[1] < 2:
        return 1.0
    sos = signal.butter(4, cutoff_hz, btype="lowpass", fs=sr, output="sos")
    low = signal.sosfiltfilt(sos, x[:, :2], axis=0)
    low -= low.mean(axis=0)
    den = math.sqrt(float((low[:, 0] ** 2).sum() * (low[:, 1] ** 2).sum()))
    return float((low[:, 0] * low[:, 1]).sum() / den) if den > 0 else float("nan")


def band_spectra(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """(mid dB, side dB) per 1/3-octave band (THIRD_OCTAVE_CENTERS), normalised by the mid's
    mean over 100 Hz - 8 kHz (one anchor for both, so side shows width per band)."""
    x = _stereo(x)
    mid = 0.5 * (x[:, 0] + x[:, 1])
    side = 0.5 * (x[:, 0] - x[:, 1])
    nper = 1 << round(math.log2(32768 * sr / 44100))
    nper = min(nper, max(256, len(mid)))
    f, pm = signal.welch(mid, sr, nperseg=nper)
    _, pside = signal.welch(side, sr, nperseg=nper)
    df = f[1] - f[0]
    lo = THIRD_OCTAVE_CENTERS * 2 ** (-1 / 6)
    hi = THIRD_OCTAVE_CENTERS * 2 ** (1 / 6)

    def bands(p: np.ndarray) -> np.ndarray:
        out = np.empty(len(THIRD_OCTAVE_CENTERS))
        for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
            sel = (f >= a) & (f < b)
            out[i] = p[sel].sum() * df if sel.any() else np.interp(0.5 * (a + b), f, p) * (b - a)
        return 10 * np.log10(np.maximum(out, 1e-15))

    m, s = bands(pm), bands(pside)
    anchor = m[(THIRD_OCTAVE_CENTERS >= 100) & (THIRD_OCTAVE_CENTERS <= 8000)].mean()
    return np.maximum(m - anchor, BAND_FLOOR_DB), np.maximum(s - anchor, BAND_FLOOR_DB)


def spectrum_distance(
    spectra: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float]:
    """(mid, side) rms over the bands of track - reference, dB (both from :func:`band_spectra`)."""
    mid = float(np.sqrt(np.mean((spectra[0] - reference[0]) ** 2)))
    side = float(np.sqrt(np.mean((spectra[1] - reference[1]) ** 2)))
    return mid, side
