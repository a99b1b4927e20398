"""Quality gates: plain checks on a produced audio file, run after every generative step.

Each gate turns one engine measurement (:mod:`app.engine.analysis`) into a
:class:`GateResult` ``(name, passed, value, threshold, detail)``.  The orchestrator runs
them on each attempt of a generative step; a failed gate makes it retry with another seed
or fall back to the next backend, and the final master is checked the same way against
its delivery target.

Nothing here imports torch: the analysis is the engine's.  The prompt-adherence gate only
*judges* a CLAP similarity that a backend computed inside the model worker; without one it
reports ``skipped`` with the reason and never invents a score.

Thread-safety: pure functions; safe from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import analysis

# --- thresholds (units in the names) ------------------------------------------------------

#: A generated file may differ from the requested length by this share, or this many s,
#: whichever is larger (codec frames and diffusion latents do not land on the exact frame).
DURATION_TOLERANCE_FRACTION = 0.10
DURATION_TOLERANCE_MIN_S = 0.5
#: Most of a generated piece must sound: share of 100 ms windows below -60 dBFS RMS.
SILENCE_MAX_FRACTION = 0.5
#: Clipped samples (inside runs of >= 3 at full scale) per sample of the whole file.
CLIPPING_MAX_SAMPLE_FRACTION = 1e-4
#: True peak of an unmastered generation: the master fixes small overs, not gross ones.
GENERATED_TRUE_PEAK_MAX_DBTP = 1.0
#: Integrated loudness of an unmastered generation: quieter is near-silence or hiss,
#: louder is a wall of distortion.
GENERATED_LOUDNESS_MIN_LUFS = -45.0
GENERATED_LOUDNESS_MAX_LUFS = -3.0
#: Least-squares slope of the 1/3-octave mid spectrum (dB band power per octave) between
#: these frequencies.  Pink noise reads 0, white noise +3; commercial music sits around
#: -2 to -6.  Outside this range the audio is a rumble or a hiss, not music.
SPECTRAL_TILT_MIN_DB_PER_OCT = -10.0
SPECTRAL_TILT_MAX_DB_PER_OCT = 1.5
SPECTRAL_FIT_LOW_HZ = 40.0
SPECTRAL_FIT_HIGH_HZ = 16_000.0
#: Band edges of the energy shares reported with the tilt (Hz).
LOW_MID_EDGE_HZ = 250.0
MID_HIGH_EDGE_HZ = 4_000.0
#: No one of low/mid/high may hold more than this share of the energy.
SPECTRAL_MAX_BAND_SHARE = 0.98
#: CLAP cosine similarity of the audio and the prompt text (matching pairs typically read
#: 0.3-0.5, unrelated ones below 0.15).
CLAP_MIN_SIMILARITY = 0.2


@dataclass(frozen=True)
class GateResult:
    """One check: ``value`` measured against ``threshold`` (numbers, a range, or None).

    A ``skipped`` gate (nothing to measure with) is *not* passed: ``passed`` is False,
    ``skipped`` True and ``detail`` says why.  It does not fail a step either
    (:func:`all_passed`), but the summary (:func:`summary`) names it as skipped.
    """

    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        v = float(x)
        return round(v, 4) if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def all_passed(results: Sequence[GateResult]) -> bool:
    """No gate that ran failed (skipped gates neither pass nor fail)."""
    return all(r.passed or r.skipped for r in results)


def failures(results: Sequence[GateResult]) -> list[str]:
    """One line per failed gate (skipped ones are not failures)."""
    return [f"{r.name}: {r.detail}" for r in results if not r.passed and not r.skipped]


def summary(results: Sequence[GateResult | Mapping[str, Any]]) -> str:
    """Which gates ran and how they ended, e.g. ``"duration: passed; ...; prompt adherence:
    skipped (CLAP weights missing)"``."""
    parts = []
    for r in results:
        d = r.to_dict() if isinstance(r, GateResult) else dict(r)
        name = str(d["name"]).replace("_", " ")
        if d.get("skipped"):
            why = str(d.get("detail", "")).removeprefix("skipped: ").removeprefix("skipped")
            parts.append(f"{name}: skipped ({why})" if why else f"{name}: skipped")
        else:
            parts.append(f"{name}: {'passed' if d['passed'] else 'failed'}")
    return "; ".join(parts)


# --- the gates -----------------------------------------------------------------------------


def duration_gate(a: analysis.Analysis, requested_s: float | None) -> GateResult:
    """Length within ``max(DURATION_TOLERANCE_MIN_S, DURATION_TOLERANCE_FRACTION * requested)``."""
    if requested_s is None:
        return GateResult("duration", False, a.duration_s, None, "skipped: no duration was requested", skipped=True)
    tol = max(DURATION_TOLERANCE_MIN_S, DURATION_TOLERANCE_FRACTION * requested_s)
    err = a.duration_s - requested_s
    ok = abs(err) <= tol
    return GateResult(
        "duration", ok, a.duration_s, [requested_s - tol, requested_s + tol],
        f"{a.duration_s:.2f} s for {requested_s:.2f} s requested ({err:+.2f} s, tolerance ±{tol:.2f} s)",
    )


def silence_gate(a: analysis.Analysis, *, max_fraction: float = SILENCE_MAX_FRACTION) -> GateResult:
    """Fails for an all-silent file or one mostly below -60 dBFS."""
    frac = float(a.silence["fraction"])
    if not math.isfinite(a.integrated_lufs) or a.sample_peak_dbfs <= analysis.SILENCE_THRESHOLD_DBFS:
        return GateResult("silence", False, 1.0, max_fraction, "the audio is silent")
    ok = frac <= max_fraction
    return GateResult(
        "silence", ok, frac, max_fraction,
        f"{frac * 100:.0f} % of the time below {analysis.SILENCE_THRESHOLD_DBFS:g} dBFS "
        f"(at most {max_fraction * 100:.0f} %)",
    )


def clipping_gate(a: analysis.Analysis, *, max_sample_fraction: float = CLIPPING_MAX_SAMPLE_FRACTION) -> GateResult:
    """Clipped samples (runs of >= 3 at full scale) as a share of all samples."""
    total = max(1, round(a.duration_s * a.sample_rate) * a.channels)
    clipped = int(a.clipped_runs["samples"])
    frac = clipped / total
    ok = frac <= max_sample_fraction
    return GateResult(
        "clipping", ok, frac, max_sample_fraction,
        f"{a.clipped_runs['runs']} clipped runs, {clipped} samples ({frac * 100:.4f} %; at most "
        f"{max_sample_fraction * 100:.4f} %)",
    )


def true_peak_gate(a: analysis.Analysis, *, max_dbtp: float = GENERATED_TRUE_PEAK_MAX_DBTP) -> GateResult:
    tp = float(a.true_peak_dbtp)
    ok = math.isfinite(tp) and tp <= max_dbtp + 1e-6
    shown = f"{tp:.2f} dBTP" if math.isfinite(tp) else "no signal"
    return GateResult("true_peak", ok, tp, max_dbtp, f"{shown} (at most {max_dbtp:g} dBTP)")


def loudness_gate(
    a: analysis.Analysis,
    *,
    min_lufs: float = GENERATED_LOUDNESS_MIN_LUFS,
    max_lufs: float = GENERATED_LOUDNESS_MAX_LUFS,
    name: str = "loudness",
) -> GateResult:
    """Integrated loudness (BS.1770) inside ``[min_lufs, max_lufs]``."""
    lufs = float(a.integrated_lufs)
    ok = math.isfinite(lufs) and min_lufs - 1e-6 <= lufs <= max_lufs + 1e-6
    shown = f"{lufs:.2f} LUFS" if math.isfinite(lufs) else "silent"
    return GateResult(name, ok, lufs, [min_lufs, max_lufs], f"{shown} (range {min_lufs:g} to {max_lufs:g} LUFS)")


def spectral_figures(a: analysis.Analysis) -> dict[str, float | None]:
    """``tilt_db_per_oct`` and the ``low``/``mid``/``high`` energy shares of the mid signal."""
    centers = np.asarray(a.spectrum["centers_hz"], dtype=float)
    levels = np.array([np.nan if v is None else v for v in a.spectrum["mid_db"]], dtype=float)
    have = np.isfinite(levels)
    out: dict[str, float | None] = {"tilt_db_per_oct": None, "low": None, "mid": None, "high": None}
    if not have.any():
        return out
    power = np.where(have, 10.0 ** (np.nan_to_num(levels, nan=-400.0) / 10.0), 0.0)
    total = float(power.sum())
    if total > 0:
        out["low"] = float(power[centers < LOW_MID_EDGE_HZ].sum() / total)
        out["mid"] = float(power[(centers >= LOW_MID_EDGE_HZ) & (centers < MID_HIGH_EDGE_HZ)].sum() / total)
        out["high"] = float(power[centers >= MID_HIGH_EDGE_HZ].sum() / total)
    fit = have & (centers >= SPECTRAL_FIT_LOW_HZ) & (centers <= SPECTRAL_FIT_HIGH_HZ)
    if fit.sum() >= 4:
        # a band far below the loudest is leakage, not content: floor it so a pure tone or a
        # brick-wall low-pass reads as the extreme tilt it is rather than as noise
        lv = np.maximum(levels[fit], np.nanmax(levels[fit]) - 90.0)
        slope = np.polyfit(np.log2(centers[fit]), lv, 1)[0]
        out["tilt_db_per_oct"] = float(slope)
    return out


def spectral_balance_gate(
    a: analysis.Analysis,
    *,
    tilt_range_db_per_oct: tuple[float, float] = (SPECTRAL_TILT_MIN_DB_PER_OCT, SPECTRAL_TILT_MAX_DB_PER_OCT),
    max_band_share: float = SPECTRAL_MAX_BAND_SHARE,
) -> GateResult:
    """Spectral tilt inside a broad music range and no band holding nearly all the energy."""
    f = spectral_figures(a)
    tilt = f["tilt_db_per_oct"]
    if tilt is None:
        return GateResult("spectral_balance", False, f, {"tilt_db_per_oct": list(tilt_range_db_per_oct)},
                          "no spectrum to judge (silent or too short)")
    lo, hi = tilt_range_db_per_oct
    problems = []
    if tilt < lo:
        problems.append(f"tilt {tilt:.1f} dB/oct is darker than {lo:g} (a rumble)")
    if tilt > hi:
        problems.append(f"tilt {tilt:+.1f} dB/oct is brighter than {hi:+g} (a hiss)")
    for band in ("low", "mid", "high"):
        share = f[band]
        if share is not None and share > max_band_share:
            problems.append(f"the {band} band holds {share * 100:.1f} % of the energy")
    shares = "/".join(f"{(f[b] or 0.0) * 100:.0f}" for b in ("low", "mid", "high"))
    detail = "; ".join(problems) if problems else f"tilt {tilt:+.1f} dB/oct, low/mid/high {shares} %"
    return GateResult(
        "spectral_balance", not problems, f,
        {"tilt_db_per_oct": [lo, hi], "max_band_share": max_band_share}, detail,
    )


def prompt_adherence_gate(
    similarity: float | None, *, skipped_reason: str = "", min_similarity: float = CLAP_MIN_SIMILARITY
) -> GateResult:
    """Judge a CLAP audio/prompt cosine similarity; ``None`` -> skipped with ``skipped_reason``."""
    if similarity is None:
        return GateResult("prompt_adherence", False, None, min_similarity,
                          f"skipped: {skipped_reason or 'no CLAP score'}", skipped=True)
    ok = similarity >= min_similarity
    return GateResult("prompt_adherence", ok, float(similarity), min_similarity,
                      f"CLAP similarity {similarity:.3f} (at least {min_similarity:g})")


def noise_floor_dbfs(audio: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """``(floor, median)`` in dBFS: mean power of the quietest 10 % of 50 ms frames, and the median frame.

    ``audio``: ``(channels, frames)``.  The floor is only a noise floor when the file has
    quiet passages; dense music keeps it near the median (see :data:`NOISE_FLOOR_MIN_GAP_DB`).
    """
    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    frame = max(1, int(0.05 * sample_rate))
    k = x.shape[1] // frame
    if k < 4:
        return -math.inf, -math.inf
    p = (x[:, : k * frame].reshape(x.shape[0], k, frame) ** 2).mean(axis=(0, 2))
    db = 10.0 * np.log10(np.maximum(p, 1e-20))
    srt = np.sort(db)
    quiet = srt[: max(1, math.ceil(0.1 * k))]
    return float(10.0 * np.log10(np.mean(10.0 ** (quiet / 10.0)))), float(np.median(db))


#: A noise floor is judged only when the quiet passages sit this far below the median frame.
NOISE_FLOOR_MIN_GAP_DB = 12.0
#: Quiet passages louder than this are hiss/hum worth repairing (dBFS, 50 ms frame power).
NOISE_FLOOR_MAX_DBFS = -60.0


# --- running them --------------------------------------------------------------------------


def analyze_path(path: str | Path) -> analysis.Analysis:
    """Stream ``path`` through the engine analyser (no musical analysis)."""
    from app.engine.mastering.chain import analyze_file

    return analyze_file(Path(path))


def generated_gates(
    path: str | Path,
    *,
    requested_s: float | None = None,
    clap_similarity: float | None = None,
    clap_skipped_reason: str = "",
    analysis_result: analysis.Analysis | None = None,
) -> list[GateResult]:
    """Every gate for a generated (unmastered) file."""
    a = analysis_result or analyze_path(path)
    return [
        duration_gate(a, requested_s),
        silence_gate(a),
        clipping_gate(a),
        true_peak_gate(a),
        loudness_gate(a),
        spectral_balance_gate(a),
        prompt_adherence_gate(clap_similarity, skipped_reason=clap_skipped_reason),
    ]


def master_gates(
    path: str | Path,
    *,
    target_lufs: float,
    ceiling_dbtp: float,
    tolerance_lu: float = 0.2,
    analysis_result: analysis.Analysis | None = None,
) -> list[GateResult]:
    """The delivery checks of a final master: loudness on target, true peak under the ceiling."""
    a = analysis_result or analyze_path(path)
    return [
        loudness_gate(a, min_lufs=target_lufs - tolerance_lu, max_lufs=target_lufs + tolerance_lu,
                      name="loudness_target"),
        true_peak_gate(a, max_dbtp=ceiling_dbtp),
        silence_gate(a),
        clipping_gate(a),
        spectral_balance_gate(a),
    ]
