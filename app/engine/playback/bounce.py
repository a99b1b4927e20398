"""Offline bounce: the live engine's own :meth:`Engine.render`, block by block."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from app.engine.errors import ParameterError
from app.engine.playback import commands as cmd
from app.engine.playback.engine import Engine
from app.engine.playback.master import LiveMasterChain, ThreadedMasterChain
from app.engine.playback.tracks import Track

__all__ = ["bounce"]


def bounce(
    source: Engine | Iterable[Track],
    start_frame: int,
    end_frame: int,
    *,
    block_frames: int = 4096,
    sample_rate: int | None = None,
    master_chain: LiveMasterChain | None = None,
    monitor: cmd.Monitor = "source",
    compensate_latency: bool = True,
) -> np.ndarray:
    """Render timeline frames ``[start_frame, end_frame)`` offline, through the live mixer.

    Parameters
    ----------
    source : Engine or iterable of Track
        An engine (used as is: it must not be playing on a device; its tracks, gains,
        monitor and chain are what is rendered), or tracks for a fresh engine (each is
        copied with :meth:`Track.fresh`, so tracks playing live are not disturbed).
    start_frame, end_frame : int
        Timeline range, engine-rate frames.
    block_frames : int, keyword-only
        Render block (the result does not depend on it).
    sample_rate : int, keyword-only
        Required with a track list.
    master_chain : LiveMasterChain, keyword-only
        With a track list: a *fresh* chain to master through (then use ``monitor="master"``).
    monitor : {"source", "master"}, keyword-only
        With a track list: which side of the A/B to render.
    compensate_latency : bool, keyword-only
        Drop the master bus's alignment latency so the result starts at ``start_frame``.

    Returns
    -------
    np.ndarray
        (2, end_frame - start_frame) float32.
    """
    if not (0 <= start_frame <= end_frame):
        raise ParameterError("bounce needs 0 <= start_frame <= end_frame")
    if block_frames < 1:
        raise ParameterError("block_frames must be >= 1")
    if isinstance(master_chain, ThreadedMasterChain) or (
        isinstance(source, Engine) and isinstance(source._chain, ThreadedMasterChain)
    ):
        # its worker runs in real time; offline, the inline chain gives the same samples
        raise ParameterError("bounce needs an inline LiveMasterChain, not a ThreadedMasterChain")
    if isinstance(source, Engine):
        eng = source
        if master_chain is not None:
            eng.send(cmd.SetMasterChain(master_chain))
    else:
        if sample_rate is None:
            raise ParameterError("bouncing a track list needs sample_rate")
        eng = Engine(sample_rate, block_frames=min(block_frames, 8192))
        for t in source:
            eng.send(cmd.AddTrack(t.fresh()))
        if master_chain is not None:
            eng.send(cmd.SetMasterChain(master_chain))
        eng.send(cmd.SetMonitor(monitor))
    eng.send(cmd.Seek(start_frame))
    eng.send(cmd.Play())
    eng.render(0)  # apply the commands so the latency below is the one in effect
    skip = eng.snapshot().latency_frames if compensate_latency else 0
    total = end_frame - start_frame
    out = np.zeros((2, total + skip), dtype=np.float32)
    done = 0
    while done < total + skip:
        n = min(block_frames, total + skip - done)
        eng.render(n, out=out[:, done : done + n])
        done += n
    eng.send(cmd.Pause())
    eng.render(0)
    return out[:, skip:]
