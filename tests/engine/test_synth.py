"""The built-in synth: timing to the sample, polyphony, stealing, block-size invariance."""

from __future__ import annotations

import numpy as np
import pytest

from app.engine.errors import ParameterError
from app.engine.synth import NOTE_DTYPE, Synth, make_notes, render_notes


def _onset(x: np.ndarray) -> int:
    nz = np.flatnonzero(np.abs(x).max(axis=0) > 0)
    return int(nz[0]) if nz.size else -1


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
@pytest.mark.parametrize("offset", [0, 1, 63, 200])
def test_note_starts_on_its_exact_frame(sr, offset):
    s = Synth(sr)
    s.note_on(60, 100, offset_frame=offset)
    y = s.render(256)
    assert _onset(y) == offset  # silence before, sound from that very frame (attack > 0)
    assert np.all(y[:, :offset] == 0)


@pytest.mark.parametrize("sr", [44100, 48000, 96000])
def test_render_notes_onsets_are_sample_exact(sr):
    starts = [0.1234567, 0.5, 0.75003]
    for st in starts:
        y = render_notes(make_notes([st], [st + 0.2], [69], [100]), sr)
        assert _onset(y) == round(st * sr)


@pytest.mark.parametrize("block", [1, 64, 65, 256, 8192])
def test_render_is_independent_of_block_size(block):
    notes = make_notes([0.0, 0.01, 0.02, 0.3], [0.5, 0.2, 0.6, 0.4], [48, 60, 67, 72], [30, 90, 127, 64])
    ref = render_notes(notes, 48000, block_frames=8192)
    got = render_notes(notes, 48000, block_frames=block)
    np.testing.assert_array_equal(got, ref)


def test_polyphony_stealing_and_no_nan():
    s = Synth(48000, voices=8)
    for p in range(40, 60):  # 20 notes into 8 voices
        s.note_on(p, 127)
    y = s.render(4096)
    assert s.active_voices == 8
    assert s.stolen_voices == 12
    assert np.all(np.isfinite(y)) and np.abs(y).max() < 4.0
    s.all_notes_off()
    for _ in range(60):  # release tails die out and free the voices
        s.render(4096)
    assert s.active_voices == 0


def test_stealing_prefers_released_voices():
    s = Synth(48000, voices=2)
    s.note_on(60, 100)
    s.note_on(64, 100)
    s.note_off(60)
    s.render(64)
    s.note_on(67, 100)  # must take 60's released voice, keeping 64 held
    s.render(64)
    held = {int(p) for p, st in zip(s._vp, s._st, strict=True) if st in (1, 2)}
    assert held == {64, 67}


def test_velocity_changes_level_and_note_off_releases():
    def level(vel: int) -> float:
        s = Synth(48000)
        s.note_on(60, vel)
        return float(np.abs(s.render(4800)).max())

    assert level(127) > 3 * level(40)
    s = Synth(48000)
    s.note_on(60, 100)
    s.render(4800)
    s.note_off(60)
    tail = np.concatenate([s.render(8192) for _ in range(5)], axis=1)
    assert np.abs(tail[:, -2048:]).max() < 1e-3 * np.abs(tail[:, :256]).max() + 1e-7


def test_all_sound_off_is_immediate():
    s = Synth(48000)
    s.note_on(60, 100)
    s.render(512)
    s.all_sound_off()
    assert np.all(s.render(256) == 0) and s.active_voices == 0


def test_render_into_preallocated_buffer_allocates_nothing_new():
    s = Synth(48000, max_block_frames=512)
    buf = np.zeros((2, 512), dtype=np.float32)
    s.note_on(60, 100)
    y = s.render(256, out=buf)
    assert np.shares_memory(y, buf)
    assert np.shares_memory(s.render(100), s._out)


def test_bad_input_raises_parameter_error():
    with pytest.raises(ParameterError):
        make_notes([0.5], [0.4], [60], [100])  # ends before it starts
    with pytest.raises(ParameterError):
        make_notes([0.0], [1.0], [128], [100])
    with pytest.raises(ParameterError):
        render_notes(np.zeros(3, dtype=[("a", float)]), 48000)
    with pytest.raises(ParameterError):
        Synth(48000).note_on(60, 0)
    with pytest.raises(ParameterError):
        Synth(48000, max_block_frames=64).render(65)
    assert make_notes([0.0], [1.0], [60], [1]).dtype == NOTE_DTYPE


def test_sustain_level_holds_a_note_until_note_off():
    def levels(sustain: float) -> tuple[float, float, float]:
        s = Synth(48000, sustain_level=sustain)
        s.note_on(84, 127)
        first = float(np.abs(s.render(4800)).max())
        for _ in range(30):  # 5 s: the decay has long reached the sustain level
            s.render(8192)
        a = float(np.abs(s.render(4800)).max())
        for _ in range(6):  # one more second
            s.render(8000)
        return first, a, float(np.abs(s.render(4800)).max())

    first, a, b = levels(0.5)
    assert b == pytest.approx(a, rel=0.01) and a > 0.4 * first  # held at the plateau
    first0, a0, b0 = levels(0.0)
    assert b0 <= 0.8 * a0 and a0 < 0.3 * first0  # piano-like: fades while held
    s = Synth(48000, sustain_level=0.5)
    s.note_on(84, 127)
    s.render(4800)
    s.note_off(84)
    for _ in range(10):
        s.render(8192)
    assert s.active_voices == 0
