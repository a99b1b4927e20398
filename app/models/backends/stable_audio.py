"""Stable Audio (slot "stable-audio"): text -> audio, loops and sound effects.

Runs diffusers' ``StableAudioPipeline`` from a diffusers-layout checkpoint folder
(stabilityai/stable-audio-open-1.0: ``model_index.json``, ``transformer/``, ``vae/``,
``text_encoder/``, ``projection_model/``, ``tokenizer/``, ``scheduler/``).  Progress is
reported and cancel honoured after every diffusion step through the pipeline's step
callback (this diffusers version offers ``callback``/``callback_steps`` for this
pipeline, not ``callback_on_step_end``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.errors import ParameterError, ProcessingError
from app.models.backends import _common as c
from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext, WeightsSpec

STABLE_AUDIO_OPEN = WeightsSpec(
    "stabilityai/stable-audio-open-1.0",
    # diffusers components in fp32: DiT ~4.2 GB + T5-base encoder ~0.44 GB + Oobleck VAE ~0.6 GB.
    5_300_000_000,
    "Stability AI Community License (gated: accept it on the model page)",
    c.hf_url("stabilityai/stable-audio-open-1.0"),
)


def load_pipeline(folder: Path, device: str) -> tuple[Any, int]:
    """``(StableAudioPipeline, size_bytes)`` for the worker's model cache."""
    import torch
    from diffusers import StableAudioPipeline

    dev = c.torch_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    pipe = StableAudioPipeline.from_pretrained(folder, dtype=dtype).to(dev)
    pipe.set_progress_bar_config(disable=True)
    size = 0
    for part in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.projection_model):
        size += sum(p.numel() * p.element_size() for p in part.parameters())
    return pipe, int(size)


def run_pipeline(
    pipe: Any,
    ctx: JobContext,
    *,
    prompt: str,
    negative_prompt: str | None,
    duration_s: float,
    steps: int,
    guidance_scale: float,
    seed: int,
    start: float = 0.05,
    span: float = 0.9,
) -> np.ndarray:
    """One generation; ``(channels, frames)`` float32 at ``pipe.vae.config.sampling_rate``."""
    import torch

    def on_step(step: int, timestep: Any, latents: Any) -> None:
        # Raises Cancelled when the job was cancelled: that aborts the denoising loop.
        ctx.progress(start + span * (step + 1) / steps, f"diffusion step {step + 1}/{steps}")

    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.inference_mode():
        out = pipe(
            prompt,
            negative_prompt=negative_prompt or None,
            audio_end_in_s=duration_s,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generator,
            callback=on_step,
            callback_steps=1,
            output_type="pt",
        )
    audio = out.audios[0].float().cpu().numpy()
    if not np.all(np.isfinite(audio)):
        raise ProcessingError("the model produced NaN/Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


class DiffusersStableAudio(Backend):
    """Stable Audio Open 1.0 through diffusers."""

    name = "diffusers-stable-audio"
    slot = "stable-audio"
    title = "Stable Audio Open (diffusers)"
    capabilities = frozenset({"text_to_audio"})
    tasks = {"text_to_audio": "text_to_audio"}  # noqa: RUF012 - read-only, as in Backend
    weights = (STABLE_AUDIO_OPEN,)
    packages = ("torch", "transformers", "diffusers", "torchsde")

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        return c.weights_status(self, find_weights, ready_detail=f"runs on {device}")

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        prompt = str(params.get("prompt", "") or "")
        if not prompt.strip():
            raise ParameterError("text_to_audio needs a non-empty prompt")
        folder = c.resolve_weights(ctx, STABLE_AUDIO_OPEN)
        ctx.progress(0.0, f"loading {STABLE_AUDIO_OPEN.repo_id}")
        pipe = ctx.load_cached(
            f"stable-audio:{folder}:{ctx.device}", lambda: load_pipeline(folder, ctx.device)
        )
        sr = int(pipe.vae.config.sampling_rate)
        max_s = float(pipe.transformer.config.sample_size) * pipe.vae.hop_length / sr
        duration_s = c.param_float(params, "duration_s", min(10.0, max_s), 0.05, max_s)
        steps = c.param_int(params, "steps", 100, 1, 1000)
        guidance = c.param_float(params, "guidance_scale", 7.0, 0.0, 30.0)
        seed = c.seed_everything(c.job_seed(params, ctx))
        t0 = time.perf_counter()
        audio = run_pipeline(
            pipe,
            ctx,
            prompt=prompt,
            negative_prompt=params.get("negative_prompt"),
            duration_s=duration_s,
            steps=steps,
            guidance_scale=guidance,
            seed=seed,
        )
        compute_s = time.perf_counter() - t0
        ctx.progress(0.97, "writing audio")
        out = c.write_audio(ctx.work_dir / "stable_audio.wav", audio, sr)
        metrics = c.timing_metrics(audio.shape[1] / sr, compute_s, ctx.device)
        metrics.update(
            {
                "sample_rate": sr,
                "channels": int(audio.shape[0]),
                "steps": steps,
                "seed": seed,
                "guidance_scale": guidance,
                "prompt": prompt,
                "model": STABLE_AUDIO_OPEN.repo_id,
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, metrics)

    @classmethod
    def random_full_size(cls) -> Callable[[str, float, int], dict[str, Any]]:
        """Benchmark hook: ``bench(device, duration_s, steps) -> metrics`` with the full-size architecture.

        Builds Stable Audio Open 1.0's DiT, Oobleck VAE, T5-base encoder and projection
        model from their published configurations with random weights (no download) on
        the first call, then times one generation through :func:`run_pipeline`.
        """
        state: dict[str, Any] = {}

        def bench(device: str, duration_s: float, steps: int = 100) -> dict[str, Any]:
            if "pipe" not in state:
                state["pipe"] = _random_full_size_pipeline(device)
            pipe = state["pipe"]
            ctx = JobContext(
                device=device,
                work_dir=Path("."),
                progress=lambda f, m: None,
                is_cancelled=lambda: False,
            )
            t0 = time.perf_counter()
            audio = run_pipeline(
                pipe,
                ctx,
                prompt="a test",
                negative_prompt=None,
                duration_s=duration_s,
                steps=steps,
                guidance_scale=7.0,
                seed=0,
            )
            compute_s = time.perf_counter() - t0
            sr = int(pipe.vae.config.sampling_rate)
            out = c.timing_metrics(audio.shape[1] / sr, compute_s, device)
            out.update({"steps": steps, "model": "stable-audio-open-1.0 (random)"})
            return out

        return bench


def _random_full_size_pipeline(device: str) -> Any:
    import torch
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    # Any tokenizer will do for timing; a small unigram one is built offline.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(ch, -3.0) for ch in "abcdefghijklmnopqrstuvwxyz"]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=128)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    )
    pipe = StableAudioPipeline(
        vae=AutoencoderOobleck(),  # defaults are Stable Audio Open's VAE
        text_encoder=text_encoder,
        projection_model=StableAudioProjectionModel(
            text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512
        ),
        tokenizer=tok,
        transformer=StableAudioDiTModel(),  # defaults are Stable Audio Open's DiT
        scheduler=CosineDPMSolverMultistepScheduler(
            solver_order=2,
            prediction_type="v_prediction",
            sigma_data=1.0,
            sigma_min=0.3,
            sigma_max=500,
            sigma_schedule="exponential",
        ),
    )
    dev = c.torch_device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    pipe = pipe.to(dev, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
