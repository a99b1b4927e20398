"""The mastering plan: every decision of the chain as explicit, editable, JSON-safe data.

A :class:`MasteringPlan` is made by :func:`app.engine.mastering.planner.make_plan` from
an analysis of the input (and references), can be saved, edited by hand or in the UI,
and rendered again with exactly the same result.  Nothing in the renderer decides
anything that is not written here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Self

from app.engine.errors import ParameterError

PLAN_VERSION = 1


@dataclass(frozen=True)
class Target:
    """A delivery spec: integrated loudness and true-peak ceiling."""

    name: str
    lufs: float
    ceiling_dbtp: float
    description: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("streaming", -14.0, -1.0, "Spotify, YouTube, Tidal: -14 LUFS, -1 dBTP"),
        Target("apple", -16.0, -1.0, "Apple Music / iTunes Sound Check: -16 LUFS, -1 dBTP"),
        Target("amazon", -14.0, -2.0, "Amazon Music: -14 LUFS, -2 dBTP"),
        Target("deezer", -15.0, -1.0, "Deezer: -15 LUFS, -1 dBTP"),
        Target("broadcast", -23.0, -1.0, "EBU R128 broadcast: -23 LUFS, -1 dBTP"),
        Target("club", -8.0, -0.3, "Club / DJ play: -8 LUFS, -0.3 dBTP"),
    )
}

STYLES: dict[str, str] = {
    "balanced": "Even tonal balance, moderate glue; the safe default.",
    "warm": "Fuller lows and low mids, softened top end, slower compression.",
    "bright": "More presence and air, tighter lows.",
    "punchy": "Kick and snare forward: slower attack, firmer ratio, mud cut.",
    "professional": "Transparent: small corrective moves only, gentle dynamics.",
    "creative": "Bold: wider image, more lows and air, saturation before the limiter.",
}


@dataclass(frozen=True)
class Amounts:
    """How far the chain goes, per dimension, in percent (0 = off, 100 = full)."""

    eq_pct: float
    dynamics_pct: float
    width_pct: float

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 200.0:
                raise ParameterError(f"{f.name.removesuffix('_pct')} amount must be 0-200 %, got {v}")


LEVELS: dict[str, Amounts] = {
    "light": Amounts(eq_pct=40.0, dynamics_pct=35.0, width_pct=30.0),
    "moderate": Amounts(eq_pct=70.0, dynamics_pct=65.0, width_pct=60.0),
    "aggressive": Amounts(eq_pct=100.0, dynamics_pct=100.0, width_pct=100.0),
}

#: Largest EQ move (dB) per level; reference matching is capped at REFERENCE_MAX_MOVE_DB.
LEVEL_MAX_EQ_DB = {"light": 2.5, "moderate": 4.0, "aggressive": 6.0}
REFERENCE_MAX_MOVE_DB = 12.0


# ---------------------------------------------------------------------------- stages


@dataclass
class FilterStage:
    """DC removal and sub-sonic high-pass (folded into the linear-phase EQ filter)."""

    highpass_hz: float = 20.0


@dataclass
class EqStage:
    """Linear-phase EQ, mid and side separately, as gains at band centres.

    ``freqs_hz`` are 1/3-octave centres; ``mid_gain_db``/``side_gain_db`` the moves
    at those centres (interpolated in log-frequency between them).
    """

    enabled: bool = True
    mode: str = "style"  # "style" | "reference" | "off"
    freqs_hz: list[float] = field(default_factory=list)
    mid_gain_db: list[float] = field(default_factory=list)
    side_gain_db: list[float] = field(default_factory=list)
    max_move_db: float = 4.0


@dataclass
class CompressorStage:
    """Stereo-linked RMS glue compressor on the bus."""

    enabled: bool = True
    threshold_db: float = -20.0
    ratio: float = 2.0
    attack_ms: float = 20.0
    release_ms: float = 150.0
    knee_db: float = 6.0
    makeup_db: float = 0.0
    sidechain_hpf_hz: float | None = 90.0
    #: range: the most gain reduction (dB) the glue may apply; None = unlimited
    max_gr_db: float | None = None
    #: the threshold follows the section level (slow RMS, this time constant) ...
    section_window_ms: float | None = None
    #: ... relative to this level (dBFS mean square of the loud passages)
    section_ref_db: float | None = None


@dataclass
class BandStage:
    threshold_db: float = -20.0
    ratio: float = 2.0
    attack_ms: float = 20.0
    release_ms: float = 150.0
    knee_db: float = 6.0
    makeup_db: float = 0.0


@dataclass
class MultibandStage:
    """Optional 3-band (Linkwitz-Riley) compressor."""

    enabled: bool = False
    low_hz: float = 120.0
    high_hz: float = 4000.0
    bands: list[BandStage] = field(default_factory=lambda: [BandStage(), BandStage(), BandStage()])


@dataclass
class ImagerStage:
    """Stereo width (side gain) and mono bass below ``mono_bass_hz`` (folded into the EQ filter)."""

    width: float = 1.0
    mono_bass_hz: float | None = 120.0


@dataclass
class SectionRideStage:
    """Keeps the song's section balance: a slow gain ride (3 s loudness windows, at most
    ``max_db`` either way) that puts each section back at its original distance from the
    rest after EQ and glue changed it (the curve is measured by the renderer)."""

    enabled: bool = False
    max_db: float = 3.0


@dataclass
class SoftClipStage:
    """Optional soft clipper before the limiter (levels relative to the limiter ceiling).

    It runs on the 4x oversampled signal with a band-limited, DC-blocked correction
    (:class:`~app.engine.mastering.dynamics.OversampledClipper`): the fast first stage of
    the peak control, taking single transients off before the limiter has to duck.
    """

    enabled: bool = False
    threshold_db: float = 1.0  # dB above the ceiling where saturation starts
    ceiling_db: float = 3.0  # dB above the ceiling the clipper cannot exceed


@dataclass
class LimiterStage:
    """True-peak look-ahead limiter."""

    ceiling_dbtp: float = -1.0
    lookahead_ms: float = 5.0
    release_ms: float = 120.0
    margin_db: float = 0.05  # detection headroom below the ceiling for meter disagreement
    oversample: int = 4
    #: program-dependent release: recovery time after a short transient (None: one
    #: release, ``release_ms``, for everything)
    transient_release_ms: float | None = None
    #: how fast a sustained reduction builds up (then released over ``release_ms``)
    sustain_ms: float = 250.0


@dataclass
class LoudnessStage:
    """Integrated loudness target; ``gain_db`` is solved by the renderer and recorded.

    With ``guard`` on, the dynamics guard keeps the peak control within its budget
    (limiter reduction at most ``max_limiter_gr_db`` and over 1 dB at most
    ``max_limiter_over_1db_pct`` of the time, measured on 100 ms maxima; the clipper at
    most ``max_clip_db``): when the target needs more, the master lands below the target
    instead of being crushed, and the result says so.  ``guard`` off = loudness first.
    """

    target_lufs: float = -14.0
    tolerance_lu: float = 0.2
    gain_db: float | None = None
    guard: bool = False
    #: recorded by the renderer when the guard landed below the target: the loudness it aimed for
    aim_lufs: float | None = None
    max_limiter_gr_db: float = 3.0
    max_limiter_over_1db_pct: float = 5.0
    max_clip_db: float = 3.0


@dataclass
class OutputStage:
    """Output format; ``dither=None`` is automatic: TPDF on 16-bit, none on 24-bit and float."""

    format: str = "wav24"
    dither: bool | None = None
    noise_shaping: bool = False


@dataclass
class MasteringPlan:
    """Everything the renderer does, in order.  JSON round-trips exactly."""

    sample_rate: int
    channels: int
    target: str = "streaming"
    style: str = "balanced"
    level: str = "moderate"
    amounts: Amounts = field(default_factory=lambda: LEVELS["moderate"])
    filter: FilterStage = field(default_factory=FilterStage)
    eq: EqStage = field(default_factory=EqStage)
    compressor: CompressorStage = field(default_factory=CompressorStage)
    multiband: MultibandStage = field(default_factory=MultibandStage)
    imager: ImagerStage = field(default_factory=ImagerStage)
    section_ride: SectionRideStage = field(default_factory=SectionRideStage)
    soft_clip: SoftClipStage = field(default_factory=SoftClipStage)
    limiter: LimiterStage = field(default_factory=LimiterStage)
    loudness: LoudnessStage = field(default_factory=LoudnessStage)
    output: OutputStage = field(default_factory=OutputStage)
    references: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the music family the tone and dynamics were chosen for (see planner.GENRE_FAMILIES)
    genre: str = ""
    version: int = PLAN_VERSION

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ParameterError("a mastering plan must be a JSON object")
        version = data.get("version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise ParameterError(f"mastering plan version {version} is not supported (expected {PLAN_VERSION})")
        try:
            return _build(cls, data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ParameterError(f"invalid mastering plan: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ParameterError(f"mastering plan is not valid JSON: {exc}") from exc

    def validate(self) -> None:
        """Raise :class:`ParameterError` for values the renderer cannot honour."""
        if not 8000 <= self.sample_rate <= 192000:
            raise ParameterError(f"sample rate {self.sample_rate} Hz is outside 8-192 kHz")
        if self.channels < 1:
            raise ParameterError("a plan needs at least one channel")
        lim = self.limiter
        if not -20.0 <= lim.ceiling_dbtp <= 0.0:
            raise ParameterError(f"true-peak ceiling {lim.ceiling_dbtp} dBTP must be within -20..0")
        if not -40.0 <= self.loudness.target_lufs <= -3.0:
            raise ParameterError(f"loudness target {self.loudness.target_lufs} LUFS must be within -40..-3")
        if lim.lookahead_ms < 0.5 or lim.lookahead_ms > 50 or lim.release_ms <= 0:
            raise ParameterError("limiter look-ahead must be 0.5-50 ms and release > 0 ms")
        if lim.oversample < 4:
            raise ParameterError("true-peak detection needs at least 4x oversampling")
        nyq = self.sample_rate / 2
        if not 0.0 <= self.filter.highpass_hz < min(200.0, nyq / 4):
            raise ParameterError(f"high-pass {self.filter.highpass_hz} Hz must be within 0-200 Hz")
        if len(self.eq.mid_gain_db) != len(self.eq.freqs_hz) or len(self.eq.side_gain_db) != len(self.eq.freqs_hz):
            raise ParameterError("EQ gains must have one value per band frequency")
        for g in self.eq.mid_gain_db:
            if abs(g) > 12.0:
                raise ParameterError(f"EQ move {g:.1f} dB exceeds ±12 dB")
        for g in self.eq.side_gain_db:  # narrowing a too-wide band may cut deeper
            if not -24.0 <= g <= 12.0:
                raise ParameterError(f"side EQ move {g:.1f} dB is outside -24..+12 dB")
        if not 0.0 <= self.imager.width <= 2.0:
            raise ParameterError(f"stereo width {self.imager.width} must be within 0-2")
        if self.compressor.enabled and self.compressor.ratio < 1.0:
            raise ParameterError("compressor ratio must be >= 1")
        if self.compressor.max_gr_db is not None and self.compressor.max_gr_db <= 0:
            raise ParameterError("compressor range (max_gr_db) must be > 0 dB")
        if self.compressor.section_window_ms is not None and self.compressor.section_window_ms <= 0:
            raise ParameterError("compressor section window must be > 0 ms")
        if lim.transient_release_ms is not None and not 0 < lim.transient_release_ms <= lim.release_ms:
            raise ParameterError("limiter transient release must be > 0 and at most its release")
        if lim.sustain_ms <= 0:
            raise ParameterError("limiter sustain time must be > 0 ms")
        if not 0.0 <= self.section_ride.max_db <= 6.0:
            raise ParameterError("section ride range must be 0-6 dB")
        sc = self.soft_clip
        if sc.enabled and not sc.threshold_db < sc.ceiling_db <= 6.0:
            raise ParameterError("soft clip threshold must be below its ceiling (at most 6 dB over the limiter's)")
        ld = self.loudness
        if ld.max_limiter_gr_db <= 0 or ld.max_clip_db < 0 or not 0 <= ld.max_limiter_over_1db_pct <= 100:
            raise ParameterError("dynamics guard budgets must be positive (limiter > 0 dB, 0-100 %)")
        if self.output.format not in ("wav16", "wav24", "wav32f", "flac", "flac16"):
            raise ParameterError(f"unknown output format {self.output.format!r}")


def _build(cls: type, data: Any) -> Any:
    """Recursively build dataclass ``cls`` from plain data, rejecting unknown keys."""
    if not is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} expects an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise KeyError(f"unknown field(s) {sorted(unknown)} in {cls.__name__}")
    kwargs: dict[str, Any] = {}
    hints = _STAGE_TYPES.get(cls.__name__, {})
    for name, value in data.items():
        sub = hints.get(name)
        if sub is not None and isinstance(sub, list):
            kwargs[name] = [_build(sub[0], v) for v in value]
        elif sub is not None:
            kwargs[name] = _build(sub, value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


_STAGE_TYPES: dict[str, dict[str, Any]] = {
    "MasteringPlan": {
        "amounts": Amounts,
        "filter": FilterStage,
        "eq": EqStage,
        "compressor": CompressorStage,
        "multiband": MultibandStage,
        "imager": ImagerStage,
        "section_ride": SectionRideStage,
        "soft_clip": SoftClipStage,
        "limiter": LimiterStage,
        "loudness": LoudnessStage,
        "output": OutputStage,
    },
    "MultibandStage": {"bands": [BandStage]},
}


def resolve_target(name: str, *, lufs: float | None = None, ceiling_dbtp: float | None = None) -> Target:
    """Return the named delivery target; ``custom`` (or overrides) take ``lufs``/``ceiling_dbtp``."""
    if name == "custom":
        if lufs is None or ceiling_dbtp is None:
            raise ParameterError("the custom target needs both --lufs and --ceiling")
        return Target("custom", float(lufs), float(ceiling_dbtp), f"custom: {lufs} LUFS, {ceiling_dbtp} dBTP")
    try:
        base = TARGETS[name]
    except KeyError:
        raise ParameterError(
            f"unknown target {name!r}; choose one of {', '.join([*TARGETS, 'custom'])}"
        ) from None
    if lufs is None and ceiling_dbtp is None:
        return base
    lu = base.lufs if lufs is None else float(lufs)
    tp = base.ceiling_dbtp if ceiling_dbtp is None else float(ceiling_dbtp)
    return Target(base.name, lu, tp, f"{base.name} adjusted: {lu} LUFS, {tp} dBTP")


def resolve_amounts(
    level: str,
    *,
    eq_pct: float | None = None,
    dynamics_pct: float | None = None,
    width_pct: float | None = None,
) -> Amounts:
    """Amounts of a level, with any per-dimension override applied."""
    try:
        base = LEVELS[level]
    except KeyError:
        raise ParameterError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}") from None
    return Amounts(
        eq_pct=base.eq_pct if eq_pct is None else float(eq_pct),
        dynamics_pct=base.dynamics_pct if dynamics_pct is None else float(dynamics_pct),
        width_pct=base.width_pct if width_pct is None else float(width_pct),
    )
