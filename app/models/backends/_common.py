"""Helpers shared by the model backends: weights lookup, status, audio in/out, progress.

Light at import time (numpy and our engine only); torch/transformers are imported
inside the functions that need them, which only run in the model worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import audio_io
from app.engine.errors import AudioInputError, ParameterError, ProcessingError
from app.models.backends.base import (
    Backend,
    BackendStatus,
    Cancelled,
    JobContext,
    WeightsSpec,
    package_available,
)

FindWeights = Callable[[WeightsSpec], Path | None]

#: Generated audio is written as 32-bit float WAV: model output may exceed full scale
#: and is mastered later, so it is neither clipped nor dithered here.
GENERATED_FORMAT = "wav32f"


def hf_url(repo_id: str) -> str:
    return f"https://huggingface.co/{repo_id}"


def default_find_weights(spec: WeightsSpec) -> Path | None:
    """Local folder for ``spec``: ``<models dir>/<repo_id>`` or the Hugging Face cache.

    Used only when the worker hands no resolver (``JobContext.find_weights is None``).
    """
    from app import config

    folder = config.models_dir() / spec.repo_id
    if (folder / "config.json").is_file() or (folder / "model_index.json").is_file():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.repo_id, revision=spec.revision, local_files_only=True))
    except Exception:
        return None


def missing_packages(backend: Backend) -> list[str]:
    return [p for p in backend.packages if not package_available(p)]


def weights_status(
    backend: Backend,
    find_weights: FindWeights,
    *,
    required: Sequence[WeightsSpec] | None = None,
    ready_detail: str = "",
) -> BackendStatus:
    """``package_missing`` / ``weights_missing`` / ``ready`` for a backend needing checkpoints.

    ``required`` are the checkpoints that must all be present (default: any one of
    ``backend.weights``, the first missing one is reported).
    """
    missing = missing_packages(backend)
    if missing:
        return BackendStatus(
            "package_missing",
            f"{backend.title} needs the Python package(s) {', '.join(missing)}; "
            f"install with: pip install 'ai-music-mastering-chain[{backend.extra}]'",
            extra=backend.extra,
        )
    if required is None:
        found = [s for s in backend.weights if find_weights(s) is not None]
        if found:
            names = ", ".join(s.repo_id for s in found)
            return BackendStatus(
                "ready",
                f"{backend.title}: weights present ({names}). {ready_detail}".strip(),
                found[0],
            )
        required = backend.weights[:1]
    for spec in required:
        if find_weights(spec) is None:
            return BackendStatus(
                "weights_missing",
                f"needs download: {backend.title} needs {spec.repo_id} (about "
                f"{spec.size_bytes / 1e9:.2f} GB, licence {spec.license}); run "
                f"`amc models download {spec.repo_id}` or use the model manager ({spec.url})",
                spec,
            )
    return BackendStatus(
        "ready",
        f"{backend.title}: weights present. {ready_detail}".strip(),
        required[0] if required else None,
    )


def resolve_weights(ctx: JobContext, spec: WeightsSpec) -> Path:
    """The local folder of ``spec`` or a ProcessingError that says where to get it."""
    finder = ctx.find_weights or default_find_weights
    path = finder(spec)
    if path is None:
        raise ProcessingError(
            f"weights {spec.repo_id} are not installed (about {spec.size_bytes / 1e9:.2f} GB from {spec.url}); "
            "download them in the model manager or with `amc models download`"
        )
    return Path(path)


def pick_weights(
    weights: Sequence[WeightsSpec], choice: str | None, ctx: JobContext
) -> WeightsSpec:
    """The spec named by ``choice`` (suffix such as "small" or a full repo id), else the first present."""
    if choice:
        for spec in weights:
            if (
                spec.repo_id == choice
                or spec.repo_id.endswith("-" + choice)
                or spec.repo_id.endswith("/" + choice)
            ):
                return spec
        raise ParameterError(
            f"unknown model {choice!r}; choose one of {', '.join(s.repo_id for s in weights)}"
        )
    finder = ctx.find_weights or default_find_weights
    for spec in weights:
        if finder(spec) is not None:
            return spec
    return weights[0]


def torch_device(device: str) -> Any:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProcessingError(f"device {device!r} was asked for but CUDA is not available")
    return torch.device(device)


def seed_everything(seed: int | None) -> int:
    """Seed torch (CPU and CUDA) and return the seed used (a fresh one when None)."""
    import torch

    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**31 - 1))
    torch.manual_seed(int(seed))
    return int(seed)


def job_seed(params: Mapping[str, Any], ctx: JobContext) -> int | None:
    s = params.get("seed", ctx.seed)
    return None if s is None else int(s)


def param_float(params: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    try:
        value = float(params.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{key} must be a number, got {params.get(key)!r}") from exc
    if not (lo <= value <= hi):
        raise ParameterError(f"{key} must be within [{lo}, {hi}], got {value}")
    return value


def param_int(params: Mapping[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    return round(param_float(params, key, default, lo, hi))


def need_input(inputs: Mapping[str, Path], key: str = "audio") -> Path:
    if key not in inputs:
        raise ParameterError(f"this task needs an input file {key!r}")
    return Path(inputs[key])


def read_audio(
    path: Path, sample_rate: int | None = None, *, mono: bool = False
) -> tuple[np.ndarray, int]:
    """``(channels, frames) float32`` at ``sample_rate`` (native when None); averaged to one channel if ``mono``."""
    audio, sr = audio_io.read(path)
    if audio.shape[1] == 0:
        raise AudioInputError(f"{path.name} holds no audio")
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    if sample_rate is not None and sr != sample_rate:
        audio = audio_io.resample(audio, sr, sample_rate).astype(np.float32)
        sr = sample_rate
    return np.ascontiguousarray(audio, dtype=np.float32), sr


def write_audio(
    path: Path, audio: np.ndarray, sample_rate: int, fmt: str = GENERATED_FORMAT
) -> Path:
    """Atomic WAV write of ``audio (channels, frames)``; NaN/Inf are refused by the writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return audio_io.write(
        path,
        np.asarray(audio, dtype=np.float32),
        sample_rate=sample_rate,
        fmt=audio_io.OUTPUT_FORMATS[fmt],
        force=True,
    )


def crossfade_concat(a: np.ndarray, b: np.ndarray, fade_frames: int) -> np.ndarray:
    """``a`` then ``b`` ``(channels, frames)``, overlapping ``fade_frames`` with an equal-power fade."""
    n = int(min(fade_frames, a.shape[1], b.shape[1]))
    if n <= 0:
        return np.concatenate([a, b], axis=1)
    t = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
    mid = a[:, -n:] * np.cos(t) + b[:, :n] * np.sin(t)
    return np.concatenate([a[:, :-n], mid, b[:, n:]], axis=1)


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    if audio.shape[0] == channels:
        return audio
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    return (
        np.repeat(audio.mean(axis=0, keepdims=True), channels, axis=0)
        if channels != 1
        else audio.mean(axis=0, keepdims=True)
    )


def check_cancel(ctx: JobContext) -> None:
    if ctx.is_cancelled():
        raise Cancelled("cancelled")


class TokenProgress:
    """Progress + cooperative cancel for autoregressive generation, one call per generated step.

    Reports ``ctx.progress`` every ``every_tokens`` tokens (or 0.25 s, whichever first) and
    checks ``ctx.is_cancelled`` at every token; :class:`Cancelled` propagates out of
    ``generate`` so cancel lands within one decoding step.
    """

    def __init__(
        self,
        ctx: JobContext,
        total_tokens: int,
        *,
        start: float = 0.05,
        span: float = 0.85,
        every_tokens: int = 10,
        label: str = "generating",
    ) -> None:
        self.ctx, self.total, self.start, self.span = ctx, max(1, total_tokens), start, span
        self.every, self.label = max(1, every_tokens), label
        self.done = 0
        self._last = time.monotonic()

    def step(self) -> None:
        self.done += 1
        now = time.monotonic()
        if self.done % self.every == 0 or now - self._last >= 0.25 or self.done >= self.total:
            self._last = now
            frac = min(1.0, self.done / self.total)
            self.ctx.progress(
                self.start + self.span * frac, f"{self.label}: token {self.done}/{self.total}"
            )
        elif self.ctx.is_cancelled():
            raise Cancelled("cancelled during generation")

    def stopping_criteria(self) -> Any:
        """A transformers ``StoppingCriteriaList`` that calls :meth:`step` (never stops by itself)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tracker = self

        class _ProgressCriteria(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                tracker.step()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([_ProgressCriteria()])


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProcessingError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ProcessingError(f"{path} is not a JSON object")
    return data


def timing_metrics(duration_s: float, compute_s: float, device: str) -> dict[str, Any]:
    """Duration, compute seconds, real-time factor (compute / audio; < 1 is faster than real time)."""
    return {
        "duration_s": round(float(duration_s), 4),
        "compute_s": round(float(compute_s), 4),
        "real_time_factor": round(float(compute_s / duration_s), 4) if duration_s > 0 else None,
        "x_realtime": round(float(duration_s / compute_s), 4) if compute_s > 0 else None,
        "device": device,
    }


def melody_chroma(
    audio: np.ndarray, sample_rate: int, fe_config: Mapping[str, Any], device: Any
) -> Any:
    """MusicGen-Melody's chroma conditioning ``(1, frames, num_chroma)`` one-hot float tensor.

    Same computation as transformers' ``MusicgenMelodyFeatureExtractor`` (power
    spectrogram, normalised Hann window, librosa chroma filter bank, inf-norm, argmax
    one-hot), written with ``torch.stft`` because that class needs torchaudio, for which
    no build matches torch 2.13.  ``audio``: ``(frames,)`` mono at ``fe_config['sampling_rate']``.
    """
    import torch
    from transformers.audio_utils import chroma_filter_bank

    sr = int(fe_config.get("sampling_rate", 32000))
    n_fft = int(fe_config.get("n_fft", 16384))
    hop = int(fe_config.get("hop_length", 4096))
    num_chroma = int(fe_config.get("num_chroma", 12))
    chunk_s = fe_config.get("chunk_length", 30)
    if sample_rate != sr:
        raise ParameterError(f"melody audio must be at {sr} Hz, got {sample_rate}")
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if chunk_s:
        x = x[: int(chunk_s) * sr]
    if x.shape[-1] < n_fft:
        pad = n_fft - x.shape[-1]
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft)
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        return_complex=True,
    )
    power = spec.abs().pow(2) / window.pow(2).sum()  # torchaudio's normalized=True ("window")
    filters = torch.from_numpy(
        chroma_filter_bank(
            sampling_rate=sr, num_frequency_bins=n_fft, tuning=0, num_chroma=num_chroma
        )
    ).float()
    raw = filters @ power  # (chroma, frames)
    norm = torch.nn.functional.normalize(raw, p=float("inf"), dim=0, eps=1e-6).T  # (frames, chroma)
    onehot = torch.zeros_like(norm)
    onehot.scatter_(1, norm.argmax(-1, keepdim=True), 1.0)
    return onehot[None].to(device)


def master_settings(params: Mapping[str, Any]) -> Any:
    """:class:`MasterSettings` from job params (``target``, ``lufs``, ``ceiling_dbtp``, ``style``, ``level``)."""
    from app.engine.mastering.planner import MasterSettings

    lufs = params.get("lufs")
    ceiling = params.get("ceiling_dbtp")
    return MasterSettings(
        target=str(params.get("target", "streaming")),
        lufs=None if lufs is None else float(lufs),
        ceiling_dbtp=None if ceiling is None else float(ceiling),
        style=str(params.get("style", "balanced")),
        level=str(params.get("level", "moderate")),
        output_format=str(params.get("output_format", "wav24")),
    )


def master(
    source: Path, output: Path, params: Mapping[str, Any], *, progress: Callable[[float, str], None]
) -> Any:
    """Master ``source`` to ``output`` with the engine's chain; returns its ``MasterResult``.

    ``progress`` is the job's (scaled) progress: it raises Cancelled, which the chain lets through.
    """
    from app.engine.mastering.chain import master_file

    return master_file(
        source,
        output,
        master_settings(params),
        force=True,
        progress=progress,
        scratch_dir=output.parent,
    )


def master_metrics(result: Any) -> dict[str, Any]:
    """Loudness / true peak before and after a master, JSON-safe."""

    def num(x: Any) -> float | None:
        return round(float(x), 3) if x is not None and np.isfinite(x) else None

    return {
        "loudness_before_lufs": num(result.before.integrated_lufs),
        "loudness_lufs": num(result.after.integrated_lufs),
        "true_peak_before_dbtp": num(result.before.true_peak_dbtp),
        "true_peak_dbtp": num(result.after.true_peak_dbtp),
        "loudness_range_lu": num(result.after.loudness_range_lu),
        "target_lufs": num(result.plan.loudness.target_lufs),
        "mastering_target": result.plan.target,
    }


def check_task(backend: Backend, task: str) -> None:
    """Refuse a task the backend does not declare (the worker routes by ``tasks``)."""
    if task not in backend.tasks:
        raise ParameterError(f"{backend.title} has no task {task!r}; it knows {', '.join(backend.tasks)}")
