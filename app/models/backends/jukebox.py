"""Jukebox slot (style transfer): re-render an existing track in a target genre, then master it.

OpenAI's Jukebox itself is a 5B-parameter model with no maintained runtime; the slot's
role — "this song, in another genre" — is done with MusicGen-Melody: the track's
chroma (its melody and harmony) conditions the generation, and the text prompt is the
target genre plus the track's own tempo and key from :mod:`app.engine.analysis`.  The
result goes through the engine's mastering chain (:func:`master_file`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.engine import analysis
from app.engine.errors import ParameterError
from app.models.backends import _common as c
from app.models.backends.audiocraft import (
    MUSICGEN_MELODY,
    load_melody,
    melody_generate,
    melody_random_full_size,
)
from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext
from app.models.backends.musicgen import MAX_DURATION_S


def style_prompt(
    target_genre: str, tempo_bpm: float | None, key: str | None, extra: str = ""
) -> str:
    """The text condition: ``"<genre>, <extra>, in <key>, <tempo> bpm"`` (parts that are known)."""
    parts = [target_genre.strip()]
    if extra.strip():
        parts.append(extra.strip())
    if key:
        parts.append(f"in {key}")
    if tempo_bpm:
        parts.append(f"{tempo_bpm:.0f} bpm")
    return ", ".join(parts)


class MelodyStyleTransfer(Backend):
    """Genre style transfer with MusicGen-Melody, mastered by the engine."""

    name = "musicgen-melody-style-transfer"
    slot = "jukebox"
    title = "Style transfer (MusicGen-Melody + mastering)"
    capabilities = frozenset({"style_transfer"})
    tasks = {"style_transfer": "style_transfer"}  # noqa: RUF012 - read-only, as in Backend
    weights = (MUSICGEN_MELODY,)
    packages = ("torch", "transformers", "librosa")

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        return c.weights_status(
            self,
            find_weights,
            ready_detail=(
                f"melody-conditioned regeneration on {device}, mastered by the engine (not OpenAI Jukebox)"
            ),
        )

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        genre = str(params.get("target_genre", "") or "").strip()
        if not genre:
            raise ParameterError("style_transfer needs target_genre, e.g. 'jazz' or 'synthwave'")
        source = c.need_input(inputs)
        folder = c.resolve_weights(ctx, MUSICGEN_MELODY)
        track, sr_in = c.read_audio(source)

        ctx.progress(0.0, "analysing the track")
        an = analysis.analyze(track, sr_in, musical=True)
        prompt = style_prompt(genre, an.tempo_bpm, an.key, str(params.get("prompt", "") or ""))
        duration_s = c.param_float(
            params, "duration_s", min(an.duration_s, MAX_DURATION_S), 0.5, MAX_DURATION_S
        )

        ctx.progress(0.05, f"loading {MUSICGEN_MELODY.repo_id}")
        bundle = ctx.load_cached(
            f"musicgen-melody:{folder}:{ctx.device}", lambda: load_melody(folder, ctx.device)
        )
        seed = c.seed_everything(c.job_seed(params, ctx))
        t0 = time.perf_counter()
        audio, sr = melody_generate(
            bundle,
            track,
            sr_in,
            prompt=prompt,
            duration_s=duration_s,
            ctx=ctx,
            params=params,
            start=0.1,
            span=0.6,
        )
        compute_s = time.perf_counter() - t0
        raw = c.write_audio(
            ctx.work_dir / "style_raw.wav", c.match_channels(audio, max(2, audio.shape[0])), sr
        )

        mastered = ctx.work_dir / "style_mastered.wav"
        result = c.master(
            raw, mastered, params, progress=lambda f, m: ctx.progress(0.72 + 0.26 * f, m)
        )
        metrics = c.timing_metrics(audio.shape[1] / sr, compute_s, ctx.device)
        metrics.update(
            {
                "prompt": prompt,
                "target_genre": genre,
                "source_tempo_bpm": an.tempo_bpm,
                "source_key": an.key,
                "sample_rate": sr,
                "seed": seed,
                "model": MUSICGEN_MELODY.repo_id,
                **c.master_metrics(result),
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": result.output or mastered, "raw": raw}, metrics)

    @classmethod
    def random_full_size(cls) -> Callable[[str, float], dict[str, Any]]:
        """Benchmark hook: ``bench(device, duration_s) -> metrics`` — MusicGen-Melody (1.5B) with random weights.

        Times the generation part only (mastering has its own benchmark).
        """
        return melody_random_full_size()
