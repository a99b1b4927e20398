"""Real-time playback: transport, mixer, loudness-matched A/B master bus, meters, bounce.

The UI builds tracks and master chains off the audio thread, sends commands with
:meth:`Engine.send`, and pulls :meth:`Engine.snapshot` on a timer; the audio thread
(:class:`AudioOutput`'s callback) or an offline :func:`bounce` calls
:meth:`Engine.render`, the one mixer path.

Typical wiring (UI thread)::

    sys.setswitchinterval(0.0005)            # once at start-up: see engine.py, "GIL"
    eng = Engine(48000, block_frames=256)
    eng.send(AddTrack(AudioTrack("mix", audio_io.resample(x, sr, 48000))))
    eng.send(AddTrack(MidiTrack("keys", notes, 48000)))
    eng.send(AddTrack(AudioTrack("master", mastered, role="master")))   # optional take
    eng.send(SetMasterChain(ThreadedMasterChain(LiveMasterChain(plan))))  # live chain
    eng.send(SetMatchGains(*match_gains_db(src_lufs, master_lufs)))
    out = AudioOutput(eng, blocksize=256); out.start()
    eng.send(Play()); eng.send(SetMonitor("master"))     # A/B, time-aligned
    snap = eng.snapshot()                                 # QTimer, ~30 Hz
    bounce(tracks, 0, n, sample_rate=48000, master_chain=LiveMasterChain(plan),
           monitor="master")                              # offline, same samples
"""

from app.engine.playback.bounce import bounce
from app.engine.playback.commands import (
    AddTrack,
    AllNotesOff,
    Command,
    Monitor,
    NoteOff,
    NoteOn,
    Pause,
    Play,
    RemoveTrack,
    ResetMeters,
    Seek,
    SetGain,
    SetLoop,
    SetMasterChain,
    SetMasterGain,
    SetMatchGains,
    SetMonitor,
    SetMute,
    SetPan,
    SetSolo,
    Stop,
)
from app.engine.playback.engine import Engine, Snapshot, TrackInfo, match_gains_db
from app.engine.playback.master import LiveMasterChain, ThreadedMasterChain
from app.engine.playback.meters import MeterReading, OutputMeters
from app.engine.playback.stream import AudioOutput, OutputDevice, list_output_devices
from app.engine.playback.tracks import AudioTrack, MidiTrack, Track, pan_gains

__all__ = [
    "AddTrack",
    "AllNotesOff",
    "AudioOutput",
    "AudioTrack",
    "Command",
    "Engine",
    "LiveMasterChain",
    "MeterReading",
    "MidiTrack",
    "Monitor",
    "NoteOff",
    "NoteOn",
    "OutputDevice",
    "OutputMeters",
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
    "Snapshot",
    "Stop",
    "ThreadedMasterChain",
    "Track",
    "TrackInfo",
    "bounce",
    "list_output_devices",
    "match_gains_db",
    "pan_gains",
]

