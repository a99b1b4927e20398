"""From an analysis of the mix (and references) to a :class:`MasteringPlan`.

Every number chosen here is written into the plan with a note saying why, so a
musician can read, edit and re-render it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.engine.errors import ParameterError
from app.engine.mastering.eq import (
    band_centers_hz,
    reference_moves_db,
    style_moves_db,
)
from app.engine.mastering.plan import (
    LEVEL_MAX_EQ_DB,
    REFERENCE_MAX_MOVE_DB,
    STYLES,
    BandStage,
    CompressorStage,
    EqStage,
    FilterStage,
    ImagerStage,
    LimiterStage,
    LoudnessStage,
    MasteringPlan,
    MultibandStage,
    OutputStage,
    SoftClipStage,
    resolve_amounts,
    resolve_target,
)

#: Mean-square level of a stereo signal sits ~2.3 dB under its LUFS value at 1 kHz.
LUFS_TO_RMS_DB = -2.3


@dataclass(frozen=True)
class MasterSettings:
    """What the musician asked for (CLI flags / UI controls)."""

    target: str = "streaming"
    lufs: float | None = None
    ceiling_dbtp: float | None = None
    style: str = "balanced"
    level: str = "moderate"
    amount_eq_pct: float | None = None
    amount_dynamics_pct: float | None = None
    amount_width_pct: float | None = None
    output_format: str = "wav24"
    noise_shaping: bool = False


@dataclass(frozen=True)
class SpectrumBands:
    """Long-term 1/3-octave levels (dB band power) of mid and side."""

    centers_hz: np.ndarray
    mid_db: np.ndarray
    side_db: np.ndarray

    def on(self, centers_hz: np.ndarray) -> SpectrumBands:
        """The same spectrum on other band centres (log-frequency interpolation)."""
        lc = np.log2(self.centers_hz)
        x = np.log2(centers_hz)
        return SpectrumBands(centers_hz, np.interp(x, lc, self.mid_db), np.interp(x, lc, self.side_db))


def average_spectra(spectra: Sequence[SpectrumBands], centers_hz: np.ndarray) -> SpectrumBands:
    """Power-average several references after normalising each to its own mid anchor level."""
    if not spectra:
        raise ParameterError("no reference spectra to average")
    mids, sides = [], []
    for s in spectra:
        s = s.on(centers_hz)
        sel = (centers_hz >= 100) & (centers_hz <= 8000)
        a = s.mid_db[sel].mean()
        mids.append(10 ** ((s.mid_db - a) / 10))
        sides.append(10 ** ((s.side_db - a) / 10))
    return SpectrumBands(
        centers_hz,
        10 * np.log10(np.mean(mids, axis=0)),
        10 * np.log10(np.maximum(np.mean(sides, axis=0), 1e-30)),
    )


def make_plan(
    *,
    sample_rate: int,
    channels: int,
    integrated_lufs: float,
    loudness_range_lu: float,
    short_term_lufs: np.ndarray,
    correlation: float | None,
    spectrum: SpectrumBands,
    settings: MasterSettings,
    references: Sequence[SpectrumBands] = (),
    reference_names: Sequence[str] = (),
) -> MasteringPlan:
    """Decide the chain for one mix.

    Parameters
    ----------
    integrated_lufs, loudness_range_lu, short_term_lufs : the input's loudness figures
    correlation : L/R correlation (None for mono)
    spectrum : input mid/side 1/3-octave levels
    references : reference spectra; when given, EQ matches them instead of the style curve
    """
    if settings.style not in STYLES:
        raise ParameterError(f"unknown style {settings.style!r}; choose one of {', '.join(STYLES)}")
    if not np.isfinite(integrated_lufs):
        raise ParameterError("the mix is silent (no loudness to measure): nothing to master")
    target = resolve_target(settings.target, lufs=settings.lufs, ceiling_dbtp=settings.ceiling_dbtp)
    amounts = resolve_amounts(
        settings.level,
        eq_pct=settings.amount_eq_pct,
        dynamics_pct=settings.amount_dynamics_pct,
        width_pct=settings.amount_width_pct,
    )
    style, level = settings.style, settings.level
    eq_amt, dyn, wid = amounts.eq_pct / 100.0, amounts.dynamics_pct / 100.0, amounts.width_pct / 100.0
    notes: list[str] = [f"target {target.description}; style {style}; level {level}"]
    stereo = channels == 2

    # --- filter
    hp = {"professional": 15.0, "punchy": 25.0}.get(style, 20.0)
    if settings.target == "club":
        hp = 25.0
    filt = FilterStage(highpass_hz=hp)
    notes.append(f"high-pass {hp:g} Hz removes DC and sub-sonic rumble")

    # --- EQ
    centers = band_centers_hz(sample_rate)
    spec = spectrum.on(centers)
    if references:
        ref = average_spectra(references, centers)
        max_move = REFERENCE_MAX_MOVE_DB
        mid, side = reference_moves_db(
            centers, spec.mid_db, spec.side_db, ref.mid_db, ref.side_db, amount=eq_amt, max_move_db=max_move
        )
        if not stereo:
            side = mid.copy()
        eq = EqStage(True, "reference", centers.tolist(), _r(mid), _r(side), max_move)
        notes.append(
            f"EQ matches {len(references)} reference(s) {', '.join(reference_names) or ''} "
            f"at {amounts.eq_pct:.0f} %: mid and side separately, 1/3-octave, capped ±{max_move:g} dB"
        )
    else:
        max_move = LEVEL_MAX_EQ_DB[level]
        if style == "professional":
            eq_amt *= 0.5
        mid = style_moves_db(centers, spec.mid_db, style=style, amount=eq_amt, max_move_db=max_move)
        eq = EqStage(eq_amt > 0, "style", centers.tolist(), _r(mid), _r(mid), max_move)
        notes.append(f"EQ toward the {style} target curve at {eq_amt * 100:.0f} %, capped ±{max_move:g} dB")
    if eq.enabled:
        big = sorted(zip(eq.mid_gain_db, centers, strict=True), key=lambda t: -abs(t[0]))[:3]
        notes.append("largest EQ moves: " + ", ".join(f"{g:+.1f} dB @ {_hz(f)}" for g, f in big))

    # --- glue compressor: threshold from the loud passages' level
    st = np.asarray(short_term_lufs, dtype=np.float64)
    st = st[np.isfinite(st) & (st > -70.0)]
    loud = float(np.percentile(st, 90)) if st.size else integrated_lufs
    density = float(np.clip(loudness_range_lu / 8.0, 0.3, 1.0)) if np.isfinite(loudness_range_lu) else 1.0
    # Glue, not squash: about 1-4 dB on the loud passages, so verse/chorus contrast survives
    # (the limiter, not the compressor, is what makes it loud).
    depth = (1.0 + 3.0 * dyn) * density
    ratio = 1.5 + 1.0 * dyn
    attack, release = 15.0, 150.0
    if style == "punchy":
        attack, ratio = 30.0, ratio + 0.5
    elif style == "warm":
        attack, release = 25.0, 250.0
    elif style == "professional":
        depth, ratio = depth * 0.6, min(ratio, 1.5)
    elif style == "creative":
        depth *= 1.2
    comp = CompressorStage(
        enabled=dyn > 0,
        threshold_db=round(loud + LUFS_TO_RMS_DB - depth, 2),
        ratio=round(ratio, 2),
        attack_ms=attack,
        release_ms=release,
        knee_db=6.0,
        sidechain_hpf_hz=90.0,
    )
    if comp.enabled:
        notes.append(
            f"glue compressor (stereo-linked RMS) {comp.ratio:g}:1 from {comp.threshold_db:.1f} dB, "
            f"about {depth / 2:.1f} dB on the loud passages"
            + ("; input already dense, compression reduced" if density < 0.99 else "")
        )

    # --- multiband: only when asked for firmness
    mb_on = dyn > 0 and (level == "aggressive" or style in ("punchy", "creative"))
    bands = []
    for lo, hi in ((20.0, 120.0), (120.0, 4000.0), (4000.0, 20000.0)):
        frac = _band_fraction(spec, lo, hi)
        band_level = loud + LUFS_TO_RMS_DB + 10 * np.log10(max(frac, 1e-6))
        bands.append(
            BandStage(
                threshold_db=round(float(band_level - 2.0 - 3.0 * dyn), 2),
                ratio=round(1.5 + dyn, 2),
                attack_ms={0: 30.0, 1: 15.0, 2: 5.0}[len(bands)],
                release_ms={0: 200.0, 1: 150.0, 2: 80.0}[len(bands)],
            )
        )
    mb = MultibandStage(enabled=mb_on, low_hz=120.0, high_hz=4000.0, bands=bands)
    if mb_on:
        notes.append("3-band compressor (120 Hz / 4 kHz Linkwitz-Riley) evens out the low end and highs")

    # --- imager
    width = 1.0 + 0.15 * wid + (0.1 if style == "creative" else 0.0)
    if not stereo:
        width, mono_bass = 1.0, None
    else:
        mono_bass = 120.0 if wid > 0 else None
        if correlation is not None and correlation < 0.0:
            width = 0.9
            notes.append(f"L/R correlation {correlation:.2f} (phase problems): narrowing to {width:g}")
        elif correlation is not None and correlation < 0.3:
            width = min(width, 1.0)
            notes.append(f"mix already wide (correlation {correlation:.2f}): width kept")
        else:
            notes.append(f"stereo width x{width:.2f}" + (", bass mono below 120 Hz" if mono_bass else ""))
    imager = ImagerStage(width=round(width, 3), mono_bass_hz=mono_bass)

    # --- soft clip and limiter
    clip_on = level == "aggressive" or style == "creative" or settings.target == "club"
    soft = SoftClipStage(enabled=clip_on, threshold_db=1.0, ceiling_db=3.0)
    if clip_on:
        notes.append("soft clip shaves the sharpest peaks before the limiter")
    release_ms = {"warm": 200.0, "punchy": 80.0}.get(style, 120.0)
    if settings.target == "club":
        release_ms = 60.0
    limiter = LimiterStage(ceiling_dbtp=target.ceiling_dbtp, lookahead_ms=5.0, release_ms=release_ms)
    notes.append(f"true-peak limiter: ceiling {target.ceiling_dbtp:g} dBTP, 5 ms look-ahead, {release_ms:g} ms release")

    out = OutputStage(format=settings.output_format, dither=None, noise_shaping=settings.noise_shaping)
    plan = MasteringPlan(
        sample_rate=int(sample_rate),
        channels=int(channels),
        target=target.name,
        style=style,
        level=level,
        amounts=amounts,
        filter=filt,
        eq=eq,
        compressor=comp,
        multiband=mb,
        imager=imager,
        soft_clip=soft,
        limiter=limiter,
        loudness=LoudnessStage(target_lufs=target.lufs, tolerance_lu=0.2),
        output=out,
        references=list(reference_names),
        notes=notes,
    )
    plan.validate()
    return plan


def _band_fraction(spec: SpectrumBands, lo_hz: float, hi_hz: float) -> float:
    p = 10 ** (spec.mid_db / 10)
    sel = (spec.centers_hz >= lo_hz) & (spec.centers_hz < hi_hz)
    return float(p[sel].sum() / max(p.sum(), 1e-30))


def _r(x: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in x]


def _hz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"
