"""Contracts of app.engine.audio_io: formats, reading, resampling, atomic writing, bad input.

Every test file is made in ``tmp_path`` with soundfile itself (raw bytes for
broken ones), so nothing here depends on shipped media.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import audio_io
from app.engine.audio_io import (
    OUTPUT_FORMATS,
    AudioInfo,
    AudioWriter,
    OutputFormat,
    check_output_path,
    default_output_format,
    format_for_path,
    iter_blocks,
    probe,
    read,
    resample,
    write,
)
from app.engine.errors import AudioInputError, AudioOutputError, ParameterError

RATES = [8000, 44100, 48000, 96000, 192000]
CHANNELS = [1, 2, 6]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# (container, subtype, extension, bits on disk or None for float)
LOSSLESS = [
    ("WAV", "PCM_U8", ".wav", 8),
    ("WAV", "PCM_16", ".wav", 16),
    ("WAV", "PCM_24", ".wav", 24),
    ("WAV", "PCM_32", ".wav", 32),
    ("WAV", "FLOAT", ".wav", None),
    ("WAV", "DOUBLE", ".wav", None),
    ("AIFF", "PCM_S8", ".aiff", 8),
    ("AIFF", "PCM_16", ".aiff", 16),
    ("AIFF", "PCM_24", ".aiff", 24),
    ("AIFF", "PCM_32", ".aiff", 32),
    ("AIFF", "FLOAT", ".aiff", None),
    ("FLAC", "PCM_S8", ".flac", 8),
    ("FLAC", "PCM_16", ".flac", 16),
    ("FLAC", "PCM_24", ".flac", 24),
]

# What libsndfile's encoders accept: Opus only 8/12/16/24/48 kHz; MP3 at most
# 48 kHz and 2 channels.  Other combinations cannot exist, so are not listed.
LOSSY = (
    [("OGG", "VORBIS", ".ogg", sr, ch) for sr in RATES for ch in CHANNELS]
    + [("OGG", "OPUS", ".opus", sr, ch) for sr in (8000, 48000) for ch in CHANNELS]
    + [("MP3", "MPEG_LAYER_III", ".mp3", sr, ch) for sr in (8000, 44100, 48000) for ch in (1, 2)]
)


# --------------------------------------------------------------------------- helpers


def _sf_write(
    path: Path, audio: np.ndarray, sr: int, subtype: str, container: str | None = None
) -> Path:
    """Write (channels, frames) audio with soundfile itself."""
    sf.write(str(path), audio.T, sr, subtype=subtype, format=container)
    return path


def _grid_audio(channels: int, frames: int, bits: int | None, seed: int = 0) -> np.ndarray:
    """Random (channels, frames) audio that the given bit depth stores exactly, as float32."""
    rng = np.random.default_rng(seed)
    if bits is None:
        return rng.uniform(-1.0, 1.0, (channels, frames)).astype(np.float32)
    full = 2 ** (bits - 1)
    codes = rng.integers(-full, full, (channels, frames))
    return (codes / full).astype(np.float32)


def _require_encoder(container: str, subtype: str) -> None:
    if container not in sf.available_formats() or subtype not in sf.available_subtypes(container):
        pytest.skip(f"the bundled libsndfile cannot handle {container}/{subtype}")


def _sine(freq_hz: float, sr: int, frames: int, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(frames) / sr
    return np.tile(amp * np.sin(2 * np.pi * freq_hz * t), (channels, 1)).astype(np.float32)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _float_wav_with(tmp_path: Path, value: float, at_frame: int, *, sr: int = 8000) -> Path:
    audio = np.zeros((2, 2 * sr), dtype=np.float32)
    audio[1, at_frame] = value
    return _sf_write(tmp_path / "bad.wav", audio, sr, "FLOAT")


# --------------------------------------------------------------------------- formats


def test_output_formats_table() -> None:
    assert set(OUTPUT_FORMATS) == {"wav16", "wav24", "wav32f", "flac", "flac16"}
    for name, fmt in OUTPUT_FORMATS.items():
        assert fmt.name == name
        assert fmt.container in ("WAV", "FLAC")
        assert sf.check_format(fmt.container, fmt.subtype)
        assert fmt.extension == (".flac" if fmt.container == "FLAC" else ".wav")
    assert (OUTPUT_FORMATS["flac"].bits, OUTPUT_FORMATS["flac16"].bits) == (24, 16)
    assert OUTPUT_FORMATS["wav32f"].is_float and OUTPUT_FORMATS["wav32f"].subtype == "FLOAT"


def _info(
    container: str,
    subtype: str,
    bits: int | None,
    *,
    is_float: bool = False,
    is_lossy: bool = False,
) -> AudioInfo:
    return AudioInfo(Path("x"), 48000, 2, 48000, 1.0, container, subtype, bits, is_float, is_lossy)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (_info("WAV", "PCM_16", 16), "wav16"),
        (_info("WAV", "PCM_U8", 8), "wav16"),
        (_info("AIFF", "PCM_16", 16), "wav16"),
        (_info("FLAC", "PCM_16", 16), "flac16"),
        (_info("FLAC", "PCM_S8", 8), "flac16"),
        (_info("WAV", "PCM_24", 24), "wav24"),
        (_info("WAV", "PCM_32", 32), "wav24"),
        (_info("FLAC", "PCM_24", 24), "flac"),
        (_info("WAV", "FLOAT", 32, is_float=True), "wav32f"),
        (_info("AIFF", "DOUBLE", 64, is_float=True), "wav32f"),
        (_info("MP3", "MPEG_LAYER_III", None, is_lossy=True), "wav24"),
        (_info("OGG", "VORBIS", None, is_lossy=True), "wav24"),
        (_info("OGG", "OPUS", None, is_lossy=True), "wav24"),
    ],
)
def test_default_output_format_keeps_the_source_format(info: AudioInfo, expected: str) -> None:
    assert default_output_format(info) is OUTPUT_FORMATS[expected]


@pytest.mark.parametrize(
    ("name", "default", "expected"),
    [
        ("out.flac", "wav16", "flac16"),
        ("out.FLAC", "wav24", "flac"),
        ("out.flac", "wav32f", "flac"),
        ("out.flac", "flac16", "flac16"),
        ("out.wav", "wav16", "wav16"),
        ("out.wav", "wav24", "wav24"),
        ("out.WAV", "wav32f", "wav32f"),
        ("out.wav", "flac", "wav24"),
        ("out.wav", "flac16", "wav16"),
    ],
)
def test_format_for_path(name: str, default: str, expected: str) -> None:
    assert format_for_path(name, default=OUTPUT_FORMATS[default]) is OUTPUT_FORMATS[expected]


@pytest.mark.parametrize("name", ["out.mp3", "out.ogg", "out", "out.wav.txt"])
def test_format_for_path_rejects_other_extensions(name: str) -> None:
    with pytest.raises(ParameterError, match=r"use \.wav or \.flac"):
        format_for_path(name, default=OUTPUT_FORMATS["wav24"])


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize(("container", "subtype", "ext", "bits"), LOSSLESS, ids=lambda v: str(v))
def test_lossless_round_trip_keeps_samples_rate_and_layout(
    tmp_path: Path, container: str, subtype: str, ext: str, bits: int | None, sr: int, channels: int
) -> None:
    audio = _grid_audio(channels, 1000, bits)
    path = _sf_write(tmp_path / f"in{ext}", audio, sr, subtype, container)

    info = probe(path)
    assert (info.sample_rate, info.channels, info.frames) == (sr, channels, 1000)
    assert (info.container, info.subtype) == (container, subtype)
    assert info.duration_s == pytest.approx(1000 / sr)
    assert info.is_float == (bits is None) and not info.is_lossy
    assert info.bits == (bits if bits is not None else (64 if subtype == "DOUBLE" else 32))

    got, got_sr = read(path)
    assert got_sr == sr  # native rate, never resampled
    assert got.dtype == np.float32 and got.shape == (channels, 1000) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, audio)


@pytest.mark.parametrize(
    ("container", "subtype", "ext", "sr", "channels"), LOSSY, ids=lambda v: str(v)
)
def test_lossy_round_trip(
    tmp_path: Path, container: str, subtype: str, ext: str, sr: int, channels: int
) -> None:
    _require_encoder(container, subtype)
    frames = sr // 2
    tone_hz = 80.0  # low enough to pass the 5.1 mapping's low-passed LFE channel too
    audio = _sine(tone_hz, sr, frames, channels)
    path = tmp_path / f"in{ext}"
    try:
        _sf_write(path, audio, sr, subtype, container)
    except sf.LibsndfileError as exc:  # pragma: no cover - depends on the bundled encoders
        pytest.skip(
            f"the bundled libsndfile cannot encode {subtype} at {sr} Hz x {channels}: {exc}"
        )

    info = probe(path)
    assert info.is_lossy and info.bits is None and not info.is_float
    assert (info.sample_rate, info.channels, info.subtype) == (sr, channels, subtype)
    assert abs(info.frames - frames) <= 0.02 * frames
    assert default_output_format(info) is OUTPUT_FORMATS["wav24"]

    got, got_sr = read(path)
    assert got_sr == sr and got.dtype == np.float32 and got.shape[0] == channels
    for index, channel in enumerate(got):
        rms_db = 20 * np.log10(np.sqrt(np.mean(channel**2)) / (0.5 / np.sqrt(2)))
        is_lfe = channels == 6 and index == 5  # 5.1 mapping: the LFE is coded coarsely
        assert abs(rms_db) < (3.0 if is_lfe else 1.0)
        spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
        peak_hz = np.argmax(spectrum) * sr / channel.size
        assert peak_hz == pytest.approx(tone_hz, abs=2 * sr / channel.size)


@pytest.mark.parametrize(
    ("name", "channels", "sr", "subtype", "frames"),
    [
        ("one_sample.wav", 2, 44100, "PCM_16", 1),
        (
            "short_0.3s.wav",
            2,
            48000,
            "PCM_24",
            int(0.3 * 48000),
        ),  # the mastering layer rejects it, not I/O
        ("mono_8k.wav", 1, 8000, "PCM_16", 8000),
        ("six_192k.wav", 6, 192000, "PCM_24", 19200),
        ("eight_bit.wav", 1, 22050, "PCM_U8", 2205),
    ],
)
def test_unusual_but_valid_files_read_fine(
    tmp_path: Path, name: str, channels: int, sr: int, subtype: str, frames: int
) -> None:
    bits = {"PCM_16": 16, "PCM_24": 24, "PCM_U8": 8}[subtype]
    audio = _grid_audio(channels, frames, bits)
    path = _sf_write(tmp_path / name, audio, sr, subtype)
    got, got_sr = read(path)
    assert got_sr == sr
    np.testing.assert_array_equal(got, audio)


def test_silence_reads_fine(tmp_path: Path) -> None:
    path = _sf_write(tmp_path / "silence.wav", np.zeros((2, 48000), np.float32), 48000, "PCM_16")
    got, _ = read(path)
    assert got.shape == (2, 48000) and not got.any()


def test_float_file_above_full_scale_is_not_clipped(tmp_path: Path) -> None:
    audio = _sine(1000.0, 48000, 4800, 2, amp=2.0)  # +6 dBFS
    path = _sf_write(tmp_path / "hot.wav", audio, 48000, "FLOAT")
    got, _ = read(path)
    np.testing.assert_array_equal(got, audio)
    assert np.max(np.abs(got)) == pytest.approx(2.0, rel=1e-3)


def test_read_a_span(tmp_path: Path) -> None:
    audio = _grid_audio(2, 10_000, 16)
    path = _sf_write(tmp_path / "in.flac", audio, 44100, "PCM_16")
    got, _ = read(path, start_frame=1234, frames=5000)
    np.testing.assert_array_equal(got, audio[:, 1234:6234])
    assert read(path, start_frame=10_000)[0].shape == (2, 0)
    with pytest.raises(ParameterError, match=r"in\.flac"):
        read(path, start_frame=10_001)
    with pytest.raises(ParameterError):
        read(path, start_frame=9000, frames=2000)
    with pytest.raises(ParameterError):
        read(path, start_frame=-1)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("block_frames", [1000, 4096, 4097, 30_000, 65_536])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_iter_blocks_equals_read(tmp_path: Path, block_frames: int, subtype: str) -> None:
    audio = _grid_audio(2, 30_000, 16)
    path = _sf_write(tmp_path / "in.wav", audio, 48000, subtype)
    blocks = list(iter_blocks(path, block_frames=block_frames))
    assert all(b.dtype == np.float32 and b.shape[0] == 2 and b.flags.c_contiguous for b in blocks)
    assert all(b.shape[1] == block_frames for b in blocks[:-1])
    assert 0 < blocks[-1].shape[1] <= block_frames
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), read(path)[0])
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), audio)


def test_iter_blocks_checks_the_file_when_called_not_when_iterated(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match=r"missing\.wav"):
        iter_blocks(tmp_path / "missing.wav")
    path = _sf_write(tmp_path / "in.wav", _grid_audio(1, 100, 16), 8000, "PCM_16")
    with pytest.raises(ParameterError):
        iter_blocks(path, block_frames=0)


# --------------------------------------------------------------------------- bad input


def _assert_input_error(path: Path, match: str) -> None:
    with pytest.raises(AudioInputError, match=match) as info:
        read(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nope.wav", "does not exist")


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "album.wav"
    folder.mkdir()
    _assert_input_error(folder, "is a folder")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_input_error(path, "empty")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are my lyrics, not audio\n" * 50)
    _assert_input_error(path, "not an audio file")


@pytest.mark.parametrize(
    ("ext", "subtype"), [(".wav", "PCM_16"), (".aiff", "PCM_16"), (".wav", "FLOAT")]
)
def test_truncated_pcm_file(tmp_path: Path, ext: str, subtype: str) -> None:
    full = _sf_write(tmp_path / f"full{ext}", _grid_audio(2, 48000, 16), 48000, subtype)
    data = full.read_bytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: len(data) // 2])  # header still says 1 s
    with pytest.raises(AudioInputError, match="truncated") as info:
        probe(path)
    assert "cut" in str(info.value)
    _assert_input_error(path, "truncated")


def test_wav_header_without_data(tmp_path: Path) -> None:
    full = _sf_write(tmp_path / "full.wav", _grid_audio(2, 100, 16), 48000, "PCM_16")
    path = tmp_path / "header_only.wav"
    path.write_bytes(full.read_bytes()[:30])
    _assert_input_error(path, "damaged|not a supported")


def test_wav_with_no_frames(tmp_path: Path) -> None:
    path = _sf_write(tmp_path / "nothing.wav", np.zeros((2, 0), np.float32), 48000, "PCM_16")
    _assert_input_error(path, "contains no audio")


@pytest.mark.parametrize(
    ("ext", "subtype", "container"),
    [(".flac", "PCM_16", "FLAC"), (".mp3", "MPEG_LAYER_III", "MP3"), (".ogg", "VORBIS", "OGG")],
)
def test_truncated_compressed_stream_is_an_input_error_not_a_crash(
    tmp_path: Path, ext: str, subtype: str, container: str
) -> None:
    _require_encoder(container, subtype)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 96000)).astype(np.float32)
    full = _sf_write(tmp_path / f"full{ext}", audio, 48000, subtype, container)
    data = full.read_bytes()
    path = tmp_path / f"cut{ext}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioInputError, match="cut") as info:
        for _ in iter_blocks(path, block_frames=4096):
            pass
    assert "\n" not in str(info.value)
    with pytest.raises(AudioInputError):
        read(path)


def test_decoder_error_mid_stream_names_the_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sf_write(tmp_path / "in.wav", _grid_audio(2, 48000, 16), 48000, "PCM_16")
    original = sf.SoundFile.read
    calls = {"n": 0}

    def failing_read(self: sf.SoundFile, *args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 3:
            raise sf.LibsndfileError(1, "Error : decoder lost sync")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", failing_read)
    with pytest.raises(AudioInputError, match=r"in\.wav is damaged .* past 0\.17 s"):
        list(iter_blocks(path, block_frames=4096))


def test_short_read_mid_stream_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sf_write(tmp_path / "in.flac", _grid_audio(2, 48000, 16), 48000, "PCM_16")
    original = sf.SoundFile.read

    def half_read(self: sf.SoundFile, frames: int, **kwargs: object) -> np.ndarray:
        # A decoder that gives up half-way through the first request.
        kwargs["out"] = kwargs["out"][: frames // 2]  # type: ignore[index]
        return original(self, frames // 2, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", half_read)
    with pytest.raises(AudioInputError, match=r"in\.flac ends early: the audio stops at 0\.50 s"):
        read(path)
    with pytest.raises(AudioInputError, match=r"in\.flac ends early: the audio stops at 0\.04 s"):
        list(iter_blocks(path, block_frames=4096))


@pytest.mark.parametrize(("value", "kind"), [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_nan_and_inf_samples_are_rejected_with_their_position(
    tmp_path: Path, value: float, kind: str
) -> None:
    path = _float_wav_with(tmp_path, value, at_frame=12_345)  # 8 kHz: 1.54 s
    expected = rf"bad\.wav has a {kind} sample at 1\.54 s \(channel 2\)"
    with pytest.raises(AudioInputError, match=expected):
        read(path)
    with pytest.raises(AudioInputError, match=expected):
        list(iter_blocks(path, block_frames=1000))
    got, _ = read(path, check_finite=False)
    assert not np.isfinite(got[1, 12_345])


def test_nan_position_is_given_in_minutes_too(tmp_path: Path) -> None:
    audio = np.zeros((1, 8000 * 75), dtype=np.float32)
    audio[0, 8000 * 74 + 4000] = np.nan
    path = _sf_write(tmp_path / "long.wav", audio, 8000, "FLOAT")
    with pytest.raises(AudioInputError, match=r"at 74\.50 s \(1:14\.50\)"):
        read(path)


@pytest.mark.parametrize("sr", [4000, 7999, 192001, 384000])
def test_sample_rate_out_of_range(tmp_path: Path, sr: int) -> None:
    path = _sf_write(tmp_path / "odd_rate.wav", _grid_audio(1, 100, 16), sr, "PCM_16")
    _assert_input_error(path, f"{sr} Hz")


def test_too_many_channels(tmp_path: Path) -> None:
    path = _sf_write(tmp_path / "many.wav", _grid_audio(33, 100, 16), 48000, "PCM_16")
    _assert_input_error(path, "33 channels")
    ok = _sf_write(tmp_path / "thirty_two.wav", _grid_audio(32, 100, 16), 48000, "PCM_16")
    assert read(ok)[0].shape == (32, 100)


# --------------------------------------------------------------------------- resampling


def test_resample_48k_to_44k1_keeps_a_1khz_sine_frequency_and_level() -> None:
    amp = 0.5
    x = _sine(1000.0, 48000, 3 * 48000, channels=2, amp=amp)
    y = resample(x, 48000, 44100)
    assert y.dtype == np.float32 and y.shape == (2, 3 * 44100)
    # One second in the middle: exactly 1000 cycles, so the sine sits in bin 1000.
    for channel in y[:, 44100:88200].astype(np.float64):
        spectrum = np.abs(np.fft.rfft(channel)) * 2 / channel.size
        assert np.argmax(spectrum) == 1000
        assert 20 * np.log10(spectrum[1000] / amp) == pytest.approx(0.0, abs=0.01)
        rms = np.sqrt(np.mean(channel**2))
        assert 20 * np.log10(rms / (amp / np.sqrt(2))) == pytest.approx(0.0, abs=0.01)
        others = np.delete(spectrum, 1000)
        assert 20 * np.log10(others.max() / amp) < -100


def test_resample_same_rate_is_a_copy_and_shapes_hold() -> None:
    x = _sine(440.0, 48000, 1000, channels=6)
    same = resample(x, 48000, 48000)
    np.testing.assert_array_equal(same, x)
    assert same is not x
    assert resample(x, 48000, 96000).shape == (6, 2000)
    assert resample(x[:1], 48000, 8000).shape == (1, 167)
    assert resample(np.zeros((2, 0), np.float32), 48000, 44100).shape == (2, 0)


@pytest.mark.parametrize(
    ("audio", "sr_in", "sr_out", "quality"),
    [
        (np.zeros(100, np.float32), 48000, 44100, "VHQ"),
        (np.zeros((1, 100), np.int16), 48000, 44100, "VHQ"),
        (np.zeros((1, 100), np.float32), 0, 44100, "VHQ"),
        (np.zeros((1, 100), np.float32), 48000, 44100, "best"),
    ],
)
def test_resample_rejects_bad_arguments(
    audio: np.ndarray, sr_in: int, sr_out: int, quality: str
) -> None:
    with pytest.raises(ParameterError):
        resample(audio, sr_in, sr_out, quality=quality)


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("fmt_name", list(OUTPUT_FORMATS))
def test_writer_returns_exactly_what_the_file_holds(
    tmp_path: Path, fmt_name: str, sr: int, channels: int
) -> None:
    fmt = OUTPUT_FORMATS[fmt_name]
    audio = np.random.default_rng(1).uniform(-1.2, 1.2, (channels, 3000))
    path = tmp_path / f"out{fmt.extension}"
    with AudioWriter(path, sample_rate=sr, channels=channels, fmt=fmt) as writer:
        returned = [writer.write(audio[:, i : i + 1001]) for i in range(0, 3000, 1001)]
    assert writer.frames_written == 3000
    info = probe(path)
    assert (info.container, info.subtype, info.sample_rate, info.channels) == (
        fmt.container,
        fmt.subtype,
        sr,
        channels,
    )
    stored, _ = read(path)
    np.testing.assert_array_equal(np.concatenate(returned, axis=1), stored)
    if fmt.is_float:
        np.testing.assert_array_equal(stored, audio.astype(np.float32))  # unclipped
        assert writer.clipped_samples == 0
    else:
        lsb = 2.0 ** -(fmt.bits - 1)
        assert np.count_nonzero(np.abs(audio) > 1.0 + 2 * lsb) <= writer.clipped_samples
        assert writer.clipped_samples <= np.count_nonzero(np.abs(audio) > 1.0 - 2 * lsb)
        assert stored.max() <= 1.0 - 2.0 ** -(fmt.bits - 1) and stored.min() >= -1.0


def test_clipping_happens_only_at_quantization_and_is_counted(tmp_path: Path) -> None:
    audio = np.array([[0.0, 0.5, 1.5, -1.5, 2.0, -0.25]])
    with AudioWriter(
        tmp_path / "out.wav", sample_rate=48000, channels=1, fmt=OUTPUT_FORMATS["wav24"]
    ) as w:
        returned = w.write(audio)
    assert w.clipped_samples == 3
    np.testing.assert_array_equal(
        returned[0], [0.0, 0.5, 1.0 - 2.0**-23, -1.0, 1.0 - 2.0**-23, -0.25]
    )
    with AudioWriter(
        tmp_path / "out32.wav", sample_rate=48000, channels=1, fmt=OUTPUT_FORMATS["wav32f"]
    ) as w:
        returned = w.write(audio)
    assert w.clipped_samples == 0
    np.testing.assert_array_equal(returned[0], audio[0].astype(np.float32))


@pytest.mark.parametrize("fmt_name", ["wav16", "flac16", "wav24"])
def test_writer_output_does_not_depend_on_block_size(tmp_path: Path, fmt_name: str) -> None:
    fmt = OUTPUT_FORMATS[fmt_name]
    audio = np.random.default_rng(2).normal(0.0, 0.05, (2, 20_000))
    results = []
    for block in (64, 65, 8192, 8193, 20_000):
        path = tmp_path / f"b{block}{fmt.extension}"
        with AudioWriter(path, sample_rate=44100, channels=2, fmt=fmt, noise_shaping=True) as w:
            for i in range(0, 20_000, block):
                w.write(audio[:, i : i + block])
        results.append(read(path)[0])
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_dither_policy(tmp_path: Path) -> None:
    silence = np.zeros((2, 48000))
    on_grid = _grid_audio(2, 48000, 24).astype(np.float64)

    def written(
        name: str, audio: np.ndarray, fmt: str, **kwargs: object
    ) -> tuple[np.ndarray, AudioWriter]:
        writer = AudioWriter(
            tmp_path / name, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS[fmt], **kwargs
        )
        with writer:
            writer.write(audio)
        return read(tmp_path / name)[0], writer

    # 16 bit: TPDF dither by default, so digital silence becomes a ±1 LSB noise
    # floor of RMS LSB/2 (P(±1) = 1/8 each for triangular dither on (-1, 1) LSB).
    got, writer = written("a.wav", silence, "wav16")
    assert writer.dither and np.max(np.abs(got)) == pytest.approx(2.0**-15)
    assert 20 * np.log10(np.sqrt(np.mean(got**2))) == pytest.approx(
        20 * np.log10(0.5 * 2.0**-15), abs=0.2
    )
    got, writer = written("b.wav", silence, "wav16", dither=False)
    assert not writer.dither and not got.any()
    # 24 bit: no dither by default, so 24-bit material passes bit-exactly.
    got, writer = written("c.wav", on_grid, "wav24")
    assert not writer.dither
    np.testing.assert_array_equal(got, on_grid.astype(np.float32))
    got, writer = written("d.flac", on_grid, "flac")
    np.testing.assert_array_equal(got, on_grid.astype(np.float32))
    got, writer = written("e.wav", on_grid, "wav24", dither=True)
    assert writer.dither and not np.array_equal(got, on_grid.astype(np.float32))
    assert np.max(np.abs(got - on_grid)) <= 1.0 * 2.0**-23 + 1e-12
    # Float: never dithered, whatever is asked.
    got, writer = written("f.wav", on_grid, "wav32f", dither=True, noise_shaping=True)
    assert not writer.dither and not writer.noise_shaping
    np.testing.assert_array_equal(got, on_grid.astype(np.float32))


def test_same_seed_writes_the_same_file(tmp_path: Path) -> None:
    audio = _sine(440.0, 44100, 10_000, channels=2, amp=0.001).astype(np.float64)
    a = write(tmp_path / "a.wav", audio, sample_rate=44100, fmt=OUTPUT_FORMATS["wav16"], seed=3)
    b = write(tmp_path / "b.wav", audio, sample_rate=44100, fmt=OUTPUT_FORMATS["wav16"], seed=3)
    c = write(tmp_path / "c.wav", audio, sample_rate=44100, fmt=OUTPUT_FORMATS["wav16"], seed=None)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


@pytest.mark.parametrize("fmt_name", ["wav16", "wav32f"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_writer_never_writes_nan_or_inf(tmp_path: Path, fmt_name: str, value: float) -> None:
    audio = np.zeros((2, 1000))
    audio[1, 480] = value
    path = tmp_path / "out.wav"
    with pytest.raises(AudioOutputError, match=r"out\.wav.*at 0\.01 s \(channel 2\)"):
        with AudioWriter(path, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS[fmt_name]) as w:
            w.write(audio)
    assert not path.exists() and _leftovers(tmp_path) == []


def test_values_beyond_float32_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioOutputError, match="Inf"):
        write(
            tmp_path / "out.wav",
            np.full((1, 10), 1e300),
            sample_rate=48000,
            fmt=OUTPUT_FORMATS["wav32f"],
        )


def test_write_returns_the_path_and_module_write_checks_shape(tmp_path: Path) -> None:
    audio = _grid_audio(2, 200_000, 16).astype(np.float64)  # more than one internal block
    out = write(
        tmp_path / "out.flac", audio, sample_rate=44100, fmt=OUTPUT_FORMATS["flac16"], dither=False
    )
    assert out == (tmp_path / "out.flac").resolve()
    np.testing.assert_array_equal(read(out)[0], audio.astype(np.float32))
    with pytest.raises(ParameterError):
        write(tmp_path / "mono.wav", np.zeros(100), sample_rate=44100, fmt=OUTPUT_FORMATS["wav16"])


def test_committed_file_gets_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    out = write(
        tmp_path / "out.wav", np.zeros((1, 10)), sample_rate=48000, fmt=OUTPUT_FORMATS["wav24"]
    )
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_rate": 4000}, "4000 Hz"),
        ({"sample_rate": 48000.0}, "sample_rate"),
        ({"channels": 0}, "channels"),
        ({"channels": 9, "fmt": OUTPUT_FORMATS["flac"]}, "at most 8 channels"),
        ({"fmt": "wav24"}, "OutputFormat"),
        (
            {"fmt": OutputFormat("x", "WAV", "PCM_U8", 8, False, ".wav")},
            "unsupported sample format",
        ),
    ],
)
def test_writer_rejects_bad_options_before_creating_anything(
    tmp_path: Path, kwargs: dict, match: str
) -> None:
    options = {"sample_rate": 48000, "channels": 2, "fmt": OUTPUT_FORMATS["wav24"], **kwargs}
    with pytest.raises(ParameterError, match=match):
        AudioWriter(tmp_path / "out.wav", **options)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_blocks(tmp_path: Path) -> None:
    with AudioWriter(
        tmp_path / "out.wav", sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav16"]
    ) as w:
        with pytest.raises(ParameterError):
            w.write(np.zeros((1, 10)))
        with pytest.raises(ParameterError):
            w.write(np.zeros(10))
        with pytest.raises(ParameterError):
            w.write(np.zeros((2, 10), dtype=np.int16))
        assert w.write(np.zeros((2, 0))).shape == (2, 0)
    assert w.frames_written == 0 and (tmp_path / "out.wav").exists()


# --------------------------------------------------------------------------- atomicity


def test_temp_file_is_hidden_in_the_same_folder_until_commit(tmp_path: Path) -> None:
    path = tmp_path / "master.wav"
    writer = AudioWriter(path, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav24"])
    writer.write(np.zeros((2, 100)))
    assert writer.temp_path.parent == path.parent.resolve()
    assert writer.temp_path.name.startswith(".master.wav.") and writer.temp_path.name.endswith(
        ".part"
    )
    assert writer.temp_path.exists() and not path.exists()
    assert writer.commit() == path.resolve()
    assert path.exists() and _leftovers(tmp_path) == []
    with pytest.raises(AudioOutputError, match="already committed"):
        writer.write(np.zeros((2, 10)))
    writer.abort()  # harmless after commit
    assert path.exists()


def test_exception_inside_the_context_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "master.wav"
    with pytest.raises(RuntimeError, match="boom"):
        with AudioWriter(
            path, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav16"]
        ) as writer:
            writer.write(np.zeros((2, 48000)))
            raise RuntimeError("boom")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.flac"

    def disk_full(self: sf.SoundFile, data: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AudioOutputError, match=r"master\.flac: the disk is full"):
        with AudioWriter(path, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["flac"]) as writer:
            monkeypatch.setattr(sf.SoundFile, "write", disk_full)
            writer.write(np.zeros((2, 100)))
    assert list(tmp_path.iterdir()) == []


def test_failed_commit_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.wav"
    writer = AudioWriter(path, sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav24"])
    writer.write(np.zeros((2, 100)))

    def no_rename(src: str, dst: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audio_io.os, "replace", no_rename)
    with pytest.raises(AudioOutputError, match="Cannot finish writing"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_abandoned_writer_removes_its_temp_file(tmp_path: Path) -> None:
    writer = AudioWriter(
        tmp_path / "x.wav", sample_rate=48000, channels=1, fmt=OUTPUT_FORMATS["wav24"]
    )
    writer.write(np.zeros((1, 100)))
    temp = writer.temp_path
    assert temp.exists()
    del writer
    gc.collect()
    assert not temp.exists() and list(tmp_path.iterdir()) == []


def test_file_appearing_during_the_write_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.wav"
    writer = AudioWriter(path, sample_rate=48000, channels=1, fmt=OUTPUT_FORMATS["wav24"])
    writer.write(np.zeros((1, 100)))
    path.write_bytes(b"someone else's file")
    with pytest.raises(AudioOutputError, match="appeared"):
        writer.commit()
    assert path.read_bytes() == b"someone else's file" and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- overwrite protection


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return _sf_write(tmp_path / "mix.wav", _grid_audio(2, 1000, 16), 44100, "PCM_16")


def _write_over(path: Path, *, protect: tuple[Path, ...], force: bool = False) -> Path:
    return write(
        path,
        np.zeros((2, 10)),
        sample_rate=44100,
        fmt=OUTPUT_FORMATS["wav16"],
        protect=protect,
        force=force,
    )


def test_refuses_to_overwrite_the_input(source: Path) -> None:
    before = source.read_bytes()
    with pytest.raises(AudioOutputError, match=r"mix\.wav.*input file"):
        _write_over(source, protect=(source,))
    assert source.read_bytes() == before
    _write_over(source, protect=(source,), force=True)
    assert read(source)[0].shape == (2, 10)


def test_refuses_an_input_spelled_differently(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_spelling = source.parent / ".." / source.parent.name / source.name
    with pytest.raises(AudioOutputError, match="input file"):
        check_output_path(other_spelling, protect=(source,))
    monkeypatch.chdir(source.parent)
    with pytest.raises(AudioOutputError, match="input file"):
        check_output_path(source, protect=(Path(source.name),))


def test_refuses_a_symlink_to_the_input(source: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.wav"
    link.symlink_to(source)
    before = source.read_bytes()
    with pytest.raises(AudioOutputError, match="input file"):
        _write_over(link, protect=(source,))
    # Protection by inode also catches an input given through a link.
    with pytest.raises(AudioOutputError, match="input file"):
        check_output_path(source, protect=(link,))
    # Forced, the link itself is replaced: the file it pointed at is untouched.
    _write_over(link, protect=(source,), force=True)
    assert source.read_bytes() == before and not link.is_symlink()


def test_refuses_a_hard_link_to_the_input(source: Path, tmp_path: Path) -> None:
    hard = tmp_path / "hard.wav"
    os.link(source, hard)
    with pytest.raises(AudioOutputError, match="input file"):
        _write_over(hard, protect=(source,))
    _write_over(hard, protect=(source,), force=True)


def test_refuses_to_overwrite_an_existing_file_unless_forced(source: Path, tmp_path: Path) -> None:
    existing = tmp_path / "old_master.wav"
    existing.write_bytes(b"old")
    with pytest.raises(AudioOutputError, match=r"old_master\.wav already exists"):
        _write_over(existing, protect=(source,))
    assert existing.read_bytes() == b"old"
    _write_over(existing, protect=(source,), force=True)
    assert probe(existing).frames == 10


def test_check_output_path_passes_a_good_path(source: Path, tmp_path: Path) -> None:
    out = check_output_path(tmp_path / "master.wav", protect=(source,))
    assert out == (tmp_path / "master.wav").resolve() and out.is_absolute()
    assert list(tmp_path.iterdir()) == [source]  # the writability probe cleans up


# --------------------------------------------------------------------------- unwritable places


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioOutputError, match="does not exist"):
        check_output_path(tmp_path / "no" / "such" / "master.wav")
    with pytest.raises(AudioOutputError, match="does not exist"):
        AudioWriter(
            tmp_path / "nope" / "m.wav", sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav24"]
        )


def test_folder_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(AudioOutputError, match="not a folder"):
        check_output_path(blocker / "master.wav")


def test_output_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "master.wav").mkdir()
    with pytest.raises(AudioOutputError, match="is a folder"):
        check_output_path(tmp_path / "master.wav", force=True)


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 0o555 does not stop root from writing")
def test_read_only_folder_by_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(AudioOutputError, match="not writable"):
            check_output_path(folder / "master.wav")
    finally:
        folder.chmod(0o755)


def test_read_only_folder_even_for_root(tmp_path: Path) -> None:
    chattr = shutil.which("chattr")
    if not IS_ROOT or chattr is None:
        pytest.skip("needs root and chattr to make a folder unwritable for root")
    folder = tmp_path / "immutable"
    folder.mkdir()
    if subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system does not support the immutable attribute")
    try:
        with pytest.raises(AudioOutputError, match="not writable"):
            check_output_path(folder / "master.wav")
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_unwritable_folder_reports_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path: object, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(audio_io.os, "open", denied)
    with pytest.raises(AudioOutputError, match=r"master\.wav.*not writable \(permission denied\)"):
        AudioWriter(
            tmp_path / "master.wav", sample_rate=48000, channels=2, fmt=OUTPUT_FORMATS["wav24"]
        )


# --------------------------------------------------------------------------- memory


def _sparse_float_wav(path: Path, *, frames: int, channels: int, sr: int) -> Path:
    """A float WAV of `frames` frames whose data is a hole in the file system (reads as silence)."""
    sf.write(str(path), np.full((1, channels), 0.25, np.float32), sr, subtype="FLOAT")
    header = bytearray(path.read_bytes())
    data_at = header.index(b"data")
    data_bytes = frames * channels * 4
    header = header[: data_at + 8]
    struct.pack_into("<I", header, data_at + 4, data_bytes)
    struct.pack_into("<I", header, 4, len(header) - 8 + data_bytes)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(np.full(channels, 0.25, np.float32).tobytes())
        handle.truncate(len(header) + data_bytes)
    return path


@pytest.mark.slow
def test_iter_blocks_over_an_hour_long_file_keeps_memory_bounded(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    sr, channels, minutes = 48000, 2, 60
    frames = sr * 60 * minutes
    path = _sparse_float_wav(tmp_path / "hour.wav", frames=frames, channels=channels, sr=sr)
    assert probe(path).frames == frames

    process = psutil.Process()
    blocks = iter_blocks(path)
    first = next(blocks)
    assert first[0, 0] == 0.25
    baseline = process.memory_info().rss
    peak, total = baseline, first.shape[1]
    for i, block in enumerate(blocks):
        total += block.shape[1]
        if i % 64 == 0:
            peak = max(peak, process.memory_info().rss)
    peak = max(peak, process.memory_info().rss)
    assert total == frames
    assert peak - baseline < 100 * 2**20


def test_iter_blocks_yields_independent_arrays_for_mono(tmp_path):
    """Blocks may go to another thread: none may alias the reader's reused buffer."""
    x = np.linspace(-0.5, 0.5, 10_000, dtype=np.float32)
    p = tmp_path / "mono.wav"
    sf.write(p, x, 48000, subtype="FLOAT")
    blocks = list(audio_io.iter_blocks(p, block_frames=3000))
    assert len(blocks) == 4
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1)[0], x)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
