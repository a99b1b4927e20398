"""The twelve slots of the model chain and the backends behind each, keyed by stable strings.

A slot's spec (title, role, capabilities, the ordered backend list) is plain data,
readable without importing torch.  Backends are referenced by module path; a module's
backend classes are found by scanning it for concrete :class:`Backend` subclasses
defined there, in definition order (or its ``BACKENDS`` list when it has one).  Backend
modules import torch lazily, so listing statuses here never loads a model.

Backends that arrive with later issues are listed as :class:`PlannedBackend` entries
whose status says so plainly; nothing here ever claims ``ready`` without a real
implementation behind it.

``AMC_EXTRA_BACKENDS`` ("pkg.mod:Class,pkg.other") adds backends ahead of a slot's own
(tests, plugins); a backend whose ``slot`` is not one of the twelve gets its own slot.

Thread-safety: the functions here are safe to call from any thread; backend instances
are created once per process and shared.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.errors import AmcError
from app.models.backends.base import Backend, BackendStatus, StatusState, WeightsSpec

EXTRA_BACKENDS_ENV = "AMC_EXTRA_BACKENDS"
#: What a musician reads for a slot whose backend is not in this build.
NOT_IN_BUILD = "not available yet: this version of the app does not include it"
#: For a cloud slot: the client is missing, so a key alone would change nothing.
CLOUD_NOT_IN_BUILD = (
    "not available yet: this version of the app has no client for this service "
    "(setting an API key will not change that)"
)


class BackendUnavailable(AmcError):
    """No backend of the slot can run the job on this machine; the message says why."""

    exit_code = 2


@dataclass(frozen=True)
class PlannedBackend:
    """A backend the architecture names but that is not implemented yet.

    Its status is honest: ``state``/``detail`` say what is missing.  For cloud backends
    ``api_key_env`` names the variable holding the user's key.
    """

    name: str
    title: str
    state: StatusState
    detail: str
    api_key_env: str | None = None

    def status(self) -> BackendStatus:
        # "needs API key" is said only where a key is all that is missing: a planned
        # backend lacks its code, so it is "not available yet" with or without a key
        if self.api_key_env is not None and self.state == "needs_api_key" and not os.environ.get(self.api_key_env):
            return BackendStatus("needs_api_key", f"needs an API key: set {self.api_key_env}; {self.detail}")
        return BackendStatus(self.state, self.detail)


@dataclass(frozen=True)
class SlotSpec:
    """One musician-facing role of the chain."""

    key: str
    number: int
    title: str
    role: str
    capabilities: tuple[str, ...]
    # module paths ("app.models.backends.musicgen" or "pkg.mod:Class") and planned entries
    backends: tuple[str | PlannedBackend, ...] = field(default_factory=tuple)


_B = "app.models.backends."

SLOTS: tuple[SlotSpec, ...] = (
    SlotSpec("musicgen", 1, "MusicGen", "text -> music, continuation",
             ("text_to_audio", "audio_to_audio"), (_B + "musicgen",)),
    SlotSpec("stable-audio", 2, "Stable Audio", "text -> audio, loops and sound effects",
             ("text_to_audio",),
             (_B + "stable_audio",
              PlannedBackend("stability-rest", "Stability REST API", "not_available", CLOUD_NOT_IN_BUILD,
                             api_key_env="AMC_STABILITY_API_KEY"))),
    SlotSpec("musiclm", 3, "MusicLM", "understanding: tempo, key, chords, notes, tags",
             ("analysis",), (_B + "musiclm",)),
    SlotSpec("audiocraft", 4, "AudioCraft", "audio manipulation: extend, regenerate, codec",
             ("audio_to_audio", "text_to_audio"), (_B + "audiocraft",)),
    SlotSpec("jukebox", 5, "Jukebox", "genre style transfer of existing audio",
             ("style_transfer",), (_B + "jukebox",)),
    SlotSpec("melody-rnn", 6, "Melody RNN", "continue a melody (MIDI)",
             ("midi_continue", "midi_generate"),
             (PlannedBackend("torch-melody-rnn", "PyTorch Melody RNN", "not_available", NOT_IN_BUILD),)),
    SlotSpec("music-vae", 7, "Music VAE", "variations and interpolation (MIDI)",
             ("midi_vary", "midi_interpolate"),
             (PlannedBackend("torch-music-vae", "PyTorch MusicVAE", "not_available", NOT_IN_BUILD),)),
    SlotSpec("aces", 8, "ACES", "enhancement: denoise, de-click, EQ/dynamics repair, master",
             ("enhance",), (_B + "aces",)),
    SlotSpec("diff-rhythm", 9, "Diff Rhythm", "rhythm: beats/downbeats, drum patterns, full songs",
             ("rhythm",),
             (PlannedBackend("rhythm-analysis", "analysis + bundled drum-pattern model", "not_available",
                             NOT_IN_BUILD),)),
    SlotSpec("suni", 10, "Suni", "cloud song generation (Suno-compatible API)",
             ("text_to_audio",),
             (PlannedBackend("suno-http", "Suno-compatible HTTP API", "not_available", CLOUD_NOT_IN_BUILD,
                             api_key_env="AMC_SUNO_API_KEY"),)),
    SlotSpec("beethoven-ai", 11, "Beethoven AI", "classical composition, chorale harmonization",
             ("harmonize", "midi_generate"),
             (PlannedBackend("torch-chorale", "PyTorch chorale model", "not_available", NOT_IN_BUILD),)),
    SlotSpec("mureka", 12, "Mureka", "cloud song and instrumental generation",
             ("text_to_audio",),
             (PlannedBackend("mureka-http", "Mureka HTTP API", "not_available", CLOUD_NOT_IN_BUILD,
                             api_key_env="AMC_MUREKA_API_KEY"),)),
)

SLOT_KEYS: tuple[str, ...] = tuple(s.key for s in SLOTS)


@dataclass(frozen=True)
class ImportFailure:
    """A backend module that could not be imported (its status says so)."""

    module: str
    error: str


BackendEntry = type[Backend] | PlannedBackend | ImportFailure


def _classes_in(module_path: str) -> list[type[Backend]]:
    """Backend classes of ``pkg.mod`` (scan) or ``pkg.mod:Class``; raises on import error."""
    mod_name, _, cls_name = module_path.partition(":")
    module = importlib.import_module(mod_name)
    if cls_name:
        cls = getattr(module, cls_name)
        if not (inspect.isclass(cls) and issubclass(cls, Backend)):
            raise TypeError(f"{module_path} is not a Backend subclass")
        return [cls]
    listed = getattr(module, "BACKENDS", None)
    if listed is not None:
        return list(listed)
    return [
        obj
        for obj in vars(module).values()  # dict order == definition order
        if inspect.isclass(obj)
        and issubclass(obj, Backend)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]


def _extra_paths() -> list[str]:
    raw = os.environ.get(EXTRA_BACKENDS_ENV, "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def _extras() -> list[BackendEntry]:
    extras: list[BackendEntry] = []
    for path in _extra_paths():
        try:
            extras.extend(_classes_in(path))
        except Exception as exc:
            extras.append(ImportFailure(path, f"{type(exc).__name__}: {exc}"))
    return extras


def _builtin_entries(spec: SlotSpec, extras: list[BackendEntry], used: set[int]) -> list[BackendEntry]:
    """One of the twelve slots' backends: extras for it first, then its own (``used`` gets
    the indices of the extras taken)."""
    entries: list[BackendEntry] = []
    for i, e in enumerate(extras):
        if isinstance(e, type) and e.slot == spec.key:
            entries.append(e)
            used.add(i)
    for ref in spec.backends:
        if isinstance(ref, PlannedBackend):
            entries.append(ref)
            continue
        try:
            classes = _classes_in(ref)
        except Exception as exc:
            entries.append(ImportFailure(ref, f"{type(exc).__name__}: {exc}"))
            continue
        # a module may hold backends of several slots; keep this slot's (or unslotted) ones
        entries.extend(c for c in classes if c.slot in ("", spec.key))
    return entries


def slot_entries() -> list[tuple[SlotSpec, list[BackendEntry]]]:
    """Every slot (the twelve, then any extra slot) with its backends in preference order."""
    extras = _extras()
    used: set[int] = set()
    out = [(spec, _builtin_entries(spec, extras, used)) for spec in SLOTS]
    extra_slots: dict[str, list[BackendEntry]] = {}
    for i, e in enumerate(extras):
        if i in used:
            continue
        key = e.slot if isinstance(e, type) else "extra"
        extra_slots.setdefault(key or "extra", []).append(e)
    for n, (key, entries) in enumerate(extra_slots.items(), start=len(SLOTS) + 1):
        title = next((e.title for e in entries if isinstance(e, type) and e.title), key)
        caps = sorted({c for e in entries if isinstance(e, type) for c in e.capabilities})
        out.append((SlotSpec(key, n, title, f"extra backends from {EXTRA_BACKENDS_ENV}", tuple(caps)), entries))
    return out


def get_slot(key: str) -> tuple[SlotSpec, list[BackendEntry]]:
    """The slot ``key`` with its backends; raises :class:`BackendUnavailable` for an unknown key.
    One of the twelve is built alone (a job plans several slots: scanning all twelve modules
    for each cost ~0.2 ms a time)."""
    spec = next((s for s in SLOTS if s.key == key), None)
    if spec is not None:
        return spec, _builtin_entries(spec, _extras(), set())
    for spec, entries in slot_entries():
        if spec.key == key:
            return spec, entries
    raise BackendUnavailable(f"unknown model slot {key!r}; slots: {', '.join(SLOT_KEYS)}")


_instances: dict[type[Backend], Backend] = {}
_instances_lock = threading.Lock()


def backend_instance(cls: type[Backend]) -> Backend:
    """The one instance of ``cls`` in this process."""
    with _instances_lock:
        inst = _instances.get(cls)
        if inst is None:
            inst = _instances[cls] = cls()
        return inst


def entry_name(entry: BackendEntry) -> str:
    if isinstance(entry, PlannedBackend):
        return entry.name
    if isinstance(entry, ImportFailure):
        return entry.module.rsplit(".", 1)[-1]
    return entry.key()


def entry_status(
    entry: BackendEntry, *, device: str, find_weights: Callable[[WeightsSpec], Path | None]
) -> BackendStatus:
    """The entry's status; import failures and raising status checks are reported, never raised."""
    if isinstance(entry, PlannedBackend):
        return entry.status()
    if isinstance(entry, ImportFailure):
        missing = entry.error.startswith("ModuleNotFoundError")
        state: StatusState = "package_missing" if missing else "error"
        return BackendStatus(state, f"backend module {entry.module} failed to import: {entry.error}")
    try:
        return backend_instance(entry).status(device=device, find_weights=find_weights)
    except Exception as exc:
        return BackendStatus("error", f"status check of {entry.key()} failed: {type(exc).__name__}: {exc}")


def _default_find_weights(spec: WeightsSpec) -> Path | None:
    from app.models import weights

    return weights.find_weights(spec)


def resolve(
    slot: str,
    *,
    device: str,
    backend: str | None = None,
    task: str | None = None,
    find_weights: Callable[[WeightsSpec], Path | None] | None = None,
) -> tuple[Backend, str]:
    """The backend that runs a job of ``slot`` and the reason it was chosen.

    ``backend`` names one explicitly; otherwise the first ready backend (that accepts
    ``task`` when the backend declares its tasks) wins.  Raises
    :class:`BackendUnavailable` listing every backend's status when none can run.
    """
    fw = find_weights or _default_find_weights
    _, entries = get_slot(slot)
    reasons: list[str] = []
    for entry in entries:
        name = entry_name(entry)
        if backend is not None and name != backend:
            continue
        status = entry_status(entry, device=device, find_weights=fw)
        if not status.ready or not isinstance(entry, type):
            reasons.append(f"{name}: {status.state} ({status.detail})")
            continue
        if task is not None and entry.tasks and task not in entry.tasks:
            reasons.append(f"{name}: does not do task {task!r} (does {', '.join(entry.tasks)})")
            continue
        why = "requested by the job" if backend is not None else "first ready backend of the slot"
        if reasons and backend is None:
            why += " (skipped " + "; ".join(reasons) + ")"
        return backend_instance(entry), why
    if backend is not None and not reasons:
        names = ", ".join(entry_name(e) for e in entries)
        raise BackendUnavailable(f"slot {slot!r} has no backend {backend!r}; it has: {names}")
    raise BackendUnavailable(f"no backend of slot {slot!r} can run here: " + "; ".join(reasons))


def _weights_dict(spec: WeightsSpec) -> dict[str, Any]:
    from app.models import weights

    local = weights.find_weights(spec)
    return {
        "repo_id": spec.repo_id,
        "size_bytes": spec.size_bytes,
        "license": spec.license,
        "url": spec.url,
        "present": local is not None,
        "path": str(local) if local is not None else None,
        "disk_bytes": weights.disk_usage(local) if local is not None else 0,
    }


def slot_status(*, device: str = "cpu", slots: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every slot with each backend's status, for ``amc models`` and the model manager.

    Returns ``[{slot, number, title, role, capabilities, ready, backends: [{name, title,
    module, state, detail, extra, weights: [...]}]}]``; never raises for a broken backend.
    """
    from app.models import weights

    out: list[dict[str, Any]] = []
    for spec, entries in slot_entries():
        if slots is not None and spec.key not in slots:
            continue
        backends: list[dict[str, Any]] = []
        for entry in entries:
            status = entry_status(entry, device=device, find_weights=weights.find_weights)
            specs: tuple[WeightsSpec, ...] = entry.weights if isinstance(entry, type) else ()
            if isinstance(entry, type):
                title, module = entry.title or entry.key(), f"{entry.__module__}:{entry.__qualname__}"
            elif isinstance(entry, ImportFailure):
                title, module = entry.module, entry.module
            else:
                title, module = entry.title, "(planned)"
            backends.append({
                "name": entry_name(entry),
                "title": title,
                "module": module,
                "state": status.state,
                "detail": status.detail,
                "extra": status.extra,
                "weights": [_weights_dict(w) for w in specs],
            })
        out.append({
            "slot": spec.key,
            "number": spec.number,
            "title": spec.title,
            "role": spec.role,
            "capabilities": list(spec.capabilities),
            "ready": any(b["state"] == "ready" for b in backends),
            "backends": backends,
        })
    return out


def all_weights() -> list[tuple[str, str, WeightsSpec]]:
    """``(slot, backend name, spec)`` for every checkpoint any importable backend declares."""
    out: list[tuple[str, str, WeightsSpec]] = []
    for spec, entries in slot_entries():
        for entry in entries:
            if isinstance(entry, type):
                out.extend((spec.key, entry.key(), w) for w in entry.weights)
    return out
