"""Commands the UI (any thread) sends to the engine; the audio thread applies them.

Each command is a small frozen dataclass validated when it is *built* (on the
sending thread, so a bad value raises :class:`~app.engine.errors.ParameterError`
there and never reaches the audio thread). Heavy objects (a decoded track, a
designed master chain) are built off the audio thread and ride in the command by
reference; the engine takes ownership.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from app.engine.errors import ParameterError

if TYPE_CHECKING:
    from app.engine.playback.master import LiveMasterChain, ThreadedMasterChain
    from app.engine.playback.tracks import Track

Monitor = Literal["source", "master"]

__all__ = [
    "AddTrack",
    "AllNotesOff",
    "Command",
    "Monitor",
    "NoteOff",
    "NoteOn",
    "Pause",
    "Play",
    "RemoveTrack",
    "ResetMeters",
    "Seek",
    "SetGain",
    "SetLoop",
    "SetMasterChain",
    "SetMasterGain",
    "SetMatchGains",
    "SetMonitor",
    "SetMute",
    "SetPan",
    "SetSolo",
    "Stop",
]

#: Gains (dB) accepted by every gain command.
MIN_GAIN_DB = -144.0
MAX_GAIN_DB = 24.0


def _gain(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and MIN_GAIN_DB <= value <= MAX_GAIN_DB):
        raise ParameterError(f"{name} must be a finite dB value within {MIN_GAIN_DB:g}..{MAX_GAIN_DB:g}, got {value!r}")


def _frame(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ParameterError(f"{name} must be a frame index >= 0, got {value!r}")


def _track_id(value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ParameterError(f"track_id must be a non-empty string, got {value!r}")


@dataclass(frozen=True, slots=True)
class Play:
    """Start (or resume) playback from the current position."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop advancing; the position stays. Held MIDI notes are released."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Pause and return to ``return_frame`` (default 0)."""

    return_frame: int = 0

    def __post_init__(self) -> None:
        _frame("return_frame", self.return_frame)


@dataclass(frozen=True, slots=True)
class Seek:
    """Move the transport to ``frame`` (engine-rate frames from the timeline start)."""

    frame: int

    def __post_init__(self) -> None:
        _frame("frame", self.frame)


@dataclass(frozen=True, slots=True)
class SetLoop:
    """Loop ``[start_frame, end_frame)`` while playing; ``end_frame=None`` turns looping off.

    The loop wraps only when the play position reaches ``end_frame`` from before it
    (a position already past the end plays on, as in most DAWs).
    """

    start_frame: int
    end_frame: int | None

    def __post_init__(self) -> None:
        _frame("start_frame", self.start_frame)
        if self.end_frame is not None:
            _frame("end_frame", self.end_frame)
            if self.end_frame <= self.start_frame:
                raise ParameterError("loop end_frame must be after start_frame")


@dataclass(frozen=True, slots=True)
class AddTrack:
    """Add ``track`` (replacing a track with the same id). Build it off the audio thread."""

    track: Track


@dataclass(frozen=True, slots=True)
class RemoveTrack:
    """Remove a track; its buffers are released off the audio thread (see ``Engine.collect``)."""

    track_id: str

    def __post_init__(self) -> None:
        _track_id(self.track_id)


@dataclass(frozen=True, slots=True)
class SetGain:
    """Track fader in dB (ramped over ``RAMP_MS``, no zipper noise)."""

    track_id: str
    gain_db: float

    def __post_init__(self) -> None:
        _track_id(self.track_id)
        _gain("gain_db", self.gain_db)


@dataclass(frozen=True, slots=True)
class SetPan:
    """Track pan, -1 (left) .. +1 (right)."""

    track_id: str
    pan: float

    def __post_init__(self) -> None:
        _track_id(self.track_id)
        if not (isinstance(self.pan, int | float) and -1.0 <= self.pan <= 1.0):
            raise ParameterError(f"pan must be within -1..1, got {self.pan!r}")


@dataclass(frozen=True, slots=True)
class SetMute:
    track_id: str
    muted: bool

    def __post_init__(self) -> None:
        _track_id(self.track_id)


@dataclass(frozen=True, slots=True)
class SetSolo:
    """Solo a track; solo is scoped by role (a soloed source track mutes the other
    source tracks, not the master takes)."""

    track_id: str
    soloed: bool

    def __post_init__(self) -> None:
        _track_id(self.track_id)


@dataclass(frozen=True, slots=True)
class SetMonitor:
    """A/B: ``"source"`` plays the source tracks dry; ``"master"`` plays the master takes
    if any, else the source mix through the live master chain (crossfaded, time-aligned)."""

    monitor: Monitor

    def __post_init__(self) -> None:
        if self.monitor not in ("source", "master"):
            raise ParameterError(f"monitor must be 'source' or 'master', got {self.monitor!r}")


@dataclass(frozen=True, slots=True)
class SetMatchGains:
    """Loudness-match gains (dB, usually <= 0) applied to the source and master sides.

    See :func:`app.engine.playback.match_gains_db`.
    """

    source_db: float
    master_db: float

    def __post_init__(self) -> None:
        _gain("source_db", self.source_db)
        _gain("master_db", self.master_db)


@dataclass(frozen=True, slots=True)
class SetMasterChain:
    """Install a live master chain (built off the audio thread) or remove it (``None``).

    For playback on a device prefer a :class:`ThreadedMasterChain` (steady callbacks);
    offline bounces use a plain :class:`LiveMasterChain` (same output, no slack).
    """

    chain: LiveMasterChain | ThreadedMasterChain | None


@dataclass(frozen=True, slots=True)
class SetMasterGain:
    """Master fader in dB (after the A/B selection, before the meters)."""

    gain_db: float

    def __post_init__(self) -> None:
        _gain("gain_db", self.gain_db)


@dataclass(frozen=True, slots=True)
class NoteOn:
    """Play a note on a MIDI track's synth now (live keys/pads)."""

    track_id: str
    pitch: int
    velocity: int

    def __post_init__(self) -> None:
        _track_id(self.track_id)
        if not (0 <= self.pitch <= 127 and 1 <= self.velocity <= 127):
            raise ParameterError("pitch must be 0..127 and velocity 1..127")


@dataclass(frozen=True, slots=True)
class NoteOff:
    track_id: str
    pitch: int

    def __post_init__(self) -> None:
        _track_id(self.track_id)
        if not 0 <= self.pitch <= 127:
            raise ParameterError("pitch must be 0..127")


@dataclass(frozen=True, slots=True)
class AllNotesOff:
    """Release every note of one MIDI track, or of all of them (``track_id=None``)."""

    track_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResetMeters:
    """Clear the meters' peak holds and loudness history."""


Command = (
    Play | Pause | Stop | Seek | SetLoop | AddTrack | RemoveTrack | SetGain | SetPan | SetMute
    | SetSolo | SetMonitor | SetMatchGains | SetMasterChain | SetMasterGain | NoteOn | NoteOff
    | AllNotesOff | ResetMeters
)  # fmt: skip
