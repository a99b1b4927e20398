"""The contract every model backend implements, readable without importing torch.

A *slot* is a musician-facing role ("musicgen", "stable-audio", ...); a *backend* is one
real implementation of it.  The registry lists backends by module path and reads their
class attributes (name, capabilities, weights) without running any model code; torch and
friends are imported lazily inside :meth:`Backend.load` / :meth:`Backend.run`, which only
ever execute inside the model worker process.

Thread/process: every method but :meth:`Backend.status` and the class attributes runs in
the worker process only.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Capability = Literal[
    "text_to_audio",
    "audio_to_audio",
    "analysis",
    "midi_generate",
    "midi_continue",
    "midi_vary",
    "midi_interpolate",
    "harmonize",
    "rhythm",
    "enhance",
    "style_transfer",
]

StatusState = Literal[
    "ready",
    "weights_missing",
    "package_missing",
    "needs_api_key",  # only where a key is all that is missing
    "not_available",  # no backend for this on this build ("not available yet")
    "degraded",  # runs, with a weaker fallback; the detail says which
    "unsupported_device",
    "error",  # the backend module failed to import or its status check raised (a bug)
]


class Cancelled(Exception):
    """Raised by :meth:`JobContext.progress` once the job was cancelled; backends let it propagate."""


@dataclass(frozen=True)
class WeightsSpec:
    """One downloadable checkpoint: where it comes from and how big it is.

    ``repo_id`` is the Hugging Face repo id; locally it lives in ``<models dir>/<repo_id>``
    (a folder with ``config.json``) or in the Hugging Face cache.
    """

    repo_id: str
    size_bytes: int
    license: str
    url: str
    revision: str | None = None
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendStatus:
    """What a backend can do on this machine, said plainly for the UI/API/CLI."""

    state: StatusState
    detail: str
    weights: WeightsSpec | None = None
    extra: str | None = None  # pip extra / package to install when state == "package_missing"

    @property
    def ready(self) -> bool:
        """It runs: ``ready``, or ``degraded`` (a weaker fallback the detail names)."""
        return self.state in ("ready", "degraded")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"state": self.state, "detail": self.detail}
        if self.weights is not None:
            d["weights"] = {
                "repo_id": self.weights.repo_id,
                "size_bytes": self.weights.size_bytes,
                "license": self.weights.license,
                "url": self.weights.url,
                "revision": self.weights.revision,
                "files": list(self.weights.files),
            }
        if self.extra is not None:
            d["extra"] = self.extra
        return d


ProgressFn = Callable[[float, str], None]


@dataclass
class JobContext:
    """What the worker hands a backend for one job.

    ``progress(fraction, message)`` reports progress and raises :class:`Cancelled` when
    the job has been cancelled: call it inside every generation loop (per token block,
    per diffusion step) so cancel lands within 0.5 s.
    """

    device: str  # "cuda", "cuda:1", "mps" or "cpu"
    work_dir: Path  # where outputs are written (the job's own folder)
    progress: ProgressFn
    is_cancelled: Callable[[], bool]
    seed: int | None = None
    # model cache owned by the worker: get(key, loader: () -> (model, size_bytes)) -> model
    cache_get: Callable[[str, Callable[[], tuple[Any, int]]], Any] | None = None
    # resolves a WeightsSpec to a local folder, or None when absent
    find_weights: Callable[[WeightsSpec], Path | None] | None = None

    def load_cached(self, key: str, loader: Callable[[], tuple[Any, int]]) -> Any:
        if self.cache_get is None:
            return loader()[0]
        return self.cache_get(key, loader)


@dataclass
class BackendOutput:
    """What a run produced: files (by role: "audio", "midi", "report") and figures."""

    outputs: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def package_available(name: str) -> bool:
    """True when ``name`` is importable, checked without importing it."""
    return importlib.util.find_spec(name) is not None


class Backend(ABC):
    """One real implementation of a slot.

    Subclasses set the class attributes; the registry reads them without importing
    heavy packages.  ``tasks`` maps the task names this backend accepts to a capability.

    The registry instantiates a backend with no arguments and finds backend classes by
    scanning a module for concrete ``Backend`` subclasses defined there, in definition
    order (or the module's ``BACKENDS`` list when it has one).  Optional hooks:

    - ``random_full_size(cls) -> bench`` (classmethod): ``bench(device, duration_s) ->
      metrics`` builds the full-size architecture with random weights (no download) on its
      first call and times one generation of ``duration_s`` seconds of audio; the metrics
      carry ``duration_s``, ``compute_s`` and ``real_time_factor``.
      ``benchmarks/models.py --rtf`` runs it for every backend that has it.
    """

    name: str = ""  # stable id, e.g. "transformers-musicgen"
    slot: str = ""  # e.g. "musicgen"
    title: str = ""  # e.g. "MusicGen (transformers)"
    capabilities: frozenset[str] = frozenset()
    tasks: Mapping[str, str] = {}
    weights: tuple[WeightsSpec, ...] = ()
    packages: tuple[str, ...] = ()  # importable module names it needs
    extra: str | None = "models"  # pip extra that provides ``packages``

    @abstractmethod
    def status(self, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]) -> BackendStatus:
        """Cheap check (no model load): packages, weights, API key, device support."""

    @classmethod
    def key(cls) -> str:
        """Stable id of this backend: ``name`` or, when unset, the class name."""
        return cls.name or cls.__name__

    @abstractmethod
    def run(self, task: str, params: Mapping[str, Any], inputs: Mapping[str, Path], ctx: JobContext) -> BackendOutput:
        """Run one task; write outputs under ``ctx.work_dir``; raise AmcError subclasses for bad input."""
