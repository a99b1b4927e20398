"""The engine's mixer and transport, rendered without a device (reference buffers)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from app.engine import analysis
from app.engine.errors import AudioInputError, ParameterError
from app.engine.playback import (
    AddTrack,
    AllNotesOff,
    AudioTrack,
    Engine,
    LiveMasterChain,
    MidiTrack,
    NoteOn,
    Pause,
    Play,
    RemoveTrack,
    Seek,
    SetGain,
    SetLoop,
    SetMasterChain,
    SetMatchGains,
    SetMonitor,
    SetMute,
    SetPan,
    SetSolo,
    Stop,
    ThreadedMasterChain,
    bounce,
    match_gains_db,
    pan_gains,
)
from app.engine.synth import make_notes, render_notes
from tests.engine.playback.helpers import noise, plan, ramp

BLOCKS = [1, 64, 65, 256, 8192, 8193]
RAMP_FRAMES = {44100: 441, 48000: 480, 96000: 960}


def _render_blocks(eng: Engine, total: int, block: int) -> np.ndarray:
    out = np.zeros((2, total), dtype=np.float32)
    done = 0
    while done < total:
        n = min(block, total - done)
        eng.render(n, out=out[:, done : done + n])
        done += n
    return out


def _engine(sr: int, *tracks: object, play: bool = True) -> Engine:
    eng = Engine(sr)
    for t in tracks:
        eng.send(AddTrack(t))
    if play:
        eng.send(Play())
    return eng


# ------------------------------------------------------------------ basic mixing


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("block", [64, 65, 8193])
def test_single_track_plays_exactly(sr, channels, block):
    x = ramp(channels, 20000)
    eng = _engine(sr, AudioTrack("a", x, start_frame=100))
    y = _render_blocks(eng, 20300, block)
    left, right = pan_gains(0.0, channels)
    assert np.all(y[:, :100] == 0) and np.all(y[:, 20100:] == 0)
    # gains are float64 and each product is rounded once to float32
    np.testing.assert_array_equal(y[0, 100:20100], (x[0].astype(np.float64) * left).astype(np.float32))
    np.testing.assert_array_equal(y[1, 100:20100], (x[-1].astype(np.float64) * right).astype(np.float32))
    assert eng.snapshot().position_frame == 20300


def test_pan_law_is_constant_power_for_mono_and_balance_for_stereo():
    for pan in np.linspace(-1, 1, 9):
        left, right = pan_gains(pan, 1)
        assert left**2 + right**2 == pytest.approx(1.0)
    assert 20 * math.log10(pan_gains(0.0, 1)[0]) == pytest.approx(-3.0103, abs=1e-3)
    assert pan_gains(0.0, 2) == pytest.approx((1.0, 1.0))
    assert pan_gains(1.0, 2) == pytest.approx((0.0, 1.0), abs=1e-12)
    assert pan_gains(-1.0, 1) == pytest.approx((1.0, 0.0), abs=1e-12)
    # and the mixer applies it
    x = np.full((1, 48000), 0.5, dtype=np.float32)
    eng = _engine(48000, AudioTrack("m", x, pan=-1.0))
    y = eng.render(1000)
    assert np.all(y[0] == 0.5) and np.all(y[1] == 0.0)


def test_gain_changes_ramp_without_jumps_and_land_exactly():
    x = np.ones((2, 48000), dtype=np.float32)
    eng = _engine(48000, AudioTrack("a", x))
    eng.render(100)
    eng.send(SetGain("a", -6.0))
    y = eng.render(1000)
    target = 10 ** (-6 / 20)
    assert np.max(np.abs(np.diff(y[0]))) <= 1.0 / 480 + 1e-6  # ramp: no step larger than one ramp step
    assert y[0, -1] == pytest.approx(target, abs=1e-6)
    assert y[0, 0] < 1.0 and y[0, 0] > 0.99


def test_mute_and_solo_are_scoped_by_role():
    n = 48000
    tracks = [
        AudioTrack("a", np.full((2, n), 0.1, np.float32)),
        AudioTrack("b", np.full((2, n), 0.01, np.float32)),
        AudioTrack("c", np.full((2, n), 0.001, np.float32)),
        AudioTrack("m", np.full((2, n), 0.5, np.float32), role="master"),
    ]
    eng = _engine(48000, *tracks)
    assert eng.render(10)[0, -1] == pytest.approx(0.111, abs=1e-6)  # monitor source: a+b+c
    eng.send(SetSolo("b", True))
    eng.render(1000)
    assert eng.render(10)[0, -1] == pytest.approx(0.01, abs=1e-7)
    eng.send(SetSolo("c", True))
    eng.render(1000)
    assert eng.render(10)[0, -1] == pytest.approx(0.011, abs=1e-7)
    eng.send(SetMute("c", True))
    eng.render(1000)
    assert eng.render(10)[0, -1] == pytest.approx(0.01, abs=1e-7)
    eng.send(SetMonitor("master"))  # solo among sources does not silence the master take
    eng.render(1000)
    assert eng.render(10)[0, -1] == pytest.approx(0.5, abs=1e-6)
    info = {t.track_id: t for t in eng.snapshot().tracks}
    assert info["b"].soloed and info["c"].muted and info["m"].role == "master"


# ------------------------------------------------------------------ transport


@pytest.mark.parametrize("block", BLOCKS)
def test_loop_wraps_exactly(block):
    x = ramp(1, 30000)
    eng = Engine(48000)
    eng.send(AddTrack(AudioTrack("a", x, pan=-1.0)))
    eng.send(SetLoop(1000, 1500))
    eng.send(Seek(900))
    eng.send(Play())
    y = _render_blocks(eng, 1600, block)
    frames = np.concatenate([np.arange(900, 1500), np.arange(1000, 1500), np.arange(1000, 1500)])
    np.testing.assert_array_equal(y[0], x[0, frames])
    assert eng.snapshot().position_frame == 1000 and eng.snapshot().loop == (1000, 1500)


def test_seek_pause_stop_and_position():
    x = ramp(2, 48000)
    eng = _engine(48000, AudioTrack("a", x))
    eng.send(Seek(5000))
    y = eng.render(100)
    np.testing.assert_array_equal(y, x[:, 5000:5100])
    eng.send(Pause())
    assert np.all(eng.render(50) == 0) and eng.snapshot().position_frame == 5100
    assert not eng.snapshot().playing
    eng.send(Play())
    np.testing.assert_array_equal(eng.render(10), x[:, 5100:5110])
    eng.send(Stop())
    eng.render(1)
    s = eng.snapshot()
    assert s.position_frame == 0 and not s.playing
    eng.send(SetLoop(0, None))
    eng.render(0)
    assert eng.snapshot().loop is None


def test_loop_past_end_plays_on():
    x = ramp(1, 5000)
    eng = Engine(48000)
    eng.send(AddTrack(AudioTrack("a", x, pan=-1.0)))
    eng.send(SetLoop(100, 200))
    eng.send(Seek(300))
    eng.send(Play())
    np.testing.assert_array_equal(eng.render(500)[0], x[0, 300:800])


# ------------------------------------------------------------------ MIDI


def test_midi_track_equals_offline_render_notes_sample_exactly():
    notes = make_notes([0.0, 0.1000001, 0.25, 0.26], [0.3, 0.2, 0.5, 0.4], [60, 64, 67, 40], [100, 70, 127, 50])
    ref = render_notes(notes, 48000)
    eng = Engine(48000)
    eng.send(AddTrack(MidiTrack("m", notes, 48000, pan=0.0)))
    eng.send(Play())
    got = _render_blocks(eng, ref.shape[1], 65)
    np.testing.assert_array_equal(got, ref)  # stereo balance law: unity at centre


def test_live_notes_and_all_notes_off():
    eng = Engine(48000)
    eng.send(AddTrack(MidiTrack("m", make_notes([10.0], [11.0], [60], [1]), 48000)))
    eng.render(64)
    assert np.all(eng.render(64) == 0)
    eng.send(NoteOn("m", 72, 110))
    assert np.abs(eng.render(256)).max() > 0.01
    eng.send(AllNotesOff())
    for _ in range(200):
        y = eng.render(512)
    assert np.abs(y).max() < 1e-4
    eng.send(NoteOn("nope", 60, 100))
    eng.render(1)
    assert eng.snapshot().skipped == 1


# ------------------------------------------------------------------ bounce == live


def _project(rng: np.random.Generator, sr: int) -> list:
    return [
        AudioTrack("mono", noise(rng, sr // 2)[:1], pan=0.3, gain_db=-3.0),
        AudioTrack("st", noise(rng, sr // 3), start_frame=777, pan=-0.2),
        MidiTrack("keys", make_notes([0.01, 0.2], [0.3, 0.45], [60, 67], [90, 60]), sr, gain_db=-6.0),
    ]


@pytest.mark.parametrize("block", BLOCKS)
def test_bounce_is_sample_exact_against_one_shot_render_with_master_chain(block, rng):
    sr = 48000
    tracks = _project(rng, sr)
    total = sr // 4

    def chain() -> LiveMasterChain:
        return LiveMasterChain(plan(sr), 4.0)

    ref = bounce(tracks, 1000, 1000 + total, block_frames=total + 10000, sample_rate=sr,
                 master_chain=chain(), monitor="master")  # fmt: skip
    # the live path: one engine, one render call
    eng = Engine(sr)
    for t in tracks:
        eng.send(AddTrack(t.fresh()))
    eng.send(SetMasterChain(chain()))
    eng.send(SetMonitor("master"))
    eng.send(Seek(1000))
    eng.send(Play())
    lat = chain().latency_frames
    live = eng.render(total + lat)[:, lat:]
    np.testing.assert_array_equal(ref, live)
    got = bounce(tracks, 1000, 1000 + total, block_frames=block, sample_rate=sr,
                 master_chain=chain(), monitor="master")  # fmt: skip
    np.testing.assert_array_equal(got, ref)
    assert np.abs(ref).max() > 0.05


@pytest.mark.parametrize("sr", [44100, 96000])
@pytest.mark.parametrize("block", [1, 65, 8193])
def test_bounce_block_invariance_without_chain(sr, block, rng):
    tracks = _project(rng, sr)
    total = sr // 5 if block == 1 else sr // 2
    ref = bounce(tracks, 0, total, block_frames=total, sample_rate=sr)
    np.testing.assert_array_equal(bounce(tracks, 0, total, block_frames=block, sample_rate=sr), ref)


# ------------------------------------------------------------------ A/B


def test_ab_match_gains_equalise_loudness_and_stay_time_aligned(rng):
    sr = 48000
    src = noise(rng, 3 * sr)
    take = (src * 2.0).astype(np.float32)  # a "master" 6 dB louder, same timing
    eng = _engine(sr, AudioTrack("src", src), AudioTrack("take", take, role="master"))
    l_src, l_take = analysis.integrated_loudness(src, sr), analysis.integrated_loudness(take, sr)
    s_db, m_db = match_gains_db(l_src, l_take)
    assert s_db == 0.0 and m_db == pytest.approx(-6.02, abs=0.01)
    eng.send(SetMatchGains(s_db, m_db))
    a = eng.render(sr)
    eng.send(SetMonitor("master"))
    b = eng.render(sr)
    b_ref = take[:, sr : 2 * sr] * np.float32(10 ** (m_db / 20))
    np.testing.assert_allclose(b[:, 600:], b_ref[:, 600:], atol=1e-6)  # after the 10 ms crossfade
    np.testing.assert_allclose(a, src[:, :sr], atol=0)
    assert analysis.integrated_loudness(b[:, 600:], sr) == pytest.approx(
        analysis.integrated_loudness(src[:, sr + 600 : 2 * sr], sr), abs=0.05
    )
    assert match_gains_db(-10.0, -14.0) == (-4.0, 0.0)
    assert match_gains_db(-math.inf, -14.0) == (0.0, 0.0)


def test_live_chain_latency_is_compensated_on_the_dry_side(rng):
    sr = 48000
    x = noise(rng, sr)
    chain = LiveMasterChain(plan(sr), 0.0)
    eng = _engine(sr, AudioTrack("src", x))
    eng.send(SetMasterChain(chain))
    y = eng.render(sr)
    d = chain.latency_frames
    assert eng.snapshot().latency_frames == d
    assert eng.snapshot().heard_frame == sr - d
    np.testing.assert_array_equal(y[:, d:], x[:, : sr - d])  # source side: delayed by exactly d
    assert np.all(y[:, :d] == 0)


# ------------------------------------------------------------------ threads, ownership


def test_commands_from_another_thread_while_rendering():
    x = np.full((2, 48000 * 4), 0.25, dtype=np.float32)
    eng = _engine(48000, AudioTrack("a", x))
    eng.send(SetLoop(0, 48000))
    stop = threading.Event()
    errors: list[BaseException] = []

    def ui() -> None:
        k = 0
        try:
            while not stop.is_set():
                eng.send(SetGain("a", -float(k % 12)))
                eng.send(SetPan("a", (k % 5 - 2) / 2))
                eng.send(Seek(k * 37 % 40000))
                eng.snapshot()
                k += 1
                if k % 50 == 0:
                    time.sleep(0.0005)  # a UI's pace, not a flood
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=ui)
    th.start()
    try:
        for _ in range(600):
            y = eng.render(256)
            assert np.all(np.isfinite(y))
    finally:
        stop.set()
        th.join()
    assert not errors
    eng.send(SetGain("a", 0.0))
    eng.send(SetPan("a", 0.0))
    while eng.pending_commands:  # at most 64 are applied per block: bounded work
        eng.render(256)
    eng.render(1000)  # the ramps settle
    assert eng.render(16)[0, -1] == pytest.approx(0.25, abs=1e-6)


def test_removed_tracks_are_released_off_the_audio_thread():
    eng = _engine(48000, AudioTrack("a", np.zeros((2, 10), np.float32)))
    eng.render(1)
    eng.send(RemoveTrack("a"))
    eng.render(1)
    assert len(eng._graveyard) == 1 and eng.snapshot().tracks == ()
    assert len(eng._graveyard) == 0  # snapshot() (the UI's timer) collected it


def test_bad_input_raises_project_errors():
    with pytest.raises(ParameterError):
        Engine(48000, channels=6)
    with pytest.raises(ParameterError):
        SetPan("a", 2.0)
    with pytest.raises(ParameterError):
        SetLoop(100, 50)
    with pytest.raises(ParameterError):
        Seek(-1)
    with pytest.raises(ParameterError):
        SetMonitor("both")  # type: ignore[arg-type]
    with pytest.raises(AudioInputError):
        AudioTrack("a", np.zeros((3, 10), np.float32))
    with pytest.raises(AudioInputError):
        AudioTrack("a", np.full((1, 10), np.nan, np.float32))
    with pytest.raises(ParameterError):
        bounce([], 10, 5, sample_rate=48000)
    th = ThreadedMasterChain(LiveMasterChain(plan(48000), 0.0))
    try:
        with pytest.raises(ParameterError, match="inline"):
            bounce([], 0, 10, sample_rate=48000, master_chain=th)
    finally:
        th.close()
