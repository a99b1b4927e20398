"""The Qt adapter of the model client: lazy start, signals on the UI thread, quick close."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.ui.model_bridge import ModelBridge, describe_slot, human_bytes, slot_reason
from tests.models.conftest import TINY, worker_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bridge(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AMC_EXTRA_BACKENDS", TINY)
    b = ModelBridge(device="cpu", log_path=tmp_path / "worker.log", env=worker_env(tmp_path / "home"))
    yield b
    b.close()


def test_signals_arrive_on_the_ui_thread_in_order(qtbot, bridge: ModelBridge) -> None:
    assert bridge.client is None and bridge.worker_pid is None  # nothing spawned until used
    events: list[tuple[str, ...]] = []
    threads: set[str] = set()

    def record(name: str):
        def slot(*args) -> None:
            events.append((name, *map(str, args)))
            threads.add(threading.current_thread().name)
        return slot

    bridge.job_started.connect(record("started"))
    bridge.job_progress.connect(record("progress"))
    bridge.job_finished.connect(record("finished"))
    bridge.worker_state_changed.connect(record("state"))
    with qtbot.waitSignal(bridge.job_finished, timeout=60_000) as sig:
        job_id = bridge.submit("test", "steps", {"n": 5, "step_s": 0.01}, seed=3)
    assert bridge.client is not None and bridge.worker_pid is not None
    assert threads == {threading.main_thread().name}
    job_events = [e for e in events if e[0] != "state"]
    assert job_events[0] == ("started", job_id, "test", "tiny")
    assert job_events[-1][0] == "finished" and sig.args[1].metrics["steps"] == 5
    assert [e[0] for e in job_events[1:-1]] and {e[0] for e in job_events[1:-1]} == {"progress"}
    assert ("state", "starting", "") in events and any(e[:2] == ("state", "ready") for e in events)
    assert bridge.outcome(job_id) is sig.args[1] and bridge.running_jobs() == []
    assert bridge.device == "cpu"


def test_a_progress_burst_is_coalesced_to_its_latest_value(qtbot, bridge: ModelBridge) -> None:
    fractions: list[float] = []
    bridge.job_progress.connect(lambda job_id, f, m: fractions.append(f))
    bridge.start()
    qtbot.waitUntil(lambda: bridge.state == "ready", timeout=60_000)
    with qtbot.waitSignal(bridge.job_finished, timeout=30_000):
        bridge.submit("test", "steps", {"n": 3000, "step_s": 0.0})
        time.sleep(0.3)  # the UI thread is busy: reports pile up meanwhile
    assert fractions and fractions == sorted(fractions)
    assert len(fractions) < 3000  # not one queued signal per worker report


def test_close_with_a_running_job_is_quick_and_fails_it(qtbot, bridge: ModelBridge) -> None:
    failed: list[tuple[str, str, str]] = []
    bridge.job_failed.connect(lambda *a: failed.append(a))
    job_id = bridge.submit("test", "steps", {"n": 10_000, "step_s": 0.01})
    with qtbot.waitSignal(bridge.job_progress, timeout=60_000):
        pass
    proc = bridge.client._proc
    t0 = time.perf_counter()
    bridge.close()
    took = time.perf_counter() - t0
    assert took < 2.0, f"close blocked the UI for {took:.2f} s"
    assert not proc.is_alive() and bridge.client is None
    qtbot.waitUntil(lambda: bool(failed), timeout=2_000)
    assert failed == [(job_id, "the model client was closed", "cancelled")]
    with pytest.raises(RuntimeError, match="closed"):
        bridge.submit("test", "noop")


def test_a_job_after_the_worker_gave_up_starts_a_fresh_one(qtbot, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AMC_EXTRA_BACKENDS", TINY)
    b = ModelBridge(device="cpu", log_path=tmp_path / "w.log", env=worker_env(tmp_path / "home"), restart=False)
    try:
        with qtbot.waitSignal(b.job_failed, timeout=60_000) as sig:
            b.submit("test", "crash")  # a segfault in the worker, and restarts are off
        assert sig.args[2] == "worker_died" and "SIGSEGV" in sig.args[1]
        qtbot.waitUntil(lambda: b.state == "dead", timeout=5_000)
        dead_client = b.client
        with qtbot.waitSignal(b.job_finished, timeout=60_000) as sig:
            b.submit("test", "noop")
        assert b.client is not dead_client and sig.args[1].metrics["pid"] == b.worker_pid
        qtbot.wait(300)  # the old client's late "closed" report must not mask the new one
        assert b.state in ("ready", "busy")
    finally:
        b.close()


def test_slot_status_is_computed_off_the_ui_thread(qtbot, bridge: ModelBridge) -> None:
    t0 = time.perf_counter()
    with qtbot.waitSignal(bridge.status_ready, timeout=30_000) as sig:
        bridge.slot_status()
        assert time.perf_counter() - t0 < 0.05
    rows = sig.args[0]
    assert len(rows) == 14 and rows[12]["slot"] == "test"
    tiny = rows[12]["backends"][0]
    assert tiny["state"] == "ready" and tiny["tasks"] == ["cache", "crash", "fail", "log", "noop", "steps"]
    planned = next(r for r in rows if r["slot"] == "melody-rnn")["backends"][0]
    assert planned["tasks"] == [] and planned["state"] == "not_available"
    assert bridge.client is None  # a status check starts no worker


def test_describe_slot_says_what_is_missing() -> None:
    row = {"slot": "x", "title": "X", "role": "r", "backends": [
        {"name": "cloud", "title": "Cloud", "state": "needs_api_key", "detail": "set AMC_X_KEY", "weights": []},
        {"name": "local", "title": "Local", "state": "weights_missing", "detail": "needs org/model",
         "weights": [{"repo_id": "org/model", "size_bytes": 1_500_000_000, "license": "MIT",
                      "url": "https://example.org/m", "present": False}], "tasks": ["text_to_audio"]},
    ]}
    state, text, tip = describe_slot(row)
    assert (state, text) == ("weights_missing", "Needs download · 1.50 GB")
    assert "set AMC_X_KEY" in tip and "amc models download org/model" in tip
    assert slot_reason(row).endswith("Get it with “amc models download org/model”.")
    row["backends"][1]["state"] = "ready"
    assert describe_slot(row, task="text_to_audio")[:2] == ("ready", "Ready")
    assert describe_slot(row, task="enhance")[0] == "wrong_task"
    assert describe_slot({"slot": "y", "title": "Y", "role": "", "backends": []})[0] == "error"
    assert human_bytes(300_007) == "300.01 kB" and human_bytes(512) == "512 B"


def test_the_chain_ui_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "import app.ui.chain_panel, app.ui.generate_dialog, app.ui.model_bridge\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr
