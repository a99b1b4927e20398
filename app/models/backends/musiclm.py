"""MusicLM slot (music understanding): tempo, beats, key, chords, loudness, notes, tags.

* tempo / beats / key / loudness / true peak: :func:`app.engine.analysis.analyze`
  (BS.1770 meters, librosa beat tracker, Krumhansl-Schmuckler key);
* chords: beat-synchronous chroma matched against the 24 major/minor triad templates;
* notes (audio -> MIDI): Spotify's Basic Pitch (ICASSP 2022), whose pretrained weights
  ship inside the ``basic-pitch`` package and run on onnxruntime.  When that package is
  absent the notes come from a plainly labelled DSP fallback (librosa pYIN, monophonic);
* tags: CLAP zero-shot (laion/clap-htsat-unfused) only when its weights are present;
* clap_similarity: cosine of the CLAP audio and prompt-text embeddings (same weights;
  a clear error without them), for the orchestrator's prompt-adherence gate.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine import analysis
from app.engine.errors import ParameterError, ProcessingError
from app.models.backends import _common as c
from app.models.backends.base import (
    Backend,
    BackendOutput,
    BackendStatus,
    JobContext,
    WeightsSpec,
    package_available,
)

CLAP = WeightsSpec(
    "laion/clap-htsat-unfused", 615_000_000, "Apache-2.0", c.hf_url("laion/clap-htsat-unfused")
)

#: Task scoring how well audio matches a text prompt (the orchestrator's prompt-adherence gate).
CLAP_TASK = "clap_similarity"

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

#: Candidate labels for CLAP zero-shot tagging.
TAG_LABELS = (
    "rock",
    "pop",
    "jazz",
    "classical",
    "electronic",
    "hip hop",
    "ambient",
    "folk",
    "metal",
    "blues",
    "funk",
    "reggae",
    "country",
    "lo-fi",
    "techno",
    "house",
    "piano",
    "acoustic guitar",
    "electric guitar",
    "drums",
    "synthesizer",
    "strings",
    "vocals",
    "bass",
    "happy",
    "sad",
    "calm",
    "energetic",
    "dark",
    "uplifting",
)

NOTES_BASIC_PITCH = (
    "basic-pitch (Spotify, ICASSP 2022, pretrained weights shipped in the package, onnxruntime)"
)
NOTES_DSP = (
    "DSP fallback: librosa pYIN, monophonic (install basic-pitch for polyphonic transcription)"
)


def _basic_pitch_usable() -> bool:
    return package_available("basic_pitch") and package_available("onnxruntime")


def chord_templates() -> tuple[list[str], np.ndarray]:
    """24 triads: names and ``(24, 12)`` unit-norm binary templates."""
    names, rows = [], []
    for quality, third in (("", 4), ("m", 3)):
        for root in range(12):
            t = np.zeros(12)
            t[[root, (root + third) % 12, (root + 7) % 12]] = 1.0
            names.append(PITCH_NAMES[root] + quality)
            rows.append(t / np.linalg.norm(t))
    return names, np.asarray(rows)


def estimate_chords(
    y: np.ndarray,
    sample_rate: int,
    beats_s: Sequence[float] | None,
    *,
    min_energy_ratio: float = 0.05,
) -> list[dict[str, Any]]:
    """Chord segments ``[{"start_s", "end_s", "chord"}]`` by chroma template matching.

    ``y``: mono ``(frames,)``.  Chroma (CQT) is averaged between beats (or over 0.5 s
    windows without beats), matched by cosine similarity to the triad templates; quiet
    segments are "N" (no chord); equal neighbours are merged.
    """
    import librosa

    hop = 512
    chroma = librosa.feature.chroma_cqt(y=y.astype(np.float32), sr=sample_rate, hop_length=hop)
    n = chroma.shape[1]
    duration = y.shape[0] / sample_rate
    if beats_s is not None and len(beats_s) >= 2:
        edges_s = [0.0, *[float(b) for b in beats_s], duration]
    else:
        edges_s = [*list(np.arange(0.0, duration, 0.5)), duration]
    edges = sorted({min(n, round(t * sample_rate / hop)) for t in edges_s})
    rms = librosa.feature.rms(y=y.astype(np.float32), hop_length=hop)[0]
    loud = float(np.max(rms)) if rms.size else 0.0
    names, templates = chord_templates()
    segments: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        v = chroma[:, a:b].mean(axis=1)
        energy = float(rms[a : min(b, rms.shape[0])].mean()) if a < rms.shape[0] else 0.0
        if loud <= 0 or energy < min_energy_ratio * loud or np.linalg.norm(v) == 0:
            label = "N"
        else:
            label = names[int(np.argmax(templates @ (v / np.linalg.norm(v))))]
        start, end = a * hop / sample_rate, min(duration, b * hop / sample_rate)
        if segments and segments[-1]["chord"] == label:
            segments[-1]["end_s"] = round(end, 3)
        else:
            segments.append({"start_s": round(start, 3), "end_s": round(end, 3), "chord": label})
    return segments


def _write_midi_atomic(midi: Any, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mid", dir=path.parent)
    os.close(fd)
    try:
        midi.write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def transcribe_basic_pitch(
    path: Path, params: Mapping[str, Any]
) -> tuple[Any, list[dict[str, Any]]]:
    """``(PrettyMIDI, notes)`` from Basic Pitch's pretrained model (onnxruntime)."""
    from basic_pitch import ICASSP_2022_MODEL_PATH
    from basic_pitch.inference import predict

    with contextlib.redirect_stdout(io.StringIO()):  # predict() prints to stdout
        _, midi, events = predict(
            str(path),
            ICASSP_2022_MODEL_PATH,
            onset_threshold=c.param_float(params, "onset_threshold", 0.5, 0.0, 1.0),
            frame_threshold=c.param_float(params, "frame_threshold", 0.3, 0.0, 1.0),
            minimum_note_length=c.param_float(params, "minimum_note_ms", 127.7, 10.0, 2000.0),
        )
    notes = [
        {
            "start_s": round(float(s), 4),
            "end_s": round(float(e), 4),
            "pitch": int(p),
            "velocity": round(127 * float(a)),
        }
        for s, e, p, a, *_ in events
    ]
    return midi, sorted(notes, key=lambda n: (n["start_s"], n["pitch"]))


def transcribe_pyin(y: np.ndarray, sample_rate: int) -> tuple[Any, list[dict[str, Any]]]:
    """Monophonic DSP transcription (pYIN f0 -> rounded MIDI pitch runs); clearly not a learned model."""
    import librosa
    import pretty_midi

    hop = 256
    f0, voiced, _ = librosa.pyin(
        y.astype(np.float32),
        fmin=librosa.note_to_hz("C2"),
        fmax=librosa.note_to_hz("C7"),
        sr=sample_rate,
        hop_length=hop,
    )
    rms = librosa.feature.rms(y=y.astype(np.float32), hop_length=hop)[0][: f0.shape[0]]
    pitch = np.where(
        voiced & np.isfinite(f0), np.round(librosa.hz_to_midi(np.nan_to_num(f0, nan=1.0))), -1
    )
    notes: list[dict[str, Any]] = []
    start = 0
    for i in range(1, pitch.shape[0] + 1):
        if i == pitch.shape[0] or pitch[i] != pitch[start]:
            if pitch[start] >= 0 and (i - start) * hop / sample_rate >= 0.06:
                level = float(rms[start:i].max()) if i <= rms.shape[0] else 0.5
                notes.append(
                    {
                        "start_s": round(start * hop / sample_rate, 4),
                        "end_s": round(i * hop / sample_rate, 4),
                        "pitch": int(pitch[start]),
                        "velocity": int(np.clip(40 + 200 * level, 1, 127)),
                    }
                )
            start = i
    midi = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0, name="pYIN transcription")
    for n in notes:
        inst.notes.append(
            pretty_midi.Note(
                velocity=n["velocity"], pitch=n["pitch"], start=n["start_s"], end=n["end_s"]
            )
        )
    midi.instruments.append(inst)
    return midi, notes


def load_clap(folder: Path, device: str) -> tuple[Any, int]:
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(folder).to(c.torch_device(device)).eval()
    processor = ClapProcessor.from_pretrained(folder)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return (model, processor), int(size)


def _clap_audio_embedding(
    bundle: tuple[Any, Any], audio: np.ndarray, sample_rate: int, device: str
) -> Any:
    """``(1, dim)`` unit-norm CLAP audio embedding, averaged over up to six windows (~60 s).

    ``audio``: ``(channels, frames)``; downmixed and resampled to the extractor's rate.
    """
    import torch

    from app.engine import audio_io

    model, processor = bundle
    fe_sr = int(processor.feature_extractor.sampling_rate)
    mono = audio.mean(axis=0, keepdims=True)
    if sample_rate != fe_sr:
        mono = audio_io.resample(mono, sample_rate, fe_sr).astype(np.float32)
    # windows of exactly the extractor's length: longer ones would be cropped at random
    win = int(getattr(processor.feature_extractor, "nb_max_samples", 10 * fe_sr))
    windows = [mono[0, i : i + win] for i in range(0, max(1, mono.shape[1] - win // 2), win)][:6]
    dev = c.torch_device(device)
    with torch.inference_mode():
        # the unfused checkpoint takes one mel channel; "fusion" input is for fused ones
        fused = bool(getattr(model.config.audio_config, "enable_fusion", False))
        aud = processor.feature_extractor(
            windows,
            sampling_rate=fe_sr,
            return_tensors="pt",
            truncation="fusion" if fused else "rand_trunc",
        )
        a_emb = model.get_audio_features(**{k: v.to(dev) for k, v in aud.items()})
        a_emb = getattr(a_emb, "pooler_output", a_emb)
        return torch.nn.functional.normalize(a_emb.float().mean(0, keepdim=True), dim=-1)


def _clap_text_embeddings(bundle: tuple[Any, Any], texts: Sequence[str], device: str) -> Any:
    """``(len(texts), dim)`` unit-norm CLAP text embeddings."""
    import torch

    model, processor = bundle
    dev = c.torch_device(device)
    with torch.inference_mode():
        text = processor.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True)
        t_emb = model.get_text_features(**{k: v.to(dev) for k, v in text.items()})
        t_emb = getattr(t_emb, "pooler_output", t_emb)
        return torch.nn.functional.normalize(t_emb.float(), dim=-1)


def clap_tags(
    bundle: tuple[Any, Any],
    audio: np.ndarray,
    sample_rate: int,
    device: str,
    *,
    labels: Sequence[str] = TAG_LABELS,
    top_k: int = 5,
) -> list[dict[str, Any]]:
    """Zero-shot tags: cosine similarity of CLAP audio and ``"This is a sound of <label>."`` embeddings."""
    t_emb = _clap_text_embeddings(bundle, [f"This is a sound of {lbl}." for lbl in labels], device)
    a_emb = _clap_audio_embedding(bundle, audio, sample_rate, device)
    sims = (a_emb @ t_emb.T)[0].cpu().numpy()
    order = np.argsort(-sims)[:top_k]
    return [{"tag": labels[i], "score": round(float(sims[i]), 4)} for i in order]


def clap_similarity(
    bundle: tuple[Any, Any], audio: np.ndarray, sample_rate: int, device: str, prompt: str
) -> float:
    """Cosine similarity (-1..1) of the CLAP embeddings of ``audio`` and the ``prompt`` text."""
    t_emb = _clap_text_embeddings(bundle, [prompt], device)
    a_emb = _clap_audio_embedding(bundle, audio, sample_rate, device)
    return float(np.clip(float((a_emb @ t_emb.T)[0, 0]), -1.0, 1.0))


def _load_clap_bundle(ctx: JobContext) -> tuple[Any, Any] | None:
    """The cached CLAP ``(model, processor)``, or None when its weights are not installed."""
    finder = ctx.find_weights or c.default_find_weights
    folder = finder(CLAP)
    if folder is None:
        return None
    return ctx.load_cached(f"clap:{folder}:{ctx.device}", lambda: load_clap(Path(folder), ctx.device))


class MusicUnderstanding(Backend):
    """Bundled analysis: engine meters + librosa, Basic Pitch notes, CLAP tags when present."""

    name = "bundled-music-understanding"
    slot = "musiclm"
    title = "Music understanding (analysis, Basic Pitch, CLAP)"
    capabilities = frozenset({"analysis"})
    #: ``clap_similarity`` (params ``{"prompt"}``, input ``audio``; metrics
    #: ``{"clap_similarity": cosine in -1..1}``) needs the CLAP weights: it raises a clear
    #: error without them, and the orchestrator only calls it once they are installed.
    tasks = {  # noqa: RUF012 - read-only, as in Backend
        "analyze": "analysis",
        "transcribe": "analysis",
        CLAP_TASK: "analysis",
    }
    weights = (CLAP,)
    packages = ("librosa", "pretty_midi")

    def status(self, *, device: str, find_weights: c.FindWeights) -> BackendStatus:
        missing = c.missing_packages(self)
        if missing:
            return c.weights_status(self, find_weights)  # package_missing
        basic_pitch = _basic_pitch_usable()
        notes = NOTES_BASIC_PITCH if basic_pitch else NOTES_DSP
        have_clap = (
            find_weights(CLAP) is not None
            and package_available("transformers")
            and package_available("torch")
        )
        tags = (
            f"tags: CLAP ({CLAP.repo_id}), {CLAP_TASK} too"
            if have_clap
            else f"tags off: {CLAP.repo_id} not installed (about {CLAP.size_bytes / 1e6:.0f} MB from {CLAP.url}),"
            f" {CLAP_TASK} too"
        )
        if not basic_pitch:
            # runs, but note transcription falls back to pYIN: say so (degraded), not silently
            return BackendStatus(
                "degraded",
                f"degraded: note transcription uses the pYIN fallback, monophonic and about 10x "
                f"slower (install basic-pitch: scripts/setup.sh, or pip install basic-pitch==0.4.0 "
                f"--no-deps); tempo, beats, key, chords, loudness ready; {tags}",
                CLAP,
            )
        return BackendStatus(
            "ready", f"tempo, beats, key, chords, loudness ready; notes: {notes}; {tags}", CLAP
        )

    def run(
        self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext
    ) -> BackendOutput:
        c.check_task(self, task)
        source = c.need_input(inputs)
        if task == CLAP_TASK:
            return self._clap_similarity(params, source, ctx)
        t0 = time.perf_counter()
        audio, sr = c.read_audio(source)
        mono = audio.mean(axis=0)
        outputs: dict[str, Path] = {}
        metrics: dict[str, Any] = {}
        report: dict[str, Any] = {"source": source.name}
        if task == "analyze":
            ctx.progress(0.05, "loudness, tempo, beats, key")
            an = analysis.analyze(audio, sr, musical=True)
            report.update(
                {
                    "duration_s": round(an.duration_s, 4),
                    "tempo_bpm": None if an.tempo_bpm is None else round(an.tempo_bpm, 2),
                    "beats_s": [round(b, 4) for b in an.beats_s or []],
                    "key": an.key,
                    "loudness": {
                        k: v
                        for k, v in an.to_dict().items()
                        if k
                        in (
                            "integrated_lufs",
                            "loudness_range_lu",
                            "true_peak_dbtp",
                            "sample_peak_dbfs",
                            "short_term_max_lufs",
                            "rms_dbfs",
                            "crest_factor_db",
                            "plr_db",
                        )
                    },
                }
            )
            ctx.progress(0.3, "chords")
            report["chords"] = estimate_chords(mono, sr, an.beats_s)
        if task == "transcribe" or params.get("notes", True):
            ctx.progress(0.45, "transcribing notes")
            if _basic_pitch_usable() and params.get("method", "auto") != "pyin":
                midi, notes = transcribe_basic_pitch(source, params)
                report["notes_method"] = NOTES_BASIC_PITCH
            else:
                midi, notes = transcribe_pyin(mono, sr)
                report["notes_method"] = NOTES_DSP
            report["notes"] = notes
            outputs["midi"] = _write_midi_atomic(midi, ctx.work_dir / "notes.mid")
            metrics["notes"] = len(notes)
        if task == "analyze" and params.get("tags", True):
            ctx.progress(0.8, "tagging with CLAP")
            bundle = _load_clap_bundle(ctx)
            if bundle is None:
                report["tags"] = None
                report["tags_detail"] = f"{CLAP.repo_id} not installed"
            else:
                report["tags"] = clap_tags(
                    bundle, audio, sr, ctx.device, top_k=c.param_int(params, "top_k", 5, 1, 30)
                )
        ctx.progress(0.95, "writing report")
        report_path = ctx.work_dir / "analysis.json"
        tmp = report_path.with_name(".analysis.json.tmp")
        tmp.write_text(json.dumps(report, indent=2), encoding="utf-8")
        os.replace(tmp, report_path)
        outputs["report"] = report_path
        metrics.update({k: report[k] for k in ("tempo_bpm", "key", "notes_method") if k in report})
        if "loudness" in report:
            metrics["integrated_lufs"] = report["loudness"].get("integrated_lufs")
            metrics["true_peak_dbtp"] = report["loudness"].get("true_peak_dbtp")
            metrics["chords"] = len(report["chords"])
        metrics["tags"] = [t["tag"] for t in report.get("tags") or []]
        metrics.update(c.timing_metrics(audio.shape[1] / sr, time.perf_counter() - t0, ctx.device))
        ctx.progress(1.0, "done")
        return BackendOutput(outputs, metrics)

    def _clap_similarity(
        self, params: Mapping[str, Any], source: Path, ctx: JobContext
    ) -> BackendOutput:
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParameterError(f"{CLAP_TASK} needs a non-empty text 'prompt'")
        t0 = time.perf_counter()
        ctx.progress(0.05, "loading CLAP")
        bundle = _load_clap_bundle(ctx)
        if bundle is None:
            raise ProcessingError(
                f"CLAP weights missing: {CLAP.repo_id} is not installed (about "
                f"{CLAP.size_bytes / 1e6:.0f} MB from {CLAP.url}); {CLAP_TASK} needs them"
            )
        audio, sr = c.read_audio(source)
        ctx.progress(0.4, "embedding audio and prompt with CLAP")
        score = clap_similarity(bundle, audio, sr, ctx.device, prompt.strip())
        metrics: dict[str, Any] = {"clap_similarity": round(score, 4)}
        metrics.update(c.timing_metrics(audio.shape[1] / sr, time.perf_counter() - t0, ctx.device))
        ctx.progress(1.0, "done")
        return BackendOutput({}, metrics)
