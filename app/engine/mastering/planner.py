"""From an analysis of the mix (and references) to a :class:`MasteringPlan`.

Every number chosen here is written into the plan with a note saying why, so a
musician can read, edit and re-render it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.engine.errors import ParameterError
from app.engine.mastering.eq import (
    band_centers_hz,
    reference_moves_db,
    spectral_tilt_db_per_oct,
    tone_moves_db,
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
    SectionRideStage,
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
    #: reach the loudness target even when it needs more limiting than the level's budget
    loudness_first: bool = False
    #: music family for tone and dynamics ("auto" = estimated from the analysis)
    genre: str = "auto"
    #: mono bass: None = decided from the low end's side energy; True/False = forced
    mono_bass: bool | None = None


#: Music families the planner can tell apart, and what each means for the chain.
GENRE_FAMILIES: dict[str, str] = {
    "electronic": "strong sub-bass, steady level: firm low end, clipper for the kick, mono bass if phasey",
    "hip-hop": "heavy sub-bass, darker top: keeps the low end, gentle top, clipper for the drums",
    "rock-pop": "full band: balanced tilt, glue and clipper for the drums",
    "acoustic-orchestral": "wide dynamics, natural lows and room: no sub boost, no clipper, "
    "stereo low end kept, light glue",
    "speech": "voice: presence, no sub boost, no widening, no clipper",
}

#: Long-term spectral tilt (dB per octave, 100 Hz-10 kHz) each family is steered toward.
FAMILY_TILT_DB_PER_OCT = {
    "electronic": -3.0,
    "hip-hop": -3.6,
    "rock-pop": -3.2,
    "acoustic-orchestral": -3.8,
    "speech": -2.5,
}

#: Peak-control budgets per level: (limiter max dB, limiter over 1 dB %, clipper max dB).
GUARD_BUDGETS = {"light": (2.0, 2.0, 1.5), "moderate": (3.0, 5.0, 3.0), "aggressive": (6.0, 20.0, 5.0)}
#: Glue compressor range (most reduction, dB) per level.
GLUE_RANGE_DB = {"light": 1.5, "moderate": 2.5, "aggressive": 4.0}


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
    true_peak_dbtp: float | None = None,
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

    # --- what kind of music this is
    centers = band_centers_hz(sample_rate)
    spec = spectrum.on(centers)
    feats = _features(spec, loudness_range_lu, integrated_lufs, true_peak_dbtp)
    family, why_family = _family(settings.genre, feats, stereo)
    notes.append(f"music family: {family} ({why_family})")

    # --- filter
    hp = {"professional": 15.0, "punchy": 25.0}.get(style, 20.0)
    if settings.target == "club":
        hp = 25.0
    if family == "acoustic-orchestral":
        hp = min(hp, 15.0)  # organ pedals and bass drums reach down there
    filt = FilterStage(highpass_hz=hp)
    notes.append(f"high-pass {hp:g} Hz removes DC and sub-sonic rumble")

    # --- EQ
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
        tilt = FAMILY_TILT_DB_PER_OCT[family]
        mid, tone_notes = tone_moves_db(
            centers, spec.mid_db, style=style, family=family, target_tilt_db_per_oct=tilt,
            amount=eq_amt, max_move_db=max_move,
        )  # fmt: skip
        eq = EqStage(eq_amt > 0, "style", centers.tolist(), _r(mid), _r(mid), max_move)
        notes.append(
            f"EQ at {eq_amt * 100:.0f} %, capped ±{max_move:g} dB: " + "; ".join(tone_notes)
        )
    if eq.enabled:
        big = sorted(zip(eq.mid_gain_db, centers, strict=True), key=lambda t: -abs(t[0]))[:3]
        notes.append("largest EQ moves: " + ", ".join(f"{g:+.1f} dB @ {_hz(f)}" for g, f in big))

    # --- glue compressor: follows the song's sections
    st = np.asarray(short_term_lufs, dtype=np.float64)
    st = st[np.isfinite(st) & (st > -70.0)]
    loud = float(np.percentile(st, 90)) if st.size else integrated_lufs
    density = float(np.clip(loudness_range_lu / 8.0, 0.3, 1.0)) if np.isfinite(loudness_range_lu) else 1.0
    # Glue, not squash: about 1-3 dB on the transients of each section, so verse/chorus
    # contrast survives (the threshold follows the section level; the clipper and the
    # limiter, within their budget, make it loud).
    depth = (1.0 + 3.0 * dyn) * density
    ratio = 1.5 + 1.0 * dyn
    # Bus-glue timing (30 ms attack lets the hit's front through; 500 ms release rides the
    # phrase, not each beat: a faster release modulates the mix at the beat rate).
    attack, release = 30.0, 500.0
    if style == "punchy":
        attack, release, ratio = 50.0, 300.0, ratio + 0.5
    elif style == "warm":
        attack, release = 40.0, 700.0
    elif style == "professional":
        depth, ratio = depth * 0.6, min(ratio, 1.5)
    elif style == "creative":
        depth *= 1.2
    if family in ("acoustic-orchestral", "speech"):
        depth, ratio, attack, release = depth * 0.5, min(ratio, 1.5), max(attack, 30.0), max(release, 600.0)
    glue_range = round(GLUE_RANGE_DB[level] * (0.6 if family == "acoustic-orchestral" else 1.0), 2)
    loud_ms_db = loud + LUFS_TO_RMS_DB
    # A finished master (narrow loudness range, peaks already close to the loudness) has had
    # its glue: compressing it again only adds movement at the beat.
    plr = feats["plr_db"]
    mastered = (
        np.isfinite(loudness_range_lu) and loudness_range_lu < 5.0
        and (plr < 14.0 if np.isfinite(plr) else integrated_lufs > -16.0)
    )  # fmt: skip
    comp = CompressorStage(
        enabled=dyn > 0 and (not mastered or level == "aggressive"),
        threshold_db=round(loud_ms_db - depth, 2),
        ratio=round(ratio, 2),
        attack_ms=attack,
        release_ms=release,
        knee_db=6.0,
        sidechain_hpf_hz=90.0,
        max_gr_db=glue_range,
        section_window_ms=1500.0,
        section_ref_db=round(loud_ms_db, 2),
    )
    if dyn > 0 and not comp.enabled:
        notes.append(
            f"glue compressor off: the mix is already a finished master (LRA {loudness_range_lu:.1f} LU"
            + (f", peaks {plr:.1f} dB over its loudness" if np.isfinite(plr) else "")
            + "); the aggressive level glues it anyway"
        )
    if comp.enabled:
        notes.append(
            f"glue compressor (stereo-linked RMS) {comp.ratio:g}:1, about {depth / 2:.1f} dB on the "
            f"transients of each section, never more than {glue_range:g} dB; its threshold follows the "
            f"section level so quiet intros stay quiet"
            + ("; input already dense, compression reduced" if density < 0.99 else "")
        )

    # --- multiband: only when asked for firmness
    mb_on = dyn > 0 and (level == "aggressive" or style in ("punchy", "creative")) and family != "acoustic-orchestral"
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
    mono_bass: float | None = None
    if references or family in ("acoustic-orchestral", "speech"):
        width = 1.0  # a reference's width comes with its side EQ; natural recordings keep their image
    if not stereo:
        width = 1.0
    else:
        low_corr = feats["low_correlation"]
        if settings.mono_bass is True:
            mono_bass = 120.0
            notes.append("bass mono below 120 Hz (asked for)")
        elif settings.mono_bass is None and wid > 0 and not references \
                and family not in ("acoustic-orchestral", "speech") \
                and low_corr < 0.5 and feats["low_side_db"] > -15.0:  # fmt: skip
            mono_bass = 120.0
            notes.append(
                f"bass mono below 120 Hz: the low end is phasey (correlation {low_corr:.2f}, side "
                f"{feats['low_side_db']:.0f} dB under the mid), which folds badly on mono systems"
            )
        elif references:
            notes.append("low end shaped by the reference's side EQ (no forced mono bass)")
        else:
            notes.append(
                f"low end kept stereo (correlation {low_corr:.2f}"
                + (", natural recording" if family == "acoustic-orchestral" else "")
                + ")"
            )
        if correlation is not None and correlation < 0.0:
            width = 0.9
            notes.append(f"L/R correlation {correlation:.2f} (phase problems): narrowing to {width:g}")
        elif correlation is not None and correlation < 0.3:
            width = min(width, 1.0)
            notes.append(f"mix already wide (correlation {correlation:.2f}): width kept")
        elif width != 1.0:
            notes.append(f"stereo width x{width:.2f}")
    imager = ImagerStage(width=round(width, 3), mono_bass_hz=mono_bass)

    # --- section balance: the EQ and the glue must not move the song's sections
    ride = SectionRideStage(enabled=dyn > 0 or eq.enabled, max_db=3.0)
    if ride.enabled:
        notes.append("section ride: each section kept at its original distance from the rest (slow, at most ±3 dB)")

    # --- peak control: clipper, limiter, dynamics guard
    club = settings.target == "club"
    clip_on = club or style == "creative" or (
        level != "light" and family in ("electronic", "hip-hop", "rock-pop")
    )
    soft = SoftClipStage(enabled=clip_on, threshold_db=-1.5 if club else -1.0, ceiling_db=0.5 if club else 1.0)
    if clip_on:
        notes.append("oversampled soft clipper rounds off single transients before the limiter (DC-free, band-limited)")
    transient_ms = {"warm": 50.0, "punchy": 20.0}.get(style, 30.0)
    sustained_ms = 300.0 if club else 500.0
    limiter = LimiterStage(
        ceiling_dbtp=target.ceiling_dbtp, lookahead_ms=5.0, release_ms=sustained_ms,
        transient_release_ms=transient_ms, sustain_ms=1000.0,
    )  # fmt: skip
    notes.append(
        f"true-peak limiter: ceiling {target.ceiling_dbtp:g} dBTP, 5 ms look-ahead, program-dependent release "
        f"({transient_ms:g} ms after a transient, {sustained_ms:g} ms from a sustained reduction)"
    )
    guard = not (settings.loudness_first or club)
    lim_max, over_pct, clip_max = GUARD_BUDGETS[level]
    loudness = LoudnessStage(
        target_lufs=target.lufs, tolerance_lu=0.2, guard=guard, max_limiter_gr_db=lim_max,
        max_limiter_over_1db_pct=over_pct, max_clip_db=clip_max,
    )  # fmt: skip
    if guard:
        notes.append(
            f"dynamics guard on: if {target.lufs:g} LUFS needs more than the {level} budget (limiter {lim_max:g} dB, "
            f"over 1 dB at most {over_pct:g} % of the time" + (f", clipper {clip_max:g} dB" if clip_on else "")
            + "), the master lands below the target instead of pumping"
        )
    else:
        notes.append("loudness first: the target is reached whatever limiting it takes")

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
        section_ride=ride,
        soft_clip=soft,
        limiter=limiter,
        loudness=loudness,
        output=out,
        references=list(reference_names),
        notes=notes,
        genre=family,
    )
    plan.validate()
    return plan


def _band_mean_db(spec: SpectrumBands, lo_hz: float, hi_hz: float, side: bool = False) -> float:
    sel = (spec.centers_hz >= lo_hz) & (spec.centers_hz <= hi_hz)
    if not np.any(sel):
        return -120.0
    v = spec.side_db if side else spec.mid_db
    return float(10 * np.log10(np.mean(10 ** (v[sel] / 10)) + 1e-30))


def _features(
    spec: SpectrumBands, lra_lu: float, integrated_lufs: float, true_peak_dbtp: float | None
) -> dict[str, float]:
    """The figures the family estimate and the imager decisions use."""
    anchor = _band_mean_db(spec, 100.0, 8000.0)
    low_mid = 10 ** (_band_mean_db(spec, 30.0, 120.0) / 10)
    low_side = 10 ** (_band_mean_db(spec, 30.0, 120.0, side=True) / 10)
    return {
        "sub_db": _band_mean_db(spec, 30.0, 60.0) - anchor,
        "bass_db": _band_mean_db(spec, 60.0, 160.0) - anchor,
        "air_db": _band_mean_db(spec, 6000.0, 12000.0) - anchor,
        "tilt_db_per_oct": spectral_tilt_db_per_oct(spec.centers_hz, spec.mid_db),
        "lra_lu": float(lra_lu) if np.isfinite(lra_lu) else 0.0,
        "plr_db": float(true_peak_dbtp - integrated_lufs) if true_peak_dbtp is not None else math.nan,
        # correlation of L and R in the low end from mid/side power: (M - S) / (M + S)
        "low_correlation": float((low_mid - low_side) / max(low_mid + low_side, 1e-30)),
        "low_side_db": float(10 * np.log10(max(low_side, 1e-30) / max(low_mid, 1e-30))),
    }


def _family(asked: str, f: dict[str, float], stereo: bool) -> tuple[str, str]:
    """The music family: the one asked for, or an estimate from the analysis (with the reason)."""
    if asked and asked != "auto":
        if asked not in GENRE_FAMILIES:
            raise ParameterError(f"unknown genre {asked!r}; choose auto or one of {', '.join(GENRE_FAMILIES)}")
        return asked, "chosen"
    sub, lra, plr = f["sub_db"], f["lra_lu"], f["plr_db"]
    wide_low = stereo and f["low_correlation"] < 0.6
    if (lra >= 9.0 or (np.isfinite(plr) and plr >= 17.0)) and sub < -8.0:
        return "acoustic-orchestral", f"wide dynamics (LRA {lra:.1f} LU) and little sub-bass ({sub:.0f} dB)"
    if sub < -12.0 and wide_low and lra >= 5.0:
        return "acoustic-orchestral", f"little sub-bass ({sub:.0f} dB), a wide low end and LRA {lra:.1f} LU"
    if sub > -3.0 and lra < 7.0:
        if f["air_db"] < -22.0:
            return "hip-hop", f"heavy sub-bass ({sub:+.0f} dB) and a dark top ({f['air_db']:.0f} dB)"
        return "electronic", f"strong sub-bass ({sub:+.0f} dB) and a steady level (LRA {lra:.1f} LU)"
    return "rock-pop", f"sub-bass {sub:+.0f} dB, LRA {lra:.1f} LU"


def _band_fraction(spec: SpectrumBands, lo_hz: float, hi_hz: float) -> float:
    p = 10 ** (spec.mid_db / 10)
    sel = (spec.centers_hz >= lo_hz) & (spec.centers_hz < hi_hz)
    return float(p[sel].sum() / max(p.sum(), 1e-30))


def _r(x: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in x]


def _hz(f: float) -> str:
    return f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz"
