"""The model worker: a ``multiprocessing`` spawn child that owns torch and every model.

Structure (inside the child):

- the *control thread* (the child's main thread) reads commands from the pipe and never
  runs model code, so a :class:`~app.models.protocol.Cancel` lands while a job runs;
- the *job thread* takes jobs one at a time from a priority queue (higher ``priority``
  first, then submission order), resolves slot -> backend through the registry and runs
  it; ``JobContext.progress`` raises :class:`Cancelled` once the job is flagged;
- a :class:`ModelCache` keeps loaded models under separate RAM and VRAM budgets and evicts
  the least recently used entries.

The child's stderr (fd 2, so C-level crash output and faulthandler traces too) and its
``logging`` go to a log file.  Nothing here imports torch at module level: this module is
imported by the client process to name the spawn target.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.models.backends.base import Cancelled, JobContext
from app.models.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Failed,
    Hello,
    Job,
    Progress,
    Result,
    Shutdown,
    Started,
    StatusReport,
    StatusRequest,
)

log = logging.getLogger("amc.worker")

DEVICE_ENV = "AMC_DEVICE"
RAM_BUDGET_ENV = "AMC_CACHE_RAM_MB"
VRAM_BUDGET_ENV = "AMC_CACHE_VRAM_MB"
_VALID_DEVICE_PREFIXES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class WorkerOptions:
    """How the client wants the worker set up (picklable; passed to the spawn target)."""

    device: str | None = None  # override; else AMC_DEVICE; else CUDA > MPS > CPU
    log_path: str | None = None
    ram_budget_bytes: int | None = None
    vram_budget_bytes: int | None = None
    protocol_version: int = PROTOCOL_VERSION  # tests set another to check the handshake
    env: tuple[tuple[str, str], ...] = ()  # extra environment for the child


def _torch_version() -> str | None:
    # from the package metadata: importing torch just for this would slow every start
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def choose_device(override: str | None = None) -> tuple[str, str]:
    """``(device, note)``: the override (arg, then ``AMC_DEVICE``) if usable, else CUDA > MPS > CPU.

    ``note`` says why the device differs from the override ("" when it does not).
    """
    want = (override or os.environ.get(DEVICE_ENV) or "").strip().lower() or None
    if want is not None and not want.startswith(_VALID_DEVICE_PREFIXES):
        return "cpu", f"unknown device {want!r} (use cpu, cuda, cuda:N or mps); using cpu"
    if want == "cpu":
        return "cpu", ""  # no need to import torch (seconds) to know that
    try:
        import torch  # worker process only
    except ImportError:
        note = f"{want} needs torch, which is not installed; using cpu" if want not in (None, "cpu") else ""
        return "cpu", note
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if want is None:
        return ("cuda" if cuda else "mps" if mps else "cpu"), ""
    if want.startswith("cuda"):
        index = int(want.split(":", 1)[1]) if ":" in want else 0
        if cuda and index < torch.cuda.device_count():
            return want, ""
        return "cpu", f"{want} asked for but not available; using cpu"
    if want == "mps" and not mps:
        return "cpu", "mps asked for but not available; using cpu"
    return want, ""


def _total_ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _total_vram_bytes(device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    import torch  # worker process only

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return int(torch.cuda.get_device_properties(index).total_memory)


class ModelCache:
    """Loaded models under two LRU memory budgets (RAM for cpu, VRAM for cuda/mps).

    ``get(key, loader, device=...)`` returns the cached model or calls ``loader() ->
    (model, size_bytes)``, then evicts least-recently-used entries of the same pool until
    the total fits the budget.  A model larger than its whole budget is returned but not
    kept.  Job thread only (the control thread reads :meth:`snapshot`, under the lock).
    """

    def __init__(self, *, ram_budget_bytes: int, vram_budget_bytes: int) -> None:
        self.budgets = {"ram": ram_budget_bytes, "vram": vram_budget_bytes}
        self._entries: OrderedDict[tuple[str, str], tuple[Any, int, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions: list[str] = []

    @staticmethod
    def pool_of(device: str) -> str:
        return "vram" if device.startswith(("cuda", "mps")) else "ram"

    def used(self, pool: str) -> int:
        with self._lock:
            return sum(size for _, size, p in self._entries.values() if p == pool)

    def keys(self) -> list[str]:
        with self._lock:
            return [f"{k}@{d}" for k, d in self._entries]

    def get(self, key: str, loader: Callable[[], tuple[Any, int]], *, device: str) -> Any:
        pool = self.pool_of(device)
        ck = (key, device)
        with self._lock:
            hit = self._entries.get(ck)
            if hit is not None:
                self._entries.move_to_end(ck)
                return hit[0]
        model, size_bytes = loader()
        size_bytes = int(size_bytes)
        budget = self.budgets[pool]
        with self._lock:
            if size_bytes > budget:
                log.warning("model %s (%d MB) exceeds the %s budget (%d MB); not cached",
                            key, size_bytes >> 20, pool, budget >> 20)
                return model
            used = sum(s for _, s, p in self._entries.values() if p == pool)
            for old in list(self._entries):
                if used + size_bytes <= budget:
                    break
                _, old_size, old_pool = self._entries[old]
                if old_pool != pool:
                    continue
                del self._entries[old]
                used -= old_size
                self.evictions.append(old[0])
                log.info("evicted model %s@%s (%d MB) from the %s cache", old[0], old[1], old_size >> 20, pool)
            self._entries[ck] = (model, size_bytes, pool)
        if pool == "vram" and "torch" in sys.modules:
            import torch  # already loaded by a backend

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return model


class _Worker:
    def __init__(self, conn: Any, options: WorkerOptions) -> None:
        self.conn = conn
        self.options = options
        self.send_lock = threading.Lock()
        self.cond = threading.Condition()
        self.queue: list[tuple[int, int, Job]] = []
        self.counter = itertools.count()
        self.cancelled: set[str] = set()
        self.running: Job | None = None
        self.running_cancel = threading.Event()
        self.stopping = False
        self.device, self.device_note = choose_device(options.device)
        ram = options.ram_budget_bytes
        if ram is None:
            env = os.environ.get(RAM_BUDGET_ENV)
            ram = int(float(env) * (1 << 20)) if env else _total_ram_bytes() // 2
        vram = options.vram_budget_bytes
        if vram is None:
            env = os.environ.get(VRAM_BUDGET_ENV)
            vram = int(float(env) * (1 << 20)) if env else int(_total_vram_bytes(self.device) * 0.8)
        self.cache = ModelCache(ram_budget_bytes=ram, vram_budget_bytes=vram)

    def send(self, msg: object) -> None:
        with self.send_lock:
            try:
                self.conn.send(msg)
            except (OSError, EOFError, BrokenPipeError):
                pass  # the client is gone; the control thread will notice and exit

    # --- control thread -----------------------------------------------------------------

    def serve(self) -> None:
        self.send(Hello(self.options.protocol_version, self.device, _torch_version(), os.getpid(), self.device_note))
        log.info("worker %d ready on %s (%s)", os.getpid(), self.device, self.device_note or "as asked")
        job_thread = threading.Thread(target=self._job_loop, name="amc-job", daemon=True)
        job_thread.start()
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                log.info("client pipe closed; exiting")
                break
            if isinstance(msg, Job):
                with self.cond:
                    heapq.heappush(self.queue, (-msg.priority, next(self.counter), msg))
                    self.cond.notify()
            elif isinstance(msg, Cancel):
                self._cancel(msg.job_id)
            elif isinstance(msg, StatusRequest):
                self.send(self._status(msg.request_id))
            elif isinstance(msg, Shutdown):
                log.info("shutdown requested")
                break
            else:
                log.warning("ignoring unknown message %r", type(msg).__name__)
        with self.cond:
            self.stopping = True
            busy = self.running is not None
            self.running_cancel.set()
            self.cond.notify()
        if busy:  # give a running job's cancel a moment to land; the client waits ~2 s at most
            job_thread.join(timeout=0.5)

    def _cancel(self, job_id: str) -> None:
        with self.cond:
            if self.running is not None and self.running.job_id == job_id:
                self.running_cancel.set()
                return
            for i, (_, _, job) in enumerate(self.queue):
                if job.job_id == job_id:
                    self.queue.pop(i)
                    heapq.heapify(self.queue)
                    self.send(Failed(job_id, "cancelled before it started", "", "cancelled"))
                    return

    def _status(self, request_id: str) -> StatusReport:
        with self.cond:
            running = self.running.job_id if self.running is not None else None
            queued = tuple(j.job_id for _, _, j in sorted(self.queue))
        return StatusReport(
            request_id, self.device, running, queued, tuple(self.cache.keys()),
            self.cache.used("ram"), self.cache.used("vram"), self.cache.budgets["ram"], self.cache.budgets["vram"],
        )

    # --- job thread ---------------------------------------------------------------------

    def _job_loop(self) -> None:
        # import the registry and backend modules now, off the control thread, so the
        # first job does not pay for it
        try:
            from app.models import registry

            registry.slot_entries()
        except Exception:
            log.exception("registry warm-up failed")
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                _, _, job = heapq.heappop(self.queue)
                self.running = job
                self.running_cancel = threading.Event()
                cancel_flag = self.running_cancel
            try:
                self.send(self._run(job, cancel_flag))
            finally:
                with self.cond:
                    self.running = None

    def _run(self, job: Job, cancel_flag: threading.Event) -> Result | Failed:
        from app.models import registry, weights

        t0 = time.perf_counter()
        try:
            backend, reason = registry.resolve(
                job.slot, device=self.device, backend=job.backend, task=job.task, find_weights=weights.find_weights
            )
        except Exception as exc:
            return Failed(job.job_id, str(exc), traceback.format_exc(), "error")
        self.send(Started(job.job_id, job.slot, backend.key()))

        def progress(fraction: float, message: str = "") -> None:
            if cancel_flag.is_set():
                raise Cancelled(job.job_id)
            self.send(Progress(job.job_id, float(fraction), message))

        if job.output_dir:
            out_dir = Path(job.output_dir)
        else:  # no folder given: a per-job one under the rebuildable cache
            from app import config

            out_dir = config.cache_dir() / "jobs" / job.job_id
        ctx = JobContext(
            device=self.device,
            work_dir=out_dir,
            progress=progress,
            is_cancelled=cancel_flag.is_set,
            seed=job.seed,
            cache_get=lambda key, loader: self.cache.get(key, loader, device=self.device),
            find_weights=weights.find_weights,
        )
        plan = {"slot": job.slot, "backend": backend.key(), "task": job.task, "params": dict(job.params), "reason": reason}
        try:
            if cancel_flag.is_set():
                raise Cancelled(job.job_id)
            out_dir.mkdir(parents=True, exist_ok=True)
            output = backend.run(job.task, job.params, {k: Path(v) for k, v in job.inputs.items()}, ctx)
        except Cancelled:
            return Failed(job.job_id, "cancelled", "", "cancelled")
        except Exception as exc:
            log.exception("job %s (%s/%s) failed", job.job_id, job.slot, backend.key())
            return Failed(job.job_id, f"{type(exc).__name__}: {exc}", traceback.format_exc(), "error")
        if cancel_flag.is_set():
            return Failed(job.job_id, "cancelled", "", "cancelled")
        metrics = dict(output.metrics)
        metrics.setdefault("elapsed_s", time.perf_counter() - t0)
        return Result(job.job_id, {k: str(v) for k, v in output.outputs.items()}, metrics, plan)


def _setup_logging(log_path: str | None) -> None:
    if log_path is None:
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    f = open(log_path, "a", buffering=1, encoding="utf-8")  # kept open for the process lifetime
    # fd-level redirect so crashes in C code (and faulthandler) land in the log too
    os.dup2(f.fileno(), 2)
    sys.stderr = f
    import faulthandler

    faulthandler.enable(file=f)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(threadName)s %(levelname)s %(name)s: %(message)s",
        stream=f,
        force=True,
    )


def worker_main(conn: Any, options: WorkerOptions) -> None:
    """Spawn target: set up logging and the device, handshake, serve until told to stop."""
    for k, v in options.env:
        os.environ[k] = v
    _setup_logging(options.log_path)
    try:
        worker = _Worker(conn, options)
    except Exception as exc:
        log.exception("worker failed to start")
        try:
            conn.send(Failed("", f"model worker failed to start: {type(exc).__name__}: {exc}",
                             traceback.format_exc(), "worker_died"))
        except (OSError, EOFError):
            pass  # the client is gone already
        return
    worker.serve()
    log.info("worker %d exiting", os.getpid())
    logging.shutdown()
    sys.stderr.flush()
    # skip interpreter teardown (module finalizers of torch & co. take ~1 s) and any
    # daemon job thread still busy warming up: everything worth keeping is flushed
    os._exit(0)
