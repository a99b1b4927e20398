"""Tiny real backends for the orchestrator tests (registered through ``AMC_EXTRA_BACKENDS``).

- :class:`TinyGenerator` (slot ``musicgen``): synthesises a short chord progression (additive
  tones with decaying envelopes over a quiet pink-ish bed), ``duration_s`` long, at 32 kHz
  stereo.  An **even seed produces digital silence** on purpose, so a quality gate fails
  and the orchestrator's seed retry is exercised deterministically.  ``step_s`` slows it
  down (one progress call per 0.25 s of audio) for the cancel tests.
- :class:`BrokenGenerator` (slot ``musicgen``): always raises, to exercise the fallback.
- :class:`TinyStyle` (slot ``jukebox``): "style transfer" by a one-pole low-pass and a
  tremolo (real DSP on the input), writing ``raw`` like the real backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import soundfile as sf

from app.engine.errors import ProcessingError
from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext, WeightsSpec

SR = 32_000


def synth_music(duration_s: float, seed: int, sr: int = SR) -> np.ndarray:
    """(2, frames) float32: chords of decaying harmonic tones over a quiet noise bed."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * sr)
    t = np.arange(n) / sr
    y = np.zeros(n)
    beat = 0.5
    roots = (110.0, 146.83, 130.81, 98.0)
    for i, start in enumerate(np.arange(0.0, duration_s, beat)):
        a = round(start * sr)
        seg = t[a:] - start
        env = np.exp(-seg * 3.0)
        root = roots[(i // 4) % len(roots)]
        for ratio in (1.0, 1.26, 1.5, 2.0):
            f0 = root * ratio * (1 + 0.002 * rng.standard_normal())
            for k in range(1, 10):
                if f0 * k < sr / 2:
                    y[a:] += env * np.sin(2 * np.pi * f0 * k * seg) / k**1.3
    white = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1]
    bed = np.fft.irfft(white * f**-0.75, n)  # falling like music: about -4.5 dB/oct
    bed *= 0.3 * np.std(y) / (np.std(bed) + 1e-12)
    y = y + bed
    y = 0.5 * y / np.max(np.abs(y))
    return np.stack([y, np.roll(y, 37)]).astype(np.float32)


class TinyGenerator(Backend):
    name = "tiny-gen"
    slot = "musicgen"
    title = "Tiny test generator (even seeds are silent)"
    capabilities = frozenset({"text_to_audio"})
    tasks = MappingProxyType({"text_to_audio": "text_to_audio"})
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "test generator")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        duration_s = float(params.get("duration_s", 2.0))
        seed = int(params.get("seed", ctx.seed if ctx.seed is not None else 1))
        step_s = float(params.get("step_s", 0.0))
        chunks = max(1, round(duration_s / 0.25))
        for i in range(chunks):
            ctx.progress(i / chunks, f"chunk {i + 1}/{chunks}")
            if step_s:
                time.sleep(step_s)
        audio = synth_music(duration_s, seed)
        if seed % 2 == 0:
            audio[:] = 0.0
        out = ctx.work_dir / "tiny_gen.wav"
        sf.write(out, audio.T, SR, subtype="FLOAT")
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, {"seed": seed, "sample_rate": SR, "prompt": params.get("prompt")})


class BrokenGenerator(Backend):
    name = "tiny-broken-gen"
    slot = "musicgen"
    title = "Tiny test generator that always fails"
    capabilities = frozenset({"text_to_audio"})
    tasks = MappingProxyType({"text_to_audio": "text_to_audio"})
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "test generator that fails")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        ctx.progress(0.1, "about to fail")
        raise ProcessingError("tiny-broken-gen always fails")


class TinyStyle(Backend):
    name = "tiny-style"
    slot = "jukebox"
    title = "Tiny test style transfer (low-pass + tremolo)"
    capabilities = frozenset({"style_transfer"})
    tasks = MappingProxyType({"style_transfer": "style_transfer"})
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "test style transfer")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        if not params.get("target_genre"):
            raise ProcessingError("needs target_genre")
        x, sr = sf.read(inputs["audio"], dtype="float32", always_2d=True)
        from scipy.signal import lfilter

        a = np.exp(-2 * np.pi * 3000.0 / sr)
        y = lfilter([1 - a], [1, -a], x, axis=0).astype(np.float32)  # one-pole low-pass
        y *= (0.8 + 0.2 * np.sin(2 * np.pi * 4.0 * np.arange(x.shape[0]) / sr))[:, None]
        ctx.progress(0.9, "writing")
        raw = ctx.work_dir / "style_raw.wav"
        sf.write(raw, y, sr, subtype="FLOAT")
        return BackendOutput({"audio": raw, "raw": raw}, {"target_genre": params["target_genre"]})


class TinyPromptScorer(Backend):
    """A *test double* of a CLAP prompt scorer: it judges nothing about the audio's content.

    It returns ``clap_similarity`` 0.5 when the prompt contains "piano", else 0.05, so the
    tests can check that the orchestrator routes a score to the prompt-adherence gate and
    acts on it.  Never registered outside the tests.
    """

    name = "tiny-prompt-scorer"
    slot = "musiclm"
    title = "Tiny test prompt scorer (test double)"
    capabilities = frozenset({"analysis"})
    tasks = MappingProxyType({"clap_similarity": "analysis"})
    extra = None

    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        return BackendStatus("ready", "test double")

    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        if not Path(inputs["audio"]).is_file():
            raise ProcessingError("no audio")
        score = 0.5 if "piano" in str(params.get("prompt", "")).lower() else 0.05
        return BackendOutput({}, {"clap_similarity": score})


EXTRA = ",".join(
    f"tests.models.orchestra_backends:{c}"
    for c in ("BrokenGenerator", "TinyGenerator", "TinyStyle", "TinyPromptScorer")
)
