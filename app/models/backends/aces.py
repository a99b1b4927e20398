"""ACES slot (enhancement): de-clip, de-click, denoise, corrective EQ, then mastering.

DSP only: no package this project can install ships learned-enhancement weights that
run without a second deep-learning runtime, so every repair here is classical signal
processing, and the status says so.

* **de-clip** — runs of samples at the clip level are re-synthesised by least-squares
  AR interpolation (LSAR, Janssen et al. 1986 / Godsill & Rayner) from an AR model fitted
  on the unclipped samples around them, then kept on the far side of the clip level
  (consistent reconstruction).
* **de-click** — impulsive outliers are found in the residual of a blockwise AR
  (linear prediction) model with a robust (MAD) threshold and re-synthesised with the
  same LSAR interpolator.
* **denoise** — STFT Wiener gain with a decision-directed a-priori SNR (Ephraim-Malah)
  against a noise profile taken from the quietest frames, floored; skipped when
  the file has no passage quieter than its music (no usable profile).
* **corrective EQ** — DC removal and a 20 Hz high-pass (rumble), 50/60 Hz hum notches
  when a hum line stands out.
* then the engine's mastering chain (:func:`app.engine.mastering.chain.master_file`)
  with the style/level/target from the params (its EQ and dynamics do the rest).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import analysis
from app.engine.errors import ParameterError
from app.models.backends import _common as c
from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext

ProgressFn = Callable[[float, str], None]

AR_ORDER = 24
#: Longest impulsive event (ms) treated as a click; longer ones are left alone.
MAX_CLICK_MS = 4.0
#: Detection threshold on the AR residual, in robust standard deviations.
CLICK_THRESHOLD_SIGMA = 8.0
#: Denoise needs the quietest frames at least this far (dB) below the median frame.
MIN_PROFILE_CONTRAST_DB = 6.0


# =============================================================================== AR tools


def fit_ar(x: np.ndarray, reliable: np.ndarray, order: int) -> np.ndarray | None:
    """Covariance-method AR fit ``a`` (``a[0] = 1``) using only equations whose samples are all reliable.

    ``x``: ``(n,)`` float; ``reliable``: ``(n,)`` bool.  None when too few equations.
    """
    n = x.shape[0]
    if n <= order:
        return None
    # rows t = order..n-1 need x[t-order..t] reliable
    bad = (~reliable).astype(np.int32)
    window_bad = np.convolve(bad, np.ones(order + 1, dtype=np.int32), mode="valid")  # (n-order,)
    rows = np.flatnonzero(window_bad == 0) + order
    if rows.shape[0] < 2 * order:
        return None
    lags = rows[:, None] - np.arange(1, order + 1)[None, :]
    design = x[lags]
    target = x[rows]
    scale = float(np.sqrt(np.mean(target**2))) or 1.0
    ridge = 1e-9 * (design.T @ design).trace() / order + 1e-12 * scale
    coef = np.linalg.solve(design.T @ design + ridge * np.eye(order), design.T @ target)
    return np.concatenate([[1.0], -coef])


def lsar_fill(seg: np.ndarray, unknown: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Least-squares AR interpolation: the unknown samples that minimise the prediction error energy.

    ``seg``: ``(m,)`` window; ``unknown``: ``(m,)`` bool; ``a``: AR polynomial (``a[0] = 1``).
    """
    p = a.shape[0] - 1
    m = seg.shape[0]
    rows = m - p
    mat = np.zeros((rows, m))
    cols = np.arange(rows)[:, None] + (p - np.arange(p + 1))[None, :]
    mat[np.repeat(np.arange(rows), p + 1), cols.ravel()] = np.tile(a, rows)
    known = ~unknown
    rhs = -mat[:, known] @ seg[known]
    a_u = mat[:, unknown]
    # normal equations (small, well-posed with a stable AR model); a tiny ridge guards rank loss
    gram = a_u.T @ a_u
    gram[np.diag_indices_from(gram)] += 1e-10 * (np.trace(gram) / max(1, gram.shape[0]) + 1e-30)
    try:
        sol = np.linalg.solve(gram, a_u.T @ rhs)
    except np.linalg.LinAlgError:
        sol, *_ = np.linalg.lstsq(a_u, rhs, rcond=None)
    out = seg.copy()
    out[unknown] = sol
    return out


def _runs(mask: np.ndarray) -> np.ndarray:
    """``(k, 2)`` start/end (exclusive) of the True runs of a bool vector."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1)], axis=1)


def _spline_fill(seg: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Fallback: cubic spline through the known samples of the window (linear with too few)."""
    from scipy.interpolate import CubicSpline

    idx = np.arange(seg.shape[0])
    known = ~unknown
    out = seg.copy()
    if known.sum() >= 4:
        out[unknown] = CubicSpline(idx[known], seg[known])(idx[unknown])
    elif known.any():
        out[unknown] = np.interp(idx[unknown], idx[known], seg[known])
    return out


def _fit_block(
    y: np.ndarray, reliable: np.ndarray, block: int, *, fit_context: int, order: int
) -> np.ndarray | None:
    """AR model around block ``block``; the window grows (up to 8x) until it has enough clean equations."""
    half = fit_context // 2
    for grow in (1, 2, 4, 8):
        lo = max(0, block * fit_context - half * grow)
        hi = min(y.shape[0], (block + 1) * fit_context + half * grow)
        a = fit_ar(y[lo:hi], reliable[lo:hi], order)
        if a is not None:
            return a
    return None


def _repair_groups(
    x: np.ndarray,
    damaged: np.ndarray,
    *,
    order: int,
    fit_context: int,
    max_abs: float,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, int]:
    """LSAR-fill every damaged run of ``x`` (``(n,)``); returns ``(repaired, fallbacks to a spline)``.

    A run whose AR solution is not finite or exceeds ``max_abs`` (an unstable model) is
    filled by a cubic spline instead, clamped to ``max_abs``.
    """
    y = x.astype(np.float64).copy()
    runs = _runs(damaged)
    reliable = ~damaged
    fallbacks = 0
    models: dict[int, np.ndarray | None] = {}
    i = 0
    while i < runs.shape[0]:
        if check is not None and i % 64 == 0:
            check()
        s, e = int(runs[i, 0]), int(runs[i, 1])
        # runs closer than the AR order share equations: solve them together
        j = i + 1
        while j < runs.shape[0] and runs[j, 0] - e < order:
            e = int(runs[j, 1])
            j += 1
        w_lo, w_hi = max(0, s - 3 * order), min(y.shape[0], e + 3 * order)
        unknown = damaged[w_lo:w_hi]
        # one AR model per fit_context-long block (fitted on it and half a block either
        # side), shared by every run in the block: fitting per run was the slow part
        block = s // fit_context
        if block not in models:
            models.clear()  # runs arrive in order: only the current block is needed
            models[block] = _fit_block(y, reliable, block, fit_context=fit_context, order=order)
        a = models[block]
        filled = (
            lsar_fill(y[w_lo:w_hi], unknown, a) if a is not None and not unknown.all() else None
        )
        if filled is None or not np.all(np.isfinite(filled)) or np.max(np.abs(filled)) > max_abs:
            filled = np.clip(_spline_fill(y[w_lo:w_hi], unknown), -max_abs, max_abs)
            fallbacks += 1
        y[w_lo:w_hi] = filled
        i = j
    return y, fallbacks


# =============================================================================== repairs


def declip(
    audio: np.ndarray, *, clip_level: float | None = None, check: Callable[[], None] | None = None
) -> tuple[np.ndarray, int]:
    """Reconstruct clipped runs.  ``audio``: ``(channels, frames)``; returns ``(repaired, samples fixed)``.

    A sample is clipped when it sits within 0.01 % of the clip level (the channel's peak
    unless ``clip_level`` is given) in a run of at least two samples.
    """
    out = np.empty_like(audio, dtype=np.float32)
    fixed = 0
    for ch in range(audio.shape[0]):
        x = audio[ch].astype(np.float64)
        level = float(clip_level) if clip_level is not None else float(np.max(np.abs(x)))
        at_clip = np.abs(x) >= level * (1 - 1e-4) if level > 0 else np.zeros(x.shape[0], dtype=bool)
        runs = _runs(at_clip)
        runs = runs[(runs[:, 1] - runs[:, 0]) >= 2]
        damaged = np.zeros_like(at_clip)
        for s, e in runs:
            damaged[s:e] = True
        if not damaged.any():
            out[ch] = x
            continue
        signs = np.sign(x)
        # a reconstruction more than 12 dB over the clip level is an unstable model, not a peak
        y, _ = _repair_groups(
            x, damaged, order=min(AR_ORDER, 16), fit_context=2048, max_abs=4.0 * level, check=check
        )
        # consistency: a clipped sample's true value lies beyond the clip level, same sign
        clipped_sign = signs[damaged]
        rebuilt = y[damaged]
        y[damaged] = clipped_sign * np.maximum(
            np.abs(rebuilt) * (np.sign(rebuilt) == clipped_sign), level
        )
        out[ch] = y
        fixed += int(damaged.sum())
    return out, fixed


def detect_clicks(
    x: np.ndarray,
    sample_rate: int,
    *,
    threshold_sigma: float = CLICK_THRESHOLD_SIGMA,
    order: int = AR_ORDER,
    block: int = 4096,
) -> np.ndarray:
    """Bool mask ``(n,)`` of click samples in mono ``x``: AR-residual outliers (robust sigma), grouped."""
    from scipy.signal import lfilter

    n = x.shape[0]
    strong = np.zeros(n, dtype=bool)
    weak = np.zeros(n, dtype=bool)
    for b0 in range(0, n, block):
        lo, hi = max(0, b0 - order), min(n, b0 + block)
        seg = x[lo:hi].astype(np.float64)
        if seg.shape[0] <= 4 * order or float(np.mean(seg**2)) < 1e-14:
            continue
        a = fit_ar(seg, np.ones(seg.shape[0], dtype=bool), order)
        if a is None:
            continue
        resid = np.abs(lfilter(a, [1.0], seg)[order:])  # residuals with a full history
        start = lo + order
        sigma = 1.4826 * float(np.median(resid)) + 1e-9
        strong[start : start + resid.shape[0]] |= resid > threshold_sigma * sigma
        weak[start : start + resid.shape[0]] |= resid > 0.5 * threshold_sigma * sigma
    # hysteresis: an event is a run of weak outliers holding at least one strong one;
    # events closer than 0.5 ms merge; padded by half the AR order; long ones are not clicks
    gap = max(2, int(0.0005 * sample_rate))
    pad = max(2, order // 2)
    max_len = int(MAX_CLICK_MS * 1e-3 * sample_rate)
    runs = _runs(weak)
    events = np.zeros(n, dtype=bool)
    k = 0
    while k < runs.shape[0]:
        s, e = int(runs[k, 0]), int(runs[k, 1])
        while k + 1 < runs.shape[0] and runs[k + 1, 0] - e <= gap:
            k += 1
            e = int(runs[k, 1])
        if strong[s:e].any() and e - s <= max_len:
            events[max(0, s - pad) : min(n, e + pad)] = True
        k += 1
    return events


def declick(
    audio: np.ndarray,
    sample_rate: int,
    *,
    threshold_sigma: float = CLICK_THRESHOLD_SIGMA,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Remove clicks from ``audio (channels, frames)``; returns ``(repaired, clicks fixed)``.

    Clicks are detected on the channel mix so a click is repaired in every channel.
    """
    mono = audio.mean(axis=0).astype(np.float64)
    events = detect_clicks(mono, sample_rate, threshold_sigma=threshold_sigma)
    if check is not None:
        check()
    clicks = int(_runs(events).shape[0])
    if clicks == 0:
        return audio.astype(np.float32), 0
    out = np.empty_like(audio, dtype=np.float32)
    for ch in range(audio.shape[0]):
        x = audio[ch].astype(np.float64)
        limit = 2.0 * float(np.max(np.abs(x[~events]))) if (~events).any() else 1.0
        y, _ = _repair_groups(
            x, events, order=AR_ORDER, fit_context=1024, max_abs=limit, check=check
        )
        out[ch] = y
    return out, clicks


@dataclass
class DenoiseResult:
    audio: np.ndarray
    noise_floor_before_db: float
    noise_floor_after_db: float
    applied: bool
    detail: str


def _frame_power_db(x: np.ndarray, frame: int) -> np.ndarray:
    n = x.shape[-1] // frame
    if n == 0:
        return np.array([-np.inf])
    p = np.mean(
        x[..., : n * frame].reshape(*x.shape[:-1], n, frame) ** 2,
        axis=(-1,) if x.ndim == 1 else (0, -1),
    )
    return 10 * np.log10(np.maximum(p, 1e-20))


def noise_floor_db(audio: np.ndarray, sample_rate: int, *, quantile: float = 0.1) -> float:
    """Mean power (dBFS) of the quietest ``quantile`` of 50 ms frames (all channels)."""
    frame = max(1, int(0.05 * sample_rate))
    p = _frame_power_db(np.atleast_2d(audio), frame)
    k = max(1, int(np.ceil(quantile * p.shape[0])))
    quiet = np.sort(p)[:k]
    return float(10 * np.log10(np.mean(10 ** (quiet / 10))))


def denoise(
    audio: np.ndarray,
    sample_rate: int,
    *,
    strength: float = 1.0,
    max_reduction_db: float = 24.0,
    check: Callable[[], None] | None = None,
) -> DenoiseResult:
    """Spectral Wiener denoise with a noise profile from the quietest frames.

    ``audio``: ``(channels, frames)``.  Per bin Wiener gain ``xi / (1 + xi)`` with the
    decision-directed a-priori SNR ``xi`` against ``strength x`` the noise profile, floored at
    ``-max_reduction_db``.
    """
    from scipy.signal import istft, stft

    before = noise_floor_db(audio, sample_rate)
    n_fft = 2048 if sample_rate >= 32000 else 1024
    hop = n_fft // 4
    _, _, spec = stft(
        audio, fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop, boundary="even", padded=True
    )
    power = np.abs(spec) ** 2  # (channels, bins, frames)
    frame_energy = power.sum(axis=(0, 1))
    order = np.argsort(frame_energy)
    k = max(3, int(0.1 * frame_energy.shape[0]))
    quiet, median = frame_energy[order[:k]].mean(), float(np.median(frame_energy))
    contrast_db = 10 * np.log10(max(median, 1e-30) / max(quiet, 1e-30))
    if contrast_db < MIN_PROFILE_CONTRAST_DB or frame_energy.shape[0] < 10:
        return DenoiseResult(
            audio.astype(np.float32),
            before,
            before,
            False,
            f"skipped: no passage quieter than the music ({contrast_db:.1f} dB contrast)",
        )
    if check is not None:
        check()
    noise = power[:, :, order[:k]].mean(axis=2, keepdims=True)  # (channels, bins, 1)
    # Wiener gain with the decision-directed a-priori SNR (Ephraim & Malah 1984): far less
    # residual and "musical" noise than plain spectral subtraction.
    floor = 10 ** (-max_reduction_db / 20)
    noise = np.maximum(strength * noise, 1e-30)
    gain = np.empty(power.shape, dtype=np.float64)
    prev = np.zeros(power.shape[:2])  # |G X|^2 of the previous frame
    alpha = 0.98
    for f in range(power.shape[2]):
        if check is not None and f % 2048 == 0:
            check()
        post = power[:, :, f] / noise[:, :, 0]
        prior = alpha * prev / noise[:, :, 0] + (1 - alpha) * np.maximum(post - 1.0, 0.0)
        g = np.maximum(prior / (1.0 + prior), floor)
        gain[:, :, f] = g
        prev = g**2 * power[:, :, f]
    _, y = istft(spec * gain, fs=sample_rate, nperseg=n_fft, noverlap=n_fft - hop, boundary=True)
    y = np.asarray(y[:, : audio.shape[1]], dtype=np.float32)
    if y.shape[1] < audio.shape[1]:
        y = np.pad(y, ((0, 0), (0, audio.shape[1] - y.shape[1])))
    return DenoiseResult(
        y,
        before,
        noise_floor_db(y, sample_rate),
        True,
        f"noise profile from the quietest 10% of frames ({contrast_db:.1f} dB below median)",
    )


def corrective_eq(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, dict[str, Any]]:
    """DC removal, 20 Hz high-pass (2nd-order Butterworth), notches on a 50/60 Hz hum line that stands out."""
    from scipy.signal import butter, iirnotch, sosfiltfilt, tf2sos, welch

    info: dict[str, Any] = {"dc_removed": [round(float(v), 6) for v in audio.mean(axis=1)]}
    y = audio - audio.mean(axis=1, keepdims=True)
    sos = butter(2, 20.0, btype="highpass", fs=sample_rate, output="sos")
    y = sosfiltfilt(sos, y, axis=1)
    freqs, psd = welch(y.mean(axis=0), fs=sample_rate, nperseg=min(y.shape[1], 1 << 15))
    hum = None
    for base in (50.0, 60.0):
        i = int(np.argmin(np.abs(freqs - base)))
        near = (np.abs(freqs - base) > 4) & (np.abs(freqs - base) < 20)
        if (
            near.any()
            and psd[i] > 0
            and 10 * np.log10(psd[i] / max(np.median(psd[near]), 1e-30)) > 20
        ):
            hum = base
            break
    if hum is not None:
        for h in range(1, 4):
            if h * hum < sample_rate / 2:
                b, a = iirnotch(h * hum, 30.0, fs=sample_rate)
                y = sosfiltfilt(tf2sos(b, a), y, axis=1)
    info["hum_hz"] = hum
    info["highpass_hz"] = 20.0
    return np.asarray(y, dtype=np.float32), info


# =============================================================================== backend


class DspEnhancer(Backend):
    """ACES enhancement by DSP: de-clip, de-click, denoise, corrective EQ, then the mastering chain."""

    name = "dsp-enhance"
    slot = "aces"
    title = "Enhancement (DSP repair + mastering)"
    capabilities = frozenset({"enhance"})
    tasks = {"enhance": "enhance"}  # noqa: RUF012 - read-only, as in Backend
    weights = ()
    packages = ("scipy",)
    extra = None

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        missing = c.missing_packages(self)
        if missing:
            return BackendStatus(
                "package_missing", f"{self.title} needs {', '.join(missing)}", extra="scipy"
            )
        return BackendStatus(
            "ready",
            "DSP only (AR-model de-click and de-clip, spectral Wiener denoise, corrective "
            "EQ, engine mastering); no learned-enhancement weights are shipped",
        )

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        steps = params.get("steps", ("declip", "declick", "denoise", "eq", "master"))
        unknown = set(steps) - {"declip", "declick", "denoise", "eq", "master"}
        if unknown:
            raise ParameterError(f"unknown enhancement steps {sorted(unknown)}")
        source = c.need_input(inputs)
        t0 = time.perf_counter()
        audio, sr = c.read_audio(source)

        def check() -> None:
            c.check_cancel(ctx)

        before = analysis.analyze(audio, sr)
        m: dict[str, Any] = {
            "noise_floor_before_db": round(noise_floor_db(audio, sr), 2),
            "loudness_before_lufs": _num(before.integrated_lufs),
            "true_peak_before_dbtp": _num(before.true_peak_dbtp),
            "clipped_samples_before": int(before.clipped_runs["samples"]),
        }
        y = audio
        if "declip" in steps:
            ctx.progress(0.05, "de-clipping")
            y, m["clipped_samples_fixed"] = declip(
                y, clip_level=params.get("clip_level"), check=check
            )
        if "declick" in steps:
            ctx.progress(0.25, "de-clicking")
            sigma = c.param_float(params, "click_threshold_sigma", CLICK_THRESHOLD_SIGMA, 3.0, 50.0)
            y, m["clicks_fixed"] = declick(y, sr, threshold_sigma=sigma, check=check)
        if "denoise" in steps:
            ctx.progress(0.45, "denoising")
            res = denoise(
                y,
                sr,
                strength=c.param_float(params, "denoise_strength", 1.0, 0.0, 4.0),
                max_reduction_db=c.param_float(params, "max_reduction_db", 24.0, 0.0, 80.0),
                check=check,
            )
            y = res.audio
            m["denoise"] = res.detail
        if "eq" in steps:
            ctx.progress(0.55, "corrective EQ")
            y, eq_info = corrective_eq(y, sr)
            m["hum_hz"] = eq_info["hum_hz"]
        m["noise_floor_after_db"] = round(noise_floor_db(y, sr), 2)
        repaired = c.write_audio(ctx.work_dir / "repaired.wav", y, sr)
        outputs: dict[str, Path] = {"repaired": repaired, "audio": repaired}
        if "master" in steps:
            ctx.progress(0.6, "mastering")
            result = c.master(
                repaired,
                ctx.work_dir / "enhanced.wav",
                params,
                progress=lambda f, msg: ctx.progress(0.6 + 0.38 * f, msg),
            )
            outputs["audio"] = result.output or ctx.work_dir / "enhanced.wav"
            mm = c.master_metrics(result)
            m.update(
                {
                    "loudness_lufs": mm["loudness_lufs"],
                    "true_peak_dbtp": mm["true_peak_dbtp"],
                    "mastering_target": mm["mastering_target"],
                    "target_lufs": mm["target_lufs"],
                }
            )
        else:
            after = analysis.analyze(y, sr)
            m.update(
                {
                    "loudness_lufs": _num(after.integrated_lufs),
                    "true_peak_dbtp": _num(after.true_peak_dbtp),
                }
            )
        m.update(c.timing_metrics(audio.shape[1] / sr, time.perf_counter() - t0, ctx.device))
        m["method"] = "dsp"
        ctx.progress(1.0, "done")
        return BackendOutput(outputs, m)


def _num(x: float | None) -> float | None:
    return round(float(x), 3) if x is not None and np.isfinite(x) else None
