"""The client against a real spawned worker: round trip, cancel, crash isolation, close."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.models.client import JobFailed, ModelClient
from app.models.protocol import (
    Failed,
    Job,
    Progress,
    ProtocolMismatch,
    Result,
    Started,
    WorkerError,
)
from tests.models.conftest import worker_env

REPO = Path(__file__).resolve().parents[2]


def _job(tmp: Path, task: str, **params) -> Job:
    return Job.create("test", task, output_dir=str(tmp), params=params, seed=3)


def test_round_trip_with_progress_outputs_and_plan(client: ModelClient, tmp_path: Path) -> None:
    seen: list[object] = []
    threads: set[str] = set()

    def on_event(handle, event) -> None:
        seen.append(event)
        threads.add(threading.current_thread().name)

    handle = client.submit(_job(tmp_path, "steps", n=6, step_s=0.0, torch=True), on_event=on_event)
    events = list(handle.events(timeout=30))
    result = handle.wait(1)
    assert isinstance(events[0], Started) and events[0].backend == "tiny"
    fractions = [e.fraction for e in events if isinstance(e, Progress)]
    assert fractions == pytest.approx([(i + 1) / 6 for i in range(6)])
    assert events[-1] is result and isinstance(result, Result)
    arr = np.load(result.outputs["array"])
    assert arr.shape == (4, 16) and np.isfinite(arr).all()
    assert result.metrics["steps"] == 6 and result.metrics["device"] == "cpu"
    assert result.plan == {"slot": "test", "backend": "tiny", "task": "steps",
                           "params": {"n": 6, "step_s": 0.0, "torch": True},
                           "reason": "first ready backend of the slot"}
    assert seen == events and threads == {"amc-model-client"}  # callbacks on the reader thread
    assert client.state == "ready"
    # the same seed gives the same result
    again = client.submit(_job(tmp_path / "b", "steps", n=6, step_s=0.0, torch=True)).wait(30)
    assert np.array_equal(np.load(again.outputs["array"]), arr)


def test_backend_error_reaches_the_handle(client: ModelClient, tmp_path: Path) -> None:
    handle = client.submit(_job(tmp_path, "fail", message="no audio in input"))
    with pytest.raises(JobFailed, match="ValueError: no audio in input") as info:
        handle.wait(30)
    assert info.value.kind == "error" and "Traceback" in info.value.failed.traceback
    with pytest.raises(JobFailed, match="no backend 'nope'"):
        client.submit(Job.create("test", "noop", output_dir=str(tmp_path), backend="nope")).wait(30)


def test_cancel_through_the_client_under_half_a_second(client: ModelClient, tmp_path: Path) -> None:
    handle = client.submit(_job(tmp_path, "steps", n=10_000, step_s=0.01))
    for ev in handle.events(timeout=30):
        if isinstance(ev, Progress):
            break
    t0 = time.perf_counter()
    handle.cancel()
    with pytest.raises(JobFailed) as info:
        handle.wait(5)
    latency = time.perf_counter() - t0
    assert info.value.kind == "cancelled"
    assert latency < 0.5, f"cancel took {latency:.3f} s"


def test_cache_budget_in_the_worker(client: ModelClient, tmp_path: Path) -> None:
    # the shared worker has a 20 000-byte RAM budget
    client.submit(_job(tmp_path, "cache", loads=[["x1", 8000], ["x2", 8000], ["x1", 8000], ["x3", 8000]])).wait(30)
    report = client.status_report()
    assert "x2@cpu" not in report.cache_entries  # least recently used went first
    assert {"x1@cpu", "x3@cpu"} <= set(report.cache_entries)
    assert report.cache_ram_bytes <= report.ram_budget_bytes == 20_000


def test_worker_stderr_goes_to_the_log(client: ModelClient, tmp_path: Path) -> None:
    client.submit(_job(tmp_path, "log", text="stderr-marker-1234")).wait(30)
    assert "stderr-marker-1234" in client.log_path.read_text()


def test_kill_9_fails_the_running_job_restarts_and_runs_the_next(tmp_path: Path) -> None:
    states: list[str] = []
    state_threads: set[str] = set()

    def on_state(state: str, detail: str) -> None:
        states.append(state)
        state_threads.add(threading.current_thread().name)

    with ModelClient(device="tpu", log_path=tmp_path / "w.log", env=worker_env(tmp_path / "home"),
                     on_state=on_state) as c:
        hello = c.wait_ready(60)
        # device override that cannot be honoured falls back with a reason
        assert hello.device == "cpu" and "unknown device 'tpu'" in hello.device_note
        running = c.submit(_job(tmp_path, "steps", n=10_000, step_s=0.01))
        queued = c.submit(_job(tmp_path, "noop"))
        for ev in running.events(timeout=30):
            if isinstance(ev, Progress):
                break
        first_pid = c.worker_pid
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(JobFailed, match="killed by SIGKILL") as info:
            running.wait(10)
        assert info.value.kind == "worker_died" and "restarted" in str(info.value)
        # the queued job never started: it is resubmitted to the new worker
        assert queued.wait(60).metrics["pid"] != first_pid
        after = c.submit(_job(tmp_path, "noop")).wait(30)
        assert after.metrics["pid"] == c.worker_pid != first_pid
        assert c.restarts == 1 and "restarting" in states and states[-1] in ("ready", "busy")
        # a native crash: the trace faulthandler wrote to the log comes back with the failure
        with pytest.raises(JobFailed, match="killed by SIGSEGV") as info:
            c.submit(_job(tmp_path, "crash")).wait(30)
        assert info.value.kind == "worker_died"
        assert "Segmentation fault" in info.value.failed.traceback and "tiny_backend.py" in info.value.failed.traceback
        assert c.submit(_job(tmp_path, "noop")).wait(30).metrics["pid"] == c.worker_pid
        assert c.restarts == 2
    assert states[0] == "ready" and states[-1] == "closed" and states.count("restarting") == 2
    assert state_threads == {"amc-model-client"}


def test_protocol_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    c = ModelClient(device="cpu", log_path=tmp_path / "w.log", env=worker_env(tmp_path), _protocol_version=999)
    try:
        with pytest.raises(ProtocolMismatch, match="protocol v999, this app speaks v1"):
            c.wait_ready(60)
        assert c.state == "dead"
        failed = c.submit(_job(tmp_path, "noop"))
        with pytest.raises(JobFailed, match="protocol v999"):
            failed.wait(1)
    finally:
        c.close()
    assert c.state == "closed"


def test_close_is_quick_and_fails_running_jobs(tmp_path: Path) -> None:
    c = ModelClient(device="cpu", log_path=tmp_path / "w.log", env=worker_env(tmp_path))
    c.wait_ready(60)
    running = c.submit(_job(tmp_path, "steps", n=10_000, step_s=0.01))
    next(iter(running.events(timeout=30)))
    proc = c._proc
    t0 = time.perf_counter()
    c.close()
    took = time.perf_counter() - t0
    assert took < 2.5, f"close took {took:.2f} s"
    assert c.state == "closed" and not proc.is_alive()
    assert isinstance(running.outcome, Failed) and running.outcome.kind == "cancelled"
    with pytest.raises(WorkerError):
        c.wait_ready(1)
    late = c.submit(_job(tmp_path, "noop"))
    assert isinstance(late.outcome, Failed)


def test_importing_client_and_registry_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import app.models.client, app.models.registry, app.models.commands, app.models.weights\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_job_without_output_dir_writes_under_the_cache(client: ModelClient) -> None:
    result = client.submit(Job.create("test", "steps", params={"n": 2, "step_s": 0.0})).wait(30)
    out = Path(result.outputs["array"])
    assert out.is_file() and out.parent.parent.name == "jobs" and out.parent.parent.parent.name == "cache"
