"""AudioCraft (slot "audiocraft"): audio manipulation — extend, regenerate a section, melody, codec.

The ``audiocraft`` package itself cannot be used here: its releases pin torch==2.1.0,
torchaudio<2.1.2 and xformers, which would replace this install's torch.  The same
AudioCraft models run through their transformers ports instead:

* ``extend`` — continue a clip with MusicGen (facebook/musicgen-small|medium|large);
* ``regenerate`` — replace ``[start_s, end_s]`` with a MusicGen continuation of the
  audio before it, crossfaded back into the original at the end;
* ``melody`` — MusicGen-Melody (facebook/musicgen-melody) conditioned on the chroma of a
  melody clip and a text prompt;
* ``codec`` — EnCodec (facebook/encodec_32khz) encode -> decode round trip, with the
  codes saved and the reconstruction SNR reported.
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
from app.models.backends.musicgen import (
    MAX_DURATION_S,
    MAX_PROMPT_S,
    MUSICGEN_WEIGHTS,
    continue_audio,
    generate_tokens,
    load_musicgen,
)

MUSICGEN_MELODY = WeightsSpec(
    "facebook/musicgen-melody", 6_200_000_000, "CC-BY-NC-4.0", c.hf_url("facebook/musicgen-melody")
)
ENCODEC_32K = WeightsSpec(
    "facebook/encodec_32khz", 236_000_000, "MIT", c.hf_url("facebook/encodec_32khz")
)

#: Crossfade (s) where regenerated audio rejoins the original.
REGENERATE_FADE_S = 0.25

AUDIOCRAFT_NOTE = "via transformers ports (the audiocraft package pins torch 2.1 and cannot share this install's torch)"


def load_melody(folder: Path, device: str) -> tuple[Any, int]:
    """``((model, tokenizer, feature_config), size_bytes)`` for MusicGen-Melody.

    The tokenizer is loaded on its own and the chroma computed by
    :func:`app.models.backends._common.melody_chroma`: transformers' melody feature
    extractor needs torchaudio, which has no build for torch 2.13.
    """
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    model = (
        MusicgenMelodyForConditionalGeneration.from_pretrained(folder)
        .to(c.torch_device(device))
        .eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fe_config = c.read_json(folder / "preprocessor_config.json")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return (model, tokenizer, fe_config), int(size)


def melody_generate(
    bundle: tuple[Any, Any, dict[str, Any]],
    melody: np.ndarray,
    melody_sr: int,
    *,
    prompt: str,
    duration_s: float,
    ctx: JobContext,
    params: Mapping[str, Any],
    start: float = 0.1,
    span: float = 0.8,
) -> tuple[np.ndarray, int]:
    """MusicGen-Melody: ``duration_s`` of audio following ``melody (channels, frames)``'s chroma and ``prompt``.

    Returns ``((channels, frames) float32, sample_rate)``.
    """
    from app.engine import audio_io

    model, tokenizer, fe_config = bundle
    device = c.torch_device(ctx.device)
    fe_sr = int(fe_config.get("sampling_rate", 32000))
    mono = melody.mean(axis=0, keepdims=True)
    if melody_sr != fe_sr:
        mono = audio_io.resample(mono, melody_sr, fe_sr).astype(np.float32)
    chroma = c.melody_chroma(mono[0], fe_sr, fe_config, device)
    text = tokenizer([prompt], padding=True, return_tensors="pt").to(device)
    inputs = {
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "input_features": chroma,
    }
    audio = generate_tokens(
        model, inputs, new_seconds=duration_s, ctx=ctx, params=params, start=start, span=span
    )
    sr = int(model.config.audio_encoder.sampling_rate)
    return audio[:, : round(duration_s * sr)], sr


def load_encodec(folder: Path, device: str) -> tuple[Any, int]:
    from transformers import EncodecModel

    model = EncodecModel.from_pretrained(folder).to(c.torch_device(device)).eval()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return model, int(size)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(reference.shape[-1], estimate.shape[-1])
    ref, est = reference[..., :n].astype(np.float64), estimate[..., :n].astype(np.float64)
    noise = float(np.sum((ref - est) ** 2))
    signal = float(np.sum(ref**2))
    if signal <= 0:
        return float("nan")
    return 10.0 * np.log10(signal / max(noise, 1e-20))


def melody_random_full_size() -> Callable[[str, float], dict[str, Any]]:
    """``bench(device, duration_s) -> metrics``: MusicGen-Melody's full-size architecture, random weights.

    Built (no download) on the first call, then one melody-conditioned generation of
    ``duration_s`` seconds is timed through :func:`generate_tokens`.
    """
    state: dict[str, Any] = {}

    def bench(device: str, duration_s: float) -> dict[str, Any]:
        import numpy as np
        import torch
        from transformers import MusicgenMelodyForConditionalGeneration

        from app.models.backends.musicgen import _bench_context, full_size_musicgen_config

        if "model" not in state:
            torch.manual_seed(0)
            config = full_size_musicgen_config("melody")
            model = MusicgenMelodyForConditionalGeneration(config).to(c.torch_device(device)).eval()
            model.generation_config.decoder_start_token_id = 2048
            model.generation_config.pad_token_id = 2048
            state["model"] = model
        model = state["model"]
        dev = model.device
        ids = torch.randint(3, 1000, (1, 12), device=dev)
        frames = int(duration_s * 32000 / 4096) + 1
        chroma = torch.zeros(1, frames, 12, device=dev)
        chroma[0, torch.arange(frames), torch.from_numpy(np.arange(frames) % 12).to(dev)] = 1
        t0 = time.perf_counter()
        audio = generate_tokens(
            model,
            {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "input_features": chroma,
            },
            new_seconds=duration_s,
            ctx=_bench_context(device),
            params={},
        )
        compute_s = time.perf_counter() - t0
        return {
            **c.timing_metrics(audio.shape[1] / 32000, compute_s, device),
            "model": "musicgen-melody (random)",
        }

    return bench


class TransformersAudioCraft(Backend):
    """AudioCraft's MusicGen / MusicGen-Melody / EnCodec through transformers."""

    name = "transformers-audiocraft"
    slot = "audiocraft"
    title = "AudioCraft (MusicGen, MusicGen-Melody, EnCodec via transformers)"
    capabilities = frozenset({"audio_to_audio"})
    tasks = {  # noqa: RUF012 - read-only, as in Backend
        "extend": "audio_to_audio",
        "regenerate": "audio_to_audio",
        "melody": "audio_to_audio",
        "codec": "audio_to_audio",
    }
    weights = (MUSICGEN_MELODY, ENCODEC_32K, *MUSICGEN_WEIGHTS)
    packages = ("torch", "transformers")

    def _task_weights(self, find_weights: c.FindWeights) -> dict[str, bool]:
        have_musicgen = any(find_weights(s) is not None for s in MUSICGEN_WEIGHTS)
        return {
            "extend": have_musicgen,
            "regenerate": have_musicgen,
            "melody": find_weights(MUSICGEN_MELODY) is not None,
            "codec": find_weights(ENCODEC_32K) is not None,
        }

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        missing = c.missing_packages(self)
        if missing:
            return c.weights_status(self, find_weights)  # reports package_missing
        ok = self._task_weights(find_weights)
        if not any(ok.values()):
            spec = MUSICGEN_MELODY
            return BackendStatus(
                "weights_missing",
                f"needs download: {self.title} needs {spec.repo_id} (about {spec.size_bytes / 1e9:.2f} GB, "
                f"licence {spec.license}); run `amc models download {spec.repo_id}` ({spec.url}); {ENCODEC_32K.repo_id} ({ENCODEC_32K.size_bytes / 1e6:.0f} MB) enables the codec "
                f"and a MusicGen checkpoint enables extend/regenerate. Runs {AUDIOCRAFT_NOTE}.",
                spec,
            )
        ready = [t for t, v in ok.items() if v]
        absent = [t for t, v in ok.items() if not v]
        detail = f"{self.title}: tasks {', '.join(ready)} ready on {device}"
        if absent:
            detail += f"; {', '.join(absent)} need more weights"
        return BackendStatus("ready", f"{detail}; runs {AUDIOCRAFT_NOTE}.", MUSICGEN_MELODY)

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        source = c.need_input(inputs)
        handler: Callable[..., BackendOutput] = getattr(self, f"_run_{task}")
        return handler(source, params, ctx)

    # -------------------------------------------------------------- MusicGen tasks
    def _musicgen(self, params: Mapping[str, Any], ctx: JobContext) -> tuple[Any, Any, WeightsSpec]:
        spec = c.pick_weights(MUSICGEN_WEIGHTS, params.get("model"), ctx)
        folder = c.resolve_weights(ctx, spec)
        ctx.progress(0.0, f"loading {spec.repo_id}")
        model, processor = ctx.load_cached(
            f"musicgen:{folder}:{ctx.device}", lambda: load_musicgen(folder, ctx.device)
        )
        return model, processor, spec

    def _run_extend(
        self, source: Path, params: Mapping[str, Any], ctx: JobContext
    ) -> BackendOutput:
        model, processor, spec = self._musicgen(params, ctx)
        sr = int(model.config.audio_encoder.sampling_rate)
        clip, _ = c.read_audio(source, sr)
        duration_s = c.param_float(params, "duration_s", 8.0, 0.1, MAX_DURATION_S)
        prompt_s = c.param_float(params, "prompt_s", 10.0, 0.5, MAX_PROMPT_S)
        seed = c.seed_everything(c.job_seed(params, ctx))
        t0 = time.perf_counter()
        cue = clip[:, max(0, clip.shape[1] - int(prompt_s * sr)) :]
        new = continue_audio(
            model,
            processor,
            cue,
            sr,
            prompt=str(params.get("prompt", "") or ""),
            new_seconds=duration_s,
            ctx=ctx,
            params=params,
        )
        audio = np.concatenate([clip, c.match_channels(new, clip.shape[0])], axis=1)
        compute_s = time.perf_counter() - t0
        out = c.write_audio(ctx.work_dir / "extended.wav", audio, sr)
        metrics = c.timing_metrics(new.shape[1] / sr, compute_s, ctx.device)
        metrics.update(
            {
                "output_s": round(audio.shape[1] / sr, 4),
                "sample_rate": sr,
                "model": spec.repo_id,
                "seed": seed,
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, metrics)

    def _run_regenerate(
        self, source: Path, params: Mapping[str, Any], ctx: JobContext
    ) -> BackendOutput:
        model, processor, spec = self._musicgen(params, ctx)
        sr = int(model.config.audio_encoder.sampling_rate)
        clip, _ = c.read_audio(source, sr)
        total_s = clip.shape[1] / sr
        start_s = c.param_float(params, "start_s", 0.0, 0.0, total_s)
        end_s = c.param_float(params, "end_s", total_s, 0.0, total_s)
        if end_s - start_s < 0.05:
            raise ParameterError(f"regenerate needs end_s > start_s (got {start_s}..{end_s})")
        if end_s - start_s > MAX_DURATION_S:
            raise ParameterError(f"the section to regenerate is longer than {MAX_DURATION_S:.0f} s")
        fade_s = c.param_float(params, "crossfade_s", REGENERATE_FADE_S, 0.0, 2.0)
        a, b = round(start_s * sr), round(end_s * sr)
        fade = min(round(fade_s * sr), clip.shape[1] - b)  # no crossfade past the end of the clip
        prompt = str(params.get("prompt", "") or "")
        seed = c.seed_everything(c.job_seed(params, ctx))
        new_s = (b - a + fade) / sr
        t0 = time.perf_counter()
        prompt_s = c.param_float(params, "prompt_s", 10.0, 0.5, MAX_PROMPT_S)
        cue = clip[:, max(0, a - int(prompt_s * sr)) : a]
        if cue.shape[1] >= int(0.5 * sr):
            new = continue_audio(
                model, processor, cue, sr, prompt=prompt, new_seconds=new_s, ctx=ctx, params=params
            )
            conditioned_on = "audio before the section"
        else:  # nothing (or too little) before the section: generate from the prompt alone
            if not prompt.strip():
                raise ParameterError("regenerating from the start of a clip needs a prompt")
            enc = processor(text=[prompt], padding=True, return_tensors="pt").to(
                c.torch_device(ctx.device)
            )
            new = generate_tokens(model, enc, new_seconds=new_s, ctx=ctx, params=params)
            conditioned_on = "prompt only"
        new = c.match_channels(new, clip.shape[0])[:, : b - a + fade]
        if new.shape[1] < b - a + fade:  # the codec may round a few samples short
            new = np.pad(new, ((0, 0), (0, b - a + fade - new.shape[1])))
        rejoined = c.crossfade_concat(new, clip[:, b:], fade)
        audio = np.concatenate([clip[:, :a], rejoined], axis=1)
        compute_s = time.perf_counter() - t0
        out = c.write_audio(ctx.work_dir / "regenerated.wav", audio, sr)
        metrics = c.timing_metrics((b - a) / sr, compute_s, ctx.device)
        metrics.update(
            {
                "start_s": round(a / sr, 4),
                "end_s": round(b / sr, 4),
                "crossfade_s": round(fade / sr, 4),
                "conditioned_on": conditioned_on,
                "sample_rate": sr,
                "model": spec.repo_id,
                "seed": seed,
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, metrics)

    # -------------------------------------------------------------- MusicGen-Melody
    def _run_melody(
        self, source: Path, params: Mapping[str, Any], ctx: JobContext
    ) -> BackendOutput:
        folder = c.resolve_weights(ctx, MUSICGEN_MELODY)
        ctx.progress(0.0, f"loading {MUSICGEN_MELODY.repo_id}")
        bundle = ctx.load_cached(
            f"musicgen-melody:{folder}:{ctx.device}", lambda: load_melody(folder, ctx.device)
        )
        melody, msr = c.read_audio(source)
        duration_s = c.param_float(
            params, "duration_s", min(melody.shape[1] / msr, MAX_DURATION_S), 0.1, MAX_DURATION_S
        )
        prompt = str(params.get("prompt", "") or "")
        seed = c.seed_everything(c.job_seed(params, ctx))
        t0 = time.perf_counter()
        audio, sr = melody_generate(
            bundle, melody, msr, prompt=prompt, duration_s=duration_s, ctx=ctx, params=params
        )
        compute_s = time.perf_counter() - t0
        out = c.write_audio(ctx.work_dir / "melody.wav", audio, sr)
        metrics = c.timing_metrics(audio.shape[1] / sr, compute_s, ctx.device)
        metrics.update(
            {"sample_rate": sr, "model": MUSICGEN_MELODY.repo_id, "seed": seed, "prompt": prompt}
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out}, metrics)

    # -------------------------------------------------------------- EnCodec
    def _run_codec(self, source: Path, params: Mapping[str, Any], ctx: JobContext) -> BackendOutput:
        import torch

        folder = c.resolve_weights(ctx, ENCODEC_32K)
        ctx.progress(0.0, f"loading {ENCODEC_32K.repo_id}")
        model = ctx.load_cached(
            f"encodec:{folder}:{ctx.device}", lambda: load_encodec(folder, ctx.device)
        )
        sr = int(model.config.sampling_rate)
        channels = int(model.config.audio_channels)
        clip, _ = c.read_audio(source, sr)
        x = c.match_channels(clip, channels)
        bandwidths = list(model.config.target_bandwidths)
        bandwidth = c.param_float(
            params, "bandwidth_kbps", bandwidths[-1], min(bandwidths), max(bandwidths)
        )
        device = c.torch_device(ctx.device)
        t0 = time.perf_counter()
        hop = int(np.prod(model.config.upsampling_ratios))
        chunk = max(hop, (sr * 10 // hop) * hop)  # 10 s blocks: progress and cancel between blocks
        decoded, codes = [], []
        with torch.inference_mode():
            for i in range(0, x.shape[1], chunk):
                ctx.progress(0.05 + 0.85 * i / x.shape[1], f"EnCodec block {i // chunk + 1}")
                block = torch.from_numpy(x[None, :, i : i + chunk]).to(device)
                enc = model.encode(block, bandwidth=bandwidth)
                dec = model.decode(enc.audio_codes, enc.audio_scales)[0]
                decoded.append(dec[0, :, : block.shape[-1]].float().cpu().numpy())
                codes.append(enc.audio_codes[0, 0].cpu().numpy())  # (codebooks, frames)
        y = np.concatenate(decoded, axis=1)
        compute_s = time.perf_counter() - t0
        out = c.write_audio(
            ctx.work_dir / "codec_roundtrip.wav", c.match_channels(y, clip.shape[0]), sr
        )
        codes_arr = np.concatenate(codes, axis=1).astype(np.int16)
        codes_path = ctx.work_dir / "codes.npy"
        np.save(codes_path, codes_arr)
        metrics = c.timing_metrics(clip.shape[1] / sr, compute_s, ctx.device)
        metrics.update(
            {
                "sample_rate": sr,
                "bandwidth_kbps": bandwidth,
                "codebooks": int(codes_arr.shape[0]),
                "frames": int(codes_arr.shape[1]),
                "frame_rate_hz": float(model.config.frame_rate),
                "bitrate_kbps": round(
                    codes_arr.shape[0]
                    * float(model.config.frame_rate)
                    * np.log2(model.config.codebook_size)
                    / 1000,
                    4,
                ),
                "snr_db": round(snr_db(x, y), 3),
                "model": ENCODEC_32K.repo_id,
            }
        )
        ctx.progress(1.0, "done")
        return BackendOutput({"audio": out, "codes": codes_path}, metrics)

    @classmethod
    def random_full_size(cls) -> Callable[[str, float], dict[str, Any]]:
        """Benchmark hook: MusicGen-Melody (the heaviest model of this slot) with random weights."""
        return melody_random_full_size()
