"""TaskRunner: progress, finish, fail and cancel, on threads and in spawned processes."""

from __future__ import annotations

import os
import threading
import time

import pytest
from PySide6.QtCore import QThread

from app.engine.errors import ParameterError
from app.ui.tasks import TaskRunner

MODES = ["thread", "process"]


def steps(n: int, *, progress, delay_s: float = 0.0) -> int:
    total = 0
    for k in range(n):
        progress((k + 1) / n, f"step {k + 1}")
        total += k
        time.sleep(delay_s)
    return total


def boom(*, progress) -> None:
    progress(0.5, "about to fail")
    raise ParameterError("the gain must be a number")


def forever(*, progress) -> None:
    while True:
        progress(0.1, "spinning")
        time.sleep(0.01)


def stubborn(*, progress) -> None:
    progress(0.0, "ignoring cancel")
    time.sleep(60)  # never calls progress again


def die(code: int, *, progress) -> None:
    progress(0.2, "about to die")
    os._exit(code)


def pid(*, progress) -> int:
    return os.getpid()


@pytest.fixture
def runner(qtbot):
    r = TaskRunner()
    yield r
    r.shutdown(timeout_s=5.0)


@pytest.mark.parametrize("mode", MODES)
def test_progress_then_finished_on_the_ui_thread(qtbot, runner: TaskRunner, mode: str) -> None:
    seen: list[tuple[float, str]] = []
    threads: set[object] = set()

    def on_progress(tid: str, f: float, m: str) -> None:
        seen.append((f, m))
        threads.add(QThread.currentThread())

    runner.progress.connect(on_progress)
    with qtbot.waitSignal(runner.finished, timeout=20000) as blocker:
        h = runner.submit("sum", steps, 5, delay_s=0.06, mode=mode)
    tid, result = blocker.args
    assert tid == h.task_id and result == 0 + 1 + 2 + 3 + 4
    assert h.state == "finished" and h.result == 10 and h.fraction == 1.0
    assert seen and seen[-1] == (1.0, "step 5")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    assert threads == {QThread.currentThread()}  # delivered on the UI thread
    assert runner.handles() == [h]


@pytest.mark.parametrize("mode", MODES)
def test_failure_reports_message_and_traceback(qtbot, runner: TaskRunner, mode: str) -> None:
    with qtbot.waitSignal(runner.failed, timeout=20000) as blocker:
        h = runner.submit("boom", boom, mode=mode)
    tid, message, details = blocker.args
    assert tid == h.task_id
    assert message == "the gain must be a number"  # an AmcError's own words for the user
    assert "ParameterError" in details and "boom" in details
    assert h.state == "failed" and h.error == message


@pytest.mark.parametrize("mode", MODES)
def test_cancel_stops_a_running_job(qtbot, runner: TaskRunner, mode: str) -> None:
    with qtbot.waitSignal(runner.progress, timeout=20000):
        h = runner.submit("forever", forever, mode=mode)
    with qtbot.waitSignal(runner.cancelled, timeout=5000) as blocker:
        h.cancel()
    assert blocker.args == [h.task_id]
    assert h.state == "cancelled" and h.done


def test_a_process_job_that_ignores_cancel_is_terminated(qtbot, runner: TaskRunner) -> None:
    with qtbot.waitSignal(runner.progress, timeout=20000):
        h = runner.submit("stubborn", stubborn, mode="process")
    t0 = time.monotonic()
    with qtbot.waitSignal(runner.cancelled, timeout=10000):
        h.cancel()
    assert time.monotonic() - t0 < 6.0
    assert h.state == "cancelled"


def test_process_jobs_run_in_another_process(qtbot, runner: TaskRunner) -> None:
    with qtbot.waitSignal(runner.finished, timeout=20000) as blocker:
        runner.submit("pid", pid, mode="process")
    assert blocker.args[1] != os.getpid()


def test_a_crashing_worker_process_is_reported(qtbot, runner: TaskRunner) -> None:
    with qtbot.waitSignal(runner.failed, timeout=20000) as blocker:
        runner.submit("exit", die, 3, mode="process")  # dies without a word
    assert "ended unexpectedly" in blocker.args[1] and "3" in blocker.args[1]


def test_shutdown_cancels_everything_and_refuses_new_work(qtbot) -> None:
    r = TaskRunner()
    hs = [r.submit(f"t{k}", forever) for k in range(3)]
    before = threading.active_count()
    r.shutdown(timeout_s=5.0)
    assert all(h.cancel_requested for h in hs)
    assert threading.active_count() <= before - 3
    with pytest.raises(RuntimeError):
        r.submit("late", forever)
