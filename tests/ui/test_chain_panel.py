"""The model-chain dock against a real worker running the tiny test backends.

Jobs go through the real client and a spawned worker (``tests/models/tiny_backend.py``
registered with ``AMC_EXTRA_BACKENDS``): progress rows, results, cancel, a worker killed
with SIGKILL mid-job, the twelve slots' statuses, the generate dialog, and a UI event
loop that keeps ticking while a job streams progress.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QApplication

from app.models import registry
from app.models.registry import SLOTS
from app.ui import theme
from app.ui.chain_panel import STATE_COLORS, ChainPanel, key_metrics
from app.ui.generate_dialog import GenerateDialog, compose_prompt
from app.ui.model_bridge import ModelBridge, describe_slot
from tests.models.conftest import TINY, worker_env

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
TEXT_TO_AUDIO_SLOTS = [s.key for s in SLOTS if "text_to_audio" in s.capabilities]


@pytest.fixture(scope="module")
def bridge(qapp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelBridge]:
    """One bridge (one CPU worker) for the module; tests leave it usable."""
    home = tmp_path_factory.mktemp("chain_home")
    with pytest.MonkeyPatch.context() as mp:
        # the UI process's registry and the worker both see the tiny backends
        mp.setenv("AMC_EXTRA_BACKENDS", TINY)
        for key in ("AMC_SUNO_API_KEY", "AMC_MUREKA_API_KEY", "AMC_STABILITY_API_KEY"):
            mp.delenv(key, raising=False)
        b = ModelBridge(device="cpu", log_path=home / "worker.log", env=worker_env(home))
        yield b
        b.close()


@pytest.fixture
def panel(qtbot, bridge: ModelBridge) -> Iterator[ChainPanel]:
    w = ChainPanel()
    qtbot.addWidget(w)
    w.resize(560, 720)
    w.show()
    with qtbot.waitSignal(bridge.status_ready, timeout=30_000):
        w.set_bridge(bridge)
    yield w
    for job_id in bridge.running_jobs():
        bridge.cancel(job_id)
    qtbot.waitUntil(lambda: not bridge.running_jobs(), timeout=10_000)


def _wait_state(qtbot, panel: ChainPanel, job_id: str, *states: str, timeout_ms: int = 30_000) -> None:
    qtbot.waitUntil(lambda: panel.job_row(job_id).state in states, timeout=timeout_ms)


def _wait_running(qtbot, panel: ChainPanel, job_id: str) -> None:
    qtbot.waitUntil(lambda: panel.job_row(job_id).fraction > 0, timeout=30_000)


# ------------------------------------------------------------------ slots


def test_the_twelve_slots_are_listed_with_their_real_status(qtbot, panel: ChainPanel) -> None:
    expected = registry.slot_status(device="cpu")
    assert panel.slot_table.rowCount() == len(expected) >= 13  # the twelve + the tiny test slots
    for r, spec in enumerate(SLOTS):
        number, title, role, status = panel.slot_row_text(r)
        assert (number, title, role) == (str(spec.number), spec.title, spec.role)
        state, text, tip = describe_slot(expected[r])
        assert status == text, spec.key
        item = panel.slot_table.item(r, 3)
        assert item.foreground().color().name() == STATE_COLORS[state]
        assert tip == item.toolTip()
        for backend in expected[r]["backends"]:  # every backend and what it lacks is in the tooltip
            assert backend["detail"] in tip
    # states that do not depend on what this machine has downloaded
    assert panel.slot_state("melody-rnn") == "not_available"
    assert panel.slot_row_text(5)[3] == "Not available yet"
    assert panel.slot_state("suni") == "not_available"  # no client in this build: a key changes nothing
    assert "API key will not change that" in panel.slot_table.item(9, 3).toolTip()
    assert panel.slot_state("aces") == "ready"  # DSP enhancement needs no weights
    assert panel.slot_table.item(7, 3).foreground().color().name() == theme.METER_GREEN
    assert panel.slot_state("test") == "ready"
    assert panel.slot_state("test-weights") == "weights_missing"
    assert panel.slot_row_text(13)[3] == "Needs download · 300.01 kB"
    assert "amc models download amc-test/tiny-weights" in panel.slot_table.item(13, 3).toolTip()
    if panel.slot_state("musicgen") == "weights_missing":
        assert panel.slot_row_text(0)[3] == "Needs download · 2.36 GB"
        assert "https://huggingface.co/facebook/musicgen-small" in panel.slot_table.item(0, 3).toolTip()
    assert panel.enhance_button.isEnabled()
    with qtbot.waitSignal(panel.enhance_requested, timeout=1_000):
        panel.enhance_button.click()
    panel.set_enhance_target(None)
    assert not panel.enhance_button.isEnabled() and "Select an audio track" in panel.enhance_button.toolTip()
    panel.set_enhance_target("vocals take 3")
    assert panel.enhance_button.isEnabled() and "“vocals take 3”" in panel.enhance_button.toolTip()


def test_before_any_status_the_slots_read_checking_and_nothing_can_run(qtbot) -> None:
    w = ChainPanel()
    qtbot.addWidget(w)
    assert w.slot_table.rowCount() == 12
    assert [w.slot_row_text(r)[1] for r in range(12)] == [s.title for s in SLOTS]
    assert {w.slot_row_text(r)[3] for r in range(12)} == {"Checking…"}
    assert not w.generate_button.isEnabled() and not w.enhance_button.isEnabled()
    with pytest.raises(RuntimeError, match="no model bridge"):
        w.run_job("test", "noop", {}, {}, "x")


def test_refresh_recomputes_off_the_ui_thread(qtbot, panel: ChainPanel, bridge: ModelBridge) -> None:
    t0 = time.perf_counter()
    with qtbot.waitSignal(bridge.status_ready, timeout=30_000) as sig:
        panel.refresh_button.click()
        took = time.perf_counter() - t0
        assert not panel.refresh_button.isEnabled()  # until the answer comes
    assert took < 0.1, f"Refresh blocked the UI for {took:.3f} s"
    assert [row["slot"] for row in sig.args[0]][:12] == [s.key for s in SLOTS]
    assert panel.refresh_button.isEnabled()


# ------------------------------------------------------------------ jobs


def test_a_job_shows_progress_and_delivers_its_result(qtbot, panel: ChainPanel, bridge: ModelBridge) -> None:
    seen: list[float] = []

    def on_progress(job_id: str, fraction: float, message: str) -> None:
        seen.append(panel.job_row(job_id).progress_bar.value())

    bridge.job_progress.connect(on_progress)
    try:
        job_id = panel.run_job("test", "steps", {"n": 20, "step_s": 0.02}, {}, "Tiny steps")
        row = panel.job_row(job_id)
        assert row.state == "queued" and row.cancel_button.isVisibleTo(row) and panel.job_rows()[0] is row
        with qtbot.waitSignal(panel.result_ready, timeout=30_000) as sig:
            pass
    finally:
        bridge.job_progress.disconnect(on_progress)
    rid, outputs, metrics, plan = sig.args
    assert rid == job_id
    arr = np.load(outputs["array"])
    assert arr.shape == (4, 16) and np.isfinite(arr).all()
    assert metrics["steps"] == 20 and plan["backend"] == "tiny" and plan["slot"] == "test"
    assert row.state == "finished" and row.progress_bar.value() == 1000 and not row.cancel_button.isVisibleTo(row)
    assert row.where_label.text() == "test · tiny"
    assert row.state_text.startswith("Done in ") and "steps 20" in row.state_text
    assert "mean:" in row.toolTip() and outputs["array"] in row.toolTip()
    assert len(set(seen)) >= 3 and seen == sorted(seen)  # the bar moved forward, several times


def test_the_ui_keeps_ticking_while_a_job_streams_progress(qtbot, panel: ChainPanel) -> None:
    gaps: list[float] = []
    clock = QElapsedTimer()
    clock.start()
    last = [clock.elapsed()]

    def tick() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    # ~1000 progress reports a second for about 1.5 s
    job_id = panel.run_job("test", "steps", {"n": 1500, "step_s": 0.001}, {}, "Progress flood")
    _wait_state(qtbot, panel, job_id, "finished")
    timer.stop()
    assert len(gaps) > 50
    assert max(gaps) < 100, f"UI event loop stalled for {max(gaps)} ms"


def test_cancel_from_the_panel_lands_within_a_second(qtbot, panel: ChainPanel, bridge: ModelBridge) -> None:
    job_id = panel.run_job("test", "steps", {"n": 10_000, "step_s": 0.01}, {}, "Slow job")
    _wait_running(qtbot, panel, job_id)
    row = panel.job_row(job_id)
    assert row.state == "running" and row.cancel_button.isEnabled()
    t0 = time.perf_counter()
    qtbot.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
    assert row.state == "cancelling" and not row.cancel_button.isEnabled()
    _wait_state(qtbot, panel, job_id, "cancelled", "failed", "finished", timeout_ms=5_000)
    took = time.perf_counter() - t0
    assert row.state == "cancelled" and row.state_text.startswith("Cancelled after")
    assert took < 1.0, f"cancel took {took:.2f} s"
    assert not row.cancel_button.isVisibleTo(row) and job_id not in bridge.running_jobs()


def test_a_backend_error_shows_its_reason(qtbot, panel: ChainPanel) -> None:
    with qtbot.waitSignal(panel.job_failed, timeout=30_000) as sig:
        job_id = panel.run_job("test", "fail", {"message": "no audio in input"}, {}, "Bad input")
    assert sig.args == [job_id, "ValueError: no audio in input", "error"]
    row = panel.job_row(job_id)
    assert row.state == "failed" and row.state_text == "Failed: ValueError: no audio in input"
    assert "Traceback" in row.toolTip()


def test_kill_9_fails_the_row_and_the_next_job_runs(qtbot, panel: ChainPanel, bridge: ModelBridge) -> None:
    job_id = panel.run_job("test", "steps", {"n": 10_000, "step_s": 0.01}, {}, "Doomed job")
    _wait_running(qtbot, panel, job_id)
    first_pid = bridge.worker_pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    _wait_state(qtbot, panel, job_id, "failed", "cancelled", "finished", timeout_ms=10_000)
    row = panel.job_row(job_id)
    assert row.state == "failed"
    assert row.state_text.startswith("Worker died: ") and "SIGKILL" in row.state_text
    assert "(log:" not in row.state_text and "log:" in row.toolTip()  # the path is in the tooltip
    with qtbot.waitSignal(panel.result_ready, timeout=60_000) as sig:
        after = panel.run_job("test", "noop", {}, {}, "After the crash")
    assert sig.args[0] == after and panel.job_row(after).state == "finished"
    assert sig.args[2]["pid"] == bridge.worker_pid != first_pid
    qtbot.waitUntil(lambda: panel.worker_label.text().startswith("Model worker: ready"), timeout=5_000)


def test_key_metrics_pick_what_a_musician_reads() -> None:
    assert key_metrics({"duration_s": 8.0, "compute_s": 3.3, "real_time_factor": 0.41, "device": "cuda"}) == \
        "8.0 s audio · RTF 0.41 · cuda"
    assert key_metrics({"loudness_lufs": -14.04, "true_peak_dbtp": -1.02, "output_s": 30.0}) == \
        "30.0 s audio · -14.0 LUFS · -1.0 dBTP"
    assert key_metrics({"steps": 20, "mean": 0.01234, "pid": 3, "device": "cpu"}) == "steps 20 · mean 0.0123 · cpu"


# ------------------------------------------------------------------ generate dialog


def _with_ready(statuses: list[dict[str, Any]], slot: str, tasks: list[str] | None = None) -> list[dict[str, Any]]:
    """A copy of real statuses with ``slot``'s first backend made ready (as after a download)."""
    rows = copy.deepcopy(statuses)
    row = next(r for r in rows if r["slot"] == slot)
    row["backends"][0]["state"] = "ready"
    row["backends"][0]["detail"] = "weights present"
    if tasks is not None:
        row["backends"][0]["tasks"] = tasks
    row["ready"] = True
    return rows


def test_generate_dialog_lists_text_to_audio_slots_and_disables_what_cannot_run(qtbot, panel: ChainPanel) -> None:
    statuses = panel.statuses
    assert statuses is not None
    dlg = GenerateDialog(statuses)
    qtbot.addWidget(dlg)
    assert dlg.listed_slots() == TEXT_TO_AUDIO_SLOTS
    model = dlg.slot_box.model()
    assert isinstance(model, QStandardItemModel)
    for i, key in enumerate(TEXT_TO_AUDIO_SLOTS):
        row = next(r for r in statuses if r["slot"] == key)
        ready = describe_slot(row, task="text_to_audio")[0] == "ready"
        assert model.item(i).isEnabled() == ready == dlg.slot_enabled(key), key
        assert model.item(i).toolTip().startswith(row["title"])
    assert not dlg.slot_enabled("suni") and "Not available yet" in model.item(TEXT_TO_AUDIO_SLOTS.index("suni")).text()
    if not any(dlg.slot_enabled(k) for k in TEXT_TO_AUDIO_SLOTS):
        dlg.prompt_edit.setPlainText("warm piano")
        assert not dlg.ok_button.isEnabled()
        assert "amc models download" in dlg.preview_label.text()
        with pytest.raises(ValueError, match="No text-to-audio model can run"):
            dlg.request()
    # AudioCraft lists text_to_audio for its slot, but its backend only extends/regenerates
    rows = _with_ready(statuses, "audiocraft", ["codec", "extend", "melody", "regenerate"])
    dlg.set_statuses(rows)
    assert not dlg.slot_enabled("audiocraft")
    assert "Cannot do this task" in model.item(TEXT_TO_AUDIO_SLOTS.index("audiocraft")).text()


def test_generate_dialog_builds_the_params_the_backends_read(qtbot, panel: ChainPanel) -> None:
    dlg = GenerateDialog(_with_ready(panel.statuses, "musicgen"))
    qtbot.addWidget(dlg)
    assert dlg.current_slot() == "musicgen" and dlg.slot_enabled("musicgen")
    assert not dlg.ok_button.isEnabled()  # no prompt yet
    dlg.prompt_edit.setPlainText("  warm piano with vinyl crackle, 80 bpm. ")
    dlg.genre_box.setCurrentText("lo-fi")
    dlg.mood_box.setCurrentText("calm")
    dlg.style_box.setCurrentText("vintage")
    dlg.duration_spin.setValue(12.5)
    assert dlg.ok_button.isEnabled() and not dlg.steps_spin.isEnabled()
    req = dlg.request()
    assert req.slot == "musicgen" and req.task == "text_to_audio"
    assert req.params == {"prompt": "warm piano with vinyl crackle, 80 bpm, lo-fi, calm mood, vintage style",
                          "duration_s": 12.5, "guidance_scale": 3.0}
    assert (req.genre, req.mood, req.style) == ("lo-fi", "calm", "vintage")
    dlg.seed_check.setChecked(True)
    dlg.seed_spin.setValue(7)
    dlg.guidance_spin.setValue(4.5)
    dlg.duration_spin.setValue(90)  # MusicGen stops at 30 s
    assert dlg.request().params == {"prompt": req.params["prompt"], "duration_s": 30.0,
                                    "guidance_scale": 4.5, "seed": 7}

    dlg2 = GenerateDialog(_with_ready(panel.statuses, "stable-audio"))
    qtbot.addWidget(dlg2)
    assert dlg2.current_slot() == "stable-audio"
    dlg2.prompt_edit.setPlainText("")
    dlg2.genre_box.setCurrentText("techno")
    dlg2.mood_box.setCurrentText("dark")
    dlg2.negative_edit.setText("vocals")
    dlg2.steps_spin.setValue(50)
    dlg2.duration_spin.setValue(40)
    assert dlg2.request().params == {"prompt": "techno, dark mood", "duration_s": 40.0, "guidance_scale": 7.0,
                                     "steps": 50, "negative_prompt": "vocals"}


def test_compose_prompt_does_not_repeat_what_the_prompt_says() -> None:
    assert compose_prompt("Upbeat jazz with saxophone", genre="jazz", mood="upbeat", style="professional") == \
        "Upbeat jazz with saxophone, professional style"
    assert compose_prompt("", genre="", mood="", style="") == ""


def test_generate_button_opens_the_dialog_and_a_request_reaches_the_worker(
        qtbot, panel: ChainPanel, tmp_path: Path) -> None:
    dlg = panel.open_generate_dialog()
    assert dlg.isVisible() and dlg.listed_slots() == TEXT_TO_AUDIO_SLOTS
    if panel.slot_state("musicgen") == "ready":
        dlg.reject()
        pytest.skip("MusicGen weights are present here: generating would run the real model")
    # as if the weights had just been downloaded: the worker checks again and says they are not
    dlg.set_statuses(_with_ready(panel.statuses, "musicgen"))
    dlg.prompt_edit.setPlainText("warm lo-fi piano")
    with qtbot.waitSignal(panel.job_failed, timeout=30_000) as sig:
        dlg.accept()
    job_id, message, kind = sig.args
    row = panel.job_row(job_id)
    assert row.job.title == "Generate “warm lo-fi piano”" and row.job.slot == "musicgen"
    assert kind == "error" and "weights_missing" in message and "facebook/musicgen-small" in message
    assert row.state == "failed" and panel.generate_dialog is None


# ------------------------------------------------------------------ screenshots


def _themed(widget) -> None:
    app = QApplication.instance()
    theme.apply(app)
    for _ in range(3):
        app.processEvents()
    widget.layout().activate()


def test_screenshots(qtbot, panel: ChainPanel) -> None:
    app = QApplication.instance()
    old = (app.style().name(), app.palette(), app.styleSheet(), app.font())
    try:
        _themed(panel)
        with qtbot.waitSignal(panel.bridge.status_ready, timeout=30_000):
            panel.refresh()  # re-measure the table in the themed font
        with qtbot.waitSignal(panel.result_ready, timeout=30_000):
            done = panel.run_job("test", "steps", {"n": 30, "step_s": 0.01}, {}, "Tiny steps (30 steps)")
        with qtbot.waitSignal(panel.job_failed, timeout=30_000):
            panel.run_job("test", "fail", {"message": "input.wav holds no audio"}, {}, "Enhance “vocals take 3”")
        running = panel.run_job("test", "steps", {"n": 3000, "step_s": 0.01}, {}, "Generate “warm lo-fi piano”")
        qtbot.waitUntil(lambda: panel.job_row(running).fraction > 0.01, timeout=30_000)
        assert panel.job_row(done).state == "finished"
        panel.resize(560, 760)
        app.processEvents()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert panel.grab().save(str(SCREENSHOTS / "chain_panel.png"))
        panel.cancel_job(running)
        _wait_state(qtbot, panel, running, "cancelled")

        dlg = panel.open_generate_dialog()
        dlg.prompt_edit.setPlainText("warm lo-fi piano with soft vinyl crackle, 80 bpm")
        dlg.genre_box.setCurrentText("lo-fi")
        dlg.mood_box.setCurrentText("relaxing")
        _themed(dlg)
        dlg.fit_height()
        app.processEvents()
        assert dlg.grab().save(str(SCREENSHOTS / "generate_dialog.png"))
        dlg.reject()
    finally:
        app.setStyleSheet(old[2])
        app.setStyle(old[0])
        app.setPalette(old[1])
        app.setFont(old[3])
