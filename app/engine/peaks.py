"""Waveform peak pyramids: min/max summaries of audio at several resolutions.

A :class:`PeakPyramid` holds, per channel, the minimum and maximum sample of
every run of ``BASE_FRAMES`` (64) frames -- level 0 -- and of every run of
``BASE_FRAMES * FACTOR**k`` frames at level ``k`` (``FACTOR`` = 4), up to a
single bin for the whole file.

Why 64 frames and a factor of 4
    64 frames is 1.3 ms at 48 kHz: the pyramid alone answers every view wider
    than ``64 * columns`` frames (about 2.7 s on a 2000-pixel lane); narrower
    views read the few raw frames they show (at most ``64 * columns``, under
    1 MB) from the source.  All levels together cost ``2 * 4 B * 4/3 / 64``
    = 0.17 B per sample, 1/24 of the float32 audio (58 MB for an hour of
    48 kHz stereo).  A factor of 4 keeps each query at most 6 bins per level
    (3 at each ragged column edge) over ``log4`` levels, so a 2000-column
    envelope is a fraction of a millisecond; factor 2 doubles the level
    count for no gain, factor 16 makes edges cost 30 bins per level.

Queries are exact, not sampled
    :meth:`PeakPyramid.envelope` snaps each column's frame range outwards to
    the 64-frame grid and takes the min/max over *all* samples in it, combining
    the coarsest bins that fit inside the column with finer bins at its edges
    (a segment-tree walk), so nothing between bins is skipped (no aliasing).

Cache
    :class:`PeakCache` stores pyramids in a folder given by the caller, one
    file per content SHA-256 of the media file (the same key as a project's
    ``media/`` folder), so a renamed or copied file hits and an edited one
    misses.  SHA-256 (SHA-NI) ran at 1.8 GB/s in memory and 0.5-0.7 GB/s
    from a cached file, BLAKE2b at about half that (benchmarks/waveform.py);
    an hour of 24-bit stereo is 1.04 GB, 1.5-2 s of hashing, so the hash runs
    on a thread *while* the file is decoded (hashlib releases the GIL) and
    overlaps the decode instead of delaying the first paint.
    Opening an unchanged file again skips even the hash: its digest is
    remembered under its (path, size, mtime, inode) once the mtime is a few
    seconds old (see ``PeakCache._stat_file``).  Files are written atomically
    (temp file, fsync, rename) with a digest of their payload; a damaged or
    foreign file is rebuilt, never trusted.

Threads
    Building is blocking work for a worker thread.  A pyramid being built may
    be read (``envelope``) from another thread while it grows: readers see only
    ``frames_ready`` frames, which is published after the bins under it are
    final.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from app.engine import audio_io
from app.engine.errors import AmcError, AudioInputError, AudioOutputError, ParameterError

__all__ = [
    "BASE_FRAMES",
    "FACTOR",
    "STAT_SETTLE_S",
    "PartialCallback",
    "PeakCache",
    "PeakPyramid",
    "ProgressCallback",
    "build_from_array",
    "build_from_file",
    "content_hash",
    "warm_up",
]

BASE_FRAMES = 64
FACTOR = 4
# Multiple of BASE_FRAMES, so every decoded block but the last is bin-aligned.
_BLOCK_FRAMES = 1 << 16
_HASH_CHUNK_BYTES = 1 << 22
_MAGIC = b"AMCPEAK1"
_FORMAT_VERSION = 1
_SUFFIX = ".peaks"
_STAT_SUFFIX = ".sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
STAT_SETTLE_S = 2.0

ProgressCallback = Callable[[float, str], None]
"""``progress(fraction, message)``: fraction in [0, 1].  May raise to cancel."""
PartialCallback = Callable[["PeakPyramid"], None]


# --------------------------------------------------------------------------- kernels
# All levels live in one (channels, total_bins, 2) buffer; level k starts at
# offsets[k].  One buffer keeps the kernels' signatures fixed (a tuple of
# per-level arrays would compile once per level count) and the cache file flat.


@njit(cache=True, nogil=True)
def _base_bins(block, data, first_bin, base):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """data[c, first_bin + j] = (min, max) of block[c, j*base : (j+1)*base] (last bin may be short)."""
    ch, n = block.shape
    nb = (n + base - 1) // base
    for c in range(ch):
        for j in range(nb):
            s = j * base
            e = min(s + base, n)
            lo = block[c, s]
            hi = lo
            for i in range(s + 1, e):
                v = block[c, i]
                if v < lo:
                    lo = v
                elif v > hi:
                    hi = v
            data[c, first_bin + j, 0] = lo
            data[c, first_bin + j, 1] = hi


@njit(cache=True, nogil=True)
def _reduce_level(data, src_off, src_len, dst_off, start, stop, factor):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Bins [start, stop) of a level from the level below (src_len bins at src_off)."""
    ch = data.shape[0]
    for c in range(ch):
        for b in range(start, stop):
            s = b * factor
            e = min(s + factor, src_len)
            lo = data[c, src_off + s, 0]
            hi = data[c, src_off + s, 1]
            for i in range(src_off + s + 1, src_off + e):
                if data[c, i, 0] < lo:
                    lo = data[c, i, 0]
                if data[c, i, 1] > hi:
                    hi = data[c, i, 1]
            data[c, dst_off + b, 0] = lo
            data[c, dst_off + b, 1] = hi


@njit(cache=True, nogil=True)
def _query(data, offsets, col_lo, col_hi, factor, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Exact min/max over base bins [col_lo[k], col_hi[k]) for every column k.

    Walks up the pyramid: at each level the ragged bins at both ends (at most
    factor - 1 each) are taken as they are and the aligned middle moves one
    level up, so each column reads the coarsest bins that fit inside it.  A
    bin of level L+1 is final whenever its factor children are, so a growing
    pyramid needs only col_hi <= final base bins.  Empty columns get NaN.
    """
    top = len(offsets) - 1
    ch = out.shape[0]
    for c in range(ch):
        for k in range(out.shape[1]):
            lo = col_lo[k]
            hi = col_hi[k]
            if lo >= hi:
                out[c, k, 0] = np.nan
                out[c, k, 1] = np.nan
                continue
            vmin = np.inf
            vmax = -np.inf
            level = 0
            while lo < hi:
                off = offsets[level]
                if level == top or hi - lo < factor:
                    for i in range(off + lo, off + hi):
                        vmin = min(vmin, data[c, i, 0])
                        vmax = max(vmax, data[c, i, 1])
                    break
                while lo % factor != 0:
                    vmin = min(vmin, data[c, off + lo, 0])
                    vmax = max(vmax, data[c, off + lo, 1])
                    lo += 1
                while hi % factor != 0:
                    hi -= 1
                    vmin = min(vmin, data[c, off + hi, 0])
                    vmax = max(vmax, data[c, off + hi, 1])
                lo //= factor
                hi //= factor
                level += 1
            out[c, k, 0] = vmin
            out[c, k, 1] = vmax


@njit(cache=True, nogil=True)
def _raw_columns(audio, offset, col_lo, col_hi, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """min/max of audio[c, col_lo[k]-offset : col_hi[k]-offset] per column (NaN if empty)."""
    ch = out.shape[0]
    for c in range(ch):
        for k in range(out.shape[1]):
            s = col_lo[k] - offset
            e = col_hi[k] - offset
            if s >= e:
                out[c, k, 0] = np.nan
                out[c, k, 1] = np.nan
                continue
            lo = audio[c, s]
            hi = lo
            for i in range(s + 1, e):
                v = audio[c, i]
                if v < lo:
                    lo = v
                elif v > hi:
                    hi = v
            out[c, k, 0] = lo
            out[c, k, 1] = hi


# --------------------------------------------------------------------------- the pyramid


def _level_lengths(frames: int) -> list[int]:
    """Bins per level for ``frames`` frames, from the base level up to one bin."""
    lengths = [max(1, -(-frames // BASE_FRAMES))]
    while lengths[-1] > 1:
        lengths.append(-(-lengths[-1] // FACTOR))
    return lengths


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


class PeakPyramid:
    """Multi-resolution min/max peaks of one piece of audio.

    Build one with :func:`build_from_file`, :func:`build_from_array` or
    :meth:`PeakCache.load_or_build`; do not construct directly.

    Attributes
    ----------
    channels : int
        Channel count.
    frames : int
        Length of the audio in frames.
    sample_rate : int
        Sample rate in Hz.
    data : numpy.ndarray
        ``(channels, total_bins, 2)`` float32, all levels one after the other;
        ``[..., 0]`` = min, ``[..., 1]`` = max.
    source : pathlib.Path or numpy.ndarray or None
        Where raw samples come from for views narrower than ``BASE_FRAMES``
        frames per column: the media file, the ``(channels, frames)`` array, or
        None (then the base level answers, widened to the 64-frame grid).

    Notes
    -----
    Thread-safe for readers; one builder thread may grow it meanwhile
    (:attr:`frames_ready`).
    """

    def __init__(
        self,
        *,
        channels: int,
        frames: int,
        sample_rate: int,
        data: np.ndarray,
        frames_ready: int,
        source: Path | np.ndarray | None = None,
    ) -> None:
        self.channels = channels
        self.frames = frames
        self.sample_rate = sample_rate
        self.lengths = _level_lengths(frames)
        self.offsets = _offsets(self.lengths)
        if data.shape != (channels, sum(self.lengths), 2):
            raise ParameterError(f"Peak data of shape {data.shape} does not fit {frames} frames.")
        self.data = data
        self.source = source
        self._frames_ready = int(frames_ready)
        self._raw_lock = threading.Lock()
        self._raw_window: tuple[int, np.ndarray] | None = None

    @property
    def levels(self) -> list[np.ndarray]:
        """Views of each level: ``levels[k]`` is ``(channels, bins_k, 2)``, ``BASE_FRAMES * FACTOR**k`` frames per bin."""
        return [self.data[:, o : o + n] for o, n in zip(self.offsets, self.lengths, strict=True)]

    @property
    def frames_ready(self) -> int:
        """Frames summarised so far (== :attr:`frames` once complete)."""
        return self._frames_ready

    @property
    def complete(self) -> bool:
        """True when every frame is summarised."""
        return self._frames_ready >= self.frames

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    @property
    def nbytes(self) -> int:
        """Memory held by the levels, in bytes."""
        return int(self.data.nbytes)

    @staticmethod
    def column_bounds(
        start_frame: int, end_frame: int, columns: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frame range ``[lo[k], hi[k])`` of every column, before clipping and widening.

        Column ``k`` covers ``start + floor(k * n / columns)`` up to
        ``start + floor((k + 1) * n / columns)`` with ``n = end - start``, and
        at least one frame (zoomed in past one frame per column, neighbouring
        columns repeat a sample instead of leaving holes).

        Returns
        -------
        lo, hi : numpy.ndarray
            ``(columns,)`` int64 frame indices (may lie outside the audio).
        """
        n = int(end_frame) - int(start_frame)
        k = np.arange(columns + 1, dtype=np.int64)
        edges = int(start_frame) + (k * n) // columns
        lo = edges[:-1]
        hi = np.maximum(edges[1:], lo + 1)
        return lo, hi

    def envelope(self, start_frame: int, end_frame: int, columns: int) -> np.ndarray:
        """Min/max of the audio in ``columns`` equal slices of a frame range.

        Parameters
        ----------
        start_frame, end_frame : int
            The range ``[start_frame, end_frame)`` in frames; may extend past
            either end of the audio.
        columns : int
            Number of columns (usually the lane's width in pixels).

        Returns
        -------
        numpy.ndarray
            ``(channels, columns, 2)`` float32: ``[..., 0]`` min, ``[..., 1]``
            max.  Each column covers its slice (:meth:`column_bounds`) clipped
            to ``[0, frames_ready)``.  At ``BASE_FRAMES`` or more frames per
            column the slice is widened outwards to the 64-frame grid (by at
            most 63 frames at each end) and answered from the coarsest levels
            that fit; narrower columns are exact over raw samples when the
            source is at hand.  Columns with no audio are NaN.

        Raises
        ------
        ParameterError
            ``columns`` < 1 or ``end_frame`` <= ``start_frame``.

        Notes
        -----
        Any thread; a deep zoom on a file-backed pyramid reads the file.
        """
        if isinstance(columns, bool) or not isinstance(columns, int | np.integer) or columns < 1:
            raise ParameterError(f"columns must be a positive integer, got {columns!r}.")
        start, end = int(start_frame), int(end_frame)
        if end <= start:
            raise ParameterError(f"end_frame ({end}) must be after start_frame ({start}).")
        cols = int(columns)
        ready = self._frames_ready
        lo, hi = self.column_bounds(start, end, cols)
        np.clip(lo, 0, ready, out=lo)
        np.clip(hi, 0, ready, out=hi)
        out = np.empty((self.channels, cols, 2), dtype=np.float32)
        if end - start < BASE_FRAMES * cols and self.source is not None:
            raw = self._raw(int(lo.min()), int(hi.max()))
            if raw is not None:
                _raw_columns(raw[1], raw[0], lo, hi, out)
                return out
        empty = hi <= lo
        blo = lo // BASE_FRAMES
        bhi = -(-hi // BASE_FRAMES)
        blo[empty] = 0
        bhi[empty] = 0
        _query(self.data, self.offsets, blo, bhi, FACTOR, out)
        return out

    def _raw(self, lo: int, hi: int) -> tuple[int, np.ndarray] | None:
        """(first frame, (channels, n) samples) covering frames [lo, hi), or None if unreadable."""
        src = self.source
        if isinstance(src, np.ndarray):
            return 0, src
        if hi <= lo or src is None:
            return lo, np.zeros((self.channels, 0), dtype=np.float32)
        with self._raw_lock:
            window = self._raw_window
            if window is not None and window[0] <= lo and hi <= window[0] + window[1].shape[1]:
                return window
            span = hi - lo  # read 3x the view so that panning mostly hits the window
            w0 = max(0, lo - span)
            w1 = min(self._frames_ready, hi + span)
            try:
                audio, _ = audio_io.read(src, start_frame=w0, frames=w1 - w0, check_finite=False)
            except (AmcError, OSError):
                return None  # the file moved or changed: the pyramid answers instead
            if audio.shape[1] < hi - w0:
                return None
            self._raw_window = (w0, audio)
            return self._raw_window


# --------------------------------------------------------------------------- building


class _Builder:
    """Grows a pyramid block by block (one thread writes, any may read)."""

    def __init__(self, channels: int, frames: int, sample_rate: int, source: Any) -> None:
        lengths = _level_lengths(frames)
        data = np.zeros((channels, sum(lengths), 2), dtype=np.float32)
        self.pyramid = PeakPyramid(
            channels=channels, frames=frames, sample_rate=sample_rate, data=data,
            frames_ready=0, source=source,
        )  # fmt: skip
        self.done_frames = 0
        self.done_bins = [0] * len(lengths)

    def add(self, block: np.ndarray) -> None:
        """Summarise the next ``(channels, n)`` block (n a multiple of BASE_FRAMES but for the last)."""
        n = block.shape[1]
        if n == 0:
            return
        pyr = self.pyramid
        if self.done_frames + n > pyr.frames:
            raise AudioInputError("The audio is longer than its header says (damaged file?).")
        _base_bins(block, pyr.data, self.done_frames // BASE_FRAMES, BASE_FRAMES)
        self.done_frames += n
        self._propagate(self.done_frames // BASE_FRAMES, final=False)
        # Published after the bins under it are written: readers trust frames below it.
        pyr._frames_ready = (
            self.done_frames
            if self.done_frames % BASE_FRAMES == 0
            else (self.done_frames // BASE_FRAMES * BASE_FRAMES)
        )

    def _propagate(self, base_done: int, *, final: bool) -> None:
        pyr = self.pyramid
        self.done_bins[0] = base_done
        for k in range(1, len(pyr.lengths)):
            below = self.done_bins[k - 1]
            now = -(-below // FACTOR) if final else below // FACTOR
            if now > self.done_bins[k]:
                _reduce_level(
                    pyr.data,
                    pyr.offsets[k - 1],
                    below,
                    pyr.offsets[k],
                    self.done_bins[k],
                    now,
                    FACTOR,
                )
                self.done_bins[k] = now

    def finish(self) -> PeakPyramid:
        """Close the ragged last bins (a lossy stream may end short of its header)."""
        frames = self.done_frames
        if frames == 0:
            raise AudioInputError("The audio contains no samples.")
        pyr = self.pyramid
        if frames < pyr.frames:
            lengths = _level_lengths(frames)
            data = np.zeros((pyr.channels, sum(lengths), 2), dtype=np.float32)
            data[:, : lengths[0]] = pyr.data[:, : lengths[0]]
            pyr = PeakPyramid(
                channels=pyr.channels, frames=frames, sample_rate=pyr.sample_rate, data=data,
                frames_ready=0, source=pyr.source,
            )  # fmt: skip
            self.pyramid = pyr
            self.done_bins = [0] * len(lengths)
        self._propagate(-(-frames // BASE_FRAMES), final=True)
        pyr._frames_ready = frames
        return pyr


_warm = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Load the compiled kernels now (about a second, once per process).

    Numba's first call in a process sets up its code generator even when the
    machine code comes from the disk cache; call this on a worker thread so
    the UI thread's first :meth:`PeakPyramid.envelope` does not pay for it.
    :class:`app.ui.waveform_view.PeakLoader` does.  Any thread.
    """
    global _warmed
    with _warm:
        if _warmed:
            return
        tiny = np.zeros((1, 2 * BASE_FRAMES + 1), dtype=np.float32)
        pyramid = build_from_array(tiny, 8000)  # _base_bins, _reduce_level
        pyramid.envelope(0, tiny.shape[1], 1)  # _raw_columns (array source)
        pyramid.source = None
        pyramid.envelope(0, tiny.shape[1], 1)  # _query
        _warmed = True


def build_from_array(audio: np.ndarray, sample_rate: int) -> PeakPyramid:
    """Build the pyramid of audio held in memory (e.g. a master rendered in memory).

    Parameters
    ----------
    audio : numpy.ndarray
        ``(channels, frames)`` real float audio.  Kept (as float32, not copied
        when it already is C-contiguous float32) as the raw source for deep
        zoom: do not modify it afterwards.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    PeakPyramid

    Raises
    ------
    ParameterError
        Not a 2-D float array, or a sample rate below 1.
    AudioInputError
        No frames.
    """
    x = np.asarray(audio)
    if x.ndim != 2 or x.dtype.kind != "f" or x.shape[0] < 1:
        raise ParameterError(f"Expected (channels, frames) float audio, got {x.dtype} {x.shape}.")
    if (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int | np.integer)
        or sample_rate < 1
    ):
        raise ParameterError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
    if x.shape[1] == 0:
        raise AudioInputError("The audio contains no samples (0 frames).")
    x = np.ascontiguousarray(x, dtype=np.float32)
    builder = _Builder(x.shape[0], x.shape[1], int(sample_rate), x)
    for s in range(0, x.shape[1], _BLOCK_FRAMES):
        builder.add(x[:, s : s + _BLOCK_FRAMES])
    return builder.finish()


def _report(progress: ProgressCallback | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, fraction)), message)


class _Stopped(Exception):
    """The hash was no longer wanted."""


def content_hash(path: str | os.PathLike[str], *, stop: threading.Event | None = None) -> str:
    """SHA-256 of a file's bytes, as 64 hex digits.

    Raises
    ------
    AudioInputError
        The file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(_HASH_CHUNK_BYTES)
            view = memoryview(buf)
            while n := f.readinto(buf):
                if stop is not None and stop.is_set():
                    raise _Stopped()
                h.update(view[:n])
    except OSError as exc:
        raise AudioInputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    return h.hexdigest()


class _Hasher(threading.Thread):
    """SHA-256 of a file on a thread (hashlib releases the GIL), beside decoding."""

    def __init__(self, path: Path) -> None:
        super().__init__(name=f"sha256 {path.name}", daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.digest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.digest = content_hash(self.path, stop=self.stop)
        except BaseException as exc:  # handed over to the caller's thread by result()
            self.error = exc

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.digest is not None
        return self.digest


def _build_stream(
    info: audio_io.AudioInfo,
    progress: ProgressCallback | None,
    on_partial: PartialCallback | None,
    should_stop: Callable[[], bool] | None,
) -> PeakPyramid | None:
    blocks = audio_io.iter_blocks(info.path, block_frames=_BLOCK_FRAMES, check_finite=True)
    builder = _Builder(info.channels, info.frames, info.sample_rate, Path(info.path))
    if on_partial is not None:
        on_partial(builder.pyramid)
    name = info.path.name
    _report(progress, 0.0, f"Reading {name}")
    for block in blocks:
        builder.add(block)
        _report(progress, builder.done_frames / info.frames, f"Reading {name}")
        if should_stop is not None and should_stop():
            return None
    return builder.finish()


def build_from_file(
    path: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    on_partial: PartialCallback | None = None,
) -> PeakPyramid:
    """Build a pyramid by streaming a file (bounded memory: one 64 k-frame block).

    Parameters
    ----------
    path : str or os.PathLike
        The audio file.
    progress : callable, optional
        ``progress(fraction, message)`` after each block; raise from it to
        cancel (the exception propagates).
    on_partial : callable, optional
        Called once, before decoding, with the pyramid being grown: draw it
        right away and redraw as :attr:`PeakPyramid.frames_ready` grows.  A
        lossy stream that ends short of its header's length is returned as a
        new (shorter) pyramid.

    Returns
    -------
    PeakPyramid
        Complete, with the file as raw source.

    Raises
    ------
    AudioInputError
        See :func:`app.engine.audio_io.iter_blocks`.
    """
    pyramid = _build_stream(audio_io.probe(path), progress, on_partial, None)
    assert pyramid is not None
    return pyramid


# --------------------------------------------------------------------------- cache


class PeakCache:
    """Pyramids on disk, one file per media content hash.

    Parameters
    ----------
    folder : str or os.PathLike
        Cache folder (created when first written), e.g. the user data dir's
        ``peaks/``; the engine reads no settings itself.

    Notes
    -----
    Safe to use from several threads and processes: files are written under a
    temporary name and renamed into place.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path_for(self, digest: str) -> Path:
        """Cache file of a content hash."""
        return self.folder / f"{digest}{_SUFFIX}"

    def load_or_build(
        self,
        path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        on_partial: PartialCallback | None = None,
    ) -> PeakPyramid:
        """The pyramid of a media file, from the cache or built (and stored).

        An unchanged file seen before is answered from the cache at once.
        Otherwise the file is hashed on a thread while it is decoded (and
        ``on_partial`` can draw it); once the hash is known a cached pyramid,
        if any, ends the build.

        Parameters
        ----------
        path : str or os.PathLike
            The audio file.
        progress : callable, optional
            ``progress(fraction, message)``; raise from it to cancel: the
            exception propagates and no cache file is left behind.
        on_partial : callable, optional
            Receives the growing pyramid before decoding starts, to draw it
            progressively (it may be replaced by a cached one at the end).

        Returns
        -------
        PeakPyramid
            Complete, with ``path`` as raw source.

        Raises
        ------
        AudioInputError
            The file is not usable audio (see :func:`app.engine.audio_io.probe`).
        """
        info = audio_io.probe(path)
        try:
            stat = os.stat(info.path)
        except OSError as exc:
            raise AudioInputError(f"Cannot read {info.path}: {exc.strerror or exc}.") from exc
        known = self._known_digest(info.path, stat)
        if known is not None:
            hit = self._load(known, info.path)
            if hit is not None:
                _report(progress, 1.0, f"Loaded the peaks of {info.path.name}")
                return hit
        hasher = _Hasher(info.path)
        hasher.start()
        state: dict[str, Any] = {"checked": False, "hit": None}

        def cache_hit() -> bool:
            # Polled after each decoded block: once the hash is known, look once.
            if not state["checked"] and not hasher.is_alive():
                state["checked"] = True
                if hasher.error is None and hasher.digest is not None:
                    state["hit"] = self._load(hasher.digest, info.path)
            return state["hit"] is not None

        try:
            built = _build_stream(info, progress, on_partial, cache_hit)
            digest = hasher.result()
        finally:
            hasher.stop.set()
        self._remember_digest(info.path, stat, digest)
        if built is None or cache_hit():
            _report(progress, 1.0, f"Loaded the peaks of {info.path.name}")
            return state["hit"]  # type: ignore[no-any-return]
        with contextlib.suppress(AudioOutputError):
            self.store(digest, built)  # a read-only cache costs speed, not correctness
        _report(progress, 1.0, f"Built the peaks of {info.path.name}")
        return built

    # A file's SHA-256 is remembered under a key of its (path, size, mtime, inode), so
    # opening an unchanged file again skips the hash (1.5 s for an hour of 24-bit
    # stereo) and shows the cached pyramid at once.  Only a file whose mtime is
    # already STAT_SETTLE_S old is remembered: a rewrite within the file system's
    # timestamp granularity cannot then keep the same mtime ("racy git" problem).
    # A tool that rewrites a file's bytes and then restores its old mtime and size
    # defeats this, as it defeats make and rsync.
    def _stat_file(self, path: Path, stat: os.stat_result) -> Path:
        key = f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_dev}"
        return (
            self.folder
            / f"{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}{_STAT_SUFFIX}"
        )

    def _known_digest(self, path: Path, stat: os.stat_result) -> str | None:
        try:
            text = self._stat_file(path, stat).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if _HEX64.fullmatch(text) else None

    def _remember_digest(self, path: Path, before: os.stat_result, digest: str) -> None:
        try:
            after = os.stat(path)
        except OSError:
            return
        same = (before.st_size, before.st_mtime_ns, before.st_ino) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ino,
        )
        if not same or time.time_ns() - after.st_mtime_ns < STAT_SETTLE_S * 1e9:
            return
        target = self._stat_file(path, after)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp.write_text(digest, encoding="ascii")
            os.replace(temp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def load(self, path: str | os.PathLike[str]) -> PeakPyramid | None:
        """The cached pyramid of a media file, or None (missing or damaged cache file)."""
        return self._load(content_hash(path), Path(path))

    def _load(self, digest: str, source: Path) -> PeakPyramid | None:
        target = self.path_for(digest)
        try:
            # into a bytearray: the levels stay writeable arrays, the one type the
            # compiled kernels are specialised (and disk-cached) for
            with open(target, "rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                if f.readinto(data) != len(data):
                    return None
        except OSError:
            return None
        try:
            return _decode(data, source)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None  # damaged or from another version: rebuild over it

    def store(self, digest: str, pyramid: PeakPyramid) -> Path:
        """Write a complete pyramid atomically under its content hash.

        Raises
        ------
        AudioOutputError
            The cache folder cannot be written.
        ParameterError
            The pyramid is not complete.
        """
        if not pyramid.complete:
            raise ParameterError("Only a complete pyramid can be cached.")
        target = self.path_for(digest)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(temp, "xb") as f:
                for chunk in _encode(pyramid):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise AudioOutputError(f"Cannot write the peak cache {target}: {exc}.") from exc
        return target


def _encode(pyr: PeakPyramid) -> list[bytes]:
    payload = np.ascontiguousarray(pyr.data, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "version": _FORMAT_VERSION,
            "base_frames": BASE_FRAMES,
            "factor": FACTOR,
            "channels": pyr.channels,
            "frames": pyr.frames,
            "sample_rate": pyr.sample_rate,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
    ).encode()
    return [_MAGIC, len(header).to_bytes(4, "little"), header, payload]


def _decode(data: bytearray, source: Path) -> PeakPyramid:
    """A pyramid from a cache file's bytes; ValueError/KeyError/TypeError if it is not sound."""
    if data[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a peak file")
    size = int.from_bytes(data[8:12], "little")
    head = json.loads(data[12 : 12 + size])
    if (head["version"], head["base_frames"], head["factor"]) != (
        _FORMAT_VERSION,
        BASE_FRAMES,
        FACTOR,
    ):
        raise ValueError("another format version")
    channels, frames, rate = int(head["channels"]), int(head["frames"]), int(head["sample_rate"])
    if channels < 1 or frames < 1 or rate < 1:
        raise ValueError("inconsistent header")
    body = memoryview(data)[12 + size :]
    bins = sum(_level_lengths(frames))
    if len(body) != 4 * 2 * channels * bins:
        raise ValueError("wrong size")
    if hashlib.sha256(body).hexdigest() != head["payload_sha256"]:
        raise ValueError("payload damaged")
    values = np.frombuffer(body, dtype="<f4").reshape(channels, bins, 2)
    return PeakPyramid(
        channels=channels, frames=frames, sample_rate=rate, data=values,
        frames_ready=frames, source=source,
    )  # fmt: skip
