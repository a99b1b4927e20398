"""Analyse an audio file: stream it from disk through :class:`app.engine.analysis.Analyzer`.

What ``amc analyze`` runs. It lives apart from the mastering chain so that measuring a
file imports only the meters and the file reader, not the mastering stages (their
modules and kernels are not needed to measure).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.engine import analysis, audio_io

#: Frames per block read from the file (the mastering chain's block too).
BLOCK_FRAMES = 65536

ProgressFn = Callable[[float, str], None]


def analyze_file(
    path: Path,
    *,
    musical: bool = False,
    true_peak: bool = True,
    progress: ProgressFn | None = None,
) -> analysis.Analysis:
    """Stream a file through the analyser (bounded memory).

    Parameters
    ----------
    path : Path
        Audio file (see :func:`app.engine.audio_io.probe`).
    musical : bool, keyword-only
        Also estimate tempo, beats and key (librosa: seconds and several hundred MB
        more; off by default).
    true_peak : bool, keyword-only
        ``False`` leaves the true peak at -inf (saves the oversampling).
    progress : callable, keyword-only
        ``progress(fraction, message)`` after each block.

    Returns
    -------
    analysis.Analysis

    Raises
    ------
    AudioInputError
        The file is unusable (see :func:`app.engine.audio_io.probe`) or fails to decode.
    """
    info = audio_io.probe(path)
    an = analysis.Analyzer(info.sample_rate, info.channels, keep_musical=musical, true_peak=true_peak)
    done = 0
    for block in audio_io.iter_blocks(path, block_frames=BLOCK_FRAMES):
        an.process(block)
        done += block.shape[1]
        if progress:
            progress(done / max(info.frames, 1), f"analysing {Path(path).name}")
    return an.result(musical=musical)
