"""MIDI clips: the note model shared with the piano roll, MIDI file import/export, JSON.

Units
    Musical time is in **beats**, and a beat is always a quarter note (the MIDI
    convention: ticks per beat are ticks per quarter note, and tempo is in
    quarter notes per minute whatever the time signature).  Time in seconds
    appears only where the tempo map has been applied (:func:`beats_to_seconds`,
    :meth:`MidiClip.to_note_array`).

The model
    :class:`Note` and :class:`MidiClip` are frozen value objects: editing a clip
    means building a new one (:func:`dataclasses.replace`), which is what makes
    the piano roll's undo exact.

Files
    :func:`read_midi` parses Standard MIDI Files with mido and pairs note-on/off
    itself, so it keeps the MIDI channel and the exact tick of every event;
    note positions in beats are ``tick / ticks_per_beat`` and therefore exact
    under any tempo map.  Every way a file can be unusable becomes one
    :class:`MidiFileError` line naming the file.  :func:`write_midi` writes a
    format-1 file atomically (temporary file, fsync, rename) and refuses to
    overwrite an existing file or a protected input unless forced.

The engine's synth receives :meth:`MidiClip.to_note_array` (plain numpy), since
``app.engine`` may not import this package.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mido
import numpy as np

from app.engine.audio_io import check_output_path
from app.engine.errors import AudioInputError, AudioOutputError, ParameterError

__all__ = [
    "CLIP_FORMAT",
    "CLIP_FORMAT_VERSION",
    "DEFAULT_TICKS_PER_BEAT",
    "DRUM_CHANNEL",
    "MAX_MIDI_FILE_BYTES",
    "NOTE_ARRAY_DTYPE",
    "NOTE_FRAMES_DTYPE",
    "MidiClip",
    "MidiFileError",
    "Note",
    "beats_to_seconds",
    "clip_from_dict",
    "clip_to_dict",
    "pitch_name",
    "quantize",
    "read_midi",
    "seconds_to_beats",
    "write_midi",
]

DRUM_CHANNEL = 9  # General MIDI channel 10, counted from 0
DEFAULT_TICKS_PER_BEAT = 960
MAX_MIDI_FILE_BYTES = 32 * 1024 * 1024  # far above any real SMF; guards against garbage input
MIN_TEMPO_BPM = 1.0
MAX_TEMPO_BPM = 1000.0
CLIP_FORMAT = "amc.midi_clip"
CLIP_FORMAT_VERSION = 1

#: What :meth:`MidiClip.to_note_array` returns: one row per note, sorted by start.
NOTE_ARRAY_DTYPE = np.dtype(
    [
        ("start_s", np.float64),
        ("end_s", np.float64),
        ("pitch", np.int16),
        ("velocity", np.int16),
        ("channel", np.int16),
    ]
)
#: :data:`NOTE_ARRAY_DTYPE` plus sample positions, when a sample rate is given.
NOTE_FRAMES_DTYPE = np.dtype(
    [*NOTE_ARRAY_DTYPE.descr, ("start_frame", np.int64), ("end_frame", np.int64)]
)

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


class MidiFileError(AudioInputError):
    """A MIDI file cannot be used: missing, empty, not MIDI, corrupt or truncated."""


def pitch_name(pitch: int) -> str:
    """Name a MIDI pitch with middle C (60) as ``C4``, e.g. ``61 -> "C#4"``."""
    return f"{_NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Note:
    """One note.

    Parameters
    ----------
    pitch : int
        MIDI note number, 0..127 (60 = middle C, ``C4``).
    start_beats : float
        Onset from the start of the clip, in beats (quarter notes), >= 0.
    length_beats : float
        Duration in beats, > 0.
    velocity : int
        MIDI velocity, 1..127.
    channel : int, optional
        MIDI channel 0..15 (9 is the General MIDI drum channel).
    """

    pitch: int
    start_beats: float
    length_beats: float
    velocity: int
    channel: int = 0

    def __post_init__(self) -> None:
        _check_int("pitch", self.pitch, 0, 127)
        _check_int("velocity", self.velocity, 1, 127)
        _check_int("channel", self.channel, 0, 15)
        if not (math.isfinite(self.start_beats) and self.start_beats >= 0):
            raise ParameterError(
                f"note start must be a finite number of beats >= 0, got {self.start_beats!r}"
            )
        if not (math.isfinite(self.length_beats) and self.length_beats > 0):
            raise ParameterError(
                f"note length must be a finite number of beats > 0, got {self.length_beats!r}"
            )

    @property
    def end_beats(self) -> float:
        """The note's end, in beats from the clip start."""
        return self.start_beats + self.length_beats


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be an integer {lo}..{hi}, got {value!r}")


@dataclass(frozen=True, slots=True)
class MidiClip:
    """A named sequence of notes with its tempo, meter and instrument.

    Parameters
    ----------
    name : str
        Shown in the UI; for an imported file, the track's name.
    notes : sequence of Note
        Stored as a tuple in the order given.
    tempo_bpm : float, optional
        Tempo at beat 0, in quarter notes per minute (1..1000).
    time_signature : (int, int), optional
        Numerator and denominator (a power of two, 1..64), e.g. ``(6, 8)``.
    program : int, optional
        General MIDI program 0..127 (0 = Acoustic Grand Piano); for a drum clip,
        the drum kit.
    is_drum : bool, optional
        The clip plays on the GM drum channel; pitches are drum sounds.
    tempo_changes : sequence of (float, float), optional
        Later tempo changes as ``(start_beats, tempo_bpm)``, strictly increasing
        start beats > 0.  Empty for a constant tempo.
    """

    name: str = "Clip"
    notes: tuple[Note, ...] = ()
    tempo_bpm: float = 120.0
    time_signature: tuple[int, int] = (4, 4)
    program: int = 0
    is_drum: bool = False
    tempo_changes: tuple[tuple[float, float], ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ParameterError(f"clip name must be a string, got {self.name!r}")
        notes = tuple(self.notes)
        for note in notes:
            if not isinstance(note, Note):
                raise ParameterError(f"clip notes must be Note objects, got {note!r}")
        object.__setattr__(self, "notes", notes)
        _check_tempo(self.tempo_bpm)
        object.__setattr__(self, "tempo_bpm", float(self.tempo_bpm))
        try:
            num, den = self.time_signature
        except (TypeError, ValueError):
            raise ParameterError(
                f"time signature must be (numerator, denominator), got {self.time_signature!r}"
            ) from None
        _check_int("time signature numerator", num, 1, 64)
        _check_int("time signature denominator", den, 1, 64)
        if den & (den - 1):
            raise ParameterError(f"time signature denominator must be a power of two, got {den}")
        object.__setattr__(self, "time_signature", (int(num), int(den)))
        _check_int("program", self.program, 0, 127)
        object.__setattr__(self, "is_drum", bool(self.is_drum))
        changes: list[tuple[float, float]] = []
        last = 0.0
        for item in self.tempo_changes:
            try:
                beat, bpm = (float(v) for v in item)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"tempo changes must be (start_beats, tempo_bpm) pairs, got {item!r}"
                ) from None
            if not (math.isfinite(beat) and beat > last):
                raise ParameterError(
                    f"tempo change beats must be finite, > 0 and strictly increasing, got {beat!r}"
                )
            _check_tempo(bpm)
            changes.append((beat, bpm))
            last = beat
        object.__setattr__(self, "tempo_changes", tuple(changes))

    @property
    def beats_per_bar(self) -> float:
        """Length of one bar in beats (quarter notes), e.g. 3.0 for 6/8."""
        num, den = self.time_signature
        return num * 4.0 / den

    @property
    def end_beats(self) -> float:
        """End of the last note, in beats (0.0 for an empty clip)."""
        return max((n.end_beats for n in self.notes), default=0.0)

    def duration_s(self) -> float:
        """Time from the clip start to the end of its last note, in seconds."""
        return float(
            beats_to_seconds(self.end_beats, self.tempo_bpm, tempo_changes=self.tempo_changes)
        )

    def to_note_array(self, sample_rate_hz: int | None = None) -> np.ndarray:
        """The notes in seconds (and samples), as the engine's synth consumes them.

        Parameters
        ----------
        sample_rate_hz : int, optional
            When given, the rows also carry ``start_frame``/``end_frame``
            (rounded sample positions at this rate).

        Returns
        -------
        numpy.ndarray
            Structured array of shape ``(notes,)`` with dtype
            :data:`NOTE_ARRAY_DTYPE` (``start_s``, ``end_s`` in seconds from
            the clip start, ``pitch``, ``velocity``, ``channel``), or
            :data:`NOTE_FRAMES_DTYPE` with a sample rate; sorted by start, then
            pitch.  A drum clip's notes are on :data:`DRUM_CHANNEL`.
        """
        if sample_rate_hz is not None:
            _check_int("sample rate (Hz)", sample_rate_hz, 1, 10_000_000)
        dtype = NOTE_ARRAY_DTYPE if sample_rate_hz is None else NOTE_FRAMES_DTYPE
        order = sorted(self.notes, key=lambda n: (n.start_beats, n.pitch))
        out = np.zeros(len(order), dtype=dtype)
        if not order:
            return out
        starts = np.array([n.start_beats for n in order])
        ends = np.array([n.end_beats for n in order])
        out["start_s"] = beats_to_seconds(starts, self.tempo_bpm, tempo_changes=self.tempo_changes)
        out["end_s"] = beats_to_seconds(ends, self.tempo_bpm, tempo_changes=self.tempo_changes)
        out["pitch"] = [n.pitch for n in order]
        out["velocity"] = [n.velocity for n in order]
        out["channel"] = [DRUM_CHANNEL if self.is_drum else n.channel for n in order]
        if sample_rate_hz is not None:
            out["start_frame"] = np.round(out["start_s"] * sample_rate_hz).astype(np.int64)
            # At least one frame long, so a very short note still sounds.
            out["end_frame"] = np.maximum(
                np.round(out["end_s"] * sample_rate_hz).astype(np.int64), out["start_frame"] + 1
            )
        return out


def _check_tempo(bpm: object) -> None:
    if (
        isinstance(bpm, bool)
        or not isinstance(bpm, int | float | np.integer | np.floating)
        or not (MIN_TEMPO_BPM <= float(bpm) <= MAX_TEMPO_BPM)
    ):
        raise ParameterError(f"tempo must be {MIN_TEMPO_BPM:g}..{MAX_TEMPO_BPM:g} bpm, got {bpm!r}")


# --------------------------------------------------------------------------- tempo map


def _segments(
    tempo_bpm: float, tempo_changes: Sequence[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment starts in beats and seconds, and seconds per beat of each segment."""
    _check_tempo(tempo_bpm)
    beats = [0.0]
    spb = [60.0 / float(tempo_bpm)]
    for beat, bpm in tempo_changes:
        _check_tempo(bpm)
        if not beat > beats[-1]:
            raise ParameterError("tempo change beats must be > 0 and strictly increasing")
        beats.append(float(beat))
        spb.append(60.0 / float(bpm))
    b = np.asarray(beats)
    s_per_beat = np.asarray(spb)
    secs = np.concatenate([[0.0], np.cumsum(np.diff(b) * s_per_beat[:-1])])
    return b, secs, s_per_beat


def beats_to_seconds(
    beats: float | np.ndarray,
    tempo_bpm: float,
    *,
    tempo_changes: Sequence[tuple[float, float]] = (),
) -> float | np.ndarray:
    """Convert a position in beats (quarter notes) to seconds under a tempo map.

    Parameters
    ----------
    beats : float or numpy.ndarray
        Position(s) in beats from beat 0, >= 0.
    tempo_bpm : float
        Tempo at beat 0, in quarter notes per minute.
    tempo_changes : sequence of (float, float), optional
        Later ``(start_beats, tempo_bpm)`` changes, strictly increasing.

    Returns
    -------
    float or numpy.ndarray
        Seconds from beat 0, the same shape as ``beats``.
    """
    b0, s0, spb = _segments(tempo_bpm, tempo_changes)
    x = np.asarray(beats, dtype=np.float64)
    idx = np.clip(np.searchsorted(b0, x, side="right") - 1, 0, None)
    out = s0[idx] + (x - b0[idx]) * spb[idx]
    return float(out) if out.ndim == 0 else out


def seconds_to_beats(
    seconds: float | np.ndarray,
    tempo_bpm: float,
    *,
    tempo_changes: Sequence[tuple[float, float]] = (),
) -> float | np.ndarray:
    """Convert a time in seconds to a position in beats; the inverse of :func:`beats_to_seconds`.

    Parameters
    ----------
    seconds : float or numpy.ndarray
        Time(s) in seconds from beat 0, >= 0.
    tempo_bpm : float
        Tempo at beat 0, in quarter notes per minute.
    tempo_changes : sequence of (float, float), optional
        Later ``(start_beats, tempo_bpm)`` changes, strictly increasing.

    Returns
    -------
    float or numpy.ndarray
        Position(s) in beats, the same shape as ``seconds``.
    """
    b0, s0, spb = _segments(tempo_bpm, tempo_changes)
    t = np.asarray(seconds, dtype=np.float64)
    idx = np.clip(np.searchsorted(s0, t, side="right") - 1, 0, None)
    out = b0[idx] + (t - s0[idx]) / spb[idx]
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- editing


def quantize(
    notes: Iterable[Note],
    grid_beats: float,
    strength: float = 1.0,
    *,
    ends: bool = False,
) -> list[Note]:
    """Move note starts toward the nearest grid line.

    Parameters
    ----------
    notes : iterable of Note
        The notes to quantize; the order is kept.
    grid_beats : float
        Grid spacing in beats, > 0 (0.25 = sixteenth notes, 1/3 = eighth triplets).
    strength : float, optional
        0..1: the fraction of the distance to the grid line each start moves
        (1 = fully on the grid, 0 = unchanged).
    ends : bool, optional
        Also move note ends toward the grid (a note never becomes shorter
        than ``strength * grid_beats`` when its end would fall on its start);
        otherwise lengths are kept.

    Returns
    -------
    list of Note
        New notes; with ``strength=1`` quantizing twice gives the same result.
    """
    if not (math.isfinite(grid_beats) and grid_beats > 0):
        raise ParameterError(f"quantize grid must be > 0 beats, got {grid_beats!r}")
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ParameterError(f"quantize strength must be 0..1, got {strength!r}")
    out: list[Note] = []
    for note in notes:
        if strength == 0.0:
            out.append(note)
            continue
        # Full strength lands exactly on k * grid (no blend arithmetic), so a second pass
        # finds the same k and quantizing is idempotent.
        k_start = round(note.start_beats / grid_beats)
        new_start = _toward(note.start_beats, k_start * grid_beats, strength)
        if ends:
            k_end = max(round(note.end_beats / grid_beats), k_start + 1)
            new_end = _toward(note.end_beats, k_end * grid_beats, strength)
            length = new_end - new_start
            if length <= 0:  # strength < 1 with a tiny note: keep it audible
                length = note.length_beats
        else:
            length = note.length_beats
        out.append(
            Note(note.pitch, float(max(new_start, 0.0)), float(length), note.velocity, note.channel)
        )
    return out


def _toward(value: float, target: float, strength: float) -> float:
    return target if strength == 1.0 else value + strength * (target - value)


# --------------------------------------------------------------------------- reading


def _fail(path: Path, reason: str) -> MidiFileError:
    return MidiFileError(f"Cannot read MIDI file {path.name}: {reason}.")


def read_midi(path: str | os.PathLike[str]) -> list[MidiClip]:
    """Read a Standard MIDI File into one clip per instrument.

    An *instrument* is a (track, channel, program) combination, as in
    pretty_midi: a track that plays two channels, or changes program, gives
    several clips.  Every clip carries the file's tempo map and first time
    signature.  Note positions are exact (``tick / ticks_per_beat``); a note
    whose note-off lands on its note-on tick is kept one tick long, and a note
    left sounding at the end of its track ends at the track's last event.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.mid``/``.midi`` file.

    Returns
    -------
    list of MidiClip
        In track order, then by channel and program; empty when the file is
        valid but holds no notes.

    Raises
    ------
    MidiFileError
        The file is missing, empty, too large, not a MIDI file, corrupt,
        truncated, or uses SMPTE time (unsupported).  The message names the
        file and the reason.
    """
    p = Path(path)
    if not p.exists():
        raise _fail(p, "the file does not exist")
    if not p.is_file():
        raise _fail(p, "it is not a file")
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(14)
    except OSError as exc:
        raise _fail(p, exc.strerror or str(exc)) from exc
    if size == 0:
        raise _fail(p, "the file is empty")
    if size > MAX_MIDI_FILE_BYTES:
        raise _fail(p, f"the file is {size / 2**20:.0f} MiB, larger than any real MIDI file")
    if head[:4] != b"MThd":
        what = (
            "a RIFF (RMID) container, not a plain MIDI file"
            if head[:4] == b"RIFF"
            else "not a MIDI file (no MThd header)"
        )
        raise _fail(p, what)
    declared = _check_header(p, head, size)
    try:
        mid = mido.MidiFile(p, clip=False)
    except EOFError as exc:
        raise _fail(p, "the file is truncated (it ends inside a chunk)") from exc
    except Exception as exc:  # mido raises OSError/ValueError/KeyError/IndexError on garbage
        raise _fail(p, f"the file is corrupt ({_describe(exc)})") from exc
    _check_track_count(p, declared, len(mid.tracks))
    ppq = mid.ticks_per_beat
    if not isinstance(ppq, int) or ppq <= 0 or ppq >= 0x8000:
        raise _fail(p, "it uses SMPTE time code instead of beats, which is not supported")
    if mid.type == 2:
        raise _fail(p, "it is a format-2 file (independent sequences), which is not supported")
    tempo_bpm, changes = _tempo_map(mid, ppq)
    time_sig = _first_time_signature(mid)
    clips: list[MidiClip] = []
    for index, track in enumerate(mid.tracks):
        clips.extend(_track_clips(p, index, track, ppq, tempo_bpm, changes, time_sig))
    return clips


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _tempo_map(mid: mido.MidiFile, ppq: int) -> tuple[float, tuple[tuple[float, float], ...]]:
    events: dict[int, float] = {}
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo" and msg.tempo > 0:
                events[tick] = _tempo_to_bpm(msg.tempo)  # the last one at a tick wins
    initial = events.pop(0, 120.0)
    initial = min(max(initial, MIN_TEMPO_BPM), MAX_TEMPO_BPM)
    changes: list[tuple[float, float]] = []
    current = initial
    for tick in sorted(events):
        bpm = min(max(events[tick], MIN_TEMPO_BPM), MAX_TEMPO_BPM)
        if bpm != current:
            changes.append((tick / ppq, bpm))
            current = bpm
    return initial, tuple(changes)


def _tempo_to_bpm(tempo_us: int) -> float:
    """Tempo in bpm from microseconds per beat, the shortest decimal that maps back to it.

    Files store whole microseconds, so 123 bpm is written as 487 805 us; reading
    it back as 123.0 rather than 122.99997 keeps what the user typed.
    """
    exact = 60_000_000.0 / tempo_us
    for digits in range(4):
        candidate = round(exact, digits)
        if candidate > 0 and round(60_000_000.0 / candidate) == tempo_us:
            return candidate
    return exact


def _check_header(path: Path, head: bytes, size: int) -> int:
    """Check the MThd chunk before mido sees it; return the number of tracks it announces."""
    if len(head) < 14:
        raise _fail(path, "the file is truncated (the header is incomplete)")
    length = int.from_bytes(head[4:8], "big")
    fmt = int.from_bytes(head[8:10], "big")
    if not 6 <= length <= size - 8 or fmt > 2:
        raise _fail(path, "the file is corrupt (invalid MThd header)")
    return int.from_bytes(head[10:12], "big")


def _check_track_count(path: Path, declared: int, tracks_found: int) -> None:
    # mido stops quietly at the end of the file, so a lost track is only seen here.
    if tracks_found < declared:
        raise _fail(
            path,
            f"the file is truncated (its header announces {declared} tracks, {tracks_found} found)",
        )


def _first_time_signature(mid: mido.MidiFile) -> tuple[int, int]:
    best: tuple[int, tuple[int, int]] | None = None
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "time_signature":
                sig = (int(msg.numerator), int(msg.denominator))
                valid = 1 <= sig[0] <= 64 and 1 <= sig[1] <= 64 and not sig[1] & (sig[1] - 1)
                if valid and (best is None or tick < best[0]):
                    best = (tick, sig)
                break
    return best[1] if best else (4, 4)


def _track_clips(
    path: Path,
    index: int,
    track: mido.MidiTrack,
    ppq: int,
    tempo_bpm: float,
    changes: tuple[tuple[float, float], ...],
    time_sig: tuple[int, int],
) -> list[MidiClip]:
    program = [0] * 16
    # (channel, pitch) -> sounding notes as [(start tick, velocity, program)], oldest first
    open_notes: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    found: dict[tuple[int, int], list[Note]] = {}  # (channel, program) -> notes
    track_name = ""
    tick = 0

    def close(ch: int, pitch: int, end: int) -> None:
        start, vel, prog = open_notes[(ch, pitch)].pop(0)  # first on, first off
        length = max(end - start, 1)
        found.setdefault((ch, prog), []).append(Note(pitch, start / ppq, length / ppq, vel, ch))

    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "track_name" and not track_name:
            track_name = str(msg.name).strip()
        elif kind == "program_change":
            program[msg.channel] = msg.program
        elif kind == "note_on" and msg.velocity > 0:
            open_notes.setdefault((msg.channel, msg.note), []).append(
                (tick, msg.velocity, program[msg.channel])
            )
        elif kind in ("note_off", "note_on"):
            if open_notes.get((msg.channel, msg.note)):
                close(msg.channel, msg.note, tick)
    for (ch, pitch), pending in list(open_notes.items()):
        while pending:
            close(ch, pitch, tick)
    base = track_name or f"{path.stem} track {index + 1}"
    clips = []
    keys = sorted(found)
    for ch, prog in keys:
        name = base if len(keys) == 1 else f"{base} (ch {ch + 1}, program {prog})"
        notes = sorted(found[(ch, prog)], key=lambda n: (n.start_beats, n.pitch))
        clips.append(
            MidiClip(
                name=name,
                notes=tuple(notes),
                tempo_bpm=tempo_bpm,
                time_signature=time_sig,
                program=prog,
                is_drum=ch == DRUM_CHANNEL,
                tempo_changes=changes,
            )
        )
    return clips


# --------------------------------------------------------------------------- writing


def write_midi(
    path: str | os.PathLike[str],
    clips: Sequence[MidiClip],
    *,
    protect: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    ticks_per_beat: int = DEFAULT_TICKS_PER_BEAT,
) -> Path:
    """Write clips as a format-1 Standard MIDI File, atomically.

    Track 0 holds the tempo map and time signature (from the first clip); each
    clip becomes one named track with a program change.  A drum clip plays on
    :data:`DRUM_CHANNEL`; other clips play on their notes' channels.  Note
    positions are rounded to the nearest tick.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    clips : sequence of MidiClip
        At least one; all must share the same tempo map (a file has one).
    protect : iterable of path-like, optional
        Files that must not be overwritten, e.g. the MIDI file the clips were
        read from.
    force : bool, optional
        Allow replacing an existing file, even a protected one.
    ticks_per_beat : int, optional
        File resolution in ticks per quarter note (24..32767).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ParameterError
        No clips, clips with different tempo maps, a non-drum note on the
        drum channel, or a bad resolution.
    AudioOutputError
        The file exists (without ``force``), is protected, or the folder is
        missing or not writable.
    """
    clips = list(clips)
    if not clips:
        raise ParameterError("write_midi needs at least one clip")
    _check_int("ticks per beat", ticks_per_beat, 24, 0x7FFF)
    first = clips[0]
    for clip in clips[1:]:
        if (clip.tempo_bpm, clip.tempo_changes) != (first.tempo_bpm, first.tempo_changes):
            raise ParameterError(
                f"clips {first.name!r} and {clip.name!r} have different tempos; "
                "a MIDI file has one tempo map"
            )
    for clip in clips:
        if not clip.is_drum and any(n.channel == DRUM_CHANNEL for n in clip.notes):
            raise ParameterError(
                f"clip {clip.name!r} is not a drum clip but has notes on channel 10 (the drum channel)"
            )
    target = check_output_path(path, protect=protect, force=force)
    mid = _build_file(clips, ticks_per_beat)
    temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with temp.open("wb") as fh:
            mid.save(file=fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except OSError as exc:
        raise AudioOutputError(f"Cannot write {target}: {exc.strerror or exc}.") from exc
    finally:
        if temp.exists():
            temp.unlink()
    if os.name != "nt":  # make the rename itself durable; Windows cannot fsync folders
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target


def _build_file(clips: Sequence[MidiClip], ppq: int) -> mido.MidiFile:
    first = clips[0]
    mid = mido.MidiFile(type=1, ticks_per_beat=ppq)
    conductor: list[tuple[int, int, mido.MetaMessage]] = [
        (
            0,
            0,
            mido.MetaMessage(
                "time_signature",
                numerator=first.time_signature[0],
                denominator=first.time_signature[1],
                time=0,
            ),
        ),
        (0, 1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(first.tempo_bpm), time=0)),
    ]
    for beat, bpm in first.tempo_changes:
        conductor.append(
            (round(beat * ppq), 1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        )
    mid.tracks.append(_to_track(conductor))
    for clip in clips:
        events: list[tuple[int, int, mido.Message | mido.MetaMessage]] = [
            (0, 0, mido.MetaMessage("track_name", name=clip.name))
        ]
        channels = {DRUM_CHANNEL} if clip.is_drum else {n.channel for n in clip.notes} or {0}
        for ch in sorted(channels):
            events.append((0, 1, mido.Message("program_change", channel=ch, program=clip.program)))
        for n in clip.notes:
            ch = DRUM_CHANNEL if clip.is_drum else n.channel
            on = round(n.start_beats * ppq)
            off = max(round(n.end_beats * ppq), on + 1)
            # Sort key 2 (off) before 3 (on) at one tick, so a repeated pitch retriggers cleanly.
            events.append(
                (on, 3, mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity))
            )
            events.append((off, 2, mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
        mid.tracks.append(_to_track(events))
    return mid


def _to_track(events: list[tuple[int, int, Any]]) -> mido.MidiTrack:
    track = mido.MidiTrack()
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


# --------------------------------------------------------------------------- JSON


def clip_to_dict(clip: MidiClip) -> dict[str, Any]:
    """A JSON-ready description of a clip for project files.

    Returns
    -------
    dict
        ``{"format": "amc.midi_clip", "version": 1, "name", "tempo_bpm",
        "tempo_changes": [[beats, bpm], ...], "time_signature": [num, den],
        "program", "is_drum", "notes": [{"pitch", "start_beats",
        "length_beats", "velocity", "channel"}, ...]}``.
    """
    return {
        "format": CLIP_FORMAT,
        "version": CLIP_FORMAT_VERSION,
        "name": clip.name,
        "tempo_bpm": clip.tempo_bpm,
        "tempo_changes": [[b, bpm] for b, bpm in clip.tempo_changes],
        "time_signature": list(clip.time_signature),
        "program": clip.program,
        "is_drum": clip.is_drum,
        "notes": [
            {
                "pitch": n.pitch,
                "start_beats": n.start_beats,
                "length_beats": n.length_beats,
                "velocity": n.velocity,
                "channel": n.channel,
            }
            for n in clip.notes
        ],
    }


def clip_from_dict(data: Mapping[str, Any]) -> MidiClip:
    """Rebuild a clip from :func:`clip_to_dict` output (e.g. parsed from project.json).

    Raises
    ------
    ParameterError
        Not a clip description, a newer format version, or invalid values;
        the message says which field.
    """
    if not isinstance(data, Mapping) or data.get("format") != CLIP_FORMAT:
        raise ParameterError(f"not a MIDI clip description (expected format {CLIP_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise ParameterError(f"MIDI clip description has no valid version: {version!r}")
    if version > CLIP_FORMAT_VERSION:
        raise ParameterError(
            f"MIDI clip description is version {version}, newer than this program "
            f"understands ({CLIP_FORMAT_VERSION}); update the program"
        )
    try:
        notes = tuple(
            Note(
                pitch=item["pitch"],
                start_beats=float(item["start_beats"]),
                length_beats=float(item["length_beats"]),
                velocity=item["velocity"],
                channel=item.get("channel", 0),
            )
            for item in data.get("notes", ())
        )
        sig = data.get("time_signature", (4, 4))
        return MidiClip(
            name=data.get("name", "Clip"),
            notes=notes,
            tempo_bpm=data.get("tempo_bpm", 120.0),
            time_signature=(sig[0], sig[1]),
            program=data.get("program", 0),
            is_drum=bool(data.get("is_drum", False)),
            tempo_changes=tuple((b, bpm) for b, bpm in data.get("tempo_changes", ())),
        )
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"invalid MIDI clip description: {_describe(exc)}") from exc
