"""Shared builders for the playback tests."""

from __future__ import annotations

import numpy as np

from app.engine.mastering.plan import MasteringPlan, MultibandStage


def ramp(channels: int, frames: int, *, scale: float = 2.0**-16, offset: int = 0) -> np.ndarray:
    """(channels, frames) float32 whose value identifies the frame exactly (channel 1 negated)."""
    x = (np.arange(frames, dtype=np.float64) + offset) * scale
    rows = [x, -x][:channels]
    return np.asarray(rows, dtype=np.float32)


def plan(sample_rate: int = 48000) -> MasteringPlan:
    """A plan with every live stage on (EQ, compressor, multiband, limiter)."""
    p = MasteringPlan(sample_rate=sample_rate, channels=2)
    p.eq.freqs_hz = [100.0, 1000.0, 8000.0]
    p.eq.mid_gain_db = [1.5, -1.0, 2.0]
    p.eq.side_gain_db = [0.0, 0.5, 1.0]
    p.multiband = MultibandStage(enabled=True)
    return p


def noise(rng: np.random.Generator, frames: int, level: float = 0.1, corr: float = 0.5) -> np.ndarray:
    """Stereo noise with a chosen L/R correlation."""
    a = rng.standard_normal(frames)
    b = rng.standard_normal(frames)
    return (level * np.stack([a, corr * a + np.sqrt(1 - corr**2) * b])).astype(np.float32)
