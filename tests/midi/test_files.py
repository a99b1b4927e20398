"""Contracts of app.midi.files: the note model, tempo maps, MIDI import/export, quantize, JSON.

Reference files are built here with mido and pretty_midi directly (never with the
code under test), and pretty_midi's own timing is the oracle for seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.errors import AudioInputError, AudioOutputError, ParameterError
from app.midi.files import (
    CLIP_FORMAT_VERSION,
    DRUM_CHANNEL,
    NOTE_ARRAY_DTYPE,
    NOTE_FRAMES_DTYPE,
    MidiClip,
    MidiFileError,
    Note,
    beats_to_seconds,
    clip_from_dict,
    clip_to_dict,
    pitch_name,
    quantize,
    read_midi,
    seconds_to_beats,
    write_midi,
)

GRIDS = [1.0, 0.5, 0.25, 0.125, 1 / 3, 1 / 6, 1 / 12]


def _melody() -> MidiClip:
    notes = [
        Note(60, 0.0, 1.0, 100),
        Note(62, 1.0, 0.5, 90),
        Note(64, 1.5, 0.5, 80),
        Note(67, 2.0, 1 / 3, 70),  # triplet: not on a 960-ppq tick boundary
        Note(65, 2 + 1 / 3, 1 / 3, 64),
        Note(64, 2 + 2 / 3, 1 / 3, 127),
        Note(60, 3.0, 1.0, 1),
        Note(60, 4.0, 0.25, 99),  # same pitch right after the previous note ends
    ]
    return MidiClip("Lead", notes, tempo_bpm=123.0, time_signature=(6, 8), program=73)


def _bass() -> MidiClip:
    notes = [Note(36 + (i % 3), i * 0.75, 0.7, 90 + i, channel=1) for i in range(12)]
    return MidiClip("Bass", notes, tempo_bpm=123.0, time_signature=(6, 8), program=33)


def _drums() -> MidiClip:
    notes = [Note(36, i * 1.0, 0.1, 120) for i in range(8)]
    notes += [Note(42, i * 0.5, 0.05, 70) for i in range(16)]
    return MidiClip(
        "Drums", notes, tempo_bpm=123.0, time_signature=(6, 8), program=25, is_drum=True
    )


def _same_notes(a: MidiClip, b: MidiClip, tick_beats: float) -> None:
    key = lambda n: (n.start_beats, n.pitch)  # noqa: E731
    na, nb = sorted(a.notes, key=key), sorted(b.notes, key=key)
    assert len(na) == len(nb)
    for x, y in zip(na, nb, strict=True):
        assert x.pitch == y.pitch
        assert x.velocity == y.velocity
        assert abs(x.start_beats - y.start_beats) <= tick_beats / 2 + 1e-12
        assert abs(x.length_beats - y.length_beats) <= tick_beats + 1e-12


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pitch": 128},
        {"pitch": -1},
        {"velocity": 0},
        {"velocity": 128},
        {"length_beats": 0.0},
        {"length_beats": -1.0},
        {"start_beats": -0.5},
        {"start_beats": float("nan")},
        {"channel": 16},
        {"pitch": 60.0},
        {"velocity": True},
    ],
)
def test_note_rejects_out_of_range_values(kwargs):
    base = {"pitch": 60, "start_beats": 0.0, "length_beats": 1.0, "velocity": 100}
    with pytest.raises(ParameterError):
        Note(**(base | kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tempo_bpm": 0.0},
        {"tempo_bpm": 5000.0},
        {"time_signature": (4, 3)},
        {"time_signature": (0, 4)},
        {"time_signature": (4,)},
        {"program": 128},
        {"tempo_changes": ((0.0, 100.0),)},
        {"tempo_changes": ((4.0, 100.0), (2.0, 90.0))},
        {"notes": [(60, 0.0, 1.0, 100)]},
    ],
)
def test_clip_rejects_invalid_settings(kwargs):
    with pytest.raises(ParameterError):
        MidiClip(**kwargs)


def test_clip_is_a_frozen_value_with_tuple_notes():
    clip = MidiClip("x", [Note(60, 0, 1, 100)])
    assert isinstance(clip.notes, tuple)
    assert clip == MidiClip("x", (Note(60, 0, 1, 100),))
    with pytest.raises(AttributeError):
        clip.name = "y"  # type: ignore[misc]
    assert MidiClip(time_signature=(6, 8)).beats_per_bar == 3.0


def test_pitch_names_use_c4_for_middle_c():
    assert [pitch_name(p) for p in (60, 61, 21, 0, 127)] == ["C4", "C#4", "A0", "C-1", "G9"]


# --------------------------------------------------------------------------- tempo map


def test_beats_and_seconds_at_constant_tempo():
    assert beats_to_seconds(4.0, 120.0) == pytest.approx(2.0)
    assert seconds_to_beats(1.5, 90.0) == pytest.approx(2.25)


def test_tempo_changes_are_piecewise_and_invertible():
    changes = ((4.0, 60.0), (8.0, 240.0))
    # 4 beats at 120 (2 s) + 4 at 60 (4 s) + 2 at 240 (0.5 s)
    assert beats_to_seconds(10.0, 120.0, tempo_changes=changes) == pytest.approx(6.5)
    beats = np.linspace(0.0, 20.0, 161)
    secs = beats_to_seconds(beats, 120.0, tempo_changes=changes)
    assert isinstance(secs, np.ndarray) and secs.shape == beats.shape
    assert np.all(np.diff(secs) > 0)
    np.testing.assert_allclose(
        seconds_to_beats(secs, 120.0, tempo_changes=changes), beats, atol=1e-12
    )


def test_note_array_in_seconds_and_frames():
    clip = MidiClip(
        "x",
        [Note(67, 5.0, 1.0, 90, channel=2), Note(60, 0.0, 2.0, 100)],
        tempo_bpm=120.0,
        tempo_changes=((4.0, 60.0),),
    )
    arr = clip.to_note_array()
    assert arr.dtype == NOTE_ARRAY_DTYPE
    assert arr["pitch"].tolist() == [60, 67]  # sorted by start
    np.testing.assert_allclose(arr["start_s"], [0.0, 3.0])
    np.testing.assert_allclose(arr["end_s"], [1.0, 4.0])
    assert arr["channel"].tolist() == [0, 2]
    framed = clip.to_note_array(48000)
    assert framed.dtype == NOTE_FRAMES_DTYPE
    assert framed["start_frame"].tolist() == [0, 144000]
    assert framed["end_frame"].tolist() == [48000, 192000]
    assert clip.duration_s() == pytest.approx(4.0)
    drums = MidiClip("d", [Note(36, 0, 0.1, 100)], is_drum=True)
    assert drums.to_note_array()["channel"].tolist() == [DRUM_CHANNEL]
    assert MidiClip().to_note_array().shape == (0,)


# --------------------------------------------------------------------------- files


def test_round_trip_keeps_notes_tempo_meter_programs_and_drums(tmp_path):
    clips = [_melody(), _bass(), _drums()]
    out = write_midi(tmp_path / "song.mid", clips)
    assert out == tmp_path / "song.mid"
    back = read_midi(out)
    assert [c.name for c in back] == ["Lead", "Bass", "Drums"]
    assert [c.program for c in back] == [73, 33, 25]
    assert [c.is_drum for c in back] == [False, False, True]
    for orig, got in zip(clips, back, strict=True):
        assert got.tempo_bpm == 123.0
        assert got.time_signature == (6, 8)
        assert got.tempo_changes == ()
        _same_notes(orig, got, tick_beats=1 / 960)
    assert {n.channel for n in back[1].notes} == {1}
    assert {n.channel for n in back[2].notes} == {DRUM_CHANNEL}
    assert not [p for p in tmp_path.iterdir() if p.name != "song.mid"], "temporary file left behind"


def test_round_trip_with_tempo_changes_keeps_the_map(tmp_path):
    clip = MidiClip(
        "Rubato", _melody().notes, tempo_bpm=100.0, tempo_changes=((2.0, 75.5), (4.0, 140.0))
    )
    back = read_midi(write_midi(tmp_path / "r.mid", [clip]))[0]
    assert back.tempo_bpm == 100.0
    assert back.tempo_changes == ((2.0, 75.5), (4.0, 140.0))
    _same_notes(clip, back, tick_beats=1 / 960)


def test_file_with_tempo_changes_maps_ticks_to_beats_and_seconds_like_pretty_midi(tmp_path):
    ppq = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=ppq)
    conductor = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=500_000, time=0),  # 120 bpm
            mido.MetaMessage("set_tempo", tempo=1_000_000, time=4 * ppq),  # 60 bpm at beat 4
            mido.MetaMessage("set_tempo", tempo=400_000, time=3 * ppq),  # 150 bpm at beat 7
        ]
    )
    notes_track = mido.MidiTrack([mido.MetaMessage("track_name", name="Keys")])
    onsets = [0, 240, 1920, 2160, 3360, 3600, 5000]  # ticks, across all three tempos
    now = 0
    for i, tick in enumerate(onsets):
        notes_track.append(mido.Message("note_on", note=60 + i, velocity=50 + i, time=tick - now))
        notes_track.append(mido.Message("note_off", note=60 + i, velocity=0, time=120))
        now = tick + 120
    mid.tracks.extend([conductor, notes_track])
    path = tmp_path / "tempo.mid"
    mid.save(path)

    (clip,) = read_midi(path)
    assert clip.name == "Keys"
    assert clip.tempo_bpm == 120.0
    assert clip.tempo_changes == ((4.0, 60.0), (7.0, 150.0))
    assert [n.start_beats for n in clip.notes] == [t / ppq for t in onsets]
    assert all(n.length_beats == 0.25 for n in clip.notes)

    oracle = pretty_midi.PrettyMIDI(str(path)).instruments[0].notes
    arr = clip.to_note_array()
    np.testing.assert_allclose(arr["start_s"], [n.start for n in oracle], atol=1e-9)
    np.testing.assert_allclose(arr["end_s"], [n.end for n in oracle], atol=1e-9)


def test_reads_a_multitrack_file_written_by_pretty_midi(tmp_path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=97.0)
    specs = [("Piano", 0, False), ("Fretless", 35, False), ("Kit", 0, True)]
    rng = np.random.default_rng(7)
    for name, program, is_drum in specs:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum, name=name)
        t = 0.0
        for _ in range(40):
            length = float(rng.choice([0.1, 0.25, 0.5]))
            inst.notes.append(
                pretty_midi.Note(
                    velocity=int(rng.integers(1, 128)),
                    pitch=int(rng.integers(30, 90)),
                    start=t,
                    end=t + length,
                )
            )
            t += float(rng.choice([0.125, 0.25, 0.5]))
        pm.instruments.append(inst)
    path = tmp_path / "multi.mid"
    pm.write(str(path))

    clips = read_midi(path)
    assert [c.name for c in clips] == ["Piano", "Fretless", "Kit"]
    assert [c.program for c in clips] == [0, 35, 0]
    assert [c.is_drum for c in clips] == [False, False, True]
    oracle = pretty_midi.PrettyMIDI(str(path))
    for clip, inst in zip(clips, oracle.instruments, strict=True):
        assert clip.tempo_bpm == pytest.approx(97.0, abs=1e-3)
        arr = clip.to_note_array()
        want = sorted(inst.notes, key=lambda n: (n.start, n.pitch))
        assert arr["pitch"].tolist() == [n.pitch for n in want]
        assert arr["velocity"].tolist() == [n.velocity for n in want]
        np.testing.assert_allclose(arr["start_s"], [n.start for n in want], atol=1e-6)
        np.testing.assert_allclose(arr["end_s"], [n.end for n in want], atol=1e-6)


def test_overlapping_same_pitch_and_unterminated_notes(tmp_path):
    track = mido.MidiTrack(
        [
            mido.Message("program_change", program=5, time=0),
            mido.Message("note_on", note=60, velocity=100, time=0),
            mido.Message("note_on", note=60, velocity=50, time=96),  # second voice, same pitch
            mido.Message("note_on", note=60, velocity=0, time=96),  # ends the first (FIFO)
            mido.Message("note_off", note=60, time=96),  # ends the second
            mido.Message("note_on", note=64, velocity=70, time=0),
            mido.Message("note_on", note=67, velocity=70, time=0),
            mido.Message("note_off", note=67, time=0),  # zero length: kept one tick long
            mido.Message("control_change", control=64, value=0, time=192),
        ]
    )
    mid = mido.MidiFile(type=0, ticks_per_beat=96)
    mid.tracks.append(track)
    path = tmp_path / "edge.mid"
    mid.save(path)
    (clip,) = read_midi(path)
    got = [(n.pitch, n.start_beats, n.length_beats, n.velocity) for n in clip.notes]
    assert got == [
        (60, 0.0, 2.0, 100),
        (60, 1.0, 2.0, 50),
        (64, 3.0, 2.0, 70),  # held to the track's last event
        (67, 3.0, 1 / 96, 70),
    ]
    assert clip.program == 5


def test_valid_file_without_notes_gives_no_clips(tmp_path):
    mid = mido.MidiFile()
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=600_000)]))
    mid.save(tmp_path / "silent.mid")
    assert read_midi(tmp_path / "silent.mid") == []


def _smf(track_data: bytes) -> bytes:
    """A format-0, 96-ppq file around one raw track chunk."""
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += (96).to_bytes(2, "big")
    return header + b"MTrk" + len(track_data).to_bytes(4, "big") + track_data


def _good_bytes(tmp_path: Path) -> bytes:
    return write_midi(tmp_path / "good.mid", [_melody(), _bass()]).read_bytes()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda good: b"", "empty"),
        (
            lambda good: b"Hello, this is a text file pretending to be MIDI.\n" * 5,
            "not a MIDI file",
        ),
        (lambda good: b"RIFF" + good, "RIFF"),
        (lambda good: good[:10], "truncated"),
        (lambda good: good[: len(good) // 2], "truncated"),
        (lambda good: good[:-3], "truncated"),
        (lambda good: good[: good.rindex(b"MTrk")], "truncated"),  # a whole track missing
        (lambda good: b"MThd" + bytes(range(256)) * 3, "corrupt"),
        (lambda good: _smf(b"\x00\x40\x40\x00\xff\x2f\x00"), "corrupt"),  # data byte, no status
    ],
    ids=[
        "empty",
        "text",
        "riff",
        "header-cut",
        "half",
        "tail-cut",
        "missing-track",
        "junk",
        "bad-event",
    ],
)
def test_unusable_files_raise_one_clear_error(tmp_path, make, reason):
    bad = tmp_path / "broken song.mid"
    bad.write_bytes(make(_good_bytes(tmp_path)))
    with pytest.raises(MidiFileError, match=reason) as info:
        read_midi(bad)
    assert "broken song.mid" in str(info.value)
    assert isinstance(info.value, AudioInputError)
    assert "\n" not in str(info.value)


def test_random_bytes_after_a_header_never_escape_as_raw_errors(tmp_path, rng):
    good = _good_bytes(tmp_path)
    path = tmp_path / "fuzz.mid"
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(14, len(data), size=int(rng.integers(1, 8))):
            data[pos] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            read_midi(path)
        except MidiFileError:
            pass  # anything else escaping fails the test


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(MidiFileError, match="does not exist"):
        read_midi(tmp_path / "nope.mid")
    with pytest.raises(MidiFileError, match="not a file"):
        read_midi(tmp_path)


def test_write_never_overwrites_unless_forced(tmp_path):
    src = write_midi(tmp_path / "src.mid", [_melody()])
    before = src.read_bytes()
    clips = read_midi(src)
    edited = [MidiClip("Lead", clips[0].notes[:3], tempo_bpm=123.0)]
    with pytest.raises(AudioOutputError, match="input file"):
        write_midi(src, edited, protect=[src])
    with pytest.raises(AudioOutputError, match="already exists"):
        write_midi(src, edited)
    assert src.read_bytes() == before
    write_midi(src, edited, protect=[src], force=True)
    assert len(read_midi(src)[0].notes) == 3
    with pytest.raises(AudioOutputError):
        write_midi(tmp_path / "no folder" / "x.mid", edited)


def test_write_rejects_inconsistent_clips(tmp_path):
    with pytest.raises(ParameterError):
        write_midi(tmp_path / "a.mid", [])
    with pytest.raises(ParameterError, match="tempo"):
        write_midi(tmp_path / "a.mid", [_melody(), MidiClip("x", tempo_bpm=90.0)])
    with pytest.raises(ParameterError, match="drum channel"):
        write_midi(tmp_path / "a.mid", [MidiClip("x", [Note(60, 0, 1, 100, channel=9)])])
    assert not (tmp_path / "a.mid").exists()


# --------------------------------------------------------------------------- quantize


def _random_notes(rng: np.random.Generator, count: int = 50) -> list[Note]:
    return [
        Note(
            int(rng.integers(0, 128)),
            float(rng.uniform(0, 16)),
            float(rng.uniform(0.01, 2)),
            int(rng.integers(1, 128)),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("grid", GRIDS)
def test_quantize_full_strength_lands_on_grid_and_is_idempotent(rng, grid):
    notes = _random_notes(rng)
    once = quantize(notes, grid)
    for orig, q in zip(notes, once, strict=True):
        k = q.start_beats / grid
        assert abs(k - round(k)) < 1e-9
        assert abs(q.start_beats - orig.start_beats) <= grid / 2 + 1e-9
        assert (q.pitch, q.length_beats, q.velocity) == (
            orig.pitch,
            orig.length_beats,
            orig.velocity,
        )
    assert quantize(once, grid) == once


@pytest.mark.parametrize("grid", GRIDS)
def test_quantize_zero_strength_changes_nothing_and_half_moves_halfway(rng, grid):
    notes = _random_notes(rng)
    assert quantize(notes, grid, 0.0) == notes
    assert quantize(notes, grid, 0.0, ends=True) == notes
    full = quantize(notes, grid)
    half = quantize(notes, grid, 0.5)
    for o, f, h in zip(notes, full, half, strict=True):
        assert h.start_beats == pytest.approx((o.start_beats + f.start_beats) / 2)


@settings(max_examples=200, deadline=None)
@given(
    start=st.floats(0, 64, allow_nan=False),
    length=st.floats(1e-3, 8, allow_nan=False),
    grid=st.sampled_from(GRIDS),
)
def test_quantize_ends_keeps_notes_positive_and_on_grid(start, length, grid):
    (q,) = quantize([Note(60, start, length, 100)], grid, ends=True)
    assert q.length_beats > 0
    for edge in (q.start_beats, q.end_beats):
        assert abs(edge / grid - round(edge / grid)) < 1e-6
    assert quantize([q], grid, ends=True) == [q]


@pytest.mark.parametrize(("grid", "strength"), [(0.0, 1.0), (-1.0, 1.0), (0.25, 1.5), (0.25, -0.1)])
def test_quantize_rejects_bad_settings(grid, strength):
    with pytest.raises(ParameterError):
        quantize([Note(60, 0.1, 1, 100)], grid, strength)


# --------------------------------------------------------------------------- JSON


def test_clip_json_round_trip_is_exact():
    clip = MidiClip(
        "Chords",
        [*_melody().notes, Note(48, 7.25, 0.5, 33, channel=3)],
        tempo_bpm=87.5,
        time_signature=(7, 8),
        program=48,
        tempo_changes=((8.0, 92.25),),
    )
    data = json.loads(json.dumps(clip_to_dict(clip)))
    assert data["version"] == CLIP_FORMAT_VERSION
    assert clip_from_dict(data) == clip
    drums = _drums()
    assert clip_from_dict(json.loads(json.dumps(clip_to_dict(drums)))) == drums


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="something.else"),
        lambda d: d.update(version=CLIP_FORMAT_VERSION + 1),
        lambda d: d.update(version="1"),
        lambda d: d["notes"][0].update(pitch=200),
        lambda d: d["notes"][0].pop("velocity"),
        lambda d: d.update(time_signature=[4]),
        lambda d: d.update(tempo_changes=[[1.0]]),
    ],
)
def test_clip_from_dict_rejects_bad_descriptions(mutate):
    data = clip_to_dict(_melody())
    mutate(data)
    with pytest.raises(ParameterError):
        clip_from_dict(data)


def test_write_is_atomic_when_the_rename_fails(tmp_path, monkeypatch):
    target = write_midi(tmp_path / "keep.mid", [_melody()])
    before = target.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(AudioOutputError, match="No space"):
        write_midi(target, [_bass()], force=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mid"]
