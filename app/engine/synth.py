"""The built-in polyphonic synth: a soft FM electric piano for MIDI tracks and live keys.

Voice: a sine carrier phase-modulated by a sine at the same frequency (the classic
tine e-piano recipe). The modulation index starts high with velocity and decays
faster than the amplitude, so a hard note is bright at its start and mellows; the
amplitude has a short linear attack, a pitch-dependent exponential decay (low notes
ring longer, like a piano; there is no sustain plateau) and an exponential release.
Each voice sits at a pitch-dependent constant-power pan (low left, high right, gently).

Everything that runs per sample is one numba kernel (``cache=True, nogil=True``)
over preallocated state arrays: rendering allocates nothing in steady state, and
the result of a render does not depend on how the frames are cut into blocks
(every update is per sample and voices are summed in the same order), which is
what lets the mixer's offline bounce equal live playback sample for sample.

Events (note on/off, all notes off, all sound off) carry a frame offset inside
the block and take effect exactly on that frame.

Threads: a :class:`Synth` is not thread-safe. In the engine it lives on the audio
thread (the UI sends ``NoteOn``/``NoteOff`` commands); standalone, call everything
from one thread.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from app.engine.errors import ParameterError

__all__ = [
    "DEFAULT_VOICES",
    "NOTE_DTYPE",
    "NoteSequence",
    "Synth",
    "make_notes",
    "render_notes",
]

DEFAULT_VOICES = 32
#: Frames :meth:`Synth.render` can produce per call without allocating.
DEFAULT_MAX_BLOCK_FRAMES = 8192
#: Events one render call can hold (more are dropped and counted).
EVENT_CAPACITY = 4096

ATTACK_MS = 2.0
RELEASE_T60_S = 0.35
MOD_T60_S = 0.9
#: Amplitude decay T60 at MIDI note 21 (A0) and 108 (C8); log-interpolated between.
DECAY_T60_LOW_S = 9.0
DECAY_T60_HIGH_S = 1.2
#: Peak amplitude of one full-velocity voice (headroom for chords).
VOICE_LEVEL = 0.2
#: A voice whose envelope falls below this is freed (-80 dB).
SILENT_LEVEL = 1e-4
#: Seconds of tail :func:`render_notes` keeps after the last note-off.
RELEASE_TAIL_S = 1.5

# Event kinds.
EV_NOTE_OFF = 0
EV_NOTE_ON = 1
EV_ALL_NOTES_OFF = 2  # release every voice (musical)
EV_ALL_SOUND_OFF = 3  # silence every voice at once

# Voice stages.
_FREE, _ATTACK, _DECAY, _RELEASE = 0, 1, 2, 3

#: The note list a MIDI track holds: one row per note, times in seconds.
NOTE_DTYPE = np.dtype(
    [("start_s", np.float64), ("end_s", np.float64), ("pitch", np.int16),
     ("velocity", np.int16), ("channel", np.int16)]
)  # fmt: skip


def make_notes(
    start_s: Any, end_s: Any, pitch: Any, velocity: Any, channel: Any = 0
) -> np.ndarray:
    """Build a :data:`NOTE_DTYPE` structured array from parallel sequences.

    Parameters
    ----------
    start_s, end_s : array-like of float
        Note start and end in seconds (``end_s > start_s``).
    pitch : array-like of int
        MIDI pitch 0..127.
    velocity : array-like of int
        MIDI velocity 1..127.
    channel : int or array-like of int, optional
        MIDI channel 0..15 (carried along; the synth ignores it).

    Returns
    -------
    np.ndarray
        (notes,) structured array of :data:`NOTE_DTYPE`.

    Raises
    ------
    ParameterError
        On mismatched lengths or out-of-range values.
    """
    s = np.atleast_1d(np.asarray(start_s, dtype=np.float64))
    e = np.atleast_1d(np.asarray(end_s, dtype=np.float64))
    p = np.atleast_1d(np.asarray(pitch))
    v = np.atleast_1d(np.asarray(velocity))
    n = s.shape[0]
    if not (e.shape[0] == p.shape[0] == v.shape[0] == n):
        raise ParameterError("start_s, end_s, pitch and velocity must have the same length")
    out = np.zeros(n, dtype=NOTE_DTYPE)
    out["start_s"], out["end_s"], out["pitch"], out["velocity"] = s, e, p, v
    out["channel"] = channel
    _check_notes(out)
    return out


def _check_notes(notes: np.ndarray) -> np.ndarray:
    names = getattr(notes.dtype, "names", None) or ()
    missing = {"start_s", "end_s", "pitch", "velocity"} - set(names)
    if missing:
        raise ParameterError(f"notes need the fields start_s, end_s, pitch, velocity (missing {sorted(missing)})")
    s = np.asarray(notes["start_s"], dtype=np.float64)
    e = np.asarray(notes["end_s"], dtype=np.float64)
    p = np.asarray(notes["pitch"])
    v = np.asarray(notes["velocity"])
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(e))):
        raise ParameterError("note times must be finite")
    if np.any(s < 0) or np.any(e <= s):
        raise ParameterError("every note needs 0 <= start_s < end_s")
    if np.any((p < 0) | (p > 127)) or np.any((v < 1) | (v > 127)):
        raise ParameterError("pitch must be 0..127 and velocity 1..127")
    return notes


# ============================================================================ kernels


@njit(cache=True, nogil=True)
def _note_on(pitch, vel, st, fs, iv):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Start a voice: a free one, else steal the quietest released one, else the oldest."""
    n_voices = st.shape[0]
    best = -1
    for v in range(n_voices):
        if st[v] == _FREE:
            best = v
            break
    if best < 0:
        iv[1] += 1  # stolen
        quiet = 2.0
        for v in range(n_voices):
            if st[v] == _RELEASE and fs[v, 0] < quiet:
                quiet = fs[v, 0]
                best = v
        if best < 0:
            oldest = iv[0] + 1
            for v in range(n_voices):
                if fs[v, 8] < oldest:
                    oldest = fs[v, 8]
                    best = v
    v = best
    iv[0] += 1
    sr = fs[0, 11]
    # fs columns: 0 env, 1 mod index, 2 carrier phase, 3 (unused), 4 freq (cycles/frame),
    # 5 decay coef, 6 pan L, 7 pan R, 8 age, 9 level, 10 start index, 11 sample rate
    st[v] = _ATTACK
    fs[v, 4] = 440.0 * 2.0 ** ((pitch - 69) / 12.0) / sr
    x = min(max((pitch - 21) / 87.0, 0.0), 1.0)
    t60 = DECAY_T60_LOW_S * (DECAY_T60_HIGH_S / DECAY_T60_LOW_S) ** x
    fs[v, 5] = 10.0 ** (-3.0 / (t60 * sr))
    vn = vel / 127.0
    fs[v, 1] = 0.25 + 2.0 * vn  # modulation index (radians / 2 pi)
    fs[v, 10] = fs[v, 1]
    th = (0.5 + 0.35 * (x - 0.5)) * math.pi / 2.0
    fs[v, 6] = math.cos(th)
    fs[v, 7] = math.sin(th)
    fs[v, 8] = iv[0]
    fs[v, 9] = VOICE_LEVEL * vn**1.6
    if fs[v, 0] == 0.0:
        # A fresh voice starts at a quarter cycle, so its very first frame is already
        # non-zero (the 2 ms attack ramp prevents a click); a stolen one keeps its phase.
        fs[v, 2] = 0.25
    pv = pitch
    return v, pv


@njit(cache=True, nogil=True)
def _render_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    out, n, ev_frame, ev_kind, ev_pitch, ev_vel, n_ev, st, vp, fs, iv, coefs
):
    """Render ``n`` frames into ``out[:, :n]`` (overwritten), applying sorted events.

    ``coefs`` = [attack_step, release_coef, mod_coef, silent_level, sustain_level].
    ``iv`` = [age counter, steals, dropped].
    """
    for c in range(2):
        for i in range(n):
            out[c, i] = 0.0
    attack_step = coefs[0]
    release_coef = coefs[1]
    mod_coef = coefs[2]
    silent = coefs[3]
    sustain = coefs[4]
    two_pi = 2.0 * math.pi
    n_voices = st.shape[0]
    e = 0
    seg = 0
    while seg < n:
        while e < n_ev and ev_frame[e] <= seg:
            kind = ev_kind[e]
            if kind == EV_NOTE_ON:
                v, p = _note_on(ev_pitch[e], ev_vel[e], st, fs, iv)
                vp[v] = p
            elif kind == EV_NOTE_OFF:
                # release the oldest held voice of that pitch
                best = -1
                age = 0.0
                for v in range(n_voices):
                    if (st[v] == _ATTACK or st[v] == _DECAY) and vp[v] == ev_pitch[e]:
                        if best < 0 or fs[v, 8] < age:
                            best = v
                            age = fs[v, 8]
                if best >= 0:
                    st[best] = _RELEASE
            elif kind == EV_ALL_NOTES_OFF:
                for v in range(n_voices):
                    if st[v] == _ATTACK or st[v] == _DECAY:
                        st[v] = _RELEASE
            else:
                for v in range(n_voices):
                    st[v] = _FREE
                    fs[v, 0] = 0.0
            e += 1
        end = n
        if e < n_ev and ev_frame[e] < n:
            end = ev_frame[e]
        for v in range(n_voices):
            s = st[v]
            if s == _FREE:
                continue
            env = fs[v, 0]
            mod = fs[v, 1]
            ph = fs[v, 2]
            f = fs[v, 4]
            dec = fs[v, 5]
            gl = fs[v, 6] * fs[v, 9]
            gr = fs[v, 7] * fs[v, 9]
            for i in range(seg, end):
                if s == _ATTACK:
                    env += attack_step
                    if env >= 1.0:
                        env = 1.0
                        s = _DECAY
                elif s == _DECAY:
                    env = sustain + (env - sustain) * dec
                else:
                    env *= release_coef
                mod *= mod_coef
                y = env * math.sin(two_pi * (ph + mod * math.sin(two_pi * ph)))
                ph += f
                if ph >= 1.0:
                    ph -= 1.0
                out[0, i] += y * gl
                out[1, i] += y * gr
                if s != _ATTACK and env < silent:
                    s = _FREE
                    env = 0.0
                    break
            st[v] = s
            fs[v, 0] = env
            fs[v, 1] = mod
            fs[v, 2] = ph
        seg = end
    while e < n_ev:  # events at or past n (caller error): count them as dropped
        iv[2] += 1
        e += 1


@njit(cache=True)  # tiny and called on the audio thread: keeps the GIL (see Synth's hold_gil)
def _gather_kernel(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    on_f, on_p, on_v, off_f, off_p, cur, pos, n, ev_frame, ev_kind, ev_pitch, ev_vel, ev_start
):
    """Copy the note-on/off events in ``[pos, pos + n)`` (offs first on a shared frame)
    into the event arrays from index ``ev_start``, in time order.

    Returns ``(count, covered)``: events written and the frames they completely cover
    (``n`` unless the arrays filled up; then the caller renders ``covered`` frames and
    gathers again from there).
    """
    i = cur[0]
    j = cur[1]
    k = ev_start
    cap = ev_frame.shape[0]
    end = pos + n
    big = end + 1
    while True:
        t_on = on_f[i] if i < on_f.shape[0] else big
        t_off = off_f[j] if j < off_f.shape[0] else big
        t = min(t_on, t_off)
        if t >= end:
            break
        if k == cap:
            if t > pos:
                cur[0] = i
                cur[1] = j
                return k - ev_start, t - pos
            # more events on one frame than fit: drop the rest of that frame
            if t_off <= t_on:
                j += 1
            else:
                i += 1
            continue
        ev_frame[k] = t - pos
        if t_off <= t_on:
            ev_kind[k] = EV_NOTE_OFF
            ev_pitch[k] = off_p[j]
            ev_vel[k] = 0.0
            j += 1
        else:
            ev_kind[k] = EV_NOTE_ON
            ev_pitch[k] = on_p[i]
            ev_vel[k] = on_v[i]
            i += 1
        k += 1
    cur[0] = i
    cur[1] = j
    return k - ev_start, n


@njit(cache=True)
def _render_kernel_held(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    out, n, ev_frame, ev_kind, ev_pitch, ev_vel, n_ev, st, vp, fs, iv, coefs
):
    """:func:`_render_kernel` entered *without* releasing the GIL (see ``Synth(hold_gil=True)``)."""
    _render_kernel(out, n, ev_frame, ev_kind, ev_pitch, ev_vel, n_ev, st, vp, fs, iv, coefs)


# ============================================================================ classes


class Synth:
    """A polyphonic FM e-piano with preallocated state.

    Parameters
    ----------
    sample_rate : int
        Hz, 8000..384000.
    voices : int, keyword-only
        Polyphony (default 32). A note-on with every voice busy steals the quietest
        released voice, else the oldest one (its envelope continues, so no click).
    max_block_frames : int, keyword-only
        Largest ``frames`` one :meth:`render` call handles without allocating.
    attack_ms, sustain_level, release_t60_s : keyword-only
        The envelope: linear attack (ms); exponential decay (pitch-dependent T60) toward
        ``sustain_level`` (0..1; 0 = piano-like, the note fades while held); exponential
        release after note-off (T60 in seconds).
    hold_gil : bool, keyword-only
        Enter the kernel without releasing the GIL. The engine's audio thread sets it:
        a block takes ~0.1 ms, but getting the GIL *back* after releasing it can wait a
        whole ``sys.getswitchinterval()`` (5 ms by default) behind a busy UI thread.
        Leave it off for offline rendering on worker threads (then renders run in parallel).

    Notes
    -----
    Not thread-safe: call from one thread (in the engine, the audio thread).
    """

    def __init__(self, sample_rate: int, *, voices: int = DEFAULT_VOICES,
                 max_block_frames: int = DEFAULT_MAX_BLOCK_FRAMES, attack_ms: float = ATTACK_MS,
                 sustain_level: float = 0.0, release_t60_s: float = RELEASE_T60_S,
                 hold_gil: bool = False) -> None:  # fmt: skip
        if not 8000 <= int(sample_rate) <= 384000:
            raise ParameterError(f"sample rate {sample_rate} Hz is outside 8-384 kHz")
        if not 1 <= int(voices) <= 256:
            raise ParameterError(f"voices must be 1..256, got {voices}")
        if int(max_block_frames) < 1:
            raise ParameterError("max_block_frames must be >= 1")
        if not (0.0 <= attack_ms <= 5000.0 and 0.0 <= sustain_level <= 1.0 and 0.005 <= release_t60_s <= 30.0):
            raise ParameterError("attack_ms must be 0..5000, sustain_level 0..1, release_t60_s 0.005..30")
        self.sample_rate = int(sample_rate)
        self.voices = int(voices)
        self.max_block_frames = int(max_block_frames)
        self._kernel = _render_kernel_held if hold_gil else _render_kernel
        sr = float(self.sample_rate)
        self._st = np.zeros(self.voices, dtype=np.int8)
        self._vp = np.zeros(self.voices, dtype=np.int32)
        self._fs = np.zeros((self.voices, 12), dtype=np.float64)
        self._fs[:, 11] = sr
        self._iv = np.zeros(3, dtype=np.int64)
        self._coefs = np.array(
            [1.0 / max(1.0, attack_ms * 1e-3 * sr), 10.0 ** (-3.0 / (release_t60_s * sr)),
             10.0 ** (-3.0 / (MOD_T60_S * sr)), SILENT_LEVEL, float(sustain_level)],
            dtype=np.float64,
        )  # fmt: skip
        self._out = np.zeros((2, self.max_block_frames), dtype=np.float32)
        self._ev_frame = np.zeros(EVENT_CAPACITY, dtype=np.int64)
        self._ev_kind = np.zeros(EVENT_CAPACITY, dtype=np.int8)
        self._ev_pitch = np.zeros(EVENT_CAPACITY, dtype=np.int32)
        self._ev_vel = np.zeros(EVENT_CAPACITY, dtype=np.float64)
        self._n_ev = 0

    # ---- events (queued for the next render; offsets relative to its first frame)

    def _push(self, kind: int, pitch: int, velocity: float, offset_frame: int) -> None:
        if self._n_ev >= EVENT_CAPACITY:
            self._iv[2] += 1
            return
        k = self._n_ev
        # insertion keeps the queue sorted by frame (stable: same frame keeps call order)
        while k > 0 and self._ev_frame[k - 1] > offset_frame:
            self._ev_frame[k] = self._ev_frame[k - 1]
            self._ev_kind[k] = self._ev_kind[k - 1]
            self._ev_pitch[k] = self._ev_pitch[k - 1]
            self._ev_vel[k] = self._ev_vel[k - 1]
            k -= 1
        self._ev_frame[k] = offset_frame
        self._ev_kind[k] = kind
        self._ev_pitch[k] = pitch
        self._ev_vel[k] = velocity
        self._n_ev += 1

    def note_on(self, pitch: int, velocity: int, *, offset_frame: int = 0) -> None:
        """Start a note ``offset_frame`` frames into the next render (pitch 0..127, velocity 1..127)."""
        if not (0 <= pitch <= 127 and 1 <= velocity <= 127) or offset_frame < 0:
            raise ParameterError("pitch must be 0..127, velocity 1..127, offset_frame >= 0")
        self._push(EV_NOTE_ON, int(pitch), float(velocity), int(offset_frame))

    def note_off(self, pitch: int, *, offset_frame: int = 0) -> None:
        """Release the oldest held voice of ``pitch`` at ``offset_frame`` of the next render."""
        if not 0 <= pitch <= 127 or offset_frame < 0:
            raise ParameterError("pitch must be 0..127 and offset_frame >= 0")
        self._push(EV_NOTE_OFF, int(pitch), 0.0, int(offset_frame))

    def all_notes_off(self, *, offset_frame: int = 0) -> None:
        """Release every held voice (their release tails still sound)."""
        self._push(EV_ALL_NOTES_OFF, 0, 0.0, int(offset_frame))

    def all_sound_off(self) -> None:
        """Silence every voice at once (at the start of the next render)."""
        self._push(EV_ALL_SOUND_OFF, 0, 0.0, 0)

    # ---- state

    @property
    def active_voices(self) -> int:
        """Voices sounding now (held or releasing)."""
        return int(np.count_nonzero(self._st))

    @property
    def stolen_voices(self) -> int:
        """Note-ons so far that had to steal a busy voice."""
        return int(self._iv[1])

    @property
    def dropped_events(self) -> int:
        """Events lost because a queue was full or their offset was past the block."""
        return int(self._iv[2])

    # ---- rendering

    def render(self, frames: int, out: np.ndarray | None = None) -> np.ndarray:
        """Render ``frames`` frames, applying the queued events on their frames.

        Parameters
        ----------
        frames : int
            1..``max_block_frames``.
        out : np.ndarray, optional
            (2, >= frames) float32 to write into. Without it the result is a view of
            an internal buffer, valid until the next call (no allocation).

        Returns
        -------
        np.ndarray
            (2, frames) float32.
        """
        if not 0 <= frames <= self.max_block_frames:
            raise ParameterError(f"frames must be 0..{self.max_block_frames}, got {frames}")
        buf = self._out if out is None else out
        n_ev = self._n_ev
        self._n_ev = 0
        self.render_events(buf, frames, self._ev_frame, self._ev_kind, self._ev_pitch, self._ev_vel, n_ev)
        return buf[:, :frames]

    def render_events(self, out: np.ndarray, frames: int, ev_frame: np.ndarray, ev_kind: np.ndarray,
                      ev_pitch: np.ndarray, ev_vel: np.ndarray, n_events: int) -> None:  # fmt: skip
        """Render into ``out[:, :frames]`` (overwritten) with an explicit sorted event list.

        For the mixer (audio thread): ``ev_*`` are preallocated arrays, ``ev_frame`` int64
        offsets sorted ascending, ``ev_kind`` int8 (``EV_*``), ``ev_pitch`` int32,
        ``ev_vel`` float64 MIDI velocity.
        """
        self._kernel(out, frames, ev_frame, ev_kind, ev_pitch, ev_vel, n_events,
                     self._st, self._vp, self._fs, self._iv, self._coefs)  # fmt: skip


class NoteSequence:
    """A note list converted to sorted on/off frame arrays for sample-accurate playback.

    Parameters
    ----------
    notes : np.ndarray
        Structured array with fields ``start_s, end_s, pitch, velocity`` (see
        :data:`NOTE_DTYPE`).
    sample_rate : int
        Hz; times are rounded to the nearest frame (a note lasts at least one frame).
    offset_frame : int, keyword-only
        Added to every frame (where the track starts on the timeline).
    """

    def __init__(self, notes: np.ndarray, sample_rate: int, *, offset_frame: int = 0) -> None:
        notes = _check_notes(np.asarray(notes))
        sr = int(sample_rate)
        start = np.round(np.asarray(notes["start_s"], dtype=np.float64) * sr).astype(np.int64) + int(offset_frame)
        end = np.round(np.asarray(notes["end_s"], dtype=np.float64) * sr).astype(np.int64) + int(offset_frame)
        end = np.maximum(end, start + 1)
        pitch = np.asarray(notes["pitch"], dtype=np.int32)
        vel = np.asarray(notes["velocity"], dtype=np.float64)
        o = np.argsort(start, kind="stable")
        self.on_frame, self.on_pitch, self.on_velocity = start[o], pitch[o], vel[o]
        f = np.argsort(end, kind="stable")
        self.off_frame, self.off_pitch = end[f], pitch[f]
        self.sample_rate = sr
        #: one past the last note-off frame (0 without notes)
        self.end_frame = int(end.max()) if end.size else 0
        for a in (self.on_frame, self.on_pitch, self.on_velocity, self.off_frame, self.off_pitch):
            a.setflags(write=False)

    def __len__(self) -> int:
        return int(self.on_frame.shape[0])


class SequencePlayer:
    """Plays a :class:`NoteSequence` through a :class:`Synth` from a timeline position.

    Audio thread only once handed to the engine; allocates nothing per block.
    """

    def __init__(self, sequence: NoteSequence, synth: Synth) -> None:
        self.sequence = sequence
        self.synth = synth
        self._cur = np.zeros(2, dtype=np.int64)
        self._pending_release = False
        cap = EVENT_CAPACITY
        self._ev_frame = np.zeros(cap, dtype=np.int64)
        self._ev_kind = np.zeros(cap, dtype=np.int8)
        self._ev_pitch = np.zeros(cap, dtype=np.int32)
        self._ev_vel = np.zeros(cap, dtype=np.float64)
        self._live: list[tuple[int, int, float]] = []

    def locate(self, frame: int) -> None:
        """Jump to ``frame`` (seek, loop wrap, stop): held notes are released, the
        next events are those at or after ``frame`` (notes already running are not chased)."""
        s = self.sequence
        self._cur[0] = np.searchsorted(s.on_frame, frame, side="left")
        self._cur[1] = np.searchsorted(s.off_frame, frame, side="left")
        self._pending_release = True

    def live_event(self, kind: int, pitch: int, velocity: float) -> None:
        """Queue a played note (keyboard/pads) for the start of the next block."""
        if len(self._live) < 64:  # bounded; a flood beyond that per block is dropped
            self._live.append((kind, pitch, velocity))

    def render(self, out: np.ndarray, pos: int, n: int, playing: bool) -> None:
        """Write ``n`` frames for timeline frames ``[pos, pos + n)`` into ``out[:, :n]``."""
        done = 0
        while True:
            k = 0
            if done == 0:
                if self._pending_release:
                    self._pending_release = False
                    self._ev_frame[k], self._ev_kind[k] = 0, EV_ALL_NOTES_OFF
                    k += 1
                while self._live:
                    kind, pitch, vel = self._live.pop(0)
                    self._ev_frame[k], self._ev_kind[k] = 0, kind
                    self._ev_pitch[k], self._ev_vel[k] = pitch, vel
                    k += 1
            covered = n - done
            if playing:
                s = self.sequence
                cnt, covered = _gather_kernel(
                    s.on_frame, s.on_pitch, s.on_velocity, s.off_frame, s.off_pitch, self._cur,
                    pos + done, n - done, self._ev_frame, self._ev_kind, self._ev_pitch, self._ev_vel, k,
                )  # fmt: skip
                k += cnt
            self.synth.render_events(out[:, done:], covered, self._ev_frame, self._ev_kind,
                                     self._ev_pitch, self._ev_vel, k)  # fmt: skip
            done += covered
            if done >= n:
                return


def render_notes(notes: np.ndarray, sample_rate: int, *, voices: int = DEFAULT_VOICES,
                 tail_s: float = RELEASE_TAIL_S, block_frames: int = 4096) -> np.ndarray:  # fmt: skip
    """Render a note list offline with the built-in synth.

    Parameters
    ----------
    notes : np.ndarray
        Structured array with ``start_s, end_s, pitch, velocity`` (see :data:`NOTE_DTYPE`).
    sample_rate : int
        Hz.
    voices : int, keyword-only
        Polyphony.
    tail_s : float, keyword-only
        Seconds rendered after the last note-off for the release tails.
    block_frames : int, keyword-only
        Internal block length (the result does not depend on it).

    Returns
    -------
    np.ndarray
        (2, frames) float32, ``frames = last note end + tail``; sample-identical to a
        MIDI track of the same notes played by the engine from frame 0.
    """
    seq = NoteSequence(notes, sample_rate)
    total = seq.end_frame + round(tail_s * sample_rate)
    player = SequencePlayer(seq, Synth(sample_rate, voices=voices, max_block_frames=block_frames))
    out = np.zeros((2, total), dtype=np.float32)
    buf = np.zeros((2, block_frames), dtype=np.float32)
    pos = 0
    while pos < total:
        n = min(block_frames, total - pos)
        player.render(buf, pos, n, True)
        out[:, pos : pos + n] = buf[:, :n]
        pos += n
    return out
