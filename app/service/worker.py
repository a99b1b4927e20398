"""Remote-mode jobs on Celery + Redis: the API enqueues ``amc.run_job(job_id)``, workers
(``amc worker`` / ``python -m app.service.worker``) run :func:`app.service.jobs.run_job`,
the same code path as the embedded service: each worker process owns one
:class:`~app.service.jobs.ModelChain` (its model worker starts with the first model job and
is closed when the Celery process shuts down).

Job state lives in the database, not in Celery: a task is only "run this job id". Tasks are
acknowledged late and rejected when their worker dies, so a killed worker's job is delivered
again (after ``CELERY_VISIBILITY_TIMEOUT_S``) and retried; ``run_job`` fails it for good after
``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import sys
import time
from functools import cache

from celery import Celery
from celery.signals import worker_process_shutdown

from app.service import db
from app.service.jobs import ModelChain, job_budget, run_job
from app.service.settings import Settings
from app.service.storage import make_storage

TASK_NAME = "amc.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("amc", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.celery_visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        task_default_queue="amc-jobs",
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_NAME)(_run)
    return app


@cache
def _worker_state() -> tuple[Settings, object, object, ModelChain]:
    """Per Celery process (prefork child): its database, storage and model chain."""
    settings = Settings.from_env()
    engine = db.make_engine(settings.database_url)
    _allow_model_worker()
    return settings, db.make_sessionmaker(engine), make_storage(settings), ModelChain(settings.model_device or None)


def _allow_model_worker() -> None:
    """Let this process start the model worker (a ``multiprocessing`` spawn child).

    Celery's prefork children are billiard processes: marked daemonic (``multiprocessing``
    refuses children of a daemon, as it could not reap them) and holding billiard's authkey
    type (which ``multiprocessing`` refuses to pickle into a spawned child). We reap ours:
    ``worker_process_shutdown`` closes the chain, and a model worker whose parent was killed
    exits when its pipe closes."""
    import multiprocessing
    from multiprocessing.process import AuthenticationString

    proc = multiprocessing.current_process()
    config = proc._config  # type: ignore[attr-defined]
    if config.get("daemon"):
        config["daemon"] = False
    authkey = config.get("authkey")
    if authkey is not None and type(authkey) is not AuthenticationString:
        config["authkey"] = AuthenticationString(bytes(authkey))


@worker_process_shutdown.connect
def _close_chain(**_: object) -> None:
    if _worker_state.cache_info().currsize:
        _worker_state()[3].close()


def _run(job_id: str) -> str:
    settings, factory, storage, chain = _worker_state()
    budget = job_budget(settings)
    # A task delivered again while the worker that had it may still be alive (the visibility
    # timeout is shorter than the job): wait for that worker's lease to run out, then take it.
    for _ in range(4):
        state = run_job(job_id, factory, storage, chain, budget)  # type: ignore[arg-type]
        if state != "leased":
            return state
        time.sleep(budget.lease_s / 2)
    return state


class CeleryJobRunner:
    """The API side: enqueue only."""

    def __init__(self, settings: Settings) -> None:
        self.celery = make_celery(settings)

    def submit(self, job_id: str) -> None:
        self.celery.send_task(TASK_NAME, args=[job_id])

    def shutdown(self) -> None:
        self.celery.close()


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    app = make_celery(settings)
    concurrency = str(max(1, settings.job_workers))
    app.worker_main(["worker", "--loglevel", settings.log_level, "--concurrency", concurrency,
                     "--pool", "prefork", "--without-gossip", "--without-mingle", *(argv or [])])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
