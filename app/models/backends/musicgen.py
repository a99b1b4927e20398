"""MusicGen (slot "musicgen"): text -> music and continuation of given audio.

Runs transformers' ``MusicgenForConditionalGeneration`` + ``AutoProcessor`` from the
checkpoint folder (facebook/musicgen-small|medium|large, or any folder with the same
layout).  Generation reports progress and honours cancel at every decoding step through
a ``StoppingCriteria`` (see :class:`app.models.backends._common.TokenProgress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.errors import ParameterError
from app.models.backends import _common as c
from app.models.backends.base import Backend, BackendOutput, BackendStatus, JobContext, WeightsSpec

#: Longest generation (s): MusicGen was trained on 30 s windows.
MAX_DURATION_S = 30.0
#: Longest audio prompt (s) kept from the end of a clip to continue.
MAX_PROMPT_S = 20.0

# Sizes: fp32 weights of the published architectures (see full_size_musicgen_config), which
# is what the repos' safetensors hold; a test checks them against the parameter counts.
MUSICGEN_WEIGHTS = (
    WeightsSpec(
        "facebook/musicgen-small",
        2_364_000_000,
        "CC-BY-NC-4.0",
        c.hf_url("facebook/musicgen-small"),
    ),
    WeightsSpec(
        "facebook/musicgen-medium",
        8_100_000_000,
        "CC-BY-NC-4.0",
        c.hf_url("facebook/musicgen-medium"),
    ),
    WeightsSpec(
        "facebook/musicgen-large",
        13_700_000_000,
        "CC-BY-NC-4.0",
        c.hf_url("facebook/musicgen-large"),
    ),
)


def load_musicgen(folder: Path, device: str) -> tuple[Any, int]:
    """``((model, processor), size_bytes)`` for the worker's model cache."""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    model = (
        MusicgenForConditionalGeneration.from_pretrained(folder).to(c.torch_device(device)).eval()
    )
    processor = AutoProcessor.from_pretrained(folder)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return (model, processor), int(size)


def generate_tokens(
    model: Any,
    inputs: Mapping[str, Any],
    *,
    new_seconds: float,
    ctx: JobContext,
    params: Mapping[str, Any],
    start: float = 0.1,
    span: float = 0.8,
) -> np.ndarray:
    """Run ``model.generate`` for ``new_seconds`` of new audio; returns ``(channels, frames)`` float32.

    Shared by the MusicGen, AudioCraft and Jukebox-slot backends (MusicGen and
    MusicGen-Melody have the same generate interface).
    """
    import torch

    frame_rate = float(model.config.audio_encoder.frame_rate)
    codebooks = int(model.decoder.num_codebooks) if hasattr(model.decoder, "num_codebooks") else 4
    # The delay pattern costs (codebooks - 1) steps before the last codebook's first token.
    new_tokens = max(1, round(new_seconds * frame_rate)) + codebooks - 1
    tracker = c.TokenProgress(ctx, new_tokens, start=start, span=span)
    kwargs: dict[str, Any] = {
        "max_new_tokens": new_tokens,
        "do_sample": True,
        "guidance_scale": c.param_float(params, "guidance_scale", 3.0, 0.0, 20.0),
        "temperature": c.param_float(params, "temperature", 1.0, 0.01, 5.0),
        "top_k": c.param_int(params, "top_k", 250, 0, 100_000),
        "stopping_criteria": tracker.stopping_criteria(),
    }
    if "top_p" in params:
        kwargs["top_p"] = c.param_float(params, "top_p", 0.0, 0.0, 1.0)
    with torch.inference_mode():
        out = model.generate(**inputs, **kwargs)
    audio = out[0].float().cpu().numpy()  # (channels, samples)
    if not np.all(np.isfinite(audio)):
        raise c.ProcessingError("the model produced NaN/Inf samples")
    return np.ascontiguousarray(audio, dtype=np.float32)


def continue_audio(
    model: Any,
    processor: Any,
    cue: np.ndarray,
    sample_rate: int,
    *,
    prompt: str,
    new_seconds: float,
    ctx: JobContext,
    params: Mapping[str, Any],
    start: float = 0.1,
    span: float = 0.8,
) -> np.ndarray:
    """Continue ``cue (channels, frames)`` (at the model rate) by ``new_seconds``; only the new audio is returned.

    ``generate`` returns the decoded cue (whole codec frames) followed by the new audio;
    the caller keeps its original samples for the cue and appends what this returns.
    """
    model_channels = int(getattr(model.config.decoder, "audio_channels", 1))
    cue = c.match_channels(cue, model_channels)
    enc = processor(
        audio=cue[0] if model_channels == 1 else cue,
        sampling_rate=sample_rate,
        text=[prompt or ""],
        padding=True,
        return_tensors="pt",
    )
    gen = generate_tokens(
        model,
        enc.to(c.torch_device(ctx.device)),
        new_seconds=new_seconds,
        ctx=ctx,
        params=params,
        start=start,
        span=span,
    )
    return gen[:, max(0, gen.shape[1] - round(new_seconds * sample_rate)) :]


class TransformersMusicGen(Backend):
    """MusicGen small/medium/large through Hugging Face transformers."""

    name = "transformers-musicgen"
    slot = "musicgen"
    title = "MusicGen (transformers)"
    capabilities = frozenset({"text_to_audio", "audio_to_audio"})
    tasks = {"text_to_audio": "text_to_audio", "continuation": "audio_to_audio"}  # noqa: RUF012 - read-only, as in Backend
    weights = MUSICGEN_WEIGHTS
    packages = ("torch", "transformers")

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        return c.weights_status(self, find_weights, ready_detail=f"runs on {device}")

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        # cheap checks first: a bad request never waits for a model load
        duration_s = c.param_float(params, "duration_s", 8.0, 0.1, MAX_DURATION_S)
        prompt = str(params.get("prompt", "") or "")
        if task == "text_to_audio" and not prompt.strip():
            raise ParameterError("text_to_audio needs a non-empty prompt")
        source = c.need_input(inputs) if task == "continuation" else None
        spec = c.pick_weights(self.weights, params.get("model"), ctx)
        folder = c.resolve_weights(ctx, spec)
        ctx.progress(0.0, f"loading {spec.repo_id}")
        model, processor = ctx.load_cached(
            f"musicgen:{folder}:{ctx.device}", lambda: load_musicgen(folder, ctx.device)
        )
        sr = int(model.config.audio_encoder.sampling_rate)
        seed = c.seed_everything(c.job_seed(params, ctx))
        device = c.torch_device(ctx.device)
        t0 = time.perf_counter()
        if source is None:
            enc = processor(text=[prompt], padding=True, return_tensors="pt")
            audio = generate_tokens(
                model, enc.to(device), new_seconds=duration_s, ctx=ctx, params=params
            )
            audio = audio[:, : round(duration_s * sr)]
            prompt_s = 0.0
        else:
            clip, _ = c.read_audio(source, sr)
            prompt_s = c.param_float(params, "prompt_s", 10.0, 0.5, MAX_PROMPT_S)
            tail = clip[:, max(0, clip.shape[1] - int(prompt_s * sr)) :]
            prompt_s = tail.shape[1] / sr
            new = continue_audio(
                model,
                processor,
                tail,
                sr,
                prompt=prompt,
                new_seconds=duration_s,
                ctx=ctx,
                params=params,
            )
            audio = np.concatenate([clip, c.match_channels(new, clip.shape[0])], axis=1)
        compute_s = time.perf_counter() - t0
        ctx.progress(0.95, "writing audio")
        out = c.write_audio(ctx.work_dir / f"musicgen_{task}.wav", audio, sr)
        generated_s = (
            duration_s if task == "text_to_audio" else (audio.shape[1] - clip.shape[1]) / sr
        )
        # duration_s / real-time factor are of the generated audio (compute s per generated s).
        metrics = c.timing_metrics(generated_s, compute_s, ctx.device)
        metrics["output_s"] = round(audio.shape[1] / sr, 4)
        metrics.update(
            {
                "generated_s": round(generated_s, 4),
                "sample_rate": sr,
                "model": spec.repo_id,
                "seed": seed,
                "prompt": prompt,
                "prompt_s": round(prompt_s, 4),
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, metrics)

    @classmethod
    def random_full_size(cls, variant: str = "small") -> Callable[[str, float], dict[str, Any]]:
        """Benchmark hook: ``bench(device, duration_s) -> metrics`` on the full-size architecture, random weights.

        Builds the real MusicGen ``variant`` ("small"/"medium"/"large") from its published
        configuration with random weights (no download) on first call, then times one
        text-to-audio generation of ``duration_s`` seconds through :func:`generate_tokens`.
        """
        state: dict[str, Any] = {}

        def bench(device: str, duration_s: float) -> dict[str, Any]:
            import torch
            from transformers import MusicgenForConditionalGeneration

            if "model" not in state:
                torch.manual_seed(0)
                config = full_size_musicgen_config(variant)
                model = MusicgenForConditionalGeneration(config).to(c.torch_device(device)).eval()
                model.generation_config.decoder_start_token_id = 2048
                model.generation_config.pad_token_id = 2048
                state["model"] = model
            model = state["model"]
            ids = torch.randint(3, 1000, (1, 12), device=model.device)
            ctx = _bench_context(device)
            t0 = time.perf_counter()
            audio = generate_tokens(
                model,
                {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                new_seconds=duration_s,
                ctx=ctx,
                params={},
            )
            compute_s = time.perf_counter() - t0
            sr = int(model.config.audio_encoder.sampling_rate)
            return {
                **c.timing_metrics(audio.shape[1] / sr, compute_s, device),
                "model": f"musicgen-{variant} (random)",
            }

        return bench


_DECODER_SIZES = {
    "small": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "ffn_dim": 4096,
    },
    "medium": {
        "hidden_size": 1536,
        "num_hidden_layers": 48,
        "num_attention_heads": 24,
        "ffn_dim": 6144,
    },
    "large": {
        "hidden_size": 2048,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "ffn_dim": 8192,
    },
    "melody": {
        "hidden_size": 1536,
        "num_hidden_layers": 48,
        "num_attention_heads": 24,
        "ffn_dim": 6144,
    },
}


def _full_size_parts(variant: str) -> tuple[Any, Any, dict[str, Any]]:
    from transformers import EncodecConfig, T5Config

    if variant not in _DECODER_SIZES:
        raise ParameterError(
            f"unknown MusicGen variant {variant!r}; choose one of {', '.join(_DECODER_SIZES)}"
        )
    # t5-base text encoder and EnCodec 32 kHz, as in the published checkpoints.
    t5 = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    encodec = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        target_bandwidths=[2.2],
        hidden_size=128,
        num_filters=64,
        upsampling_ratios=[8, 5, 4, 4],
        codebook_size=2048,
        num_lstm_layers=2,
        normalize=False,
        use_causal_conv=False,
        chunk_length_s=None,
        overlap=None,
    )
    decoder = dict(
        _DECODER_SIZES[variant],
        vocab_size=2048,
        num_codebooks=4,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
        decoder_start_token_id=2048,
    )
    return t5, encodec, decoder


def full_size_musicgen_config(variant: str) -> Any:
    """The published MusicGen ``variant`` architecture as a config (no weights).

    "small"/"medium"/"large" give a ``MusicgenConfig``; "melody" a ``MusicgenMelodyConfig``.
    """
    from transformers import (
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
    )

    t5, encodec, decoder = _full_size_parts(variant)
    if variant == "melody":
        return MusicgenMelodyConfig(
            text_encoder=t5.to_dict(),
            audio_encoder=encodec.to_dict(),
            decoder=MusicgenMelodyDecoderConfig(**decoder).to_dict(),
            num_chroma=12,
        )
    return MusicgenConfig(
        text_encoder=t5.to_dict(),
        audio_encoder=encodec.to_dict(),
        decoder=MusicgenDecoderConfig(**decoder).to_dict(),
    )


def _bench_context(device: str) -> JobContext:
    import tempfile

    return JobContext(
        device=device,
        work_dir=Path(tempfile.gettempdir()),
        progress=lambda f, m: None,
        is_cancelled=lambda: False,
    )
