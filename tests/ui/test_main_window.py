"""The Studio window end to end (offscreen): drop -> track, Master -> take, A/B, MIDI undo, save/reopen, recovery."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication, QMessageBox

from app.engine import project as projects
from app.midi.files import MidiClip, Note, write_midi
from app.ui import main_window as mw
from app.ui import theme

ROOT = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def window(qtbot, monkeypatch, tmp_path):
    monkeypatch.setenv("AMC_HOME", str(tmp_path / "home"))
    # dialogs must never block a test: answer "No" / "Discard" and record what was asked
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), QMessageBox.StandardButton.No)[1])
    app = QApplication.instance()
    theme.apply(app)
    w = mw.MainWindow(audio=False)
    w.asked = asked
    qtbot.addWidget(w)
    w.show()
    yield w
    w._dirty = False
    w.close()


def _drop(widget, paths: list[Path]) -> None:
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, md, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(ev)


def test_window_has_the_shortcuts_a_musician_expects(window):
    shortcuts = {a.shortcut().toString() for a in window.actions() if not a.shortcut().isEmpty()}
    for wanted in ("Space", "Home", "L", "Ctrl+S", "Ctrl+O", "Ctrl+N", "+", "-"):
        assert QKeySequence(wanted).toString() in shortcuts, wanted
    assert window.act_undo.shortcut().toString() == "Ctrl+Z"
    assert "Ctrl+Shift+Z" in [s.toString() for s in window.act_redo.shortcuts()]
    status = " ".join(lbl.text() for lbl in (window.status_rate, window.status_buffer, window.status_cpu, window.status_device))
    assert "kHz" in status and "buffer 256" in status and "audio CPU" in status and "output" in status


def test_drop_audio_makes_a_playing_track_and_never_touches_the_source(window, qtbot, program_48k_30s):
    before = _sha(program_48k_30s)
    with qtbot.waitSignal(window.track_added, timeout=60_000) as sig:
        _drop(window, [program_48k_30s])
    tid = sig.args[0]
    assert tid in window.waveform.track_ids()
    assert tid in window.mixer.track_ids()
    assert window.engine.sample_rate == 48000
    qtbot.waitUntil(lambda: any(t.track_id == tid for t in window.engine.snapshot().tracks), timeout=5000)
    window.toggle_play()
    qtbot.waitUntil(lambda: window.engine.snapshot().position_frame > 4800, timeout=5000)
    qtbot.waitUntil(lambda: np.isfinite(window.engine.snapshot().meters.momentary_lufs), timeout=5000)
    window.toggle_play()
    assert _sha(program_48k_30s) == before
    media = window.project.audio_path(window.project.track(tid))
    assert media != program_48k_30s and _sha(media) == before


def test_unsupported_and_corrupt_files_get_a_message_not_a_crash(window, qtbot, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    _drop(window, [txt, bad])
    assert window.project.tracks == []
    assert window.waveform.track_ids() == []
    assert "not" in window.statusBar().currentMessage() or window.statusBar().currentMessage()


def test_master_adds_a_take_and_ab_is_loudness_matched(window, qtbot, program_48k_30s):
    with qtbot.waitSignal(window.track_added, timeout=60_000):
        window.open_paths([program_48k_30s])
    with qtbot.waitSignal(window.take_added, timeout=180_000) as sig:
        window.mastering.master()
    take = window.project.track(sig.args[0])
    assert take.role == "master" and take.master_of is not None
    after = take.metrics["after"]
    assert abs(after["integrated_lufs"] - (-14.0)) <= 0.2
    assert after["true_peak_dbtp"] <= -1.0 + 1e-6
    assert window.waveform.has_overlay(take.master_of)
    assert window.btn_b.isChecked()
    qtbot.waitUntil(lambda: window.engine.snapshot().monitor == "master", timeout=3000)
    # matched: the louder master is turned down to the source's loudness
    src_db, master_db = mw.match_gains_db(window._source_lufs, window._master_lufs)
    assert master_db < -1.0 and src_db == 0.0
    window.btn_a.click()
    qtbot.waitUntil(lambda: window.engine.snapshot().monitor == "source", timeout=3000)


def test_midi_opens_in_the_piano_roll_and_undo_restores(window, qtbot, tmp_path):
    clip = MidiClip(name="lead", notes=tuple(Note(60 + i, float(i), 1.0, 90) for i in range(4)), tempo_bpm=100.0)
    path = tmp_path / "lead.mid"
    write_midi(path, [clip])
    window.open_paths([path])
    assert len(window.piano.notes()) == 4
    assert window.project.tempo_bpm == pytest.approx(100.0)
    original = window.piano.notes()
    window.piano.select_all()
    window.piano.delete_selection()
    assert window.piano.notes() == ()
    window.undo_group.setActiveStack(window.piano.undo_stack)
    window.act_undo.trigger()
    assert window.piano.notes() == original
    midi = window.project.track(window._midi_track_id)
    assert len(midi.midi_clip["notes"]) == 4


def test_save_and_reopen_restores_the_session(window, qtbot, tmp_path, program_44k_30s):
    with qtbot.waitSignal(window.track_added, timeout=60_000):
        window.open_paths([program_44k_30s])
    tid = window.project.tracks[0].id
    window.mixer.strip(tid).gain.setValue(-35)  # -3.5 dB
    folder = tmp_path / "Song.amcproj"
    assert window._save_to(folder, save_as=True)
    assert (folder / "project.json").is_file()
    assert window.windowTitle().startswith("Song")
    window._dirty = False
    window.new_project()
    assert window.project.tracks == []
    with qtbot.waitSignal(window.track_added, timeout=60_000):
        window.open_paths([folder])
    t = window.project.track(tid)
    assert t.gain_db == pytest.approx(-3.5)
    assert window.engine.sample_rate == 44100
    assert tid in window.waveform.track_ids()


CRASHER = textwrap.dedent(
    """
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication
    from app.ui.main_window import MainWindow
    app = QApplication([])
    w = MainWindow(audio=False)
    w.show()
    w.open_paths([sys.argv[1]])
    end = time.monotonic() + 60
    while time.monotonic() < end and not w.project.tracks:
        app.processEvents(); time.sleep(0.01)
    w.mixer.strip(w.project.tracks[0].id).gain.setValue(-60)  # an edit, then the autosave timer
    end = time.monotonic() + 10
    while time.monotonic() < end:
        app.processEvents(); time.sleep(0.01)
        f = w.project.home / "autosave" / "project.json" if w.project.home else None
        if f is not None and f.is_file() and '"gain_db": -6.0' in f.read_text():
            print("AUTOSAVED", flush=True)
            break
    time.sleep(60)  # killed here, mid-session
    """
)


def test_killed_studio_offers_recovery_of_the_autosave(qtbot, tmp_path, monkeypatch, program_44k_30s):
    home = tmp_path / "home"
    env = dict(os.environ, AMC_HOME=str(home), AMC_AUTOSAVE_MS="300", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(program_44k_30s)], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "AUTOSAVED" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    monkeypatch.setenv("AMC_HOME", str(home))
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    w = mw.MainWindow(audio=False)
    qtbot.addWidget(w)
    assert projects.list_recoverable(home / "sessions")
    with qtbot.waitSignal(w.track_added, timeout=60_000):
        w.offer_recovery()
    assert w.project.tracks[0].gain_db == pytest.approx(-6.0)
    w._dirty = False
    w.close()


def test_the_studio_process_never_imports_torch(tmp_path):
    code = (
        "import os, sys; os.environ['QT_QPA_PLATFORM']='offscreen'\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from app.ui.main_window import MainWindow\n"
        "app = QApplication([]); w = MainWindow(audio=False); w.show(); app.processEvents()\n"
        "bad = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "w._dirty = False; w.close(); os._exit(0)\n"
    )
    env = dict(os.environ, AMC_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_enhance_target_masters_in_one_gesture(window, qtbot, program_44k_30s):
    with qtbot.waitSignal(window.take_added, timeout=240_000):
        _drop(window.enhance, [program_44k_30s])
    roles = sorted(t.role for t in window.project.tracks)
    assert roles == ["master", "source"]




def test_model_results_become_tracks_and_notes(window, qtbot, tmp_path):
    sr = 32000
    t = np.arange(sr * 2) / sr
    wav = tmp_path / "generated.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    mid = tmp_path / "notes.mid"
    write_midi(mid, [MidiClip(name="melody", notes=(Note(64, 0.0, 1.0, 100), Note(67, 1.0, 1.0, 100)))])
    with qtbot.waitSignal(window.track_added, timeout=30_000):
        window._on_model_result("job-1", {"audio": str(wav), "midi": str(mid)}, {}, {})
    kinds = sorted(tr.kind for tr in window.project.tracks)
    assert kinds == ["audio", "midi"] or kinds == ["midi"]
    qtbot.waitUntil(lambda: sorted(tr.kind for tr in window.project.tracks) == ["audio", "midi"], timeout=30_000)
    assert [n.pitch for n in window.piano.notes()] == [64, 67]


def test_clip_gain_is_heard_drawn_and_saved(window, qtbot, program_44k_30s):
    with qtbot.waitSignal(window.track_added, timeout=60_000) as sig:
        window.open_paths([program_44k_30s])
    tid = sig.args[0]
    window.mixer.strip(tid).gain.setValue(-20)  # fader -2 dB
    window.set_clip_gain(tid, -6.0)
    track = window.project.track(tid)
    assert track.clip_gain_db == -6.0 and track.gain_db == pytest.approx(-2.0)
    def engine_gain() -> float | None:
        info = next((t for t in window.engine.snapshot().tracks if t.track_id == tid), None)
        return None if info is None else info.gain_db

    qtbot.waitUntil(lambda: engine_gain() == pytest.approx(-8.0), timeout=5000)
    window.set_clip_gain(tid, 99.0)
    assert window.project.track(tid).clip_gain_db == 24.0


def test_model_chain_enhance_runs_in_the_worker_and_lands_as_a_track(window, qtbot, tmp_path):
    """The chain panel's Enhance: the ACES slot in the model worker, progress, result as a new track."""
    sr = 44100
    rng = np.random.default_rng(3)
    t = np.arange(sr * 4) / sr
    x = 0.5 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t)) + 0.01 * rng.standard_normal(t.size)
    mix = tmp_path / "noisy.wav"
    sf.write(mix, np.stack([x, x]).T.astype(np.float32), sr)
    with qtbot.waitSignal(window.track_added, timeout=60_000):
        window.open_paths([mix])
    results: list[dict] = []
    window.chain.result_ready.connect(lambda job, outputs, metrics, plan: results.append(outputs))
    window._enhance_with_model()
    rows = window.chain.job_rows()
    assert rows, "the job shows in the jobs list"
    qtbot.waitUntil(lambda: bool(results), timeout=180_000)
    qtbot.waitUntil(lambda: len(window.project.tracks) == 2, timeout=60_000)
    assert Path(results[0]["audio"]).is_file()
    names = [tr.name for tr in window.project.tracks]
    assert len(set(names)) == 2
