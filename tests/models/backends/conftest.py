"""Fixtures for the backend tests: tiny checkpoint folders (built once per session), job contexts, audio.

Only the fixtures that build checkpoints need torch/transformers and skip without them:
the DSP (ACES) and ONNX (Basic Pitch / pYIN) backends are tested on any install.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.models.backends.base import Cancelled, JobContext, WeightsSpec


@pytest.fixture(scope="session")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AMC_HOME whose ``models/`` holds tiny stand-ins under the real repo ids (needs transformers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.models.backends import tiny_models

    home = tmp_path_factory.mktemp("amc_home")
    models = home / "models"
    for repo in ("facebook/musicgen-small",):
        tiny_models.build_musicgen(models / repo)
    tiny_models.build_musicgen_melody(models / "facebook/musicgen-melody")
    tiny_models.build_encodec(models / "facebook/encodec_32khz")
    tiny_models.build_stable_audio(models / "stabilityai/stable-audio-open-1.0")
    tiny_models.build_clap(models / "laion/clap-htsat-unfused")
    return home


@pytest.fixture(scope="session")
def find_weights(models_home: Path) -> Callable[[WeightsSpec], Path | None]:
    def find(spec: WeightsSpec) -> Path | None:
        folder = models_home / "models" / spec.repo_id
        return folder if folder.is_dir() else None

    return find


@dataclass
class Recorder:
    """Records progress calls; raises Cancelled from progress once ``cancel_at`` is reached."""

    cancel_at: float | None = None
    calls: list[tuple[float, str, float]] = field(default_factory=list)
    cancelled_at: float | None = None

    def progress(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        self.calls.append((fraction, message, now))
        if self.cancel_at is not None and fraction >= self.cancel_at and self.cancelled_at is None:
            self.cancelled_at = now
        if self.cancelled_at is not None:
            raise Cancelled("cancelled by test")

    def is_cancelled(self) -> bool:
        return self.cancelled_at is not None


@pytest.fixture
def make_ctx(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., tuple[JobContext, Recorder]]:
    def find_weights(spec: WeightsSpec) -> Path | None:
        # resolved on first use: a backend that never looks for weights (ACES) needs no tiny
        # checkpoints, hence no transformers
        finder: Callable[[WeightsSpec], Path | None] = request.getfixturevalue("find_weights")
        return finder(spec)

    def make(
        *, cancel_at: float | None = None, seed: int | None = 1234
    ) -> tuple[JobContext, Recorder]:
        rec = Recorder(cancel_at=cancel_at)
        work = tmp_path / "job"
        work.mkdir(exist_ok=True)
        ctx = JobContext(
            device="cpu",
            work_dir=work,
            progress=rec.progress,
            is_cancelled=rec.is_cancelled,
            seed=seed,
            find_weights=find_weights,
        )
        return ctx, rec

    return make


def tone_wav(
    path: Path,
    *,
    seconds: float,
    sample_rate: int,
    freqs: tuple[float, ...] = (220.0, 277.18, 329.63),
    channels: int = 1,
    amplitude: float = 0.3,
) -> Path:
    """A chord of sines with a gentle 2 Hz tremolo, written as float WAV."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    y = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    y = amplitude * y * (0.8 + 0.2 * np.sin(2 * np.pi * 2 * t))
    sf.write(
        path,
        np.repeat(y[:, None], channels, axis=1).astype(np.float32),
        sample_rate,
        subtype="FLOAT",
    )
    return path
