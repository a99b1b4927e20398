"""Jobs: what the API queues and who runs them.

The seam: the API only calls :class:`JobRunner` (``submit``/``shutdown``); a job's work is
:func:`run_job`, a plain function of a job id that reads and writes the database and storage,
so the same function runs in this process's thread pool (``LocalJobRunner``, embedded mode)
or in a Celery worker (``app.service.worker``, remote mode).

``master`` runs the engine's ``master_file`` in this process. ``generate``, ``enhance`` and
``style_transfer`` run the model chain: :class:`app.models.orchestrator.Orchestrator` plans
the workflow (which slot, which backend, why) and runs its model steps on the model worker
through a :class:`ModelChain` (one lazily started :class:`~app.models.client.ModelClient`
per process, closed at shutdown). The run's plan, with its per-step figures, is stored in the
job's report (``report["plan"]``); a slot with no ready backend fails the job with the
registry's reason (e.g. the weights that are missing), never a generic error.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.service import scratch
from app.service.models import Job, utcnow
from app.service.storage import Storage, key

if TYPE_CHECKING:
    from app.models.client import ModelClient
    from app.models.orchestrator import Request as OrchestratorRequest
    from app.service.settings import Settings

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
#: Operations the engine runs in this process (no model worker needed).
ENGINE_OPERATIONS = ("master",)
#: Operations the model chain runs: job operation -> orchestrator workflow.
MODEL_WORKFLOWS: dict[str, str] = {"generate": "generate", "enhance": "enhance", "style_transfer": "style_transfer"}
OPERATIONS = (*ENGINE_OPERATIONS, *MODEL_WORKFLOWS)
MODEL_WORKER_UNAVAILABLE = "model worker not available: {what} needs the model chain's worker: {why}"
MAX_ATTEMPTS = 3
#: This process, as a job's lease holder: host, pid and a random part (a pid is reused).
INSTANCE_ID = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
#: A running job's lease (``JobBudget.lease_s``) is renewed by its runner every quarter of
#: it; a job whose lease ran out has lost its runner (killed, or its machine gone).
_PROGRESS_WRITE_S = 0.25
#: How long a job waits for the model worker to start (importing torch on a cold disk is slow).
WORKER_START_TIMEOUT_S = 180.0


class JobCancelled(Exception):
    pass


class JobInterrupted(Exception):
    """The runner is shutting down under a running job: leave it for :func:`recover`."""


class JobOverBudget(Exception):
    """The job used more scratch space or time than its budget allows (message: which)."""


@dataclass(frozen=True)
class JobBudget:
    """What one job may use: bytes under its scratch folder, and wall-clock seconds."""

    scratch_bytes: int = 4 << 30
    time_limit_s: float = 1800.0
    lease_s: float = 60.0  # the running job's lease (renewed every quarter of it)


def job_budget(settings: Settings) -> JobBudget:
    return JobBudget(scratch_bytes=settings.job_scratch_bytes, time_limit_s=settings.job_time_limit_s,
                     lease_s=settings.job_lease_s)  # fmt: skip


#: How often a running job's scratch folder is measured.
_BUDGET_CHECK_S = 0.25


class _BudgetWatch:
    """Measures a job's scratch folder and time; :meth:`over` says why the job is over
    budget (None while it is not). Called from the job's progress callback or its watch
    thread; the measurement runs at most every ``_BUDGET_CHECK_S``."""

    def __init__(self, folder: Path, budget: JobBudget) -> None:
        self.folder, self.budget = folder, budget
        self.t0 = time.monotonic()
        self._checked = 0.0
        self.reason: str | None = None

    def over(self) -> str | None:
        now = time.monotonic()
        if self.reason is None and now - self._checked >= _BUDGET_CHECK_S:
            self._checked = now
            if now - self.t0 > self.budget.time_limit_s:
                self.reason = f"the job ran over its time limit of {self.budget.time_limit_s:g} s"
            elif (used := scratch.folder_bytes(self.folder)) > self.budget.scratch_bytes:
                self.reason = (f"the job used {used / 2**20:.0f} MB of scratch space; "
                               f"its limit is {self.budget.scratch_bytes / 2**20:.0f} MB")  # fmt: skip
        return self.reason

    def check(self) -> None:
        if (reason := self.over()) is not None:
            raise JobOverBudget(reason)


class JobRunner(Protocol):
    def submit(self, job_id: str) -> None: ...
    def shutdown(self) -> None: ...


class ModelChain:
    """This process's handle on the model chain: one :class:`~app.models.client.ModelClient`,
    started by the first job that needs it (never at import or app start), restarted when
    it died, closed by :meth:`close`. Thread-safe."""

    def __init__(self, device: str | None = None, start_timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        self.device, self.start_timeout_s = device, start_timeout_s
        self._lock = threading.Lock()
        self._client: ModelClient | None = None
        self.closing = threading.Event()

    def client(self) -> ModelClient:
        """The ready client (starting it if needed); raises ``WorkerError``/``TimeoutError``."""
        from app.models.client import ModelClient

        with self._lock:
            if self.closing.is_set():
                raise JobInterrupted
            c = self._client
            if c is None or c.state in ("dead", "closed"):
                if c is not None:
                    c.close()
                c = self._client = ModelClient(device=self.device or None)
        c.wait_ready(self.start_timeout_s)
        return c

    def describe(self) -> dict[str, Any]:
        """The worker's state for agent/status: not started, starting, ready, busy, dead."""
        c = self._client
        if c is None:
            return {"state": "not_started", "reason": "starts with the first model job"}
        out: dict[str, Any] = {"state": c.state}
        if c.hello is not None:
            out["device"] = c.hello.device
        if c.last_error:
            out["reason"] = c.last_error
        return out

    def close(self) -> None:
        self.closing.set()
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            c.close()


def _set(factory: sessionmaker[Session], job_id: str, **values: Any) -> Job | None:
    with factory() as s, s.begin():
        job = s.get(Job, job_id)
        if job is None:
            return None
        for k, v in values.items():
            setattr(job, k, v)
        if job.status in TERMINAL:
            job.lease_owner, job.lease_expires_at = None, None
        job.updated_at = utcnow()
        return job


def run_job(job_id: str, factory: sessionmaker[Session], storage: Storage, chain: ModelChain | None = None,
            budget: JobBudget | None = None) -> str:  # fmt: skip
    """Run one queued job to a terminal state; returns that state. Safe to call twice.

    ``chain`` runs the model workflows; without one they fail with ``model_worker_unavailable``.
    ``budget`` bounds its scratch space and time; over it, the job fails with ``over_budget``.
    Returns ``"interrupted"`` (the job left ``running``) when the chain shut down under it.
    """
    with factory() as s, s.begin():
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or job.status in TERMINAL:
            return job.status if job else "missing"
        now = utcnow()
        lease = job.lease_expires_at
        if job.status == "running" and job.lease_owner not in (None, INSTANCE_ID) and lease is not None and lease > now:
            # Another live process runs it (a task delivered twice): never run a job twice at once.
            return "leased"
        if job.cancel_requested:
            job.status, job.message, job.updated_at = "cancelled", "cancelled before start", now
            return "cancelled"
        job.status, job.attempts, job.updated_at = "running", job.attempts + 1, now
        lease_s = (budget or JobBudget()).lease_s
        job.lease_owner, job.lease_expires_at = INSTANCE_ID, now + timedelta(seconds=lease_s)
        job.message = "starting"
        params, operation, input_key = json.loads(job.params), job.operation, job.input_key
    with _Heartbeat(job_id, factory, lease_s):
        return _run_claimed(job_id, operation, params, input_key, factory, storage, chain, budget)


class _Ticker:
    """A daemon thread that calls :meth:`tick` every ``period_s`` while the ``with`` block
    runs; a failing tick is logged and the next one retries."""

    what = "tick"

    def __init__(self, name: str, period_s: float) -> None:
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self.tick()
            except Exception:  # a database blip: the next tick retries
                log.warning("%s: %s failed", self._thread.name, self.what, exc_info=True)

    def tick(self) -> None:
        raise NotImplementedError


class _Heartbeat(_Ticker):
    """Renews the job's lease every quarter of its length while this process runs it."""

    what = "lease renewal"

    def __init__(self, job_id: str, factory: sessionmaker[Session], lease_s: float) -> None:
        super().__init__(f"amc-lease-{job_id[:8]}", lease_s / 4)
        self.job_id, self.factory, self.lease_s = job_id, factory, lease_s

    def tick(self) -> None:
        with self.factory() as s, s.begin():
            s.execute(update(Job).where(Job.id == self.job_id, Job.lease_owner == INSTANCE_ID,
                                        Job.status == "running")
                      .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_s)))  # fmt: skip


def _run_claimed(job_id: str, operation: str, params: dict[str, Any], input_key: str | None,
                 factory: sessionmaker[Session], storage: Storage, chain: ModelChain | None,
                 budget: JobBudget | None) -> str:  # fmt: skip
    if operation in MODEL_WORKFLOWS:
        if chain is None:
            _set(factory, job_id, status="failed", error_code="model_worker_unavailable", message="failed",
                 error=MODEL_WORKER_UNAVAILABLE.format(what=operation, why="this runner has no model chain"))  # fmt: skip
            return "failed"
        return _run_model_job(job_id, operation, params, input_key, factory, storage, chain, budget or JobBudget())
    if operation not in ENGINE_OPERATIONS or input_key is None:
        _set(factory, job_id, status="failed", error_code="invalid_request", message="failed",
             error=f"unknown operation {operation!r} or no input audio")  # fmt: skip
        return "failed"
    try:
        report = _master(job_id, params, input_key, factory, storage, budget or JobBudget())
    except JobCancelled:
        _set(factory, job_id, status="cancelled", message="cancelled")
        return "cancelled"
    except JobOverBudget as e:
        _set(factory, job_id, status="failed", error_code="over_budget", error=str(e), message="failed")
        return "failed"
    except Exception as e:  # the job fails; the service keeps running
        from app.engine.errors import AmcError

        if isinstance(e, AmcError):
            code, error = "processing_error", public_error(e)
        else:
            log.exception("job %s crashed", job_id)
            code, error = "internal_error", "the job failed on the server; the error is in the service's log"
        _set(factory, job_id, status="failed", error_code=code, error=error, message="failed")
        return "failed"
    _set(factory, job_id, status="succeeded", progress=1.0, message="done", error_code=None, error=None,
         report=json.dumps(report), result_key=key("jobs", job_id, "result.wav"))  # fmt: skip
    return "succeeded"


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"]+)+[\\/]([^\\/\s'\"]+)")


def public_error(e: BaseException) -> str:
    """``e``'s message for the job's owner: server paths cut to their file name."""
    return _PATH.sub(lambda m: m.group(1), str(e) or type(e).__name__)[:2000]


# --- the model chain ----------------------------------------------------------------------------


def chain_request(operation: str, params: dict[str, Any], input_path: Path | None, output_path: Path,
                  work_dir: Path) -> OrchestratorRequest:  # fmt: skip
    """The orchestrator request for a job: the seed's body/form fields, field for field."""
    from app.models.orchestrator import Request

    common: dict[str, Any] = {
        "workflow": MODEL_WORKFLOWS[operation], "output_path": str(output_path), "work_dir": str(work_dir),
        "style": params.get("style") or "balanced", "level": params.get("enhancement_level") or "moderate",
        "target": params.get("target") or "streaming", "output_format": "wav24",
    }  # fmt: skip
    if operation == "generate":
        return Request(prompt=params.get("prompt", ""), genre=params.get("genre") or "", mood=params.get("mood") or "",
                       duration_s=float(params["duration"]) if params.get("duration") is not None else None,
                       **common)  # fmt: skip
    return Request(input_path=str(input_path) if input_path else None,
                   target_genre=params.get("target_genre") or "", **common)  # fmt: skip


class _Watch(_Ticker):
    """Between the orchestrator and the job row: the run's progress goes to the database every
    ``_PROGRESS_WRITE_S`` (so the WebSocket shows it) and a cancel request (or the runner
    shutting down) sets the orchestrator's cancel event. ``progress`` is called on the model
    client's reader thread, so it only records; a thread of its own does the I/O."""

    what = "progress write"

    def __init__(self, job_id: str, factory: sessionmaker[Session], chain: ModelChain,
                 budget: _BudgetWatch | None = None) -> None:  # fmt: skip
        super().__init__(f"amc-watch-{job_id[:8]}", _PROGRESS_WRITE_S)
        self.job_id, self.factory, self.chain, self.budget = job_id, factory, chain, budget
        self.cancel = threading.Event()
        self.cancel_requested = False
        self._latest: tuple[float, str] = (0.0, "starting")
        self._written: tuple[float, str] | None = None

    def progress(self, fraction: float, message: str) -> None:
        self._latest = (max(self._latest[0], min(max(float(fraction), 0.0), 1.0)), message)

    def tick(self) -> None:
        if self.chain.closing.is_set() or (self.budget is not None and self.budget.over()):
            self.cancel.set()
        self.flush()

    def flush(self) -> None:
        latest = self._latest
        with self.factory() as s, s.begin():
            job = s.get(Job, self.job_id)
            if job is None or job.cancel_requested:
                self.cancel_requested = True
                self.cancel.set()
                return
            if latest != self._written:
                job.progress = round(0.95 * latest[0], 4)  # the last 5 %: storing the result
                job.message = latest[1][:500]
                job.updated_at = utcnow()
                self._written = latest


def _chain_report(result_plan: dict[str, Any]) -> dict[str, Any]:
    """The job report of a model-chain run: the plan with its figures, the chain in short, and
    the final master's figures under ``result`` (as an engine-only master reports them)."""
    steps = result_plan.get("steps", [])
    master = next((st for st in steps if st.get("name") == "master"), None)
    report: dict[str, Any] = {
        "workflow": result_plan.get("workflow"),
        "chain": [{"slot": "ACES" if st.get("slot") == "aces" else (st.get("slot") or "mastering"),
                   "backend": st.get("backend"), "why": st.get("reason")} for st in steps],
        "plan": result_plan,
    }  # fmt: skip
    if master is not None:
        m = master.get("metrics", {})
        report["result"] = {k: m.get(k) for k in ("loudness_lufs", "true_peak_dbtp", "target_lufs", "ceiling_dbtp",
                                                   "loudness_error_lu", "within_spec")}  # fmt: skip
        report["result"]["gates"] = master.get("gates", [])
    return report


def _run_model_job(job_id: str, operation: str, params: dict[str, Any], input_key: str | None,
                   factory: sessionmaker[Session], storage: Storage, chain: ModelChain,
                   budget: JobBudget) -> str:  # fmt: skip
    from app.engine.errors import AmcError, ParameterError
    from app.models.client import WorkerError
    from app.models.orchestrator import Orchestrator, RunCancelled, RunFailed
    from app.models.registry import BackendUnavailable

    tmp_dir = scratch.temp_dir("job")
    watch = _Watch(job_id, factory, chain, _BudgetWatch(Path(tmp_dir.name), budget))
    plan: dict[str, Any] | None = None

    def fail(code: str, error: str, plan_dict: dict[str, Any] | None) -> str:
        values: dict[str, Any] = {"status": "failed", "error_code": code, "error": error, "message": "failed"}
        if plan_dict is not None:
            values["report"] = json.dumps(_chain_report(plan_dict))
        _set(factory, job_id, **values)
        return "failed"

    try:
        with tmp_dir as tmp, watch:
            inp: Path | None = None
            if input_key is not None:
                inp = storage.local_path(input_key)
                if inp is None:
                    inp = Path(tmp) / ("input" + Path(input_key).suffix)
                    storage.get_to_file(input_key, inp)
            out = Path(tmp) / "result.wav"
            work = Path(tmp) / "work"
            req = chain_request(operation, params, inp, out, work)
            watch.progress(0.0, "starting the model worker")
            client = chain.client()
            orch = Orchestrator(client)
            planned = orch.plan(req)
            plan = planned.to_dict()
            _set(factory, job_id, report=json.dumps(_chain_report(plan)), message="planned")
            result = orch.run(planned, progress=watch.progress, cancel=watch.cancel)
            plan = result.plan
            watch.progress(1.0, "storing the result")
            storage.put_file(key("jobs", job_id, "result.wav"), Path(result.outputs["audio"]))
    except (RunCancelled, JobInterrupted):
        if watch.budget is not None and watch.budget.reason is not None:
            return fail("over_budget", watch.budget.reason, plan)
        if watch.cancel_requested:
            _set(factory, job_id, status="cancelled", message="cancelled",
                 **({"report": json.dumps(_chain_report(plan))} if plan else {}))  # fmt: skip
            return "cancelled"
        if chain.closing.is_set():  # the service is stopping: recover() runs it again at the next start
            _set(factory, job_id, message="interrupted by a service shutdown")
            return "interrupted"
        return fail("model_worker_unavailable", "the model worker stopped the job (it was closed or restarted)", plan)
    except BackendUnavailable as e:
        return fail("backend_unavailable", public_error(e), plan)
    except RunFailed as e:
        return fail("model_failed", public_error(e), e.plan or plan)
    except ParameterError as e:
        return fail("invalid_request", public_error(e), plan)
    except (WorkerError, TimeoutError) as e:
        why = public_error(e)
        return fail("model_worker_unavailable", MODEL_WORKER_UNAVAILABLE.format(what=operation, why=why), plan)
    except AmcError as e:
        return fail("processing_error", public_error(e), getattr(e, "plan", None) or plan)
    except Exception:  # the job fails; the service keeps running
        log.exception("job %s crashed", job_id)
        return fail("internal_error", "the job failed on the server; the error is in the service's log", plan)
    _set(factory, job_id, status="succeeded", progress=1.0, message="done", error_code=None, error=None,
         report=json.dumps(_chain_report(plan)), result_key=key("jobs", job_id, "result.wav"))  # fmt: skip
    return "succeeded"


def _master(job_id: str, params: dict[str, Any], input_key: str, factory: sessionmaker[Session],
            storage: Storage, budget: JobBudget) -> dict[str, Any]:  # fmt: skip
    from app.engine.mastering.chain import master_file
    from app.engine.mastering.planner import MasterSettings

    last = [0.0]
    tmp_dir = scratch.temp_dir("job")
    watch = _BudgetWatch(Path(tmp_dir.name), budget)

    def progress(fraction: float, message: str) -> None:
        watch.check()  # the engine calls this every block: over budget, the job stops here
        now = time.monotonic()
        if now - last[0] < _PROGRESS_WRITE_S and fraction < 1.0:
            return
        last[0] = now
        with factory() as s, s.begin():
            job = s.get(Job, job_id)
            if job is None or job.cancel_requested:
                raise JobCancelled
            job.progress = round(0.95 * float(fraction), 4)  # the last 5 %: storing the result
            job.message = message[:500]
            job.updated_at = utcnow()

    settings = MasterSettings(style=params.get("style", "balanced"),
                              level=params.get("enhancement_level", "moderate"),
                              target=params.get("target", "streaming"), output_format="wav24")  # fmt: skip
    with tmp_dir as tmp:
        src = storage.local_path(input_key)
        if src is None:
            src = Path(tmp) / ("input" + Path(input_key).suffix)
            storage.get_to_file(input_key, src)
        out = Path(tmp) / "result.wav"
        result = master_file(src, out, settings, progress=progress, scratch_dir=Path(tmp))
        progress(0.97, "storing the master")
        storage.put_file(key("jobs", job_id, "result.wav"), out)
    report = result.to_report()
    report.pop("input", None)  # server-side temp paths mean nothing to the client
    report.pop("output", None)
    report["chain"] = [{"slot": "mastering", "backend": "engine",
                        "why": "engine mastering chain (no model worker needed)"}]  # fmt: skip
    return report


def _preload_job_code() -> None:
    """Import what jobs run (the orchestrator, the registry, the mastering chain: ~0.7 s of
    imports with the GIL held) on the runner's thread, then keep those modules out of the
    garbage collector's full passes (see ``app.create_app``)."""
    import gc

    try:
        import app.engine.mastering.chain
        import app.models.orchestrator
        import app.models.registry  # noqa: F401
    except Exception:  # a job that needs them reports the error itself
        log.warning("preloading the job code failed", exc_info=True)
    gc.collect()
    gc.freeze()


class LocalJobRunner:
    """Runs jobs on a small thread pool in this process (embedded mode).

    The engine's heavy loops are numba/numpy and release the GIL, so a thread keeps the API
    responsive; ``job_workers`` bounds the CPU given to jobs. Model workflows run on the
    runner's :class:`ModelChain` (its worker process starts with the first such job)."""

    def __init__(self, factory: sessionmaker[Session], storage: Storage, workers: int,
                 chain: ModelChain | None = None, *, preload: bool = False,
                 budget: JobBudget | None = None) -> None:  # fmt: skip
        self.factory, self.storage, self.budget = factory, storage, budget
        self.chain = chain if chain is not None else ModelChain()
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="amc-job")
        self._lock = threading.Lock()
        self._closed = False
        if preload:  # ahead of the first job, which would otherwise hold the GIL for the imports
            self.pool.submit(_preload_job_code)

    def submit(self, job_id: str) -> None:
        with self._lock:
            if not self._closed:
                self.pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            run_job(job_id, self.factory, self.storage, self.chain, self.budget)
        except Exception:  # pragma: no cover - run_job records failures itself
            log.exception("job %s: runner error", job_id)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        # Running engine jobs see the cancel flag only through the DB; running model jobs are
        # stopped by closing the chain and stay "running"; queued ones stay queued. recover()
        # resumes both at the next start.
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.chain.close()


#: The message of a finished job whose stored input and result were removed (see below).
FILES_REMOVED = "its files were removed {days:g} days after it finished"


def expire_job_files(factory: sessionmaker[Session], storage: Storage, days: float,
                     now: datetime | None = None, batch: int = 200) -> int:  # fmt: skip
    """Remove the stored input and result of jobs that finished more than ``days`` ago, in
    batches; the job rows stay (status, report, figures) with their keys cleared. Each job's
    objects are deleted before its keys are cleared, so an interrupted sweep is finished by
    the next one (deleting a missing object is not an error). Returns the number of jobs.
    Several API processes may sweep at once: every step is idempotent."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    pending = select(Job.id, Job.input_key, Job.result_key).where(
        Job.status.in_(TERMINAL), Job.updated_at < cutoff,
        or_(Job.input_key.is_not(None), Job.result_key.is_not(None)),
    ).limit(batch)  # fmt: skip
    done = 0
    while True:
        with factory() as s:
            rows = s.execute(pending).all()
        if not rows:
            return done
        for job_id, input_key, result_key in rows:
            for k in (input_key, result_key):
                if k:
                    storage.delete(k)
            with factory() as s, s.begin():
                s.execute(update(Job).where(Job.id == job_id)
                          .values(input_key=None, result_key=None, message=FILES_REMOVED.format(days=days)))  # fmt: skip
            done += 1


def recover(factory: sessionmaker[Session], runner: JobRunner) -> list[str]:
    """At start: jobs a previous process left queued or running are queued again (a running
    one counts as a failed attempt; after MAX_ATTEMPTS it is failed for good). Called only
    by the process that owns the data (``owner.take``): whoever ran them is gone, whatever
    their leases say."""
    resubmit: list[str] = []
    with factory() as s, s.begin():
        for job in s.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
            if job.operation not in OPERATIONS:
                continue
            if job.status == "running" and job.attempts >= MAX_ATTEMPTS:
                job.status, job.error_code = "failed", "interrupted"
                job.error = f"the service stopped while running this job {job.attempts} times"
            else:
                if job.status == "running":
                    job.message = "interrupted by a service restart; retrying"
                job.status = "queued"
                resubmit.append(job.id)
            job.lease_owner, job.lease_expires_at = None, None
            job.updated_at = utcnow()
    for job_id in resubmit:
        runner.submit(job_id)
    return resubmit
