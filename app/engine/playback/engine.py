"""The real-time engine: transport, tracks, A/B master bus, meters — one render path.

Threads
-------
* Any thread: :meth:`Engine.send` (non-blocking ``deque.append``, atomic in CPython),
  :meth:`Engine.snapshot` (reads one reference), :meth:`Engine.collect`.
* The audio thread (or the offline bounce, never both at once): :meth:`Engine.render`.
  It drains the command queue at the start of each call, then mixes. It never waits
  on a lock, does no I/O or logging and works in buffers allocated up front (Python
  itself still creates small objects; the reused offline mastering stages allocate
  per internal block, see :mod:`app.engine.playback.master`).

Objects that leave the engine (a removed track, a replaced master chain) are not
freed on the audio thread: they go to a "graveyard" deque that :meth:`collect`
empties; :meth:`snapshot` and :meth:`send` call it, so the UI's meter timer frees
them on the UI thread (the Mixxx pattern).

Signal flow per block
---------------------
source tracks -> source bus ---------------> dry delay (= chain latency) -> A
             \\-> live master chain (if set) ----------------------------> B
master takes -> take bus -> delay (= chain latency) ----------------------> B (wins if any)
A * match(source) and B * match(master) are crossfaded by the monitor (10 ms, linear:
both sides carry the same music, so equal-gain is right), then the master fader,
then the meters. The chain always runs, so switching A/B is instant and seamless.

GIL
---
The audio thread's own kernels are compiled *without* ``nogil``: each takes
microseconds, and after releasing the GIL a thread can wait a whole
``sys.getswitchinterval()`` (5 ms by default, a full 256-frame period) to win it back
from a busy UI thread. Small copies go through numba for the same reason (numpy
releases the GIL above ~500 elements). The app should also lower the switch interval
(``sys.setswitchinterval(0.0005)``; see ``benchmarks/playback.py`` for the effect), and
play through a :class:`~app.engine.playback.master.ThreadedMasterChain`, which moves
the chain's FFT/numba bursts off the callback.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from app.engine.errors import ParameterError
from app.engine.playback import commands as cmd
from app.engine.playback.master import LiveMasterChain, ThreadedMasterChain
from app.engine.playback.meters import MeterReading, OutputMeters
from app.engine.playback.tracks import RAMP_MS, MidiTrack, Track
from app.engine.synth import EV_NOTE_OFF, EV_NOTE_ON

__all__ = ["Engine", "Snapshot", "TrackInfo", "match_gains_db"]

#: Most commands applied per block (more wait for the next block: bounded work).
MAX_COMMANDS_PER_BLOCK = 64
#: Largest delay the A/B alignment can apply (seconds).
MAX_ALIGN_DELAY_S = 2.0


def match_gains_db(source_lufs: float, master_lufs: float) -> tuple[float, float]:
    """Loudness-match gains for A/B: turn the louder side down to the quieter one.

    Parameters
    ----------
    source_lufs, master_lufs : float
        Integrated loudness of the source and of the master (LUFS).

    Returns
    -------
    (source_db, master_db) : tuple of float
        Gains <= 0 dB for :class:`~app.engine.playback.commands.SetMatchGains`;
        (0, 0) when either loudness is not finite (silence).
    """
    if not (math.isfinite(source_lufs) and math.isfinite(master_lufs)):
        return 0.0, 0.0
    d = float(master_lufs) - float(source_lufs)
    return (0.0, -d) if d > 0 else (d, 0.0)


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track as the UI sees it (immutable)."""

    track_id: str
    kind: str
    role: str
    gain_db: float
    pan: float
    muted: bool
    soloed: bool
    start_frame: int
    end_frame: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The engine's state after a block, published by reference (read on any thread).

    Attributes
    ----------
    position_frame : int
        Transport position of the next frame into the mixer. What is *heard* now is
        about ``position_frame - latency_frames - device latency``.
    playing : bool
    loop : (start_frame, end_frame) or None
    monitor : {"source", "master"}
    latency_frames : int
        The master bus's alignment latency (the live chain's; 0 without one).
    sample_rate : int
    length_frames : int
        End of the longest track.
    tracks : tuple of TrackInfo
    meters : MeterReading
        Output meters (updated every 100 ms).
    frames_rendered : int
        Frames rendered since the engine was made.
    underruns : int
        Device buffer underflows reported by the stream.
    overloads : int
        Callbacks that took longer than their buffer period.
    callback_load : float
        Last callback's time as a fraction of its buffer period.
    callback_load_max : float
        Largest since the engine was made.
    skipped : int
        Work the audio thread dropped rather than wait for: commands for unknown
        tracks, chain FIFO underflows, synth events past capacity.
    timestamp_s : float
        ``time.monotonic()`` when the snapshot was made.
    """

    position_frame: int
    playing: bool
    loop: tuple[int, int] | None
    monitor: str
    latency_frames: int
    sample_rate: int
    length_frames: int
    tracks: tuple[TrackInfo, ...]
    meters: MeterReading
    frames_rendered: int
    underruns: int
    overloads: int
    callback_load: float
    callback_load_max: float
    skipped: int
    timestamp_s: float

    @property
    def heard_frame(self) -> int:
        """Timeline frame leaving the mixer's output now (``position_frame - latency_frames``;
        subtract the device latency too for the playhead). Approximate across a loop wrap."""
        return max(0, self.position_frame - self.latency_frames)


# Audio-thread kernels keep the GIL (see tracks._mix_kernel).
@njit(cache=True)
def _delay_kernel(x, ring, wpos, delay, out, n):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out[:, i] = x delayed by ``delay`` frames through ``ring``; returns the new write position."""
    cap = ring.shape[1]
    w = wpos
    for i in range(n):
        r = w - delay
        if r < 0:
            r += cap
        a = x[0, i]
        b = x[1, i]
        ring[0, w] = a
        ring[1, w] = b
        out[0, i] = ring[0, r]
        out[1, i] = ring[1, r]
        w += 1
        if w == cap:
            w = 0
    return w


@njit(cache=True)
def _copy_kernel(src, dst, n):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """dst[:, :n] = src[:, :n] (or zeros when ``src`` has no columns); GIL held.

    numpy releases the GIL for copies/fills above ~500 elements, and winning it back
    behind a busy thread can take a switch interval: on the audio thread, copy here.
    """
    if src.shape[1] == 0:
        for c in range(dst.shape[0]):
            for i in range(n):
                dst[c, i] = 0.0
        return
    for c in range(dst.shape[0]):
        for i in range(n):
            dst[c, i] = src[c, i]


@njit(cache=True)
def _ab_kernel(a, b, out, n, state, target, step):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out = (a * ga * (1 - m) + b * gb * m) * gm with every gain ramped per sample.

    state/target = [m (0 source .. 1 master), ga, gb, gm].
    """
    for i in range(n):
        for k in range(4):
            d = target[k] - state[k]
            if abs(d) <= step[k]:
                state[k] = target[k]
            elif d > 0:
                state[k] += step[k]
            else:
                state[k] -= step[k]
        m = state[0]
        wa = state[1] * (1.0 - m) * state[3]
        wb = state[2] * m * state[3]
        out[0, i] = a[0, i] * wa + b[0, i] * wb
        out[1, i] = a[1, i] * wa + b[1, i] * wb


class Engine:
    """Transport + mixer + A/B master bus + meters.

    Parameters
    ----------
    sample_rate : int
        Hz (8000..384000). Every track must be at this rate.
    block_frames : int, keyword-only
        The usual callback size; buffers are sized for ``max(block_frames, 8192)``
        frames and :meth:`render` splits longer requests internally.
    channels : int, keyword-only
        Output channels; only 2 (stereo) is supported.

    Examples
    --------
    >>> eng = Engine(48000)
    >>> eng.send(AddTrack(AudioTrack("mix", audio)))
    >>> eng.send(Play())
    >>> out = eng.render(256)          # (2, 256) float32
    >>> eng.snapshot().position_frame  # 256
    """

    def __init__(self, sample_rate: int, *, block_frames: int = 256, channels: int = 2) -> None:
        if not 8000 <= int(sample_rate) <= 384000:
            raise ParameterError(f"sample rate {sample_rate} Hz is outside 8-384 kHz")
        if channels != 2:
            raise ParameterError("the engine renders stereo only (channels=2)")
        if not 1 <= int(block_frames) <= 65536:
            raise ParameterError(f"block_frames must be 1..65536, got {block_frames}")
        self.sample_rate = int(sample_rate)
        self.channels = 2
        self.block_frames = int(block_frames)
        self.max_chunk_frames = max(self.block_frames, 8192)
        cap = self.max_chunk_frames
        self._commands: deque[Any] = deque()
        self._graveyard: deque[Any] = deque()
        # audio-thread state
        self._tracks: dict[str, Track] = {}
        self._track_list: list[Track] = []
        self._position = 0
        self._playing = False
        self._loop: tuple[int, int] | None = None
        self._monitor: str = "source"
        self._chain: LiveMasterChain | ThreadedMasterChain | None = None
        self._latency = 0
        self._step = 1.0 / max(1.0, RAMP_MS * 1e-3 * self.sample_rate)
        self._ab_state = np.array([0.0, 1.0, 1.0, 1.0])
        self._ab_target = self._ab_state.copy()
        self._ab_step = np.full(4, self._step)
        self._src_bus = np.zeros((2, cap), dtype=np.float32)
        self._take_bus = np.zeros((2, cap), dtype=np.float32)
        self._a = np.zeros((2, cap), dtype=np.float32)
        self._b = np.zeros((2, cap), dtype=np.float32)
        self._midi_scratch = np.zeros((2, cap), dtype=np.float32)
        self._out = np.zeros((2, cap), dtype=np.float32)
        self._empty = np.zeros((2, 0), dtype=np.float32)  # _copy_kernel's "fill with zeros"
        ring = int(MAX_ALIGN_DELAY_S * self.sample_rate) + 1
        self._dry_ring = np.zeros((2, ring), dtype=np.float32)
        self._take_ring = np.zeros((2, ring), dtype=np.float32)
        self._dry_w = 0
        self._take_w = 0
        self._meters = OutputMeters(self.sample_rate, cap)
        self._frames_rendered = 0
        self._skipped = 0
        self._has_takes = False
        self._length = 0
        self._infos: tuple[TrackInfo, ...] = ()
        # written by the stream's callback (same thread as render)
        self.underruns = 0
        self.overloads = 0
        self.callback_load = 0.0
        self.callback_load_max = 0.0
        self._snapshot = self._make_snapshot()

    # ------------------------------------------------------------------ any thread

    def send(self, command: cmd.Command) -> None:
        """Queue a command for the start of the next block (any thread, non-blocking)."""
        self._commands.append(command)
        self.collect()

    def snapshot(self) -> Snapshot:
        """The latest published state (any thread, lock-free); also runs :meth:`collect`."""
        self.collect()
        return self._snapshot

    @property
    def pending_commands(self) -> int:
        """Commands sent but not applied yet (any thread)."""
        return len(self._commands)

    def collect(self) -> int:
        """Release objects the audio thread dropped (call from a non-audio thread). Returns the count.

        Objects with a ``close()`` (a threaded master chain's worker) are closed here.
        """
        k = 0
        while True:
            try:
                obj = self._graveyard.popleft()
            except IndexError:
                return k
            close = getattr(obj, "close", None)
            if close is not None:
                close()
            k += 1

    # ------------------------------------------------------------------ audio thread

    def report_callback(self, load: float, underflow: bool) -> None:
        """The stream's callback reports its timing (audio thread)."""
        if underflow:
            self.underruns += 1
        if load > 1.0:
            self.overloads += 1
        self.callback_load = load
        if load > self.callback_load_max:
            self.callback_load_max = load

    def render(self, frames: int, out: np.ndarray | None = None) -> np.ndarray:
        """Apply pending commands and render the next ``frames`` frames.

        Parameters
        ----------
        frames : int
            Frames to render (any count; long requests are split internally, which
            does not change the result).
        out : np.ndarray, optional
            (2, >= frames) float32 to write into (what the real-time callback passes;
            then nothing is allocated). Without it a new array is returned.

        Returns
        -------
        np.ndarray
            (2, frames) float32.
        """
        self._drain()
        if out is None:
            out = np.empty((2, frames), dtype=np.float32)
        done = 0
        while done < frames:
            n = min(self.max_chunk_frames, frames - done)
            self._render_chunk(n)
            _copy_kernel(self._out, out[:, done : done + n], n)
            done += n
        self._frames_rendered += frames
        self._snapshot = self._make_snapshot()
        return out[:, :frames]

    # ---- commands

    def _drain(self) -> None:
        changed = False
        for _ in range(MAX_COMMANDS_PER_BLOCK):
            try:
                c = self._commands.popleft()
            except IndexError:
                break
            changed = self._apply(c) or changed
        if changed:
            self._refresh_tracks()

    def _track(self, track_id: str) -> Track | None:
        t = self._tracks.get(track_id)
        if t is None:
            self._skipped += 1
        return t

    def _locate(self, frame: int) -> None:
        self._position = frame
        for t in self._track_list:
            t.locate(frame)

    def _apply(self, c: Any) -> bool:
        """Apply one command; returns True when track state changed."""
        if isinstance(c, cmd.Play):
            if not self._playing:
                self._playing = True
                self._locate(self._position)
        elif isinstance(c, cmd.Pause):
            if self._playing:
                self._playing = False
                self._locate(self._position)
        elif isinstance(c, cmd.Stop):
            self._playing = False
            self._locate(c.return_frame)
        elif isinstance(c, cmd.Seek):
            self._locate(c.frame)
        elif isinstance(c, cmd.SetLoop):
            self._loop = None if c.end_frame is None else (c.start_frame, c.end_frame)
        elif isinstance(c, cmd.AddTrack):
            t = c.track
            old = self._tracks.pop(t.track_id, None)
            if old is not None:
                self._graveyard.append(old)
            self._tracks[t.track_id] = t
            t.locate(self._position)
            return True
        elif isinstance(c, cmd.RemoveTrack):
            old = self._tracks.pop(c.track_id, None)
            if old is None:
                self._skipped += 1
                return False
            self._graveyard.append(old)
            return True
        elif isinstance(c, cmd.SetGain | cmd.SetPan | cmd.SetMute | cmd.SetSolo):
            t = self._track(c.track_id)
            if t is None:
                return False
            if isinstance(c, cmd.SetGain):
                t.gain_db = float(c.gain_db)
            elif isinstance(c, cmd.SetPan):
                t.pan = float(c.pan)
            elif isinstance(c, cmd.SetMute):
                t.muted = bool(c.muted)
            else:
                t.soloed = bool(c.soloed)
            return True
        elif isinstance(c, cmd.SetMonitor):
            self._monitor = c.monitor
            self._ab_target[0] = 1.0 if c.monitor == "master" else 0.0
        elif isinstance(c, cmd.SetMatchGains):
            self._ab_target[1] = 10.0 ** (c.source_db / 20.0)
            self._ab_target[2] = 10.0 ** (c.master_db / 20.0)
        elif isinstance(c, cmd.SetMasterGain):
            self._ab_target[3] = 10.0 ** (c.gain_db / 20.0)
        elif isinstance(c, cmd.SetMasterChain):
            if c.chain is not None and c.chain.sample_rate != self.sample_rate:
                self._skipped += 1  # the builder should have checked; refuse rather than mis-play
                self._graveyard.append(c.chain)
                return False
            if self._chain is not None:
                self._graveyard.append(self._chain)
            self._chain = c.chain
            lat = 0 if c.chain is None else c.chain.latency_frames
            self._latency = min(lat, self._dry_ring.shape[1] - 1)
        elif isinstance(c, cmd.NoteOn | cmd.NoteOff):
            t = self._track(c.track_id)
            if isinstance(t, MidiTrack):
                if isinstance(c, cmd.NoteOn):
                    t.player.live_event(EV_NOTE_ON, c.pitch, float(c.velocity))
                else:
                    t.player.live_event(EV_NOTE_OFF, c.pitch, 0.0)
        elif isinstance(c, cmd.AllNotesOff):
            for t in self._track_list:
                if isinstance(t, MidiTrack) and (c.track_id is None or c.track_id == t.track_id):
                    t.player.locate(self._position)
        elif isinstance(c, cmd.ResetMeters):
            self._meters.reset()
        else:
            self._skipped += 1
        return False

    def _refresh_tracks(self) -> None:
        self._track_list = list(self._tracks.values())
        for role in ("source", "master"):
            group = [t for t in self._track_list if t.role == role]
            solo = any(t.soloed for t in group)
            for t in group:
                t.update_target(not t.muted and (t.soloed or not solo))
        self._has_takes = any(t.role == "master" for t in self._track_list)
        self._length = max((t.end_frame for t in self._track_list), default=0)
        self._infos = tuple(
            TrackInfo(t.track_id, t.kind, t.role, t.gain_db, t.pan, t.muted, t.soloed, t.start_frame, t.end_frame)
            for t in self._track_list
        )

    # ---- mixing

    def _segments(self, n: int) -> None:
        """Mix ``n`` transport frames into the buses, wrapping at the loop end."""
        done = 0
        while done < n:
            m = n - done
            loop = self._loop
            if self._playing and loop is not None and self._position < loop[1]:
                m = min(m, loop[1] - self._position)
            for t in self._track_list:
                bus = self._take_bus if t.role == "master" else self._src_bus
                t.mix(bus, done, self._position, m, self._playing, self._step, self._midi_scratch)
            done += m
            if self._playing:
                self._position += m
                if loop is not None and self._position == loop[1]:
                    self._locate(loop[0])

    def _render_chunk(self, n: int) -> None:
        src = self._src_bus[:, :n]
        take = self._take_bus[:, :n]
        _copy_kernel(self._empty, src, n)
        _copy_kernel(self._empty, take, n)
        self._segments(n)
        a = self._a[:, :n]
        b = self._b[:, :n]
        self._dry_w = _delay_kernel(src, self._dry_ring, self._dry_w, self._latency, a, n)
        if self._has_takes:
            self._take_w = _delay_kernel(take, self._take_ring, self._take_w, self._latency, b, n)
            if self._chain is not None:
                self._chain.process(src, src)  # keep it running (warm) while takes play
        elif self._chain is not None:
            self._chain.process(src, b)
        else:
            _copy_kernel(a, b, n)
        out = self._out[:, :n]
        _ab_kernel(a, b, out, n, self._ab_state, self._ab_target, self._ab_step)
        self._meters.process(out)

    def _make_snapshot(self) -> Snapshot:
        chain = self._chain
        return Snapshot(
            position_frame=self._position,
            playing=self._playing,
            loop=self._loop,
            monitor=self._monitor,
            latency_frames=self._latency,
            sample_rate=self.sample_rate,
            length_frames=self._length,
            tracks=self._infos,
            meters=self._meters.reading,
            frames_rendered=self._frames_rendered,
            underruns=self.underruns,
            overloads=self.overloads,
            callback_load=self.callback_load,
            callback_load_max=self.callback_load_max,
            skipped=self._skipped + (chain.underflows if chain is not None else 0),
            timestamp_s=time.monotonic(),
        )
