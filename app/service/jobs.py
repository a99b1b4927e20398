"""Jobs: what the API queues and who runs them.

The seam: the API only calls :class:`JobRunner` (``submit``/``shutdown``); a job's work is
:func:`run_job`, a plain function of a job id that reads and writes the database and storage,
so the same function runs in this process's thread pool (``LocalJobRunner``, embedded mode)
or in a remote worker. Mastering jobs run the engine's ``master_file``. Jobs that need the
model worker (text-to-music generation, style transfer) fail with ``model_worker_unavailable``
until ``app.models.client`` lands; a ``ModelWorkerRunner`` then takes them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.service.models import Job, utcnow
from app.service.storage import Storage, key

log = logging.getLogger(__name__)

TERMINAL = ("succeeded", "failed", "cancelled")
ENGINE_OPERATIONS = ("master", "enhance")
MODEL_WORKER_OPERATIONS = ("generate", "style_transfer")
MODEL_WORKER_UNAVAILABLE = (
    "model worker not available: {what} needs the model chain's worker, which this service "
    "does not run yet; mastering and enhancement (operation=master|enhance) work now"
)
MAX_ATTEMPTS = 3
_PROGRESS_WRITE_S = 0.25


class JobCancelled(Exception):
    pass


class JobRunner(Protocol):
    def submit(self, job_id: str) -> None: ...
    def shutdown(self) -> None: ...


def _set(factory: sessionmaker[Session], job_id: str, **values: Any) -> Job | None:
    with factory() as s, s.begin():
        job = s.get(Job, job_id)
        if job is None:
            return None
        for k, v in values.items():
            setattr(job, k, v)
        job.updated_at = utcnow()
        return job


def run_job(job_id: str, factory: sessionmaker[Session], storage: Storage) -> str:
    """Run one queued job to a terminal state; returns that state. Safe to call twice."""
    with factory() as s, s.begin():
        job = s.get(Job, job_id)
        if job is None or job.status in TERMINAL:
            return job.status if job else "missing"
        if job.cancel_requested:
            job.status, job.message, job.updated_at = "cancelled", "cancelled before start", utcnow()
            return "cancelled"
        job.status, job.attempts, job.updated_at = "running", job.attempts + 1, utcnow()
        job.message = "starting"
        params, operation, input_key = json.loads(job.params), job.operation, job.input_key
    if operation not in ENGINE_OPERATIONS or input_key is None:
        _set(factory, job_id, status="failed", error_code="model_worker_unavailable",
             error=MODEL_WORKER_UNAVAILABLE.format(what=operation))  # fmt: skip
        return "failed"
    try:
        report = _master(job_id, params, input_key, factory, storage)
    except JobCancelled:
        _set(factory, job_id, status="cancelled", message="cancelled")
        return "cancelled"
    except Exception as e:  # the job fails; the service keeps running
        from app.engine.errors import AmcError

        code = "processing_error" if isinstance(e, AmcError) else "internal_error"
        if code == "internal_error":
            log.exception("job %s crashed", job_id)
        _set(factory, job_id, status="failed", error_code=code, error=str(e) or type(e).__name__,
             message="failed")  # fmt: skip
        return "failed"
    _set(factory, job_id, status="succeeded", progress=1.0, message="done",
         report=json.dumps(report), result_key=key("jobs", job_id, "result.wav"))  # fmt: skip
    return "succeeded"


def _master(job_id: str, params: dict[str, Any], input_key: str,
            factory: sessionmaker[Session], storage: Storage) -> dict[str, Any]:  # fmt: skip
    from app.engine.mastering.chain import master_file
    from app.engine.mastering.planner import MasterSettings

    last = [0.0]

    def progress(fraction: float, message: str) -> None:
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
    with tempfile.TemporaryDirectory(prefix="amc-job-") as tmp:
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
    report["chain"] = [{"slot": "ACES" if params.get("operation") == "enhance" else "mastering",
                        "backend": "engine DSP", "why": "engine mastering chain (no model worker needed)"}]  # fmt: skip
    return report


class LocalJobRunner:
    """Runs jobs on a small thread pool in this process (embedded mode).

    The engine's heavy loops are numba/numpy and release the GIL, so a thread keeps the API
    responsive; ``job_workers`` bounds the CPU given to jobs."""

    def __init__(self, factory: sessionmaker[Session], storage: Storage, workers: int) -> None:
        self.factory, self.storage = factory, storage
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="amc-job")
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job_id: str) -> None:
        with self._lock:
            if not self._closed:
                self.pool.submit(self._run, job_id)

    def _run(self, job_id: str) -> None:
        try:
            run_job(job_id, self.factory, self.storage)
        except Exception:  # pragma: no cover - run_job records failures itself
            log.exception("job %s: runner error", job_id)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        # Running jobs see the cancel flag only through the DB; queued ones stay queued
        # in the DB and are resumed by recover() at the next start.
        self.pool.shutdown(wait=False, cancel_futures=True)


def recover(factory: sessionmaker[Session], runner: JobRunner) -> list[str]:
    """At start: jobs a previous process left queued or running are queued again (a running
    one counts as a failed attempt; after MAX_ATTEMPTS it is failed for good)."""
    resubmit: list[str] = []
    with factory() as s, s.begin():
        for job in s.scalars(select(Job).where(Job.status.in_(("queued", "running")))):
            if job.operation not in ENGINE_OPERATIONS:
                continue
            if job.status == "running" and job.attempts >= MAX_ATTEMPTS:
                job.status, job.error_code = "failed", "interrupted"
                job.error = f"the service stopped while running this job {job.attempts} times"
            else:
                if job.status == "running":
                    job.message = "interrupted by a service restart; retrying"
                job.status = "queued"
                resubmit.append(job.id)
            job.updated_at = utcnow()
    for job_id in resubmit:
        runner.submit(job_id)
    return resubmit
