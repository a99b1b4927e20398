"""The worker's parts in-process (cache, device choice, queue, cancel) over a real Pipe."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from app.models.protocol import (
    Cancel,
    Failed,
    Job,
    Progress,
    Result,
    Shutdown,
    Started,
    StatusReport,
    StatusRequest,
)
from app.models.worker import ModelCache, WorkerOptions, _Worker, choose_device


def test_cache_evicts_least_recently_used_within_its_pool() -> None:
    cache = ModelCache(ram_budget_bytes=100, vram_budget_bytes=50)
    loads: list[str] = []

    def loader(name: str, size: int):
        def f():
            loads.append(name)
            return {"name": name}, size
        return f

    assert cache.get("a", loader("a", 40), device="cpu") == {"name": "a"}
    cache.get("b", loader("b", 40), device="cpu")
    cache.get("a", loader("a", 40), device="cpu")  # hit: a becomes most recent
    assert loads == ["a", "b"]
    cache.get("g", loader("g", 30), device="cuda")  # other pool: evicts nothing in RAM
    cache.get("c", loader("c", 40), device="cpu")  # 120 > 100: b (least recent) goes
    assert cache.keys() == ["a@cpu", "g@cuda", "c@cpu"]
    assert cache.evictions == ["b"]
    assert cache.used("ram") == 80 and cache.used("vram") == 30
    cache.get("h", loader("h", 30), device="cuda")  # 60 > 50 VRAM: g goes
    assert cache.evictions == ["b", "g"] and cache.used("vram") == 30
    big = cache.get("big", loader("big", 101), device="cpu")  # larger than the budget: not kept
    assert big == {"name": "big"} and "big@cpu" not in cache.keys() and cache.used("ram") == 80
    cache.get("b", loader("b", 40), device="cpu")  # reloaded after eviction
    assert loads.count("b") == 2


def test_choose_device_honours_override_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMC_DEVICE", raising=False)
    assert choose_device("cpu") == ("cpu", "")
    dev, note = choose_device("tpu")
    assert dev == "cpu" and "unknown device 'tpu'" in note
    dev, note = choose_device("cuda:99")
    assert dev == "cpu" and "cuda:99 asked for but not available" in note
    monkeypatch.setenv("AMC_DEVICE", "CPU")
    assert choose_device(None) == ("cpu", "")
    monkeypatch.delenv("AMC_DEVICE")
    torch = pytest.importorskip("torch")
    auto, note = choose_device(None)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert (auto, note) == (expected, "")


class InProcessWorker:
    """A worker serving on a thread of this process (no spawn) over a real Pipe."""

    def __init__(self) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.worker = _Worker(child, WorkerOptions(device="cpu", ram_budget_bytes=1000, vram_budget_bytes=0))
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()

    def recv_until(self, pred, timeout: float = 10.0) -> list[object]:
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.conn.poll(0.05):
                msg = self.conn.recv()
                out.append(msg)
                if pred(msg):
                    return out
        raise AssertionError(f"timed out; got {out}")

    def close(self) -> None:
        self.conn.send(Shutdown())
        self.thread.join(3)
        assert not self.thread.is_alive()


@pytest.fixture
def inproc(amc_env: Path):
    w = InProcessWorker()
    hello = w.recv_until(lambda m: True)[0]
    assert hello.device == "cpu"
    yield w
    w.close()


def _job(tmp: Path, task: str, *, priority: int = 0, **params) -> Job:
    return Job.create("test", task, output_dir=str(tmp / "out"), params=params, priority=priority)


def test_pending_jobs_run_by_priority_then_submission_order(inproc: InProcessWorker, tmp_path: Path) -> None:
    blocker = _job(tmp_path, "steps", n=5, step_s=0.04)
    inproc.conn.send(blocker)
    inproc.recv_until(lambda m: isinstance(m, Started))  # the blocker runs: the rest queue up
    jobs = {name: _job(tmp_path, "noop", priority=p) for name, p in
            [("low1", 0), ("high", 5), ("low2", 0), ("mid", 1), ("neg", -3)]}
    for j in jobs.values():
        inproc.conn.send(j)
    inproc.conn.send(StatusRequest("s"))
    msgs = inproc.recv_until(lambda m: isinstance(m, StatusReport))
    report = msgs[-1]
    assert report.running == blocker.job_id
    order = [j.job_id for j in jobs.values()]
    names = {v.job_id: k for k, v in jobs.items()}
    assert [names[i] for i in report.queued] == ["high", "mid", "low1", "low2", "neg"]
    done: list[str] = []
    msgs = inproc.recv_until(lambda m: isinstance(m, Result) and (done.append(m.job_id) or len(done) == 6))
    assert [names.get(i, "blocker") for i in done] == ["blocker", "high", "mid", "low1", "low2", "neg"]
    assert set(order) <= set(done)


def test_cancel_running_job_lands_within_half_a_second(inproc: InProcessWorker, tmp_path: Path) -> None:
    job = _job(tmp_path, "steps", n=10_000, step_s=0.01)
    inproc.conn.send(job)
    inproc.recv_until(lambda m: isinstance(m, Progress))
    t0 = time.perf_counter()
    inproc.conn.send(Cancel(job.job_id))
    msgs = inproc.recv_until(lambda m: isinstance(m, Failed))
    latency = time.perf_counter() - t0
    assert msgs[-1].kind == "cancelled" and msgs[-1].job_id == job.job_id
    assert latency < 0.5, f"cancel took {latency:.3f} s"


def test_cancel_pending_job_and_bad_slot(inproc: InProcessWorker, tmp_path: Path) -> None:
    blocker = _job(tmp_path, "steps", n=3, step_s=0.05)
    queued = _job(tmp_path, "noop")
    inproc.conn.send(blocker)
    inproc.conn.send(queued)
    inproc.conn.send(Cancel(queued.job_id))
    msgs = inproc.recv_until(lambda m: isinstance(m, Failed))
    assert msgs[-1].job_id == queued.job_id and msgs[-1].kind == "cancelled"
    inproc.recv_until(lambda m: isinstance(m, Result) and m.job_id == blocker.job_id)
    bad = Job.create("no-such-slot", "x", output_dir=str(tmp_path))
    inproc.conn.send(bad)
    failed = inproc.recv_until(lambda m: isinstance(m, Failed))[-1]
    assert failed.kind == "error" and "unknown model slot 'no-such-slot'" in failed.error
    wrong_task = Job.create("test", "paint", output_dir=str(tmp_path))
    inproc.conn.send(wrong_task)
    failed = inproc.recv_until(lambda m: isinstance(m, Failed))[-1]
    assert "does not do task 'paint'" in failed.error
