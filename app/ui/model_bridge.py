"""The Studio's Qt adapter around :class:`app.models.client.ModelClient`.

:class:`ModelBridge` owns one model client (created on first use), turns its events,
which arrive on the client's reader thread, into Qt signals delivered on the UI thread
(queued connections), and computes slot statuses off the UI thread (the registry's
status checks probe installed packages and the weights cache: ~2 s on a cold start).

Signals (all emitted on the UI thread)
--------------------------------------
job_started(job_id, slot, backend)
    the worker took the job off its queue and chose ``backend``.
job_progress(job_id, fraction 0..1, message)
    coalesced: a burst of worker progress reports reaches the UI as its latest value.
job_finished(job_id, result: app.models.protocol.Result)
job_failed(job_id, message (one line for the user), kind: "error" | "cancelled" | "worker_died")
worker_state_changed(state, detail)
    the client's state: starting, ready, busy, restarting, dead, closed.
status_ready(list)
    :func:`app.models.registry.slot_status` rows; each backend dict also carries
    ``tasks`` (the task names it accepts; empty when it does not declare them).

Thread rules: create the bridge and call every method on the UI thread.  Nothing here
imports torch: the client spawns the worker process, which does.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot

from app.models.client import JobHandle, ModelClient
from app.models.protocol import Failed, Job, JobEvent, Progress, Result, Started

__all__ = ["CLOSE_TIMEOUT_S", "STATE_LABELS", "ModelBridge", "describe_slot", "human_bytes", "slot_reason"]

log = logging.getLogger("amc.ui.model_bridge")

#: :meth:`ModelBridge.close` blocks the UI at most about this long (the client's own bound).
CLOSE_TIMEOUT_S = 1.5
#: Outcomes kept for :meth:`ModelBridge.outcome` (oldest dropped first).
MAX_OUTCOMES = 200


def _status_rows(device: str) -> list[dict[str, Any]]:
    """``registry.slot_status`` plus each backend's task names (status thread only)."""
    from app.models import registry

    rows = registry.slot_status(device=device)
    tasks: dict[tuple[str, str], list[str]] = {}
    for spec, entries in registry.slot_entries():
        for entry in entries:
            if isinstance(entry, type):
                tasks[(spec.key, registry.entry_name(entry))] = sorted(entry.tasks)
    for row in rows:
        for backend in row["backends"]:
            backend["tasks"] = tasks.get((row["slot"], backend["name"]), [])
    return rows


class ModelBridge(QObject):
    """One model worker for the Studio, as Qt signals (see the module docstring).

    ``device`` overrides the worker's device choice (None: CUDA > MPS > CPU);
    ``client_options`` go to :class:`ModelClient` (``log_path``, ``env``, budgets...).
    The worker starts on the first :meth:`submit` (or :meth:`start`), not at creation,
    so a Studio session that never uses a model never spawns one.
    """

    job_started = Signal(str, str, str)
    job_progress = Signal(str, float, str)
    job_finished = Signal(str, object)
    job_failed = Signal(str, str, str)
    worker_state_changed = Signal(str, str)
    status_ready = Signal(list)

    # reader/status threads -> UI thread (queued)
    _event_posted = Signal(str, object)
    _progress_posted = Signal(str)
    _state_posted = Signal(int, str, str)
    _status_posted = Signal(int, object)

    def __init__(self, parent: QObject | None = None, *, device: str | None = None, **client_options: Any) -> None:
        super().__init__(parent)
        self._device = device
        self._client_options = client_options
        self._client: ModelClient | None = None
        self._closed = False
        self._handles: dict[str, JobHandle] = {}
        self._outcomes: OrderedDict[str, Result | Failed] = OrderedDict()
        # latest progress per job, filled on the reader thread, drained on the UI thread
        self._progress_lock = threading.Lock()
        self._latest_progress: dict[str, tuple[float, str]] = {}
        self._status_seq = 0
        self._status_device: str | None = None
        self._status_thread: threading.Thread | None = None
        self._client_gen = 0  # state reports of a replaced client are ignored
        self.state = "stopped"  # the client's last state as seen on the UI thread
        self.state_detail = ""
        q = Qt.ConnectionType.QueuedConnection
        self._event_posted.connect(self._on_event_ui, q)
        self._progress_posted.connect(self._on_progress_ui, q)
        self._state_posted.connect(self._on_state_ui, q)
        self._status_posted.connect(self._on_status_ui, q)

    # ------------------------------------------------------------------ public API
    @property
    def client(self) -> ModelClient | None:
        """The client, or None before the first job (and after :meth:`close`)."""
        return self._client

    @property
    def worker_pid(self) -> int | None:
        return self._client.worker_pid if self._client is not None else None

    @property
    def device(self) -> str | None:
        """The worker's device once it has shaken hands, else the one asked for (or None)."""
        hello = self._client.hello if self._client is not None else None
        return hello.device if hello is not None else self._device

    def start(self) -> None:
        """Start the worker now (non-blocking; it shakes hands in the background)."""
        self._ensure_client()

    def submit(
        self,
        slot: str,
        task: str,
        params: dict[str, Any] | None = None,
        inputs: dict[str, str | Path] | None = None,
        *,
        backend: str | None = None,
        priority: int = 0,
        seed: int | None = None,
        output_dir: str | Path = "",
    ) -> str:
        """Queue a job on the worker and return its id (non-blocking).

        Outputs go to ``output_dir`` (default: ``<user data>/cache/jobs/<job_id>``).  A job
        submitted while the worker starts waits in the client; one submitted after the
        client gave up (``dead``) starts a fresh client.  Its outcome arrives as
        ``job_finished`` or ``job_failed``, always after this call returns.
        """
        if self._closed:
            raise RuntimeError("the model bridge has been closed")
        client = self._ensure_client()
        job = Job.create(slot, task, params=params, inputs=inputs, backend=backend, priority=priority,
                         seed=seed, output_dir=output_dir)
        self._handles[job.job_id] = client.submit(job)
        return job.job_id

    def cancel(self, job_id: str) -> None:
        """Ask for cancellation (non-blocking); ``job_failed(..., "cancelled")`` follows."""
        handle = self._handles.get(job_id)
        if handle is not None:
            handle.cancel()

    def outcome(self, job_id: str) -> Result | Failed | None:
        """The Result/Failed of a recent job (a Failed carries the traceback), else None."""
        return self._outcomes.get(job_id)

    def running_jobs(self) -> list[str]:
        """Ids of jobs submitted and not yet ended."""
        return list(self._handles)

    def slot_status(self) -> None:
        """Compute every slot's status in a background thread; ``status_ready`` delivers it.

        Uses the worker's device once known.  Calls made while one is computing are
        coalesced into one more run.
        """
        self._status_seq += 1
        seq = self._status_seq
        device = self.device or "cpu"
        self._status_device = device

        def work() -> None:
            try:
                rows: object = _status_rows(device)
            except Exception as exc:  # a registry bug: show it instead of hanging "checking"
                log.exception("slot status failed")
                rows = exc
            self._post(self._status_posted, seq, rows)

        t = threading.Thread(target=work, name="amc-slot-status", daemon=True)
        self._status_thread = t
        t.start()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel every job and stop the worker; blocks at most about ``timeout`` + 0.5 s."""
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            client.close(timeout)

    # ------------------------------------------------------------------ internals
    def _ensure_client(self) -> ModelClient:
        if self._client is not None and self._client.state == "dead":
            # it gave up (crash loop, failed start); a new job is the user asking to try again
            old, self._client = self._client, None
            old.close(0.5)  # no live worker left to wait for
        if self._client is None:
            # Construction does not block: the client spawns the worker and shakes hands
            # on its own supervisor thread, and queues jobs submitted meanwhile.
            self._client_gen += 1
            gen = self._client_gen
            self._client = ModelClient(
                device=self._device, on_event=self._on_event_thread,
                on_state=lambda state, detail: self._post(self._state_posted, gen, state, detail),
                **self._client_options)
            # the client starts in "starting" and reports only changes: say it here
            self.state, self.state_detail = "starting", ""
            self.worker_state_changed.emit("starting", "")
        return self._client

    def _post(self, signal: Any, *args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the bridge was deleted while a late event was in flight
            pass

    def _on_event_thread(self, handle: JobHandle, event: JobEvent) -> None:
        """Reader thread (or the caller of submit/cancel/close): post to the UI thread."""
        if isinstance(event, Progress):
            with self._progress_lock:
                first = event.job_id not in self._latest_progress
                self._latest_progress[event.job_id] = (event.fraction, event.message)
            if first:
                self._post(self._progress_posted, event.job_id)
            return
        self._post(self._event_posted, handle.job_id, event)

    @Slot(str)
    def _on_progress_ui(self, job_id: str) -> None:
        with self._progress_lock:
            latest = self._latest_progress.pop(job_id, None)
        if latest is not None and job_id in self._handles:
            self.job_progress.emit(job_id, float(latest[0]), latest[1])

    @Slot(str, object)
    def _on_event_ui(self, job_id: str, event: JobEvent) -> None:
        if isinstance(event, Started):
            self.job_started.emit(job_id, event.slot, event.backend)
            return
        if isinstance(event, Result | Failed):
            self._handles.pop(job_id, None)
            with self._progress_lock:
                self._latest_progress.pop(job_id, None)
            self._outcomes[job_id] = event
            while len(self._outcomes) > MAX_OUTCOMES:
                self._outcomes.popitem(last=False)
            if isinstance(event, Result):
                self.job_finished.emit(job_id, event)
            else:
                self.job_failed.emit(job_id, event.error, event.kind)

    @Slot(int, str, str)
    def _on_state_ui(self, gen: int, state: str, detail: str) -> None:
        if gen != self._client_gen:
            return
        self.state, self.state_detail = state, detail
        self.worker_state_changed.emit(state, detail)
        # statuses computed before the worker named its device are recomputed for it
        device = self.device
        if state == "ready" and device and self._status_device not in (None, device):
            self.slot_status()

    @Slot(int, object)
    def _on_status_ui(self, seq: int, rows: object) -> None:
        if seq != self._status_seq:
            return  # a newer request is on its way
        if isinstance(rows, Exception):
            rows = [{"slot": "error", "number": 0, "title": "Status check failed", "role": str(rows),
                     "capabilities": [], "ready": False,
                     "backends": [{"name": "registry", "title": "registry", "module": "", "state": "error",
                                   "detail": f"{type(rows).__name__}: {rows}", "extra": None,
                                   "weights": [], "tasks": []}]}]
        self.status_ready.emit(rows)



# --- how a slot's status reads in the UI (shared by the chain panel and the generate dialog) ---

#: Most useful first: which backend's state stands for a slot that is not ready.
_STATE_RANK = {"ready": 0, "degraded": 0, "weights_missing": 1, "needs_api_key": 2, "unsupported_device": 3,
               "package_missing": 4, "not_available": 5, "error": 6}
STATE_LABELS = {
    "ready": "Ready",
    "degraded": "Ready (degraded)",
    "weights_missing": "Needs download",
    "needs_api_key": "Needs API key",
    "unsupported_device": "Unsupported device",
    "package_missing": "Package missing",
    "not_available": "Not available yet",
    "error": "Error",
    "wrong_task": "Cannot do this task",
    "checking": "Checking…",
}


def human_bytes(n: int) -> str:
    """``2364000000`` -> ``"2.36 GB"`` (decimal units, as the model cards give them)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


def _does_task(backend: dict[str, Any], task: str | None) -> bool:
    tasks = backend.get("tasks") or []
    return task is None or not tasks or task in tasks


def describe_slot(row: dict[str, Any], *, task: str | None = None) -> tuple[str, str, str]:
    """``(state, short text, tooltip)`` of a :func:`registry.slot_status` row.

    ``state`` is a backend state (``ready``, ``weights_missing``...), or ``wrong_task``
    when a backend is ready but none ready accepts ``task``.  The short text fits a table
    cell ("Needs download · 2.36 GB"); the tooltip lists every backend with its detail
    and what to do about it.
    """
    backends: list[dict[str, Any]] = list(row.get("backends") or [])
    lines = [f"{row.get('title', row.get('slot'))} — {row.get('role', '')}"]
    for b in backends:
        label = STATE_LABELS.get(b["state"], b["state"])
        lines.append(f"• {b.get('title') or b['name']}: {label}. {b.get('detail', '')}".rstrip())
        if b["state"] == "weights_missing":
            missing = [w for w in b.get("weights", []) if not w.get("present")]
            if missing:
                w = missing[0]
                lines.append(f"    get it: amc models download {w['repo_id']}  ({human_bytes(w['size_bytes'])}, "
                             f"license {w['license']}, {w['url']})")
        if task is not None and b["state"] in ("ready", "degraded") and not _does_task(b, task):
            lines.append(f"    does not do {task} (does {', '.join(b.get('tasks', []))})")
    ready = [b for b in backends if b["state"] in ("ready", "degraded")]
    usable = [b for b in ready if _does_task(b, task)]
    if usable:
        return "ready", STATE_LABELS["ready"], "\n".join(lines)
    if ready:
        return "wrong_task", f"{STATE_LABELS['wrong_task']} ({task})", "\n".join(lines)
    if not backends:
        return "error", "No backend", "\n".join([*lines, "• no backend is registered for this slot"])
    best = min(backends, key=lambda b: _STATE_RANK.get(b["state"], 9))
    state = str(best["state"])
    text = STATE_LABELS.get(state, state)
    if state == "weights_missing":
        missing = [w for w in best.get("weights", []) if not w.get("present")]
        if missing:
            text += f" · {human_bytes(missing[0]['size_bytes'])}"
    return state, text, "\n".join(lines)


def slot_reason(row: dict[str, Any], *, task: str | None = None) -> str:
    """One sentence on the backend that stands for the slot: what it runs on, or what it lacks."""
    backends: list[dict[str, Any]] = list(row.get("backends") or [])
    if not backends:
        return "No backend is registered for this slot."
    usable = [b for b in backends if b["state"] in ("ready", "degraded") and _does_task(b, task)]
    if usable:
        b = usable[0]
        return f"Ready: {b.get('detail') or b.get('title') or b['name']}"
    ready = [b for b in backends if b["state"] in ("ready", "degraded")]
    if ready:
        b = ready[0]
        return f"{b.get('title') or b['name']} does not do {task} (it does {', '.join(b.get('tasks', []))})."
    b = min(backends, key=lambda b: _STATE_RANK.get(b["state"], 9))
    text = f"{STATE_LABELS.get(b['state'], b['state'])}: {b.get('detail', '')}".rstrip()
    missing = [w for w in b.get("weights", []) if not w.get("present")]
    if b["state"] == "weights_missing" and missing:
        text += f". Get it with “amc models download {missing[0]['repo_id']}”."
    return text
