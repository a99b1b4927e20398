"""The model client: the only handle the UI, the CLI and the service use to run model jobs.

:class:`ModelClient` supervises one model worker process (``app.models.worker``, started
with the ``spawn`` method) and talks to it with the messages of :mod:`app.models.protocol`.
It never imports torch.

States (``client.state``): ``starting`` -> ``ready`` <-> ``busy``; when the worker dies
``restarting`` -> ``ready`` again (jobs that were running get ``Failed(kind="worker_died")``
with the exit code or signal; jobs still queued are resubmitted to the new worker);
``dead`` when it cannot be started (protocol mismatch, start failure, crash loop);
``closed`` after :meth:`ModelClient.close`.

Threads: every public method is thread-safe and non-blocking unless it says otherwise
(:meth:`JobHandle.wait`, :meth:`JobHandle.events`, :meth:`ModelClient.wait_ready`,
:meth:`ModelClient.status_report`, :meth:`ModelClient.close`).

Callbacks (``on_event``, ``on_state``) are **called on the client's reader thread**, with
no client lock held: keep them short, never block in them, and hop to your own thread
(e.g. emit a Qt signal) to touch widgets.  Two exceptions, both on the *calling* thread:
the ``Failed`` event of a job the client ends by itself (cancelled before it reached a
worker, submitted to a dead client, pending at :meth:`ModelClient.close`).  State changes
caused by :meth:`ModelClient.submit` (``ready`` -> ``busy``) reach ``on_state`` within
0.2 s.  An exception raised by a callback is logged and swallowed.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Literal

from app import config
from app.models.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Failed,
    FailureKind,
    Hello,
    Job,
    JobEvent,
    ProtocolMismatch,
    Result,
    Shutdown,
    Started,
    StatusReport,
    StatusRequest,
    WorkerError,
    check_hello,
)
from app.models.worker import WorkerOptions, worker_main

__all__ = ["ClientState", "Job", "JobFailed", "JobHandle", "ModelClient", "ProtocolMismatch", "WorkerError"]

log = logging.getLogger("amc.models.client")

ClientState = Literal["starting", "ready", "busy", "dead", "restarting", "closed"]
EventCallback = Callable[["JobHandle", JobEvent], None]
StateCallback = Callable[[ClientState, str], None]

START_TIMEOUT_S = 120.0  # importing torch on a cold disk can take a while
CLOSE_TIMEOUT_S = 2.0
MAX_CRASHES = 3  # this many deaths within CRASH_WINDOW_S -> dead, no more restarts
CRASH_WINDOW_S = 60.0
LOG_ROTATE_BYTES = 5 << 20


class JobFailed(WorkerError):
    """A job ended without a result; ``failed`` holds the worker's (or client's) reason."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.error)
        self.failed = failed
        self.kind: FailureKind = failed.kind


class JobHandle:
    """A submitted job: its events, its outcome, and how to cancel it.

    Thread-safe; any number of threads may iterate :meth:`events` or :meth:`wait`.
    """

    def __init__(self, job: Job, client: ModelClient, on_event: EventCallback | None) -> None:
        self.job = job
        self._client = client
        self._cond = threading.Condition()
        self._events: list[JobEvent] = []
        self._outcome: Result | Failed | None = None
        self._callbacks: list[EventCallback] = [on_event] if on_event is not None else []
        self.started = False  # a worker picked it up (a crash now fails it)
        self.generation = -1  # which worker instance it was sent to
        self.submitted_at = time.perf_counter()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> Result | Failed | None:
        return self._outcome

    def add_callback(self, fn: EventCallback) -> None:
        """Call ``fn(handle, event)`` for every later event (on the client's reader thread)."""
        with self._cond:
            self._callbacks.append(fn)

    def cancel(self) -> None:
        """Ask for cancellation; the handle then ends with ``Failed(kind="cancelled")`` (non-blocking)."""
        self._client._cancel(self)

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Every event of the job, from the first, ending with its Result or Failed.

        Blocks between events; raises ``TimeoutError`` when none arrives in ``timeout`` s.
        """
        i = 0
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda i=i: len(self._events) > i, timeout):
                    raise TimeoutError(f"no event from job {self.job_id} in {timeout} s")
                batch = self._events[i:]
            for ev in batch:
                yield ev
                if isinstance(ev, Result | Failed):
                    return
            i += len(batch)

    def wait(self, timeout: float | None = None) -> Result:
        """Block until the job ends; return its Result or raise :class:`JobFailed` (``TimeoutError``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._outcome is not None, timeout):
                raise TimeoutError(f"job {self.job_id} not finished after {timeout} s")
            outcome = self._outcome
        if isinstance(outcome, Failed):
            raise JobFailed(outcome)
        assert isinstance(outcome, Result)
        return outcome

    def _deliver(self, event: JobEvent) -> bool:
        """Record an event; False when the job had already ended (the event is dropped)."""
        with self._cond:
            if self._outcome is not None:
                return False
            if isinstance(event, Started):
                self.started = True
            if isinstance(event, Result | Failed):
                self._outcome = event
            self._events.append(event)
            self._cond.notify_all()
            callbacks = list(self._callbacks)
        for fn in callbacks:
            try:
                fn(self, event)
            except Exception:
                log.exception("on_event callback failed for job %s", self.job_id)
        return True


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGKILL": " (killed: often the system ran out of memory)",
            "SIGSEGV": " (a crash in native code)",
            "SIGABRT": " (aborted by native code)",
        }.get(name, "")
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class ModelClient:
    """Supervises the model worker and runs jobs on it.

    ``device`` overrides the worker's device choice ("cpu", "cuda", "cuda:1", "mps");
    ``log_path`` is where the worker's stderr and log go (default:
    ``<user data>/logs/model-worker.log``).  With ``start=False`` call :meth:`start` later.
    Jobs submitted before the worker is ready wait in the client and are sent on ready.
    """

    def __init__(
        self,
        *,
        device: str | None = None,
        start: bool = True,
        log_path: str | Path | None = None,
        ram_budget_bytes: int | None = None,
        vram_budget_bytes: int | None = None,
        restart: bool = True,
        on_event: EventCallback | None = None,
        on_state: StateCallback | None = None,
        env: dict[str, str] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        _protocol_version: int = PROTOCOL_VERSION,
    ) -> None:
        self.log_path = Path(log_path) if log_path is not None else config.log_dir() / "model-worker.log"
        self._options = WorkerOptions(
            device=device,
            log_path=str(self.log_path),
            ram_budget_bytes=ram_budget_bytes,
            vram_budget_bytes=vram_budget_bytes,
            protocol_version=_protocol_version,
            env=tuple(sorted((env or {}).items())),
        )
        self._restart = restart
        self._on_event = on_event
        self._on_state = on_state
        self._start_timeout_s = start_timeout_s
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._handles: dict[str, JobHandle] = {}
        self._status_waiters: dict[str, tuple[threading.Event, list[StatusReport]]] = {}
        self._state: ClientState = "starting"
        self._state_cond = threading.Condition(self._lock)
        self._conn: Any = None
        self._proc: Any = None
        self._generation = 0
        self._closed = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._crashes: collections.deque[float] = collections.deque()
        self._state_changes: collections.deque[tuple[ClientState, str]] = collections.deque()
        self.hello: Hello | None = None
        self.last_error: str = ""
        self.restarts = 0
        if start:
            self.start()

    # --- public surface -------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def worker_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> None:
        """Start the worker in the background (non-blocking; idempotent)."""
        with self._lock:
            if self._supervisor is not None or self._closed.is_set():
                return
            self._supervisor = threading.Thread(target=self._supervise, name="amc-model-client", daemon=True)
            self._supervisor.start()

    def wait_ready(self, timeout: float | None = None) -> Hello:
        """Block until the worker has shaken hands; raise :class:`WorkerError` if it is dead/closed."""
        with self._state_cond:
            ok = self._state_cond.wait_for(lambda: self._state in ("ready", "busy", "dead", "closed"), timeout)
            if not ok:
                raise TimeoutError(f"model worker not ready after {timeout} s")
            if self._state in ("dead", "closed"):
                if self._state == "dead" and self.last_error.startswith("model worker speaks protocol"):
                    raise ProtocolMismatch(self.last_error)
                raise WorkerError(self.last_error or f"model worker is {self._state}")
            assert self.hello is not None
            return self.hello

    def submit(self, job: Job, *, on_event: EventCallback | None = None) -> JobHandle:
        """Queue ``job`` on the worker; return its handle (non-blocking).

        On a dead or closed client the handle ends at once with ``Failed``.
        """
        handle = JobHandle(job, self, on_event)
        with self._lock:
            if job.job_id in self._handles:
                raise ValueError(f"job id {job.job_id} already submitted")
            dead = self._state in ("dead", "closed")
            if not dead:
                self._handles[job.job_id] = handle
                if self._state in ("ready", "busy"):
                    self._send_job(handle)
                self._refresh_state()
        if dead:
            self._finish(handle, Failed(job.job_id, self.last_error or f"model worker is {self._state}", "", "error"))
        return handle

    def status_report(self, timeout: float = 2.0) -> StatusReport:
        """Ask the worker what it holds (blocks up to ``timeout`` s)."""
        rid = uuid.uuid4().hex
        ev: threading.Event = threading.Event()
        box: list[StatusReport] = []
        with self._lock:
            if self._state not in ("ready", "busy"):
                raise WorkerError(f"model worker is {self._state}")
            self._status_waiters[rid] = (ev, box)
            self._send(StatusRequest(rid))
        if not ev.wait(timeout):
            with self._lock:
                self._status_waiters.pop(rid, None)
            raise TimeoutError("model worker did not report its status")
        return box[0]

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel every job, stop the worker and the reader thread; blocks at most ~``timeout`` s.

        Safe to call from any thread but the reader thread (i.e. not from a callback), and
        more than once.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state == "closed":
                return
            self._closed.set()
            self._set_state("closed", "closed by the app")
            pending = [h for h in self._handles.values() if not h.done]
            self._handles.clear()
            try:
                self._send(Shutdown())
            except Exception:
                pass
            proc = self._proc
        for h in pending:
            self._finish(h, Failed(h.job_id, "the model client was closed", "", "cancelled"))
        if proc is not None:
            proc.join(max(0.0, deadline - time.monotonic() - 0.4))
            if proc.is_alive():
                proc.terminate()
                proc.join(0.2)
            if proc.is_alive():
                proc.kill()
                proc.join(0.2)
        sup = self._supervisor
        if sup is not None and sup is not threading.current_thread():
            sup.join(max(0.05, deadline - time.monotonic()))
        if sup is None or not sup.is_alive():
            self._flush_states()  # no reader thread left to do it

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _set_state(self, state: ClientState, detail: str = "") -> None:
        """Change state; ``on_state`` runs later, on the reader thread, with no lock held."""
        with self._lock:
            if self._state == state or (self._state == "closed" and state != "closed"):
                return
            self._state = state
            self._state_cond.notify_all()
            self._state_changes.append((state, detail))
        log.info("model client %s%s", state, f": {detail}" if detail else "")

    def _flush_states(self) -> None:
        """Deliver queued state changes to ``on_state`` (reader thread, or close() without one)."""
        while True:
            try:
                state, detail = self._state_changes.popleft()
            except IndexError:
                return
            if self._on_state is not None:
                try:
                    self._on_state(state, detail)
                except Exception:
                    log.exception("on_state callback failed")

    def _refresh_state(self) -> None:
        with self._lock:
            if self._state in ("ready", "busy"):
                busy = any(not h.done for h in self._handles.values())
                self._set_state("busy" if busy else "ready")

    def _send(self, msg: object) -> None:
        conn = self._conn
        if conn is None:
            return
        with self._send_lock:
            conn.send(msg)

    def _send_job(self, handle: JobHandle) -> None:
        handle.generation = self._generation
        try:
            self._send(handle.job)
        except (OSError, EOFError, BrokenPipeError):
            handle.generation = -1  # resent to the next worker once this death is noticed

    def _cancel(self, handle: JobHandle) -> None:
        local = False
        with self._lock:
            if handle.done:
                return
            if self._state in ("ready", "busy") and handle.generation == self._generation:
                try:
                    self._send(Cancel(handle.job_id))
                except (OSError, EOFError, BrokenPipeError):
                    local = True
            else:
                local = True  # never reached a worker
        if local:
            self._finish(handle, Failed(handle.job_id, "cancelled before it started", "", "cancelled"))

    def _finish(self, handle: JobHandle, event: JobEvent) -> None:
        if handle._deliver(event) and self._on_event is not None:
            try:
                self._on_event(handle, event)
            except Exception:
                log.exception("on_event callback failed")
        with self._lock:
            if isinstance(event, Result | Failed) and self._handles.get(handle.job_id) is handle:
                del self._handles[handle.job_id]
            self._refresh_state()

    def _dispatch(self, msg: object) -> None:
        if isinstance(msg, StatusReport):
            with self._lock:
                waiter = self._status_waiters.pop(msg.request_id, None)
            if waiter is not None:
                waiter[1].append(msg)
                waiter[0].set()
            return
        job_id = getattr(msg, "job_id", None)
        with self._lock:
            handle = self._handles.get(job_id) if isinstance(job_id, str) else None
        if handle is None:
            log.debug("event for unknown job dropped: %r", msg)
            return
        self._finish(handle, msg)  # type: ignore[arg-type]

    def _rotate_log(self) -> None:
        try:
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(self.log_path.suffix + ".1"))
        except OSError:
            pass

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _spawn(self) -> tuple[Any, Any]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._rotate_log()
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=worker_main, args=(child_conn, self._options), name="amc-model-worker", daemon=True)
        proc.start()
        child_conn.close()
        return proc, parent_conn

    def _die(self, reason: str) -> None:
        """No more worker: fail every job and refuse new ones."""
        with self._lock:
            self.last_error = reason
            pending = [h for h in self._handles.values() if not h.done]
            self._handles.clear()
        for h in pending:
            self._finish(h, Failed(h.job_id, reason, "", "error"))
        self._set_state("dead", reason)

    def _handshake(self, proc: Any, conn: Any) -> Hello | str:
        deadline = time.monotonic() + self._start_timeout_s
        while not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return f"model worker did not start within {self._start_timeout_s:.0f} s (log: {self.log_path})"
            ready = mp_wait([conn, proc.sentinel], timeout=min(left, 0.2))
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if isinstance(msg, Failed):
                    return msg.error
                if msg is None:
                    proc.join(1.0)
                    return f"model worker {_describe_exit(proc.exitcode)} while starting (log: {self.log_path})"
                try:
                    return check_hello(msg)
                except ProtocolMismatch as exc:
                    return str(exc)
            elif proc.sentinel in ready:
                proc.join(1.0)
                return f"model worker {_describe_exit(proc.exitcode)} while starting (log: {self.log_path})"
        return "closed"

    def _supervise(self) -> None:
        try:
            self._supervise_loop()
        finally:
            self._flush_states()

    def _supervise_loop(self) -> None:
        first = True
        while not self._closed.is_set():
            self._set_state("starting" if first else "restarting")
            self._flush_states()
            try:
                proc, conn = self._spawn()
            except Exception as exc:
                self._die(f"cannot start the model worker: {type(exc).__name__}: {exc}")
                return
            with self._lock:
                self._proc, self._conn = proc, conn
                self._generation += 1
            hello = self._handshake(proc, conn)
            if isinstance(hello, str):
                if proc.is_alive():
                    proc.kill()
                    proc.join(1.0)
                if hello != "closed":
                    self._die(hello)
                return
            with self._lock:
                self.hello = hello
                self._set_state("ready", f"pid {hello.pid} on {hello.device}")
                for h in list(self._handles.values()):  # submitted while (re)starting
                    if not h.done and h.generation != self._generation:
                        self._send_job(h)
                self._refresh_state()
            self._flush_states()
            first = False
            self._read_until_exit(proc, conn)
            if self._closed.is_set():
                break
            proc.join(1.0)
            reason = f"model worker (pid {proc.pid}) {_describe_exit(proc.exitcode)}"
            tail = self._log_tail()
            log.error("%s; log tail:\n%s", reason, tail)
            with self._lock:
                self._conn = None
                running = [h for h in self._handles.values() if not h.done and h.started]
                for h in self._handles.values():
                    if not h.started:
                        h.generation = -1  # resend to the next worker
            for h in running:
                self._finish(h, Failed(
                    h.job_id,
                    f"{reason} while running this job; the worker is being restarted (log: {self.log_path})",
                    tail, "worker_died",
                ))
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > CRASH_WINDOW_S:
                self._crashes.popleft()
            if not self._restart or len(self._crashes) >= MAX_CRASHES:
                why = "restarts are off" if not self._restart else f"{len(self._crashes)} crashes within {CRASH_WINDOW_S:.0f} s"
                self._die(f"{reason}; not restarting ({why}); see {self.log_path}")
                return
            self.restarts += 1
        conn = self._conn
        if conn is not None:
            conn.close()

    def _read_until_exit(self, proc: Any, conn: Any) -> None:
        while True:
            self._flush_states()
            ready = mp_wait([conn, proc.sentinel], timeout=0.2)
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return
                self._dispatch(msg)
                continue
            if proc.sentinel in ready:
                # drain what the worker sent before it went
                while True:
                    try:
                        if not conn.poll(0):
                            break
                        self._dispatch(conn.recv())
                    except (EOFError, OSError):
                        break
                return
            if self._closed.is_set():
                return
