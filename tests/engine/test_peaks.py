"""Peak pyramids: exact min/max against numpy, building from files, the content-hash cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import peaks
from app.engine.errors import AudioInputError, ParameterError
from app.engine.peaks import BASE_FRAMES, FACTOR, PeakCache, build_from_array, build_from_file


def _signal(rng: np.random.Generator, channels: int, frames: int) -> np.ndarray:
    """Noise plus a slow sine, with a few isolated spikes that aliasing would miss."""
    t = np.arange(frames) / 48000.0
    x = 0.3 * rng.standard_normal((channels, frames)) + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    for _ in range(min(frames, 7)):
        x[rng.integers(channels), rng.integers(frames)] = rng.choice([-1.7, 1.9])
    return x.astype(np.float32)


def _expected(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, widen: bool) -> np.ndarray:
    frames = x.shape[1]
    out = np.full((x.shape[0], len(lo), 2), np.nan, dtype=np.float32)
    for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
        a, b = min(max(a, 0), frames), min(max(b, 0), frames)
        if a >= b:
            continue
        if widen:
            a, b = a // BASE_FRAMES * BASE_FRAMES, min(frames, -(-b // BASE_FRAMES) * BASE_FRAMES)
        out[:, k, 0] = x[:, a:b].min(axis=1)
        out[:, k, 1] = x[:, a:b].max(axis=1)
    return out


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("frames", [1, 63, 64, 65, 4097, 70_001])
def test_every_level_is_the_min_max_of_its_frames(rng, channels, frames):
    x = _signal(rng, channels, frames)
    pyr = build_from_array(x, 48000)
    assert pyr.complete and pyr.frames == frames
    assert pyr.levels[-1].shape[1] == 1
    for k, level in enumerate(pyr.levels):
        size = BASE_FRAMES * FACTOR**k
        assert level.shape == (channels, -(-frames // size), 2)
        for b in range(level.shape[1]):
            chunk = x[:, b * size : (b + 1) * size]
            np.testing.assert_array_equal(level[:, b, 0], chunk.min(axis=1))
            np.testing.assert_array_equal(level[:, b, 1], chunk.max(axis=1))


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_envelope_is_exact_over_random_ranges_and_column_counts(rng, channels):
    frames = 300_001
    x = _signal(rng, channels, frames)
    pyr = build_from_array(x, 48000)
    pyr.source = None  # the pyramid alone answers: columns widen to the 64-frame grid
    cases = [(0, frames, 1), (0, frames, 3), (-1000, frames + 5000, 997), (5, 6 + 64 * 50, 50)]
    for _ in range(40):
        a, b = sorted(rng.integers(-2000, frames + 2000, size=2))
        cases.append((int(a), int(b) + 1, int(rng.integers(1, 2500))))
    for start, end, cols in cases:
        env = pyr.envelope(start, end, cols)
        assert env.shape == (channels, cols, 2) and env.dtype == np.float32
        lo, hi = pyr.column_bounds(start, end, cols)
        np.testing.assert_array_equal(
            env, _expected(x, lo, hi, widen=True), err_msg=str((start, end, cols))
        )


def test_envelope_never_misses_a_spike_between_bins(rng):
    x = np.zeros((1, 1_000_000), dtype=np.float32)
    x[0, 777_777] = 1.0
    pyr = build_from_array(x, 48000)
    for cols in (1, 7, 100, 1000, 1500):
        env = pyr.envelope(0, x.shape[1], cols)
        assert np.nanmax(env[..., 1]) == 1.0, cols
        assert (
            env[..., 1] == 1.0
        ).sum() <= 2  # at most the neighbour sharing the spike's 64-frame bin


def test_deep_zoom_is_exact_over_raw_samples(rng, tmp_path):
    x = _signal(rng, 2, 20_000)
    path = tmp_path / "x.wav"
    sf.write(path, x.T, 48000, subtype="FLOAT")
    for pyr in (build_from_array(x, 48000), build_from_file(path)):
        for start, end, cols in [(100, 1100, 500), (0, 20, 20), (19_990, 20_010, 40), (5, 9, 30)]:
            env = pyr.envelope(start, end, cols)
            lo, hi = pyr.column_bounds(start, end, cols)
            np.testing.assert_array_equal(env, _expected(x, lo, hi, widen=False))


def test_bad_queries_raise_parameter_error(rng):
    pyr = build_from_array(_signal(rng, 1, 1000), 48000)
    with pytest.raises(ParameterError):
        pyr.envelope(0, 100, 0)
    with pytest.raises(ParameterError):
        pyr.envelope(50, 50, 10)
    with pytest.raises(ParameterError):
        build_from_array(np.zeros((2, 10), dtype=np.int16), 48000)
    with pytest.raises(AudioInputError):
        build_from_array(np.zeros((2, 0), dtype=np.float32), 48000)


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("frames", [1, 65_535, 65_537])
def test_file_build_equals_array_build(rng, tmp_path, channels, frames):
    x = _signal(rng, channels, frames)
    path = tmp_path / "x.wav"
    sf.write(path, x.T, 48000, subtype="FLOAT")
    fractions: list[float] = []
    pyr = build_from_file(path, progress=lambda f, m: fractions.append(f))
    assert pyr.frames == frames and pyr.channels == channels and pyr.sample_rate == 48000
    np.testing.assert_array_equal(pyr.data, build_from_array(x, 48000).data)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_empty_and_non_audio_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioInputError, match="empty"):
        build_from_file(empty)
    no_frames = tmp_path / "noframes.wav"
    sf.write(no_frames, np.zeros((0, 2), dtype=np.float32), 48000)
    with pytest.raises(AudioInputError, match="no audio"):
        PeakCache(tmp_path / "cache").load_or_build(no_frames)
    assert not (tmp_path / "cache").exists()


def test_partial_pyramid_grows_and_shows_only_ready_frames(rng, tmp_path):
    x = _signal(rng, 2, 300_000)
    path = tmp_path / "x.wav"
    sf.write(path, x.T, 48000, subtype="FLOAT")
    seen: list[int] = []
    holder: list[peaks.PeakPyramid] = []

    def progress(fraction: float, message: str) -> None:
        if holder and 0 < fraction < 1:
            pyr = holder[0]
            seen.append(pyr.frames_ready)
            env = pyr.envelope(0, x.shape[1], 300)
            lo, hi = pyr.column_bounds(0, x.shape[1], 300)
            np.testing.assert_array_equal(
                env, _expected(x[:, : pyr.frames_ready], lo, hi, widen=True)
            )

    final = build_from_file(path, progress=progress, on_partial=holder.append)
    assert seen and seen == sorted(seen) and 0 < seen[0] < x.shape[1]
    assert holder[0] is final and final.complete


def _write(path: Path, x: np.ndarray) -> Path:
    sf.write(path, x.T, 48000, subtype="PCM_24")
    return path


def _load(cache: PeakCache, path: Path) -> tuple[peaks.PeakPyramid, list[str]]:
    messages: list[str] = []
    pyr = cache.load_or_build(path, progress=lambda f, m: messages.append(m))
    return pyr, messages


def test_cache_miss_then_hit_then_rebuild_when_corrupt(rng, tmp_path):
    x = _signal(rng, 2, 100_000)
    src = _write(tmp_path / "mix.wav", x)
    cache = PeakCache(tmp_path / "cache")
    first, messages = _load(cache, src)
    assert messages[-1].startswith("Built")
    files = list(cache.folder.glob("*.peaks"))
    assert [f.name for f in files] == [peaks.content_hash(src) + ".peaks"]

    again, messages = _load(cache, src)
    assert messages[-1].startswith("Loaded")
    np.testing.assert_array_equal(again.data, first.data)
    assert again.source == src and again.frames == first.frames

    for damage in (
        lambda b: b[: len(b) // 2],
        lambda b: b[:-5] + bytes([b[-5] ^ 0x40]) + b[-4:],
        lambda b: b"junk",
    ):
        files[0].write_bytes(damage(files[0].read_bytes()))
        rebuilt, messages = _load(cache, src)
        assert messages[-1].startswith("Built")
        np.testing.assert_array_equal(rebuilt.data, first.data)
        assert cache.load(src) is not None  # rewritten whole
    assert [f.name for f in cache.folder.iterdir()] == [files[0].name]  # nothing else left behind


def test_cache_is_keyed_by_content_not_name(rng, tmp_path):
    x = _signal(rng, 2, 50_000)
    src = _write(tmp_path / "a.wav", x)
    cache = PeakCache(tmp_path / "cache")
    _load(cache, src)
    moved = src.rename(tmp_path / "renamed.wav")
    pyr, messages = _load(cache, moved)
    assert messages[-1].startswith("Loaded") and pyr.source == moved

    data = bytearray(moved.read_bytes())
    data[-1] ^= 0x01  # one byte of the last sample
    moved.write_bytes(bytes(data))
    pyr, messages = _load(cache, moved)
    assert messages[-1].startswith("Built")
    assert len(list(cache.folder.glob("*.peaks"))) == 2
    np.testing.assert_array_equal(
        pyr.data, build_from_array(sf.read(moved, dtype="float32")[0].T, 48000).data
    )


def test_an_unchanged_file_skips_the_hash(rng, tmp_path, monkeypatch):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(30_000) / 48000)
    src = _write(tmp_path / "old.wav", np.stack([tone, -tone]).astype(np.float32))
    old = src.stat().st_mtime_ns - 3600 * 10**9
    os.utime(src, ns=(old, old))
    cache = PeakCache(tmp_path / "cache")
    built, messages = _load(cache, src)
    assert messages[-1].startswith("Built")

    def no_hash(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(peaks, "content_hash", no_hash)
    hit, messages = _load(cache, src)
    assert messages == [messages[-1]] and messages[-1].startswith("Loaded")
    np.testing.assert_array_equal(hit.data, built.data)

    monkeypatch.undo()
    data = bytearray(src.read_bytes())
    assert data[-1] != 0x80
    data[-1] = 0x80  # the last 24-bit sample becomes -1.0 (its other bytes zeroed below)
    data[-3:-1] = b"\x00\x00"
    src.write_bytes(bytes(data))  # a new mtime: the remembered digest no longer applies
    rebuilt, messages = _load(cache, src)
    assert messages[-1].startswith("Built")
    assert rebuilt.levels[0][1, -1, 0] == -1.0 != built.levels[0][1, -1, 0]


def test_a_fresh_file_is_not_remembered_by_its_mtime(rng, tmp_path):
    src = _write(tmp_path / "new.wav", _signal(rng, 1, 3000))
    cache = PeakCache(tmp_path / "cache")
    _load(cache, src)
    assert not list(cache.folder.glob("*.sha256"))  # mtime too recent to trust


class _Cancelled(Exception):
    pass


def test_cancel_propagates_and_leaves_no_cache_file(rng, tmp_path):
    src = _write(tmp_path / "long.wav", _signal(rng, 2, 400_000))
    cache = PeakCache(tmp_path / "cache")
    calls = 0

    def progress(fraction: float, message: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise _Cancelled()

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(_Cancelled):
        cache.load_or_build(src, progress=progress)
    assert not cache.folder.exists() or not list(cache.folder.iterdir())
    for t in threading.enumerate():  # the hashing thread was told to stop
        if t.name not in before:
            t.join(timeout=5)
            assert not t.is_alive()


def test_unwritable_cache_still_returns_the_pyramid(rng, tmp_path):
    src = _write(tmp_path / "a.wav", _signal(rng, 1, 5000))
    blocker = tmp_path / "cache"
    blocker.write_bytes(b"a file where the folder should be")
    pyr, messages = _load(PeakCache(blocker), src)
    assert pyr.complete and messages[-1].startswith("Built")
    assert os.path.isfile(blocker)
