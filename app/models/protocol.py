"""The job protocol between the model client (UI/CLI/service) and the model worker.

Messages are small frozen dataclasses, picklable, sent over a ``multiprocessing``
pipe.  Commands flow in (:class:`Job`, :class:`Cancel`, :class:`StatusRequest`,
:class:`Shutdown`); events flow out (:class:`Hello`, :class:`Started`,
:class:`Progress`, :class:`Result`, :class:`Failed`, :class:`StatusReport`).

Handshake: the worker's first message is :class:`Hello`; the client refuses a worker
whose ``version`` differs from :data:`PROTOCOL_VERSION` (:class:`ProtocolMismatch`).
Bump :data:`PROTOCOL_VERSION` on any change to a message's fields.

This module imports nothing heavy: the UI process imports it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

from app.engine.errors import AmcError

PROTOCOL_VERSION = 1

FailureKind = Literal["error", "cancelled", "worker_died"]


class WorkerError(AmcError):
    """The model worker could not be started or talked to."""


class ProtocolMismatch(WorkerError):
    """The worker speaks another protocol version than this client (a stale install)."""


# --- commands (client -> worker) ---------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One unit of model work.

    ``inputs`` maps roles ("audio", "midi", "reference") to file paths; outputs are
    written under ``output_dir`` (empty: ``<user data>/cache/jobs/<job_id>``).  ``backend`` picks a backend by name (else the slot's
    first ready one).  Higher ``priority`` runs sooner; equal priorities run in
    submission order.
    """

    job_id: str
    slot: str
    task: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    output_dir: str = ""
    backend: str | None = None
    priority: int = 0
    seed: int | None = None

    @classmethod
    def create(
        cls,
        slot: str,
        task: str,
        *,
        output_dir: str | PathLike[str] = "",
        params: dict[str, Any] | None = None,
        inputs: Mapping[str, str | PathLike[str]] | None = None,
        backend: str | None = None,
        priority: int = 0,
        seed: int | None = None,
    ) -> Job:
        """A job with a fresh unique ``job_id``."""
        return cls(
            job_id=uuid.uuid4().hex,
            slot=slot,
            task=task,
            params=dict(params or {}),
            inputs={k: str(v) for k, v in (inputs or {}).items()},
            output_dir=str(output_dir) if output_dir else "",
            backend=backend,
            priority=priority,
            seed=seed,
        )


@dataclass(frozen=True)
class Cancel:
    """Cancel a pending or running job; the worker answers with ``Failed(kind="cancelled")``."""

    job_id: str


@dataclass(frozen=True)
class StatusRequest:
    """Ask the worker for a :class:`StatusReport`."""

    request_id: str = ""


@dataclass(frozen=True)
class Shutdown:
    """Cancel everything and exit."""


# --- events (worker -> client) -----------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """First message of a worker: the handshake."""

    version: int
    device: str
    torch_version: str | None
    pid: int = 0
    device_note: str = ""  # why the device differs from the one asked for, if it does


@dataclass(frozen=True)
class Started:
    """A job left the queue and its backend was chosen."""

    job_id: str
    slot: str
    backend: str


@dataclass(frozen=True)
class Progress:
    """``fraction`` in [0, 1] of the job done."""

    job_id: str
    fraction: float
    message: str = ""


@dataclass(frozen=True)
class Result:
    """A finished job: output files by role, figures, and the plan it ran."""

    job_id: str
    outputs: dict[str, str]
    metrics: dict[str, Any]
    plan: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    """A job that will not produce a result; ``error`` is one line for the user."""

    job_id: str
    error: str
    traceback: str = ""
    kind: FailureKind = "error"


@dataclass(frozen=True)
class StatusReport:
    """What the worker holds right now."""

    request_id: str
    device: str
    running: str | None
    queued: tuple[str, ...]
    cache_entries: tuple[str, ...]
    cache_ram_bytes: int
    cache_vram_bytes: int
    ram_budget_bytes: int
    vram_budget_bytes: int


Command = Job | Cancel | StatusRequest | Shutdown
Event = Hello | Started | Progress | Result | Failed | StatusReport
JobEvent = Started | Progress | Result | Failed


def check_hello(msg: object) -> Hello:
    """Validate the worker's first message; raise :class:`ProtocolMismatch` with the fix."""
    if not isinstance(msg, Hello):
        raise ProtocolMismatch(f"model worker sent {type(msg).__name__} before its handshake")
    if msg.version != PROTOCOL_VERSION:
        raise ProtocolMismatch(
            f"model worker speaks protocol v{msg.version}, this app speaks v{PROTOCOL_VERSION}: "
            "the installation is inconsistent; reinstall the app so both come from the same version"
        )
    return msg
