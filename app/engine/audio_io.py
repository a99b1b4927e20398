"""Load, save and resample audio files.

Everything that leaves this module is ``audio: (channels, frames) float32`` at
the file's native sample rate; soundfile's ``(frames, channels)`` layout never
escapes.  The layout conversions live in :func:`_to_channels_first` and
:func:`_to_frames_first` and, fused with the passes that touch every sample anyway,
in the kernels :func:`_transpose_checked` (reading), :func:`_interleave_checked` and
:func:`_codes_kernel` (writing); nowhere else.

Reading
    :func:`probe` checks a file before anything is decoded and turns every way
    it can be unusable into one :class:`~app.engine.errors.AudioInputError`
    line.  :func:`read` loads a whole file (or a span of it); :func:`iter_blocks`
    streams it with bounded memory.  Both reject NaN/Inf samples, naming where
    they are, and files that end before their header says they should.

Writing
    :class:`AudioWriter` writes to a hidden temporary file in the destination
    folder and moves it into place only on :meth:`AudioWriter.commit` (flush,
    fsync, :func:`os.replace`, fsync of the folder), so a failure or a crash
    never leaves a half-written file under the requested name, and an input is
    never overwritten unless the caller forces it.

Dither policy (integer targets)
    ``dither=None`` (the default) means *automatic*: TPDF dither for 16-bit
    (and smaller) targets, none for 24-bit.  ``dither=True`` forces it on at
    any depth, ``dither=False`` turns it off (plain rounding).  Noise shaping is
    used only when asked for and only for integer targets.  Float targets are
    written as float32 unchanged: no dither, no clipping.
"""

from __future__ import annotations

import errno
import math
import os
import re
import secrets
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from numba import njit

from app.engine.dither import Ditherer
from app.engine.errors import AudioInputError, AudioOutputError, ParameterError

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "OUTPUT_FORMATS",
    "RESAMPLE_QUALITIES",
    "AudioInfo",
    "AudioWriter",
    "OutputFormat",
    "check_output_path",
    "default_output_format",
    "format_for_path",
    "iter_blocks",
    "probe",
    "read",
    "resample",
    "write",
]

MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 32
DEFAULT_BLOCK_FRAMES = 65_536
RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")

# A lossy stream's length in its header is the encoder's (or decoder's)
# estimate; accept a decoded stream this much shorter before calling it truncated.
_LOSSY_LENGTH_TOLERANCE = 0.02
_FLAC_MAX_CHANNELS = 8


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class OutputFormat:
    """A file format the app writes.

    Attributes
    ----------
    name : str
        Key in :data:`OUTPUT_FORMATS`, e.g. ``"wav24"``.
    container : str
        soundfile format: ``"WAV"`` or ``"FLAC"``.
    subtype : str
        soundfile subtype: ``"PCM_16"``, ``"PCM_24"`` or ``"FLOAT"``.
    bits : int
        Bits per sample.
    is_float : bool
        True for floating-point samples (no clipping, no dither).
    extension : str
        File name extension with the dot, e.g. ``".wav"``.
    """

    name: str
    container: str
    subtype: str
    bits: int
    is_float: bool
    extension: str


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat("wav16", "WAV", "PCM_16", 16, False, ".wav"),
        OutputFormat("wav24", "WAV", "PCM_24", 24, False, ".wav"),
        OutputFormat("wav32f", "WAV", "FLOAT", 32, True, ".wav"),
        OutputFormat("flac", "FLAC", "PCM_24", 24, False, ".flac"),
        OutputFormat("flac16", "FLAC", "PCM_16", 16, False, ".flac"),
    )
}


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns about an audio file without decoding it.

    Attributes
    ----------
    path : pathlib.Path
        The file, as given.
    sample_rate : int
        Native sample rate in Hz.
    channels : int
        Number of channels.
    frames : int
        Length in sample frames (for lossy streams, the header's figure).
    duration_s : float
        Length in seconds.
    container : str
        soundfile format name: ``"WAV"``, ``"AIFF"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``...
    subtype : str
        soundfile subtype: ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``...
    bits : int or None
        Bits per stored sample; None for lossy codecs, which have no bit depth.
    is_float : bool
        True for 32/64-bit floating-point samples.
    is_lossy : bool
        True for perceptual or ADPCM codecs (MP3, Vorbis, Opus...).
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    container: str
    subtype: str
    bits: int | None
    is_float: bool
    is_lossy: bool


_SUBTYPE_BITS: dict[str, int] = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "ULAW": 8,
    "ALAW": 8,
    "DWVW_12": 12,
    "DWVW_16": 16,
    "DWVW_24": 24,
    "DPCM_8": 8,
    "DPCM_16": 16,
    "ALAC_16": 16,
    "ALAC_20": 20,
    "ALAC_24": 24,
    "ALAC_32": 32,
}
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_LOSSY_SUBTYPES = frozenset(
    {
        "VORBIS",
        "OPUS",
        "MPEG_LAYER_I",
        "MPEG_LAYER_II",
        "MPEG_LAYER_III",
        "IMA_ADPCM",
        "MS_ADPCM",
        "VOX_ADPCM",
        "GSM610",
        "G721_32",
        "G723_24",
        "G723_40",
        "NMS_ADPCM_16",
        "NMS_ADPCM_24",
        "NMS_ADPCM_32",
    }
)
# Bytes per frame-sample of uncompressed subtypes, to turn a header's byte
# count into a duration when a file is truncated.
_PCM_BYTES: dict[str, int] = {
    "PCM_S8": 1,
    "PCM_U8": 1,
    "PCM_16": 2,
    "PCM_24": 3,
    "PCM_32": 4,
    "FLOAT": 4,
    "DOUBLE": 8,
    "ULAW": 1,
    "ALAW": 1,
}


def default_output_format(info: AudioInfo) -> OutputFormat:
    """The output format that keeps the source's format.

    Parameters
    ----------
    info : AudioInfo
        The source, from :func:`probe`.

    Returns
    -------
    OutputFormat
        Float source -> ``wav32f``; lossy source -> ``wav24``; integer source of
        16 bits or fewer -> ``wav16`` (``flac16`` for a FLAC source); deeper
        integer source -> ``wav24`` (``flac`` for a FLAC source).
    """
    if info.is_float:
        return OUTPUT_FORMATS["wav32f"]
    if info.is_lossy or info.bits is None:
        return OUTPUT_FORMATS["wav24"]
    is_flac = info.container.upper() == "FLAC"
    if info.bits <= 16:
        return OUTPUT_FORMATS["flac16" if is_flac else "wav16"]
    return OUTPUT_FORMATS["flac" if is_flac else "wav24"]


def format_for_path(path: str | os.PathLike[str], *, default: OutputFormat) -> OutputFormat:
    """The output format implied by a file name's extension.

    Parameters
    ----------
    path : str or os.PathLike
        Output file name; only its extension matters (case-insensitive).
    default : OutputFormat
        The format to keep where the extension allows (usually
        :func:`default_output_format` of the input).

    Returns
    -------
    OutputFormat
        ``.flac``: ``flac16`` if ``default`` is 16-bit integer, else ``flac``
        (24-bit; FLAC cannot hold float).  ``.wav``: ``default`` if it is a WAV
        format, else the WAV format of the same integer depth (``wav16`` or
        ``wav24``).

    Raises
    ------
    ParameterError
        For any other extension.
    """
    ext = Path(path).suffix.lower()
    small = not default.is_float and default.bits <= 16
    if ext == ".flac":
        return OUTPUT_FORMATS["flac16" if small else "flac"]
    if ext == ".wav":
        if default.container == "WAV":
            return default
        return OUTPUT_FORMATS["wav16" if small else "wav24"]
    shown = ext or "no extension"
    raise ParameterError(
        f"Cannot write {path}: unsupported file type ({shown}); use .wav or .flac."
    )


# --------------------------------------------------------------------------- layout


def _to_channels_first(frames_first: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """soundfile/soxr ``(frames, channels)`` -> our ``(channels, frames)``, C-contiguous.

    With ``out`` (a ``(channels, frames)`` array) the data is copied into it.
    """
    if out is None:
        return np.ascontiguousarray(frames_first.T)
    np.copyto(out, frames_first.T)
    return out


def _to_frames_first(channels_first: np.ndarray) -> np.ndarray:
    """Our ``(channels, frames)`` -> soundfile/soxr ``(frames, channels)``, C-contiguous."""
    return np.ascontiguousarray(channels_first.T)


# --------------------------------------------------------------------------- reading


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).rstrip(".")


def _libsndfile_detail(exc: BaseException) -> str:
    """libsndfile's own words for an error, on one line, without its "Error :" prefix."""
    text = _one_line(getattr(exc, "error_string", "") or exc)
    return re.sub(r"^error\s*:\s*", "", text, flags=re.IGNORECASE)


def _describe_time(seconds: float) -> str:
    text = f"{seconds:.2f} s"
    if seconds >= 60.0:
        minutes, rest = divmod(seconds, 60.0)
        text += f" ({int(minutes)}:{rest:05.2f})"
    return text


_DECLARED_SIZE = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_CHUNK_PAST_END = re.compile(r"Chunk size \d+ > file length")
_OGG_NO_END = re.compile(r"lacks an end-of-stream", re.IGNORECASE)
# Sizes that mean "unknown, read to the end" (streamed or unfinalized files).
_SIZE_UNKNOWN = frozenset({0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFFFFFFFFFF})


def _declared_truncation_s(info: Any) -> float | None:
    """Seconds a file's header promises, when the file is shorter than that.

    libsndfile quietly shortens cut-off WAV/AIFF files (and Ogg streams whose
    last page lacks the end-of-stream mark) to what is present and only notes
    it in its log; a master built from a cut-off file is worse than an error.
    Returns NaN when the file is truncated but the promised length is unknown.
    """
    log = getattr(info, "extra_info", "") or ""
    match = _DECLARED_SIZE.search(log)
    bytes_per_frame = _PCM_BYTES.get(info.subtype, 0) * info.channels
    if match:
        declared, present = int(match.group(1)), int(match.group(2))
        if declared in _SIZE_UNKNOWN or bytes_per_frame == 0:
            return None
        if declared - present >= bytes_per_frame:
            return declared / bytes_per_frame / info.samplerate
        return None
    if _CHUNK_PAST_END.search(log) or _OGG_NO_END.search(log):
        return math.nan
    return None


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Check that a file is usable audio and describe it, without decoding it.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file (WAV, AIFF, FLAC, OGG Vorbis, Opus, MP3 and the other
        formats libsndfile reads).

    Returns
    -------
    AudioInfo

    Raises
    ------
    AudioInputError
        The file is missing, a folder, unreadable, empty, not audio, damaged or
        truncated, holds no audio, has a sample rate outside 8–192 kHz, or more
        than 32 channels.
    """
    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p} does not exist.")
    if p.is_dir():
        raise AudioInputError(f"{p} is a folder, not an audio file.")
    try:
        with open(p, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise AudioInputError(f"Cannot open {p}: {_one_line(exc.strerror or exc)}.") from exc
    if not head:
        raise AudioInputError(f"{p} is empty (0 bytes), not an audio file.")
    try:
        raw = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError) as exc:
        detail = _libsndfile_detail(exc)
        if "not recognised" in detail.lower():
            raise AudioInputError(
                f"{p} is not an audio file in a format this app reads "
                "(WAV, AIFF, FLAC, OGG, Opus, MP3)."
            ) from exc
        raise AudioInputError(f"{p} is damaged or not a supported audio file ({detail}).") from exc
    subtype = str(raw.subtype)
    if raw.samplerate < MIN_SAMPLE_RATE_HZ or raw.samplerate > MAX_SAMPLE_RATE_HZ:
        raise AudioInputError(
            f"{p} has a sample rate of {raw.samplerate} Hz; supported rates are 8 to 192 kHz."
        )
    if raw.channels < 1 or raw.channels > MAX_CHANNELS:
        raise AudioInputError(
            f"{p} has {raw.channels} channels; at most {MAX_CHANNELS} are supported."
        )
    promised_s = _declared_truncation_s(raw)
    if promised_s is not None:
        held = _describe_time(raw.frames / raw.samplerate)
        if math.isnan(promised_s):
            what = f"the audio breaks off after {held}"
        else:
            what = (
                f"its header promises {_describe_time(promised_s)} but the file holds only {held}"
            )
        raise AudioInputError(f"{p} is truncated: {what} (incomplete copy or download?).")
    if raw.frames <= 0:
        raise AudioInputError(f"{p} contains no audio (0 samples).")
    return AudioInfo(
        path=p,
        sample_rate=int(raw.samplerate),
        channels=int(raw.channels),
        frames=int(raw.frames),
        duration_s=raw.frames / raw.samplerate,
        container=str(raw.format),
        subtype=subtype,
        bits=None if subtype in _LOSSY_SUBTYPES else _SUBTYPE_BITS.get(subtype),
        is_float=subtype in _FLOAT_SUBTYPES,
        is_lossy=subtype in _LOSSY_SUBTYPES,
    )


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ParameterError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


@njit(cache=True, nogil=True)
def _transpose_checked(frames_first, out, check):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """out[c, i] = frames_first[i, c]; returns the first non-finite flat index (i * ch + c) or -1."""
    n, ch = frames_first.shape
    bad = -1
    for i in range(n):
        for c in range(ch):
            v = frames_first[i, c]
            out[c, i] = v
            if check and bad < 0 and not np.isfinite(v):
                bad = i * ch + c
    return bad


@njit(cache=True, nogil=True)
def _interleave_checked(x, frames_first, copy):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """frames_first[i, c] = copy[c, i] = float32(x[c, i]) in one pass; returns True when
    every sample is finite (the float writer's three passes -- copy, check, transpose -- in one)."""
    ch, n = x.shape
    finite = True
    for i in range(n):
        for c in range(ch):
            v = np.float32(x[c, i])
            frames_first[i, c] = v
            copy[c, i] = v
            if not np.isfinite(v):
                finite = False
    return finite


@njit(cache=True, nogil=True)
def _codes_kernel(q, full_scale, low, high, shift, codes, written):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Grid values -> clipped integer codes (frames-first, shifted for libsndfile) and their float.

    Returns the number of samples clipped to full scale.
    """
    ch, n = q.shape
    clipped = 0
    for c in range(ch):
        for i in range(n):
            v = np.rint(q[c, i] * full_scale)
            if v < low:
                v = low
                clipped += 1
            elif v > high:
                v = high
                clipped += 1
            codes[i, c] = np.int64(v) << shift
            written[c, i] = v / full_scale
    return clipped


def _first_non_finite(block: np.ndarray) -> tuple[int, int, str] | None:
    """(frame, channel, 'NaN'/'Inf') of the first bad sample of a (frames, channels) block."""
    bad = ~np.isfinite(block)
    if not bad.any():
        return None
    frame, channel = np.argwhere(bad)[0]
    kind = "NaN" if np.isnan(block[frame, channel]) else "Inf"
    return int(frame), int(channel), kind


def _blocks_frames_first(
    info: AudioInfo,
    *,
    start_frame: int,
    frames: int,
    block_frames: int,
    check_finite: bool,
) -> Iterator[np.ndarray]:
    """Decode ``frames`` frames from ``start_frame`` as (n, channels) float32 views.

    The yielded array is a view of one reused buffer, valid until the next
    step.  Raises AudioInputError for NaN/Inf (float files) and for streams
    that end early or fail to decode, naming the time position.
    """
    p = info.path
    sr = info.sample_rate
    buffer = np.empty((min(block_frames, max(frames, 1)), info.channels), dtype=np.float32)
    check = check_finite and info.is_float
    position = start_frame
    end = start_frame + frames
    try:
        handle = sf.SoundFile(str(p))
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioInputError(f"Cannot open {p}: {_one_line(exc)}.") from exc
    with handle:
        try:
            if start_frame:
                handle.seek(start_frame)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise AudioInputError(
                f"{p} is damaged: cannot seek to {_describe_time(start_frame / sr)}."
            ) from exc
        while position < end:
            want = min(buffer.shape[0], end - position)
            try:
                got = handle.read(want, dtype="float32", always_2d=True, out=buffer[:want])
            except (sf.SoundFileError, RuntimeError) as exc:
                detail = _libsndfile_detail(exc)
                where = f" past {_describe_time(position / sr)}" if position else ""
                raise AudioInputError(
                    f"{p} is damaged and cannot be decoded{where} ({detail})."
                ) from exc
            n = got.shape[0]
            if check and not np.isfinite(got.sum(dtype=np.float64)):  # one cheap pass first
                bad = _first_non_finite(got)
                if bad is not None:
                    frame, channel, kind = bad
                    raise AudioInputError(
                        f"{p} has a {kind} sample at {_describe_time((position + frame) / sr)} "
                        f"(channel {channel + 1}); the file is damaged."
                    )
            if n:
                yield got
            position += n
            if n < want:
                missing = info.frames - position
                if info.is_lossy and missing <= _LOSSY_LENGTH_TOLERANCE * info.frames:
                    return
                raise AudioInputError(
                    f"{p} ends early: the audio stops at {_describe_time(position / sr)} "
                    f"but the file should last {_describe_time(info.duration_s)} "
                    "(truncated or damaged file)."
                )


def read(
    path: str | os.PathLike[str],
    *,
    start_frame: int = 0,
    frames: int | None = None,
    check_finite: bool = True,
) -> tuple[np.ndarray, int]:
    """Load a file, or a span of it, at its native sample rate.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    start_frame : int, optional
        First frame to read.
    frames : int or None, optional
        How many frames; ``None`` reads to the end.
    check_finite : bool, optional
        Reject NaN/Inf samples (only float files can hold them).

    Returns
    -------
    audio : numpy.ndarray
        ``(channels, frames)`` float32, full scale = 1.0, not clipped (float
        files may exceed it).  A lossy stream may come out up to 2 % shorter
        than its header's estimate.
    sample_rate : int
        Native sample rate in Hz.

    Raises
    ------
    AudioInputError
        See :func:`probe`; also NaN/Inf samples and streams that end early.
    ParameterError
        ``start_frame``/``frames`` outside the file.
    """
    info = probe(path)
    start, count = _span(info, start_frame, frames)
    audio = np.empty((info.channels, count), dtype=np.float32)
    filled = 0
    for block in _blocks_frames_first(
        info,
        start_frame=start,
        frames=count,
        block_frames=DEFAULT_BLOCK_FRAMES,
        check_finite=check_finite,
    ):
        n = block.shape[0]
        _to_channels_first(block, out=audio[:, filled : filled + n])
        filled += n
    if filled < count:
        audio = audio[:, :filled].copy()
    return audio, info.sample_rate


def _span(info: AudioInfo, start_frame: int, frames: int | None) -> tuple[int, int]:
    start = _check_int("start_frame", start_frame, minimum=0)
    if start > info.frames:
        raise ParameterError(
            f"Cannot read {info.path} from frame {start}: it has only {info.frames} frames."
        )
    if frames is None:
        return start, info.frames - start
    count = _check_int("frames", frames, minimum=0)
    if start + count > info.frames:
        raise ParameterError(
            f"Cannot read {count} frames from frame {start} of {info.path}: "
            f"it has only {info.frames} frames."
        )
    return start, count


def iter_blocks(
    path: str | os.PathLike[str],
    *,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    check_finite: bool = True,
) -> Iterator[np.ndarray]:
    """Stream a file in blocks with bounded memory.

    The file is checked (:func:`probe`) when this is called; decoding starts
    with the first block.

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    block_frames : int, optional
        Frames per block; the last block may be shorter.
    check_finite : bool, optional
        Reject NaN/Inf samples (only float files can hold them).

    Yields
    ------
    numpy.ndarray
        ``(channels, n)`` float32, a new array each time.

    Raises
    ------
    AudioInputError
        See :func:`probe` (raised by this call); NaN/Inf samples and streams
        that end early or fail to decode (raised while iterating), naming the
        time position.
    ParameterError
        ``block_frames`` below 1.
    """
    size = _check_int("block_frames", block_frames, minimum=1)
    info = probe(path)
    return _channels_first_blocks(info, size, check_finite)


def _channels_first_blocks(
    info: AudioInfo, block_frames: int, check_finite: bool
) -> Iterator[np.ndarray]:
    for block in _blocks_frames_first(
        info,
        start_frame=0,
        frames=info.frames,
        block_frames=block_frames,
        check_finite=check_finite,
    ):
        # Always a fresh array (mono's transpose would otherwise be a view of the reused read
        # buffer): consumers may hand blocks to another thread.
        out = np.empty((block.shape[1], block.shape[0]), dtype=np.float32)
        _transpose_checked(block, out, False)
        yield out


# --------------------------------------------------------------------------- resampling


def resample(audio: np.ndarray, sr_in: int, sr_out: int, *, quality: str = "VHQ") -> np.ndarray:
    """Change the sample rate with soxr.  Only ever called on request.

    Parameters
    ----------
    audio : numpy.ndarray
        ``(channels, frames)`` real float audio.
    sr_in, sr_out : int
        Sample rates in Hz.
    quality : {"QQ", "LQ", "MQ", "HQ", "VHQ"}, optional
        soxr quality recipe; "VHQ" is flat to well under 0.01 dB in the pass band.

    Returns
    -------
    numpy.ndarray
        ``(channels, round(frames * sr_out / sr_in))`` float32 (a copy when the
        rates are equal).
    """
    sr_in = _check_int("sr_in", sr_in, minimum=1)
    sr_out = _check_int("sr_out", sr_out, minimum=1)
    if quality not in RESAMPLE_QUALITIES:
        raise ParameterError(
            f"Resampling quality must be one of {', '.join(RESAMPLE_QUALITIES)}, got {quality!r}."
        )
    x = np.asarray(audio)
    if x.ndim != 2:
        raise ParameterError(f"Expected (channels, frames) audio, got shape {x.shape}.")
    if x.dtype.kind != "f":
        raise ParameterError(f"Expected float audio, got {x.dtype}.")
    x = x.astype(np.float32, copy=False)
    if sr_in == sr_out:
        return x.copy()
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0), dtype=np.float32)
    y = soxr.resample(_to_frames_first(x), sr_in, sr_out, quality=quality)
    return _to_channels_first(np.asarray(y, dtype=np.float32).reshape(-1, x.shape[0]))


# --------------------------------------------------------------------------- writing


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    path: str | os.PathLike[str],
    *,
    protect: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
) -> Path:
    """Check, before any work starts, that an output can be written to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    protect : iterable of path-like, optional
        Files that must not be overwritten (the inputs).  Compared by resolved
        path and by inode, so symlinks and hard links to an input count as the
        input.
    force : bool, optional
        Allow overwriting an existing file, even a protected one.

    Returns
    -------
    pathlib.Path
        The output path with its folder resolved to an absolute path.

    Raises
    ------
    AudioOutputError
        The folder is missing, not a folder or not writable; the path is a
        folder; the file exists or is one of ``protect`` and ``force`` is off.
    """
    given = Path(path)
    if given.name in ("", ".", ".."):
        raise AudioOutputError(f"Cannot write {given}: give a file name, not a folder.")
    folder = given.parent
    if not folder.exists():
        raise AudioOutputError(f"Cannot write {given}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise AudioOutputError(f"Cannot write {given}: {folder} is not a folder.")
    target = folder.resolve() / given.name
    if target.is_dir():
        raise AudioOutputError(f"Cannot write {given}: it is a folder; give a file name.")
    if not force:
        for item in protect:
            source = Path(item)
            same = _same_file(target, source) or (
                target.absolute() == source.absolute() or target.resolve() == source.resolve()
            )
            if same:
                raise AudioOutputError(
                    f"Refusing to write {given}: it is the input file {source}; "
                    "choose another output name (sources are never overwritten unless forced)."
                )
        if target.exists() or target.is_symlink():
            raise AudioOutputError(
                f"{given} already exists; choose another name or allow overwriting."
            )
    _check_folder_writable(folder, given)
    return target


def _check_folder_writable(folder: Path, given: Path) -> None:
    # Actually creating a file is the only test that also holds for root, ACLs,
    # read-only mounts and full disks; os.access answers only the first question.
    probe_path = folder / f".{given.name}.{secrets.token_hex(4)}.check"
    try:
        fd = os.open(probe_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise AudioOutputError(
            f"Cannot write {given}: the folder {folder} is not writable ({_reason(exc)})."
        ) from exc
    os.close(fd)
    try:
        os.unlink(probe_path)
    except OSError:
        pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        if exc.errno == errno.EROFS:
            return "read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        if exc.strerror:
            return _one_line(exc.strerror).lower()
    detail = _one_line(getattr(exc, "error_string", "") or exc)
    return detail or type(exc).__name__


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _close_and_remove(handle: sf.SoundFile, path: str) -> None:
    """Finalizer: never leave a temp file behind a writer that was dropped."""
    try:
        handle.close()
    except Exception:  # best effort while cleaning up
        pass
    _remove_quietly(path)


def _fsync_path(path: str | Path, *, directory: bool = False) -> None:
    if directory and os.name == "nt":  # Windows cannot open folders for fsync.
        return
    flags = os.O_RDONLY if directory else os.O_RDWR
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AudioWriter:
    """Streaming, atomic writer of one audio file.

    Everything is validated on construction (see :func:`check_output_path`),
    then a hidden temp file ``.NAME.XXXXXXXX.part`` is opened in the
    destination folder.  :meth:`commit` moves it into place; :meth:`abort` (or
    leaving a ``with`` block by an exception) deletes it.  Leaving a ``with``
    block normally commits.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    sample_rate : int
        Sample rate in Hz (8–192 kHz).
    channels : int
        Channel count (1–32; FLAC holds at most 8).
    fmt : OutputFormat
        One of :data:`OUTPUT_FORMATS`.
    protect : iterable of path-like, optional
        Inputs that must not be overwritten.
    force : bool, optional
        Allow overwriting an existing (even protected) file.
    dither : bool or None, optional
        ``None``: TPDF dither for 16-bit targets, none for 24-bit.  ``True``:
        dither any integer target.  ``False``: plain rounding.  Ignored for
        float targets.
    noise_shaping : bool, optional
        Shape the requantization noise of integer targets towards high
        frequencies (see :mod:`app.engine.dither`).
    seed : int or None, optional
        Dither seed; the same seed writes the same file.

    Attributes
    ----------
    path : pathlib.Path
        Final output path.
    temp_path : pathlib.Path
        Where the data goes until :meth:`commit`.
    frames_written : int
        Frames accepted so far.
    clipped_samples : int
        Samples that exceeded the integer full scale and were clipped.
    dither : bool
        Whether TPDF dither is applied (after the automatic policy).

    Notes
    -----
    One thread at a time; blocking file I/O (never from the audio callback).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int,
        channels: int,
        fmt: OutputFormat,
        protect: Iterable[str | os.PathLike[str]] = (),
        force: bool = False,
        dither: bool | None = None,
        noise_shaping: bool = False,
        seed: int | None = 0,
    ) -> None:
        if not isinstance(fmt, OutputFormat):
            raise ParameterError(f"Output format must be an OutputFormat, got {fmt!r}.")
        rate = _check_int("sample_rate", sample_rate, minimum=1)
        if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
            raise ParameterError(
                f"Cannot write {path} at {rate} Hz; supported rates are 8 to 192 kHz."
            )
        if (fmt.is_float and fmt.bits != 32) or (not fmt.is_float and fmt.bits not in (16, 24, 32)):
            raise ParameterError(f"Cannot write {path}: unsupported sample format {fmt.name}.")
        count = _check_int("channels", channels, minimum=1)
        limit = _FLAC_MAX_CHANNELS if fmt.container == "FLAC" else MAX_CHANNELS
        if count > limit:
            raise ParameterError(
                f"Cannot write {path}: {fmt.container} holds at most {limit} channels, "
                f"the audio has {count}."
            )
        self.path = check_output_path(path, protect=protect, force=force)
        self.sample_rate = rate
        self.channels = count
        self.fmt = fmt
        self.force = bool(force)
        self.frames_written = 0
        self.clipped_samples = 0
        self.noise_shaping = bool(noise_shaping) and not fmt.is_float
        if fmt.is_float:
            self.dither = False
        elif dither is None:
            # 16-bit: the LSB is at -90 dBFS and undithered rounding turns fades
            # and reverb tails into audible distortion, so dither.  24-bit: the
            # LSB is at -138 dBFS, truncation products sit ~40 dB below any
            # DAC's own noise, so dither would only add noise -- and without it
            # audio already on the 24-bit grid is written bit-exactly.
            self.dither = fmt.bits <= 16
        else:
            self.dither = bool(dither)
        self._ditherer: Ditherer | None = None
        self._full_scale = 0
        if not fmt.is_float:
            self._ditherer = Ditherer(
                count,
                bits=fmt.bits,
                noise_shaping=self.noise_shaping,
                seed=seed,
                dither=self.dither,
                sample_rate=rate,
            )
            self._full_scale = 2 ** (fmt.bits - 1)
        self.temp_path = self._open_temp()
        try:
            self._file = sf.SoundFile(
                str(self.temp_path),
                mode="w",
                samplerate=rate,
                channels=count,
                format=fmt.container,
                subtype=fmt.subtype,
            )
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            _remove_quietly(str(self.temp_path))
            raise AudioOutputError(f"Cannot write {path}: {_reason(exc)}.") from exc
        self._finalizer = weakref.finalize(self, _close_and_remove, self._file, str(self.temp_path))
        self._state = "open"

    def _open_temp(self) -> Path:
        # O_EXCL with mode 0o666 lets the umask set the final file's permissions,
        # unlike mkstemp's 0o600.
        for _ in range(16):
            candidate = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
            try:
                fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise AudioOutputError(f"Cannot write {self.path}: {_reason(exc)}.") from exc
            os.close(fd)
            return candidate
        raise AudioOutputError(f"Cannot write {self.path}: no free temporary file name.")

    def _require_open(self) -> None:
        if self._state != "open":
            raise AudioOutputError(f"The output {self.path} is already {self._state}.")

    def write(self, block: np.ndarray) -> np.ndarray:
        """Append one block.

        Parameters
        ----------
        block : numpy.ndarray
            ``(channels, n)`` real float audio, full scale = 1.0, finite.

        Returns
        -------
        numpy.ndarray
            ``(channels, n)`` float32: exactly what the file will hold, after
            dither, quantization and clipping, decoded back to float as
            soundfile reads it.  Meter this to meter the real output.

        Raises
        ------
        ParameterError
            Wrong shape or not float.
        AudioOutputError
            NaN/Inf in the block, or the write failed (disk full...).
        """
        self._require_open()
        x = np.asarray(block)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ParameterError(
                f"Expected a ({self.channels}, frames) block for {self.path}, got shape {x.shape}."
            )
        if x.dtype.kind != "f":
            raise ParameterError(f"Expected float audio for {self.path}, got {x.dtype}.")
        if self.fmt.is_float:
            # A copy (the caller may reuse `block`) and the frames-first layout, in one pass;
            # beyond float32 becomes Inf, refused here.
            written = np.empty((self.channels, x.shape[1]), dtype=np.float32)
            data: np.ndarray = np.empty((x.shape[1], self.channels), dtype=np.float32)
            if not _interleave_checked(x, data, written):
                self._refuse_non_finite(written)
        else:
            self._refuse_non_finite(x)
            assert self._ditherer is not None
            n = x.shape[1]
            written = np.empty((self.channels, n), dtype=np.float32)
            if self.fmt.bits <= 16:
                data = np.empty((n, self.channels), dtype=np.int16)
                shift = 0
            else:
                # libsndfile stores the top `bits` bits of an int32.
                data = np.empty((n, self.channels), dtype=np.int32)
                shift = 32 - self.fmt.bits
            fs = self._full_scale
            d = self._ditherer
            # Plain rounding needs no requantisation pass: the kernel rounds to the grid itself.
            q = d.process(x) if (d.dither or d.noise_shaping) else np.ascontiguousarray(x)
            self.clipped_samples += int(_codes_kernel(q, float(fs), float(-fs), float(fs - 1), shift, data, written))
        try:
            self._file.write(data)
        except (sf.SoundFileError, RuntimeError, OSError, AssertionError) as exc:
            # soundfile asserts on a short write that libsndfile did not flag.
            raise AudioOutputError(f"Cannot write {self.path}: {_reason(exc)}.") from exc
        self.frames_written += x.shape[1]
        return written

    def _refuse_non_finite(self, x: np.ndarray) -> None:
        bad = ~np.isfinite(x)
        if bad.any():
            channel, frame = np.argwhere(bad)[0]
            kind = "NaN" if np.isnan(x[channel, frame]) else "Inf"
            when = _describe_time((self.frames_written + int(frame)) / self.sample_rate)
            raise AudioOutputError(
                f"Refusing to write {self.path}: processing produced a {kind} sample "
                f"at {when} (channel {int(channel) + 1})."
            )

    def commit(self) -> Path:
        """Finish the file and move it into place atomically.

        Returns
        -------
        pathlib.Path
            The written file.

        Raises
        ------
        AudioOutputError
            Finishing failed (disk full...) or, without ``force``, a file
            appeared at the path meanwhile; the temp file is removed either way.
        """
        self._require_open()
        temp = str(self.temp_path)
        try:
            self._file.close()
            _fsync_path(temp)
            if not self.force and (self.path.exists() or self.path.is_symlink()):
                raise AudioOutputError(
                    f"{self.path} appeared while writing; choose another name or allow overwriting."
                )
            os.replace(temp, self.path)
        except AudioOutputError:
            self.abort()
            raise
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            self.abort()
            raise AudioOutputError(f"Cannot finish writing {self.path}: {_reason(exc)}.") from exc
        self._state = "committed"
        self._finalizer.detach()
        try:
            _fsync_path(self.path.parent, directory=True)
        except OSError:
            pass  # the data is in place; some file systems cannot sync folders
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temp file.  Safe to call more than once."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._finalizer()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
            self.commit()


def write(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    *,
    sample_rate: int,
    fmt: OutputFormat,
    protect: Iterable[str | os.PathLike[str]] = (),
    force: bool = False,
    dither: bool | None = None,
    noise_shaping: bool = False,
    seed: int | None = 0,
) -> Path:
    """Write a whole signal atomically (see :class:`AudioWriter`).

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    audio : numpy.ndarray
        ``(channels, frames)`` real float audio, full scale = 1.0.
    sample_rate, fmt, protect, force, dither, noise_shaping, seed
        As for :class:`AudioWriter`.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    x = np.asarray(audio)
    if x.ndim != 2:
        raise ParameterError(f"Expected (channels, frames) audio for {path}, got shape {x.shape}.")
    with AudioWriter(
        path,
        sample_rate=sample_rate,
        channels=x.shape[0],
        fmt=fmt,
        protect=protect,
        force=force,
        dither=dither,
        noise_shaping=noise_shaping,
        seed=seed,
    ) as writer:
        for start in range(0, x.shape[1], DEFAULT_BLOCK_FRAMES):
            writer.write(x[:, start : start + DEFAULT_BLOCK_FRAMES])
    return writer.path
