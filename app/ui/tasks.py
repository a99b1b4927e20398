"""Background work for the Studio: run engine jobs off the UI thread, report on it.

:class:`TaskRunner` runs a callable either on a Python thread (``mode="thread"``, the
default: cheap to start, shares memory) or in a child process started with the
``spawn`` context (``mode="process"``: the child has its own GIL, so even code that
holds the GIL for long cannot stall the UI).  Either way the callable receives a
keyword argument ``progress(fraction, message)``; calling it after
:meth:`TaskHandle.cancel` raises :class:`app.engine.mastering.chain.Cancelled`,
which is how a job stops cooperatively (the engine calls its progress callback once
per block).  A process job that ignores the request is terminated after
:data:`CANCEL_GRACE_S`.

Every signal is emitted on the UI thread (the worker side only emits a private
signal with a queued connection), so slots may touch widgets directly.

Which mode for what was chosen by measurement (``benchmarks/ui_lag.py``): see the
module docstring of :mod:`app.ui.mastering_panel` for the figures.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from PySide6.QtCore import QObject, QTimer, Signal

from app.engine.errors import AmcError
from app.engine.mastering.chain import Cancelled

__all__ = ["CANCEL_GRACE_S", "PROGRESS_INTERVAL_S", "TaskHandle", "TaskMode", "TaskRunner", "TaskState"]

TaskMode = Literal["thread", "process"]
TaskState = Literal["running", "finished", "failed", "cancelled"]

#: Progress reports are coalesced to at most one per this many seconds (plus the last).
PROGRESS_INTERVAL_S = 0.05
#: Process jobs run this much nicer than the UI (POSIX), so the UI wins a busy CPU.
PROCESS_NICENESS = 5
#: A process job still running this long after cancel() is terminated.
CANCEL_GRACE_S = 3.0
_POLL_S = 0.05
_DRAIN_MS = 15  # how often the UI thread collects worker events


@dataclass
class TaskHandle:
    """One submitted job, as a jobs view shows it.

    Attributes are updated on the UI thread only (when the runner's signals fire);
    :meth:`cancel` may be called from any thread.
    """

    task_id: str
    name: str
    mode: TaskMode
    state: TaskState = "running"
    fraction: float = 0.0
    message: str = ""
    started_s: float = field(default_factory=time.monotonic)
    ended_s: float | None = None
    result: Any = field(default=None, repr=False)
    error: str | None = None
    details: str | None = None
    _cancel: Any = field(default_factory=threading.Event, repr=False)  # threading.Event or mp Event
    _cancel_requested_s: float | None = field(default=None, repr=False)

    def cancel(self) -> None:
        """Ask the job to stop (non-blocking; the ``cancelled`` signal says when it did)."""
        if self._cancel_requested_s is None:
            self._cancel_requested_s = time.monotonic()
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def elapsed_s(self) -> float:
        return (self.ended_s or time.monotonic()) - self.started_s


class _Throttle:
    """Progress callback given to the job: checks cancel, coalesces reports."""

    def __init__(self, cancel: Any, send: Callable[[float, str], None]) -> None:
        self._cancel = cancel
        self._send = send
        self._last = 0.0
        self._last_msg = ""

    def __call__(self, fraction: float, message: str) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")
        now = time.monotonic()
        if now - self._last >= PROGRESS_INTERVAL_S or message != self._last_msg or fraction >= 1.0:
            self._last, self._last_msg = now, message
            self._send(float(fraction), str(message))


def _describe(exc: BaseException) -> tuple[str, str]:
    """One line for the user (an AmcError's message is written for them) + the trace."""
    details = "".join(traceback.format_exception(exc))
    if isinstance(exc, AmcError):
        return str(exc), details
    return f"{type(exc).__name__}: {exc}", details


def _process_main(fn: Callable[..., Any], args: tuple, kwargs: dict, events: Any, cancel: Any) -> None:
    """Entry point of a process job (spawned child): runs ``fn``, reports on ``events``."""
    if hasattr(os, "nice"):
        # Background work yields the CPU to the UI when cores are short (2-core laptops).
        with contextlib.suppress(OSError):
            os.nice(PROCESS_NICENESS)
    progress = _Throttle(cancel, lambda f, m: events.put(("progress", (f, m))))
    try:
        result = fn(*args, progress=progress, **kwargs)
    except Cancelled:
        events.put(("cancelled", None))
    except BaseException as exc:
        events.put(("failed", _describe(exc)))
    else:
        try:
            events.put(("finished", result))
        except Exception as exc:
            events.put(("failed", _describe(exc)))
    # Let the queue's feeder thread flush before the child exits.
    events.close()
    events.join_thread()


class TaskRunner(QObject):
    """Runs jobs in the background and reports on the UI thread.

    Signals
    -------
    started(task_id, name)
    progress(task_id, fraction 0..1, message)
    finished(task_id, result)
    failed(task_id, message (one line for the user), details (traceback))
    cancelled(task_id)

    Thread rules: create, :meth:`submit` and :meth:`shutdown` on the UI thread.
    """

    started = Signal(str, str)
    progress = Signal(str, float, str)
    finished = Signal(str, object)
    failed = Signal(str, str, str)
    cancelled = Signal(str)
    # Worker side -> UI thread (queued): task id, kind, payload.

    _ids = itertools.count(1)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._handles: dict[str, TaskHandle] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._closed = False
        self._mp = multiprocessing.get_context("spawn")
        # Workers never touch a Qt object: they put events on a plain queue that a UI-side
        # timer drains (the Friture pattern). A runner deleted while a job still runs just
        # stops draining; an emit into a half-destroyed QObject from a thread could crash.
        self._events: queue.SimpleQueue[tuple[str, str, Any]] = queue.SimpleQueue()
        self._drain_timer = QTimer(self)
        self._drain_timer.setInterval(_DRAIN_MS)
        self._drain_timer.timeout.connect(self._drain)
        self._drain_timer.start()

    # ------------------------------------------------------------------ API
    def submit(self, name: str, fn: Callable[..., Any], *args: Any, mode: TaskMode = "thread", **kwargs: Any) -> TaskHandle:
        """Start ``fn(*args, progress=progress, **kwargs)`` in the background.

        ``mode="process"`` needs ``fn``, the arguments and the result to be picklable
        (module-level functions, dataclasses, arrays).
        """
        if self._closed:
            raise RuntimeError("the task runner has been shut down")
        task_id = f"task-{next(self._ids)}"
        if mode == "thread":
            handle = TaskHandle(task_id, name, mode)
            t = threading.Thread(
                target=self._thread_main, args=(handle, fn, args, kwargs), name=f"amc-{task_id}", daemon=True
            )
        elif mode == "process":
            handle = TaskHandle(task_id, name, mode, _cancel=self._mp.Event())
            t = threading.Thread(
                target=self._process_monitor, args=(handle, fn, args, kwargs), name=f"amc-{task_id}-monitor", daemon=True
            )
        else:
            raise ValueError(f"unknown task mode {mode!r}")
        self._handles[task_id] = handle
        self._threads[task_id] = t
        self.started.emit(task_id, name)
        t.start()
        return handle

    def handle(self, task_id: str) -> TaskHandle:
        return self._handles[task_id]

    def handles(self) -> list[TaskHandle]:
        """Every job submitted (oldest first), for a jobs view."""
        return list(self._handles.values())

    def active(self) -> list[TaskHandle]:
        return [h for h in self._handles.values() if not h.done]

    def forget(self, task_id: str) -> None:
        """Drop a finished job from :meth:`handles` (and its result from memory)."""
        h = self._handles.get(task_id)
        if h is not None and h.done:
            del self._handles[task_id]
            self._threads.pop(task_id, None)

    def forget_done(self) -> None:
        """Drop finished/failed/cancelled jobs from :meth:`handles`."""
        for tid in [t for t, h in self._handles.items() if h.done]:
            del self._handles[tid]
            self._threads.pop(tid, None)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Cancel everything and wait up to ``timeout_s`` for the workers to end.

        Process jobs are terminated if they do not stop; a thread job that ignores
        cancel is left to die with the process (it is a daemon thread).
        """
        self._closed = True
        for h in self._handles.values():
            if not h.done:
                h.cancel()
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads.values()):
            t.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ worker side
    def _thread_main(self, handle: TaskHandle, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        tid = handle.task_id
        progress = _Throttle(handle._cancel, lambda f, m: self._post(tid, "progress", (f, m)))
        try:
            result = fn(*args, progress=progress, **kwargs)
        except Cancelled:
            self._post(tid, "cancelled", None)
        except BaseException as exc:
            self._post(tid, "failed", _describe(exc))
        else:
            self._post(tid, "finished", result)

    def _process_monitor(self, handle: TaskHandle, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        tid = handle.task_id
        events = self._mp.Queue()
        proc = self._mp.Process(
            target=_process_main, args=(fn, args, kwargs, events, handle._cancel), name=f"amc-{tid}", daemon=True
        )
        try:
            proc.start()
        except Exception as exc:
            self._post(tid, "failed", _describe(exc))
            return
        final: tuple[str, Any] | None = None
        try:
            while final is None:
                try:
                    kind, payload = events.get(timeout=_POLL_S)
                except queue.Empty:
                    if not proc.is_alive():
                        with contextlib.suppress(queue.Empty):  # the last messages may still be in the pipe
                            while final is None:
                                kind, payload = events.get(timeout=0.5)
                                final = (kind, payload) if kind != "progress" else None
                        if final is None:
                            if handle.cancel_requested:
                                final = ("cancelled", None)
                            else:
                                final = ("failed", (f"the worker process ended unexpectedly (exit code {proc.exitcode})", ""))
                    elif handle._cancel_requested_s is not None and time.monotonic() - handle._cancel_requested_s > CANCEL_GRACE_S:
                        proc.terminate()
                        proc.join(1.0)
                        if proc.is_alive():
                            proc.kill()
                        final = ("cancelled", None)
                    continue
                if kind == "progress":
                    self._post(tid, kind, payload)
                else:
                    final = (kind, payload)
        finally:
            proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
            events.close()
            events.cancel_join_thread()
        self._post(tid, final[0], final[1])

    def _post(self, task_id: str, kind: str, payload: Any) -> None:
        """Any thread: queue an event for the UI thread."""
        self._events.put((task_id, kind, payload))

    # ------------------------------------------------------------------ UI thread
    def _drain(self) -> None:
        while True:
            try:
                task_id, kind, payload = self._events.get_nowait()
            except queue.Empty:
                return
            self._on_event(task_id, kind, payload)

    def _on_event(self, task_id: str, kind: str, payload: Any) -> None:
        h = self._handles.get(task_id)
        if h is None:
            return
        if kind == "progress":
            if h.done:
                return
            h.fraction, h.message = payload
            self.progress.emit(task_id, h.fraction, h.message)
            return
        if h.done:  # a late duplicate
            return
        h.ended_s = time.monotonic()
        if kind == "finished":
            h.state, h.result, h.fraction = "finished", payload, 1.0
            self.finished.emit(task_id, payload)
        elif kind == "failed":
            h.state = "failed"
            h.error, h.details = payload
            self.failed.emit(task_id, h.error, h.details)
        else:
            h.state = "cancelled"
            self.cancelled.emit(task_id)
