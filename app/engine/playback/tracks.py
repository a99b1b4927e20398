"""Tracks the mixer plays: pre-decoded audio, or notes through the built-in synth.

Build a track on any thread but the audio thread, then hand it over with
``AddTrack``; from then on the engine owns it (the UI changes it only through
commands and reads it only through snapshots).

Pan law
-------
Mono tracks: constant power, -3 dB at centre (``L = cos θ, R = sin θ``,
``θ = (pan + 1) π / 4``). Stereo tracks (and the stereo synth): a balance control
with unity at centre, ``L = min(1, √2 cos θ)``, ``R = min(1, √2 sin θ)``, so a hard
pan keeps the near side at 0 dB and silences the far side.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
from numba import njit

from app.engine.errors import AudioInputError, ParameterError
from app.engine.synth import NoteSequence, SequencePlayer, Synth

__all__ = ["AudioTrack", "MidiTrack", "Role", "Track", "pan_gains"]

Role = Literal["source", "master"]
#: Gain, pan, mute and solo changes ramp linearly over this long (no zipper noise).
RAMP_MS = 10.0


def pan_gains(pan: float, channels: int) -> tuple[float, float]:
    """(left, right) linear gains for ``pan`` -1..1 (see the module's pan law)."""
    th = (float(pan) + 1.0) * math.pi / 4.0
    if channels == 1:
        return math.cos(th), math.sin(th)
    return min(1.0, math.sqrt(2.0) * math.cos(th)), min(1.0, math.sqrt(2.0) * math.sin(th))


# Audio-thread kernels keep the GIL: they take microseconds, while winning the GIL back
# after a release can wait a whole switch interval behind a busy UI thread.
@njit(cache=True)
def _mix_kernel(src, src_start, out, out_start, n, g, target, step):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out[:, out_start + i] += src[c, src_start + i] * g_c, g ramping linearly to target.

    ``src`` is (1 or 2, frames); frames outside it contribute nothing but the ramp
    still advances (so the result does not depend on block boundaries).
    """
    n_src = src.shape[1]
    c1 = 1 if src.shape[0] > 1 else 0
    gl = g[0]
    gr = g[1]
    tl = target[0]
    tr = target[1]
    for i in range(n):
        d = tl - gl
        gl = tl if abs(d) <= step else gl + (step if d > 0 else -step)
        d = tr - gr
        gr = tr if abs(d) <= step else gr + (step if d > 0 else -step)
        j = src_start + i
        if 0 <= j < n_src and (gl != 0.0 or gr != 0.0):
            out[0, out_start + i] += src[0, j] * gl
            out[1, out_start + i] += src[c1, j] * gr
    g[0] = gl
    g[1] = gr


class Track(ABC):
    """What audio and MIDI tracks share: id, role, fader, pan, mute, solo.

    Parameters
    ----------
    track_id : str
        Unique within the engine.
    role : {"source", "master"}, keyword-only
        ``"master"`` marks a master take, heard on the master side of A/B.
    gain_db, pan, muted, soloed : keyword-only
        Initial fader (dB), pan (-1..1), mute and solo.
    start_frame : int, keyword-only
        Where the track starts on the timeline (engine-rate frames).
    """

    kind = "track"

    def __init__(self, track_id: str, *, role: Role = "source", gain_db: float = 0.0, pan: float = 0.0,
                 muted: bool = False, soloed: bool = False, start_frame: int = 0) -> None:  # fmt: skip
        if not isinstance(track_id, str) or not track_id:
            raise ParameterError("track_id must be a non-empty string")
        if role not in ("source", "master"):
            raise ParameterError(f"role must be 'source' or 'master', got {role!r}")
        if not (math.isfinite(gain_db) and -144.0 <= gain_db <= 24.0):
            raise ParameterError(f"gain_db must be within -144..24, got {gain_db!r}")
        if not -1.0 <= pan <= 1.0:
            raise ParameterError(f"pan must be within -1..1, got {pan!r}")
        if int(start_frame) < 0:
            raise ParameterError("start_frame must be >= 0")
        self.track_id = track_id
        self.role: Role = role
        self.gain_db = float(gain_db)
        self.pan = float(pan)
        self.muted = bool(muted)
        self.soloed = bool(soloed)
        self.start_frame = int(start_frame)
        self.channels = 2
        # ramp state: current and target (left, right) gains; float64, owned by the audio thread
        self._g = np.zeros(2, dtype=np.float64)
        self._target = np.zeros(2, dtype=np.float64)
        self._initialised = False

    @property
    def end_frame(self) -> int:
        """One past the track's last timeline frame."""
        return self.start_frame

    def update_target(self, audible: bool) -> None:
        """Recompute the target gains (audio thread, after a command)."""
        if audible:
            gain = 10.0 ** (self.gain_db / 20.0)
            left, right = pan_gains(self.pan, self.channels)
            self._target[0], self._target[1] = gain * left, gain * right
        else:
            self._target[0] = self._target[1] = 0.0
        if not self._initialised:  # a new track starts at its gains, without a fade-in
            self._g[:] = self._target
            self._initialised = True

    @abstractmethod
    def fresh(self) -> Track:
        """A copy with fresh playback state sharing the (read-only) content, for a bounce."""

    def locate(self, frame: int) -> None:  # noqa: B027 - a no-op is right for stateless tracks
        """The transport jumped to ``frame`` (audio thread); tracks with play state override it."""

    @abstractmethod
    def mix(self, out: np.ndarray, out_start: int, pos: int, n: int, playing: bool, step: float,
            scratch: np.ndarray) -> None:  # fmt: skip
        """Add timeline frames ``[pos, pos + n)`` into ``out[:, out_start:out_start + n]`` (audio thread).

        ``out`` is a (2, >= out_start + n) float32 bus; ``step`` the per-frame gain ramp
        step; ``scratch`` a (2, >= 8192) float32 buffer any track may overwrite.
        """


class AudioTrack(Track):
    """A pre-decoded clip at the engine rate.

    Parameters
    ----------
    track_id : str
    audio : np.ndarray
        (channels, frames) float32 at the engine's sample rate (resample first with
        :func:`app.engine.audio_io.resample`); 1 or 2 channels. Kept by reference and
        made read-only; do not modify it afterwards.
    **options
        See :class:`Track`.

    Raises
    ------
    AudioInputError
        If ``audio`` is not (1 or 2, frames) finite float audio.
    """

    kind = "audio"

    def __init__(self, track_id: str, audio: np.ndarray, **options: object) -> None:
        super().__init__(track_id, **options)  # type: ignore[arg-type]
        a = np.asarray(audio)
        if a.ndim != 2 or a.shape[0] not in (1, 2) or a.dtype.kind != "f":
            raise AudioInputError("track audio must be (1 or 2, frames) float")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise AudioInputError("track audio holds NaN or Inf")
        if a is audio and a.flags.writeable:
            a = a.view()
        a.setflags(write=False)
        self.audio = a
        self.channels = a.shape[0]
        self._options = options

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.audio.shape[1]

    def fresh(self) -> AudioTrack:
        t = AudioTrack(self.track_id, self.audio, **self._options)
        t.role, t.gain_db, t.pan, t.muted, t.soloed = self.role, self.gain_db, self.pan, self.muted, self.soloed
        t.start_frame = self.start_frame
        return t

    def mix(self, out: np.ndarray, out_start: int, pos: int, n: int, playing: bool, step: float,
            scratch: np.ndarray) -> None:  # fmt: skip
        # when not playing, the ramp still runs over frames outside the clip
        src_start = pos - self.start_frame if playing else -(1 << 62)
        _mix_kernel(self.audio, src_start, out, out_start, n, self._g, self._target, step)


class MidiTrack(Track):
    """Notes played by the built-in synth, sample-accurately.

    Parameters
    ----------
    track_id : str
    notes : np.ndarray
        Structured array with fields ``start_s, end_s, pitch, velocity`` (see
        :data:`app.engine.synth.NOTE_DTYPE`), seconds relative to ``start_frame``.
    sample_rate : int
        The engine's rate.
    voices : int, keyword-only
        Synth polyphony.
    **options
        See :class:`Track`.
    """

    kind = "midi"

    def __init__(self, track_id: str, notes: np.ndarray, sample_rate: int, *, voices: int = 32,
                 **options: object) -> None:  # fmt: skip
        super().__init__(track_id, **options)  # type: ignore[arg-type]
        self.notes = notes
        self.sample_rate = int(sample_rate)
        self.voices = int(voices)
        self.sequence = NoteSequence(notes, self.sample_rate, offset_frame=self.start_frame)
        self.synth = Synth(self.sample_rate, voices=self.voices, hold_gil=True)
        self.player = SequencePlayer(self.sequence, self.synth)
        self._options = options

    @property
    def end_frame(self) -> int:
        return self.sequence.end_frame

    def fresh(self) -> MidiTrack:
        t = MidiTrack(self.track_id, self.notes, self.sample_rate, voices=self.voices, **self._options)
        t.role, t.gain_db, t.pan, t.muted, t.soloed = self.role, self.gain_db, self.pan, self.muted, self.soloed
        return t

    def locate(self, frame: int) -> None:
        self.player.locate(frame)

    def mix(self, out: np.ndarray, out_start: int, pos: int, n: int, playing: bool, step: float,
            scratch: np.ndarray) -> None:  # fmt: skip
        # scratch: (2, >= n) float32 owned by the engine, reused for every MIDI track
        done = 0
        cap = min(scratch.shape[1], self.synth.max_block_frames)
        while done < n:
            m = min(cap, n - done)
            self.player.render(scratch, pos + done, m, playing)
            _mix_kernel(scratch, 0, out, out_start + done, m, self._g, self._target, step)
            done += m
