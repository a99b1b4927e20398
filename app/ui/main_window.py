"""The Studio's main window: one place that wires views, the playback engine and projects.

Layout: the waveform lanes in the centre; *Tracks* (strips) on the left; *Mastering* and
*Meters* on the right; the *Piano roll* below.  Every heavy step (copying media into the
project, decoding, peak pyramids, analysis, mastering, export) runs in a background
task; the UI pulls the engine's snapshot on a timer (STYLE.md principles 2-3).

UI thread only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
    QUndoGroup,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app import config
from app.engine import audio_io, peaks
from app.engine import project as projects
from app.engine.errors import AmcError
from app.engine.playback import (
    AddTrack,
    AudioOutput,
    AudioTrack,
    Engine,
    LiveMasterChain,
    MidiTrack,
    Pause,
    Play,
    RemoveTrack,
    ResetMeters,
    Seek,
    SetGain,
    SetLoop,
    SetMasterChain,
    SetMatchGains,
    SetMonitor,
    SetMute,
    SetPan,
    SetSolo,
    Stop,
    ThreadedMasterChain,
    match_gains_db,
)
from app.midi import files as midi_files
from app.ui import theme
from app.ui.account_dialog import AccountDialog, AccountStatusWidget
from app.ui.chain_panel import ChainPanel
from app.ui.export_dialog import ExportDialog, export_master
from app.ui.mastering_panel import MasteringPanel
from app.ui.meters import MeterPanel
from app.ui.mixer_panel import MixerPanel
from app.ui.model_bridge import ModelBridge
from app.ui.piano_roll import PianoRoll
from app.ui.tasks import TaskRunner
from app.ui.waveform_view import WaveformView, format_time

log = logging.getLogger("amc.studio")

AUDIO_EXTENSIONS = frozenset({".wav", ".wave", ".aif", ".aiff", ".aifc", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
MIDI_EXTENSIONS = frozenset({".mid", ".midi", ".smf"})
PROJECT_SUFFIX = ".amcproj"
UI_REFRESH_MS = 33  # ~30 Hz playhead/meters pull
MAX_RECENT = 10
BLOCK_FRAMES = 256
GIL_SWITCH_INTERVAL_S = 0.0005


def classify(path: Path) -> str:
    """``"project"``, ``"audio"``, ``"midi"`` or ``"unsupported"`` by name (contents are checked on load)."""
    if path.suffix.lower() == PROJECT_SUFFIX or (path / projects.PROJECT_FILE).is_file():
        return "project"
    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in MIDI_EXTENSIONS:
        return "midi"
    return "unsupported"


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """(channels, frames) -> (1 or 2, frames): mono stays mono (the mixer pans it), more
    channels fold down (even-indexed to the left, odd to the right, averaged)."""
    if audio.shape[0] <= 2:
        return audio
    left = audio[0::2].mean(axis=0)
    right = audio[1::2].mean(axis=0)
    return np.ascontiguousarray(np.stack([left, right]), dtype=np.float32)


@dataclass
class LoadedAudio:
    track: projects.Track
    path: Path
    sample_rate: int
    audio: np.ndarray  # (1 or 2, frames) float32 at the engine rate
    pyramid: peaks.PeakPyramid | None = None


def _load_audio_job(
    project: projects.Project, path: Path, track: projects.Track, engine_rate: int, *, import_file: bool,
    progress: Any,
) -> LoadedAudio:  # fmt: skip
    """Background: copy into the project (once per content), decode, resample to the engine rate."""
    progress(0.05, f"reading {path.name}")
    audio_io.probe(path)  # a clear error for a bad file before anything is copied
    if import_file:
        track.media_sha = projects.import_media(project, path)
        track.original_filename = path.name
    media = project.audio_path(track)
    progress(0.4, f"decoding {path.name}")
    audio, sr = audio_io.read(media)
    if sr != engine_rate:
        progress(0.7, f"resampling {sr} -> {engine_rate} Hz")
        audio = audio_io.resample(audio, sr, engine_rate)
    audio = to_stereo(np.asarray(audio, dtype=np.float32))
    pyr = peaks.build_from_array(audio, engine_rate) if track.role == "master" else None
    progress(1.0, "ready")
    return LoadedAudio(track, media, sr, audio, pyr)


class _SilentClock:
    """Drives the engine in real time when no audio device can be opened, so the
    transport, meters and A/B still work (and nothing is heard).  Its own thread."""

    def __init__(self, engine: Engine, blocksize: int = 1024) -> None:
        self.engine = engine
        self.blocksize = blocksize
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amc-silent-clock", daemon=True)
        self._buf = np.zeros((2, blocksize), dtype=np.float32)
        self._thread.start()

    def _run(self) -> None:
        period = self.blocksize / self.engine.sample_rate
        due = time.monotonic()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            self.engine.render(self.blocksize, out=self._buf)
            self.engine.report_callback((time.perf_counter() - t0) / period, False)
            due += period
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                due = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class EnhanceTarget(QFrame):
    """The one-gesture target: a file dropped here is added and mastered with the current preset."""

    dropped = Signal(Path)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setObjectName("enhanceTarget")
        self._style(False)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        title = QLabel("✦ Enhance")
        title.setStyleSheet("font-weight: 700; font-size: 11pt;")
        hint = QLabel("Drop a mix here: it is mastered with the current preset")
        hint.setStyleSheet(f"color: {theme.TEXT_DIM}; font-size: 8.5pt;")
        hint.setWordWrap(True)
        lay.addWidget(title)
        lay.addWidget(hint)

    def _style(self, hot: bool) -> None:
        colour = theme.ACCENT if hot else theme.BORDER
        self.setStyleSheet(
            f"#enhanceTarget {{ border: 2px dashed {colour}; border-radius: 6px; background: {theme.SURFACE_RAISED}; }}"
        )

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_paths(event):
            self._style(True)
            event.acceptProposedAction()

    def dragLeaveEvent(self, event: Any) -> None:
        self._style(False)

    def dropEvent(self, event: QDropEvent) -> None:
        self._style(False)
        paths = _dropped_paths(event)
        if paths:
            event.acceptProposedAction()
            self.dropped.emit(paths[0])


def _dropped_paths(event: QDragEnterEvent | QDropEvent) -> list[Path]:
    md = event.mimeData()
    if not md.hasUrls():
        return []
    return [Path(u.toLocalFile()) for u in md.urls() if u.isLocalFile()]


class MainWindow(QMainWindow):
    """The Studio window.

    Parameters
    ----------
    audio : bool
        Open the default audio output (else a silent real-time clock drives the engine).
    """

    track_added = Signal(str)  # project track id, once it plays and shows
    take_added = Signal(str)  # a master take's track id
    load_failed = Signal(str, str)  # path, message

    def __init__(self, *, audio: bool = True) -> None:
        super().__init__()
        self.startup_seconds = math.nan
        self._want_audio = audio
        # The audio callback runs Python: a 0.5 ms GIL switch interval keeps a busy UI thread
        # from holding it for a whole buffer period (benchmarks/playback.py: 5 ms -> ~2000
        # underruns a minute under load, 0.5 ms -> ~130).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.settings = QSettings()
        self.tasks = TaskRunner(self)
        self.project = projects.Project.new("Untitled")
        self.project_folder: Path | None = None
        self._dirty = False
        self._output: AudioOutput | _SilentClock | None = None
        self.device_name = "—"
        self.engine = Engine(self.project.sample_rate, block_frames=BLOCK_FRAMES)
        self._pending_loads: dict[str, str] = {}  # task id -> track id
        self._enhance_next: set[str] = set()  # track ids to master once loaded
        self._source_lufs: float | None = None
        self._master_lufs: float | None = None
        self._midi_track_id: str | None = None
        self._chain_build: str | None = None
        self._shown_frame = -1  # the playhead position last drawn

        self.setWindowTitle(config.APP_DISPLAY_NAME)
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)
        self.resize(1440, 900)

        self.waveform = WaveformView(self)
        self.waveform.loader.cache = peaks.PeakCache(config.cache_dir() / "peaks")
        self.setCentralWidget(self.waveform)
        self._drop_hint = QLabel(
            "Drop audio or MIDI files here\n\nor use File → Import (Ctrl+I) · File → Open a project (Ctrl+O)",
            self.waveform,
        )
        self._drop_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._drop_hint.setStyleSheet(
            f"color: {theme.TEXT_DIM}; font-size: 13pt; border: 2px dashed {theme.BORDER}; border-radius: 10px;"
            f"background: transparent; padding: 24px;"
        )
        self._drop_hint.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.waveform.installEventFilter(self)
        self.mixer = MixerPanel()
        self.meters = MeterPanel()
        self.mastering = MasteringPanel()
        self.piano = PianoRoll()
        self.model_bridge = ModelBridge(self)  # the worker process starts on the first job
        self.chain = ChainPanel(self.model_bridge)
        self.enhance = EnhanceTarget()
        self._docks: dict[str, QDockWidget] = {}
        self._build_docks()

        self.undo_group = QUndoGroup(self)
        self.undo_stack = QUndoStack(self)  # project-level edits
        self.undo_group.addStack(self.undo_stack)
        self.undo_group.addStack(self.piano.undo_stack)
        self.undo_group.setActiveStack(self.undo_stack)

        self._build_actions()
        self._build_menus()
        self._build_toolbars()
        self._build_status_bar()
        self._connect()
        self._restore_settings()
        self._open_output()

        self._timer = QTimer(self)
        self._timer.setInterval(UI_REFRESH_MS)
        self._timer.timeout.connect(self._refresh)
        self._timer.start()
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(config.autosave_interval_ms())
        self._autosave_timer.timeout.connect(self.autosave)
        self._autosave_timer.start()
        self._update_title()

    # ================================================================== construction

    def _dock(self, key: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setObjectName(f"dock_{key}")
        d.setWidget(widget)
        d.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(area, d)
        self._docks[key] = d
        return d

    def _build_docks(self) -> None:
        left = QWidget()
        lay = QVBoxLayout(left)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.enhance)
        lay.addWidget(self.mixer, 1)
        left.setMinimumWidth(300)
        self._dock("tracks", "Tracks", left, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("mastering", "Mastering", self.mastering, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("meters", "Meters", self.meters, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("chain", "Model chain", self.chain, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("piano", "Piano roll", self.piano, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self._docks["meters"], self._docks["mastering"], Qt.Orientation.Horizontal)
        self.tabifyDockWidget(self._docks["mastering"], self._docks["chain"])
        self._docks["mastering"].raise_()
        # side panels run the full height; the piano roll sits under the lanes only
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.resizeDocks([self._docks["tracks"]], [330], Qt.Orientation.Horizontal)
        self.resizeDocks([self._docks["piano"]], [280], Qt.Orientation.Vertical)

    def _action(self, text: str, slot: Any, shortcut: str | QKeySequence | None = None, *,
                checkable: bool = False, tip: str | None = None) -> QAction:  # fmt: skip
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.setCheckable(checkable)
        if tip:
            a.setToolTip(tip)
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        A = self._action
        self.act_new = A("&New Project", self.new_project, QKeySequence.StandardKey.New)
        self.act_open = A("&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        self.act_import = A("&Import Audio or MIDI…", self.import_dialog, "Ctrl+I")
        self.act_save = A("&Save", self.save, QKeySequence.StandardKey.Save)
        self.act_save_as = A("Save &As…", self.save_as_dialog, "Ctrl+Shift+S")
        self.act_export = A("&Export Master…", self.export_dialog, "Ctrl+E")
        self.act_export_midi = A("Export &MIDI…", self.export_midi_dialog)
        self.act_quit = A("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_account = A("&Account && Sync…", self.account_dialog)
        self.act_undo = self.undo_group.createUndoAction(self, "&Undo")
        self.act_undo.setShortcut(QKeySequence("Ctrl+Z"))
        self.act_redo = self.undo_group.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        for a in (self.act_undo, self.act_redo):
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.addAction(a)
        self.act_remove_track = A("Remove Selected Track", self.remove_selected_track)
        self.act_play = A("Play / Pause", self.toggle_play, "Space", tip="Play or pause (Space)")
        self.act_stop = A("Stop", self.stop, tip="Stop and return to the start")
        self.act_home = A("Go to Start", self.go_home, "Home", tip="Go to the start (Home)")
        self.act_end = A("Go to End", self.go_end, "End")
        self.act_loop = A("Loop", self.toggle_loop, "L", checkable=True, tip="Loop the selection or loop region (L)")
        self.act_zoom_in = A("Zoom In", self.waveform.zoom_in, "+", tip="Zoom in (+)")
        self.act_zoom_in.setShortcuts([QKeySequence("+"), QKeySequence("="), QKeySequence("Ctrl++")])
        self.act_zoom_out = A("Zoom Out", self.waveform.zoom_out, "-", tip="Zoom out (-)")
        self.act_zoom_out.setShortcuts([QKeySequence("-"), QKeySequence("Ctrl+-")])
        self.act_zoom_fit = A("Zoom to Fit", self.waveform.zoom_to_fit, "Ctrl+0")
        self.act_follow = A("Follow Playhead", self.waveform.set_follow_playhead, "F", checkable=True)
        self.act_follow.setChecked(True)
        self.act_analyze = A("&Analyze", self.mastering.analyze, "Ctrl+Shift+A")
        self.act_master = A("&Master", self.mastering.master, "Ctrl+M")
        self.act_about = A("&About", self.about)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        for a in (self.act_new, self.act_open):
            f.addAction(a)
        self.recent_menu = f.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        f.addSeparator()
        for a in (self.act_import, self.act_save, self.act_save_as):
            f.addAction(a)
        f.addSeparator()
        f.addAction(self.act_export)
        f.addAction(self.act_export_midi)
        f.addSeparator()
        f.addAction(self.act_account)
        f.addSeparator()
        f.addAction(self.act_quit)
        e = mb.addMenu("&Edit")
        e.addAction(self.act_undo)
        e.addAction(self.act_redo)
        e.addSeparator()
        e.addAction(self.act_remove_track)
        v = mb.addMenu("&View")
        for a in (self.act_zoom_in, self.act_zoom_out, self.act_zoom_fit, self.act_follow):
            v.addAction(a)
        v.addSeparator()
        for d in self._docks.values():
            v.addAction(d.toggleViewAction())
        t = mb.addMenu("&Transport")
        for a in (self.act_play, self.act_stop, self.act_home, self.act_end, self.act_loop):
            t.addAction(a)
        m = mb.addMenu("&Master")
        m.addAction(self.act_analyze)
        m.addAction(self.act_master)
        m.addAction(self.act_export)
        h = mb.addMenu("&Help")
        h.addAction(self.act_about)

    def _build_toolbars(self) -> None:
        tb = QToolBar("Transport", self)
        tb.setObjectName("toolbar_transport")
        tb.setMovable(False)
        self.addToolBar(tb)
        st = self.style()
        self._icon_play = st.standardIcon(QStyle.StandardPixmap.SP_MediaPlay)
        self._icon_pause = st.standardIcon(QStyle.StandardPixmap.SP_MediaPause)
        self.act_home.setIcon(st.standardIcon(QStyle.StandardPixmap.SP_MediaSkipBackward))
        self.act_play.setIcon(self._icon_play)
        self.act_stop.setIcon(st.standardIcon(QStyle.StandardPixmap.SP_MediaStop))
        self.act_loop.setText("Loop")
        for a in (self.act_home, self.act_play, self.act_stop, self.act_loop):
            tb.addAction(a)
        self.time_label = QLabel("00:00.000")
        self.time_label.setStyleSheet(
            f"font-family: monospace; font-size: 15pt; color: {theme.TEXT}; background: {theme.BACKGROUND};"
            f"border: 1px solid {theme.BORDER}; border-radius: 4px; padding: 2px 10px; margin: 0 8px;"
        )
        self.time_label.setMinimumWidth(150)
        self.time_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        tb.addWidget(self.time_label)
        self.beat_label = QLabel("1.1")
        self.beat_label.setStyleSheet(f"font-family: monospace; color: {theme.TEXT_DIM}; margin-right: 10px;")
        self.beat_label.setToolTip("Bar.beat at the project tempo")
        tb.addWidget(self.beat_label)
        tb.addSeparator()

        ab = QWidget()
        row = QHBoxLayout(ab)
        row.setContentsMargins(6, 0, 6, 0)
        row.setSpacing(0)
        self.btn_a = QPushButton("A · Source")
        self.btn_b = QPushButton("B · Master")
        self.ab_group = QButtonGroup(self)
        for i, b in enumerate((self.btn_a, self.btn_b)):
            b.setCheckable(True)
            b.setMinimumWidth(96)
            radius = "border-top-left-radius: 4px; border-bottom-left-radius: 4px;" if i == 0 else \
                "border-top-right-radius: 4px; border-bottom-right-radius: 4px;"  # fmt: skip
            colour = theme.SOURCE_WAVE if i == 0 else theme.MASTER_WAVE
            b.setStyleSheet(
                f"QPushButton {{ border-radius: 0; {radius} }}"
                f"QPushButton:checked {{ background: {colour}; color: #111; font-weight: 700; border-color: {colour}; }}"
            )
            self.ab_group.addButton(b, i)
            row.addWidget(b)
        self.btn_a.setChecked(True)
        self.btn_a.setToolTip("Hear the source mix (A). Shortcut: Ctrl+1")
        self.btn_b.setToolTip("Hear the master (B): the rendered take, or the live chain before rendering. Ctrl+2")
        self.btn_a.setShortcut(QKeySequence("Ctrl+1"))
        self.btn_b.setShortcut(QKeySequence("Ctrl+2"))
        self.match_box = QCheckBox("Match loudness")
        self.match_box.setChecked(True)
        self.match_box.setToolTip("Turn the louder side down so A and B compare at equal integrated loudness")
        row.addSpacing(8)
        row.addWidget(self.match_box)
        tb.addWidget(ab)
        tb.addSeparator()
        for a, text in ((self.act_zoom_out, "−"), (self.act_zoom_in, "+"), (self.act_zoom_fit, "Fit")):
            a.setText(text)
            tb.addAction(a)
        self.act_follow.setText("Follow")
        tb.addAction(self.act_follow)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.status_account = AccountStatusWidget()
        self.status_account.clicked.connect(self.account_dialog)
        sb.addPermanentWidget(self.status_account)
        self.status_account.refresh()  # background; nothing until a service was chosen once
        self.status_rate = QLabel()
        self.status_buffer = QLabel()
        self.status_cpu = QLabel()
        self.status_device = QLabel()
        for w in (self.status_rate, self.status_buffer, self.status_cpu, self.status_device):
            sb.addPermanentWidget(w)
        self._update_status()

    def _connect(self) -> None:
        self.tasks.finished.connect(self._on_task_finished)
        self.tasks.failed.connect(self._on_task_failed)
        self.tasks.progress.connect(self._on_task_progress)
        self.waveform.seek_requested.connect(self.seek_seconds)
        self.waveform.loop_changed.connect(self._on_loop_changed)
        self.waveform.track_failed.connect(lambda tid, msg: self.statusBar().showMessage(msg, 8000))
        self.mixer.gain_changed.connect(self._on_gain)
        self.mixer.pan_changed.connect(self._on_pan)
        self.mixer.mute_toggled.connect(self._on_mute)
        self.mixer.solo_toggled.connect(self._on_solo)
        self.mixer.clip_gain_requested.connect(self._ask_clip_gain)
        self.ab_group.idToggled.connect(self._on_ab)
        self.match_box.toggled.connect(lambda _on: self._apply_match())
        self.mastering.master_ready.connect(self._on_master_ready)
        self.mastering.analysis_ready.connect(self._on_analysis_ready)
        self.mastering.status_message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.enhance.dropped.connect(self.enhance_file)
        self.chain.result_ready.connect(self._on_model_result)
        self.chain.enhance_requested.connect(self._enhance_with_model)
        self.piano.clip_changed.connect(self._on_clip_changed)
        self.piano.note_auditioned.connect(self._audition)
        from PySide6.QtWidgets import QApplication

        QApplication.instance().focusChanged.connect(self._on_focus)  # type: ignore[union-attr]

    # ================================================================== audio output

    def _open_output(self) -> None:
        self._close_output()
        if self._want_audio:
            try:
                out = AudioOutput(self.engine, blocksize=BLOCK_FRAMES)
                out.start()
                self._output = out
                self.device_name = self._device_label()
                log.info("audio output open: %s", self.device_name)
                self._update_status()
                return
            except AmcError as exc:
                log.warning("no audio output: %s", exc)
                self.statusBar().showMessage(f"No audio output: {exc}. Playback runs silently.", 10000)
        self._output = _SilentClock(self.engine)
        self.device_name = "no audio device (silent)"
        self._update_status()

    def _device_label(self) -> str:
        try:
            import sounddevice as sd

            return str(sd.query_devices(kind="output")["name"])
        except Exception:  # the label is cosmetic; the stream itself is open
            return "default output"

    def _close_output(self) -> None:
        if self._output is not None:
            with contextlib.suppress(Exception):
                self._output.close()
            self._output = None

    def _set_engine_rate(self, sample_rate: int) -> None:
        """A new (empty) session adopts the first file's rate so nothing is resampled."""
        if sample_rate == self.engine.sample_rate:
            return
        self._close_output()
        self.engine = Engine(sample_rate, block_frames=BLOCK_FRAMES)
        self.project.sample_rate = sample_rate
        self._open_output()

    # ================================================================== periodic refresh

    def _refresh(self) -> None:
        snap = self.engine.snapshot()
        self.engine.collect()
        heard = max(0, snap.heard_frame)
        if heard != self._shown_frame:  # a stopped transport repaints nothing
            self._shown_frame = heard
            seconds = heard / snap.sample_rate
            self.waveform.set_playhead(seconds)
            beats = seconds * self.project.tempo_bpm / 60.0
            self.piano.set_playhead(beats)
            self.time_label.setText(format_time(seconds))
            self.beat_label.setText(f"{int(beats // 4) + 1}.{int(beats % 4) + 1}")
        m = snap.meters
        self.meters.set_levels(m.sample_peak_dbfs, m.true_peak_dbtp, m.momentary_lufs, m.short_term_lufs, m.correlation)
        if snap.playing != getattr(self, "_shown_playing", None):
            self._shown_playing = snap.playing
            self.act_play.setIcon(self._icon_pause if snap.playing else self._icon_play)
        self._snap = snap
        self._update_status(snap)
        if self._drop_hint.isVisible() == bool(self.waveform.track_ids()):
            self._place_drop_hint()

    def eventFilter(self, watched: Any, event: Any) -> bool:
        if watched is self.waveform and event.type() == QEvent.Type.Resize:
            self._place_drop_hint()
        return super().eventFilter(watched, event)

    def _place_drop_hint(self) -> None:
        r = self.waveform.rect()
        w, h = min(560, r.width() - 40), 150
        self._drop_hint.setGeometry((r.width() - w) // 2, (r.height() - h) // 2, max(0, w), h)
        self._drop_hint.setVisible(not self.waveform.track_ids())

    def _update_status(self, snap: Any = None) -> None:
        sr = self.engine.sample_rate
        self.status_rate.setText(f"{sr / 1000:g} kHz")
        self.status_buffer.setText(f"buffer {BLOCK_FRAMES} ({1000 * BLOCK_FRAMES / sr:.1f} ms)")
        if snap is not None:
            under = f" · {snap.underruns} underruns" if snap.underruns else ""
            self.status_cpu.setText(f"audio CPU {100 * snap.callback_load:4.1f} %{under}")
        else:
            self.status_cpu.setText("audio CPU —")
        self.status_device.setText(f"output: {self.device_name}")

    # ================================================================== files in

    def open_paths(self, paths: Iterable[Path]) -> None:
        """Open what the user gave: projects, audio files (tracks), MIDI files (piano roll)."""
        for raw in paths:
            path = Path(raw).expanduser()
            kind = classify(path)
            if not path.exists():
                self._error("Cannot open", f"{path} does not exist.")
            elif kind == "project":
                self.open_project(path)
            elif kind == "audio":
                self.add_audio_file(path)
            elif kind == "midi":
                self.add_midi_file(path)
            else:
                self._error(
                    "Unsupported file",
                    f"{path.name} is not an audio file (WAV, AIFF, FLAC, OGG, Opus, MP3), a MIDI file or a project.",
                )

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_paths(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = _dropped_paths(event)
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    def add_audio_file(self, path: Path, *, enhance: bool = False) -> str | None:
        """Add an audio file as a source track (copied into the project; the file itself is never touched)."""
        try:
            info = audio_io.probe(path)
        except AmcError as exc:
            self._error("Cannot open audio", str(exc))
            self.load_failed.emit(str(path), str(exc))
            return None
        if not any(t.kind == "audio" for t in self.project.tracks):
            self._set_engine_rate(info.sample_rate)
        index = len(self.project.tracks)
        track = projects.Track(name=path.stem, kind="audio", role="source", color=theme.track_color(index))
        self._ensure_session()
        if enhance:
            self._enhance_next.add(track.id)
        self._start_audio_load(path, track, import_file=True)
        self._remember_recent(path)
        return track.id

    def _start_audio_load(self, path: Path, track: projects.Track, *, import_file: bool) -> None:
        self.waveform.add_track(track.id, track.name, None, self.engine.sample_rate, track.color)
        self.waveform.set_pending(track.id, 0.0)
        h = self.tasks.submit(f"Load {track.name}", _load_audio_job, self.project, path, track,
                              self.engine.sample_rate, import_file=import_file)  # fmt: skip
        self._pending_loads[h.task_id] = track.id

    def _on_task_progress(self, task_id: str, fraction: float, message: str) -> None:
        tid = self._pending_loads.get(task_id)
        if tid is not None:
            self.waveform.set_pending(tid, fraction)

    def _on_task_failed(self, task_id: str, message: str, details: str) -> None:
        tid = self._pending_loads.pop(task_id, None)
        if tid is not None:
            self.waveform.remove_track(tid)
            self._enhance_next.discard(tid)
            self._error("Cannot load track", message)
            self.load_failed.emit(tid, message)
            return
        if task_id == self._chain_build:
            self._chain_build = None
            log.warning("live master chain not built: %s", message)
            return
        self.statusBar().showMessage(message, 10000)

    def _on_task_finished(self, task_id: str, result: object) -> None:
        tid = self._pending_loads.pop(task_id, None)
        if tid is not None and isinstance(result, LoadedAudio):
            self._place_audio(result)
        elif task_id == self._chain_build and isinstance(result, LiveMasterChain):
            self._chain_build = None
            # the chain runs on its own thread, so a busy UI cannot starve the callback
            self.engine.send(SetMasterChain(ThreadedMasterChain(result)))

    def _place_audio(self, loaded: LoadedAudio) -> None:
        t = loaded.track
        if t not in self.project.tracks:
            self.project.add_track(t)
        self.engine.send(AddTrack(AudioTrack(t.id, loaded.audio, role=t.role, gain_db=t.gain_db + t.clip_gain_db, pan=t.pan,
                                             muted=t.mute, soloed=t.solo)))  # fmt: skip
        if t.role == "master":
            self.waveform.remove_track(t.id)
            if t.master_of is not None:
                self.waveform.set_overlay(t.master_of, loaded.pyramid)
            self.waveform.add_track(t.id, f"{t.name}", loaded.pyramid, self.engine.sample_rate, theme.MASTER_WAVE)
        else:
            self.waveform.set_pending(t.id, None)
            self.waveform.loader.load(t.id, loaded.path)
        self.waveform.set_clip_gain(t.id, t.clip_gain_db)
        self.mixer.add_track(t.id, t.name, color=theme.MASTER_WAVE if t.role == "master" else t.color,
                             role=t.role, gain_db=t.gain_db, pan=t.pan, mute=t.mute, solo=t.solo)  # fmt: skip
        if t.role == "source" and self._mastering_source() is t:
            self.mastering.set_render_folder(self.project.renders_dir(self._scratch()))
            self.mastering.set_source(loaded.path, loaded.sample_rate, name=t.name)
            self.chain.set_enhance_target(t.name)
        if len(self.waveform.track_ids()) == 1:
            QTimer.singleShot(0, self.waveform.zoom_to_fit)
        self._mark_dirty()
        self.track_added.emit(t.id)
        if t.role == "master":
            self.take_added.emit(t.id)
        if t.id in self._enhance_next:
            self._enhance_next.discard(t.id)
            self.mastering.set_source(loaded.path, loaded.sample_rate, name=t.name)
            self.mastering.master()

    def _mastering_source(self) -> projects.Track | None:
        for t in self.project.tracks:
            if t.kind == "audio" and t.role == "source":
                return t
        return None

    def enhance_file(self, path: Path) -> None:
        """One gesture: add ``path`` as a track and master it with the current preset."""
        if classify(path) != "audio":
            self._error("Cannot enhance", f"{path.name} is not an audio file.")
            return
        self.add_audio_file(path, enhance=True)

    def add_midi_file(self, path: Path) -> None:
        try:
            clips = midi_files.read_midi(path)
        except AmcError as exc:
            self._error("Cannot open MIDI", str(exc))
            self.load_failed.emit(str(path), str(exc))
            return
        clips = [c for c in clips if c.notes]
        if not clips:
            self._error("Empty MIDI file", f"{path.name} has no notes.")
            return
        # the piano roll edits one part: the melodic part with the most notes (drums last)
        clip = max(clips, key=lambda c: (not c.is_drum, len(c.notes)))
        if len(clips) > 1:
            self.statusBar().showMessage(f"{path.name}: {len(clips)} parts; {clip.name} is in the piano roll", 8000)
        if not self.project.tracks:
            self.project.tempo_bpm = clip.tempo_bpm
            self._shown_frame = -1  # redraw bar.beat at the new tempo
        self._set_midi_clip(clip, name=path.stem)
        self._remember_recent(path)

    def _set_midi_clip(self, clip: midi_files.MidiClip, *, name: str) -> None:
        track = None
        if self._midi_track_id is not None:
            with contextlib.suppress(KeyError):
                track = self.project.track(self._midi_track_id)
        if track is None:
            track = projects.Track(name=name, kind="midi", color=theme.track_color(len(self.project.tracks)))
            self.project.add_track(track)
            self._midi_track_id = track.id
            self.mixer.add_track(track.id, track.name, color=track.color, role="MIDI · synth")
        track.midi_clip = midi_files.clip_to_dict(clip)
        self.piano.set_clip(clip)
        self.piano.undo_stack.clear()
        self._send_midi(track, clip)
        self._docks["piano"].raise_()
        self._mark_dirty()
        self.track_added.emit(track.id)

    def _send_midi(self, track: projects.Track, clip: midi_files.MidiClip) -> None:
        notes = clip.to_note_array()
        self.engine.send(AddTrack(MidiTrack(track.id, notes, self.engine.sample_rate, role="source",
                                            gain_db=track.gain_db, pan=track.pan, muted=track.mute,
                                            soloed=track.solo)))  # fmt: skip

    def _on_clip_changed(self) -> None:
        if self._midi_track_id is None:
            self._set_midi_clip(self.piano.clip(), name="MIDI")
            return
        track = self.project.track(self._midi_track_id)
        clip = self.piano.clip()
        track.midi_clip = midi_files.clip_to_dict(clip)
        self._send_midi(track, clip)
        self._mark_dirty()

    def _audition(self, pitch: int, velocity: int) -> None:
        from app.engine.playback import NoteOff, NoteOn

        if self._midi_track_id is None:
            self._set_midi_clip(self.piano.clip(), name="MIDI")
        tid = self._midi_track_id
        assert tid is not None
        self.engine.send(NoteOn(tid, pitch, velocity))
        QTimer.singleShot(350, lambda: self.engine.send(NoteOff(tid, pitch)))

    # ================================================================== model chain results

    def _enhance_with_model(self) -> None:
        """The chain panel's *Enhance*: the ACES slot (repair, then master) on the current mix."""
        source = self._mastering_source()
        if source is None:
            self._error("Nothing to enhance", "Add a mix first.")
            return
        self.chain.run_job("aces", "enhance", {}, {"audio": str(self.project.audio_path(source))},
                           f"Enhance {source.name}")  # fmt: skip

    def _on_model_result(self, job_id: str, outputs: dict, metrics: dict, plan: dict) -> None:
        """A finished model job: audio becomes a new track, notes open in the piano roll."""
        audio = outputs.get("audio")
        if audio and classify(Path(audio)) == "audio":
            self.add_audio_file(Path(audio))
        midi = outputs.get("midi")
        if midi:
            self.add_midi_file(Path(midi))

    # ================================================================== mixer / transport

    def _set_track_attr(self, track_id: str, **changes: Any) -> None:
        with contextlib.suppress(KeyError):
            t = self.project.track(track_id)
            for k, v in changes.items():
                setattr(t, k, v)
            self._mark_dirty()

    def _on_gain(self, track_id: str, gain_db: float) -> None:
        self._set_track_attr(track_id, gain_db=gain_db)
        self._send_gain(track_id)

    def _send_gain(self, track_id: str) -> None:
        """The engine plays fader + clip gain (the clip gain also scales the drawn waveform)."""
        with contextlib.suppress(KeyError):
            t = self.project.track(track_id)
            self.engine.send(SetGain(track_id, t.gain_db + t.clip_gain_db))

    def set_clip_gain(self, track_id: str, gain_db: float) -> None:
        """Gain of the track's clip in dB (-48..+24): heard, drawn and saved with the project."""
        gain_db = max(-48.0, min(24.0, float(gain_db)))
        self._set_track_attr(track_id, clip_gain_db=gain_db)
        self.waveform.set_clip_gain(track_id, gain_db)
        self._send_gain(track_id)

    def _ask_clip_gain(self, track_id: str) -> None:
        with contextlib.suppress(KeyError):
            t = self.project.track(track_id)
            value, ok = QInputDialog.getDouble(self, "Clip gain", f"Clip gain of {t.name} (dB):",
                                               t.clip_gain_db, -48.0, 24.0, 1)  # fmt: skip
            if ok:
                self.set_clip_gain(track_id, value)

    def _on_pan(self, track_id: str, pan: float) -> None:
        self.engine.send(SetPan(track_id, pan))
        self._set_track_attr(track_id, pan=pan)

    def _on_mute(self, track_id: str, on: bool) -> None:
        self.engine.send(SetMute(track_id, on))
        self._set_track_attr(track_id, mute=on)

    def _on_solo(self, track_id: str, on: bool) -> None:
        self.engine.send(SetSolo(track_id, on))
        self._set_track_attr(track_id, solo=on)

    def toggle_play(self) -> None:
        if self.engine.snapshot().playing:
            self.engine.send(Pause())
        else:
            self.engine.send(Play())

    def stop(self) -> None:
        self.engine.send(Stop())

    def go_home(self) -> None:
        self.engine.send(Seek(0))
        self.engine.send(ResetMeters())

    def go_end(self) -> None:
        self.engine.send(Seek(self.engine.snapshot().length_frames))

    def seek_seconds(self, seconds: float) -> None:
        self.engine.send(Seek(max(0, round(seconds * self.engine.sample_rate))))

    def toggle_loop(self, on: bool) -> None:
        if on:
            region = self.waveform.loop() or self.waveform.selection()
            if region is None:
                start, end = self.waveform.view_range()
                region = (max(0.0, start), end)
            self.waveform.set_loop(*region)
        else:
            self.waveform.set_loop(None)
        self._apply_loop()

    def _on_loop_changed(self, start: object, end: object) -> None:
        on = start is not None and end is not None
        if self.act_loop.isChecked() != on and not on:
            self.act_loop.setChecked(False)
        self._apply_loop()

    def _apply_loop(self) -> None:
        region = self.waveform.loop()
        sr = self.engine.sample_rate
        if self.act_loop.isChecked() and region is not None and region[1] > region[0]:
            a, b = round(region[0] * sr), round(region[1] * sr)
            if b > a:
                self.engine.send(SetLoop(a, b))
                self.project.loop = projects.LoopRange(region[0], region[1])
                return
        self.engine.send(SetLoop(0, None))

    # ================================================================== A/B and master takes

    def _on_ab(self, button_id: int, checked: bool) -> None:
        if checked:
            self.engine.send(SetMonitor("master" if button_id == 1 else "source"))
            self.statusBar().showMessage("Hearing B · master" if button_id == 1 else "Hearing A · source", 2000)

    def _apply_match(self) -> None:
        if self.match_box.isChecked() and self._source_lufs is not None and self._master_lufs is not None:
            src_db, master_db = match_gains_db(self._source_lufs, self._master_lufs)
        else:
            src_db, master_db = 0.0, 0.0
        self.engine.send(SetMatchGains(src_db, master_db))

    def _on_analysis_ready(self, bundle: Any) -> None:
        before = getattr(bundle, "before", None)
        plan = getattr(bundle, "plan", None)
        if before is not None:
            self._source_lufs = float(before.integrated_lufs)
        if plan is not None:
            self.project.set_plan(plan)
            self._master_lufs = self._master_lufs if self._has_take() else float(plan.loudness.target_lufs)
            self._apply_match()
            self.meters.set_target_lufs(float(plan.loudness.target_lufs))
            # B before rendering: the source mix through the plan in real time (built off the UI thread)
            self._chain_build = self.tasks.submit("Build live master chain", _build_chain, plan).task_id

    def _has_take(self) -> bool:
        return any(t.role == "master" for t in self.project.tracks)

    def _on_master_ready(self, path: Path, report: dict) -> None:
        source = self._mastering_source()
        after = report.get("after", {})
        before = report.get("before", {})
        name = f"{source.name if source else 'Mix'} · master"
        try:
            track = projects.add_render(self.project, Path(path), name=name,
                                        master_of=source.id if source else None,
                                        metrics={"before": before, "after": after,
                                                 "target": report.get("target"), "result": report.get("result")},
                                        scratch_dir=self._scratch())  # fmt: skip
        except AmcError as exc:
            self._error("Cannot add the master", str(exc))
            return
        # older takes of the same source stay in the project, muted, so B is the newest
        for t in self.project.tracks:
            if t.role == "master" and t.id != track.id and t.master_of == track.master_of and not t.mute:
                t.mute = True
                self.engine.send(SetMute(t.id, True))
                with contextlib.suppress(KeyError):
                    self.mixer.strip(t.id).mute.setChecked(True)
        track.color = theme.MASTER_WAVE
        if isinstance(after.get("integrated_lufs"), int | float):
            self._master_lufs = float(after["integrated_lufs"])
        if isinstance(before.get("integrated_lufs"), int | float):
            self._source_lufs = float(before["integrated_lufs"])
        self._apply_match()
        self._start_audio_load(Path(path), track, import_file=False)
        self.btn_b.setChecked(True)
        self.statusBar().showMessage(
            f"Master ready: {after.get('integrated_lufs', float('nan')):.2f} LUFS, "
            f"{after.get('true_peak_dbtp', float('nan')):.2f} dBTP — A/B with Ctrl+1 / Ctrl+2", 10000,
        )  # fmt: skip

    def remove_selected_track(self) -> None:
        selected = [t for t in self.project.tracks if t.id in self.project.selection] or self.project.tracks[-1:]
        for t in selected:
            self._remove_track(t.id)

    def _remove_track(self, track_id: str) -> None:
        with contextlib.suppress(KeyError):
            t = self.project.track(track_id)
            if t.role == "master" and t.master_of:
                self.waveform.set_overlay(t.master_of, None)
        self.project.remove_track(track_id)
        self.engine.send(RemoveTrack(track_id))
        self.waveform.remove_track(track_id)
        self.mixer.remove_track(track_id)
        if track_id == self._midi_track_id:
            self._midi_track_id = None
        self._mark_dirty()

    # ================================================================== projects

    def _scratch(self) -> Path:
        d = config.amc_home() / "sessions"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _ensure_session(self) -> None:
        if self.project.home is None:
            self.project.renders_dir(self._scratch())

    def _mark_dirty(self) -> None:
        if not self._dirty:
            self._dirty = True
            self._update_title()

    def _update_title(self) -> None:
        star = "•" if self._dirty else ""
        self.setWindowTitle(f"{star}{self.project.name} — {config.APP_DISPLAY_NAME}")

    def _clear_session(self) -> None:
        self._shown_frame = -1
        for tid in list(self.waveform.track_ids()):
            self.waveform.remove_track(tid)
        for t in list(self.project.tracks):
            self.engine.send(RemoveTrack(t.id))
        self.mixer.clear()
        self.engine.send(SetMasterChain(None))
        self.engine.send(Stop())
        self._midi_track_id = None
        self._source_lufs = self._master_lufs = None
        self.piano.set_clip(midi_files.MidiClip())
        self.piano.undo_stack.clear()
        self.undo_stack.clear()
        self.btn_a.setChecked(True)

    def _confirm_discard(self) -> bool:
        if not self._dirty or not self.project.tracks:
            return True
        r = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.project.name}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
        )  # fmt: skip
        if r == QMessageBox.StandardButton.Save:
            return self.save()
        return r == QMessageBox.StandardButton.Discard

    def new_project(self) -> None:
        if not self._confirm_discard():
            return
        self._close_project()
        self._clear_session()
        self.project = projects.Project.new("Untitled")
        self.project_folder = None
        self._dirty = False
        self._update_title()

    def _close_project(self) -> None:
        with contextlib.suppress(AmcError, OSError):
            projects.close_project(self.project, discard_session=self.project_folder is not None)

    def open_dialog(self) -> None:
        if not self._confirm_discard():
            return
        folder = QFileDialog.getExistingDirectory(self, "Open project (a .amcproj folder)", str(config.projects_dir()))
        if folder:
            self.open_project(Path(folder))

    def import_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Import audio or MIDI", str(Path.home()),
            "Audio and MIDI (*.wav *.aif *.aiff *.flac *.ogg *.opus *.mp3 *.mid *.midi);;All files (*)",
        )  # fmt: skip
        self.open_paths(Path(f) for f in files)

    def open_project(self, folder: Path, *, recovered: projects.Project | None = None) -> None:
        try:
            if recovered is None and projects.needs_recovery(folder):
                r = QMessageBox.question(
                    self, "Recover project?",
                    f"{folder.name} was not closed cleanly and has newer autosaved changes. Recover them?",
                )  # fmt: skip
                if r == QMessageBox.StandardButton.Yes:
                    recovered = projects.recover(folder)
            proj = recovered if recovered is not None else projects.open_project(folder, force=True)
        except AmcError as exc:
            self._error("Cannot open project", str(exc))
            return
        self._close_project()
        self._clear_session()
        self.project = proj
        self.project_folder = proj.folder or folder
        self._set_engine_rate(proj.sample_rate)
        for t in list(proj.tracks):
            if t.kind == "audio":
                try:
                    path = proj.audio_path(t)
                except AmcError as exc:
                    self._error("Missing media", str(exc))
                    continue
                self._start_audio_load(path, t, import_file=False)
            elif t.kind == "midi" and t.midi_clip:
                self._midi_track_id = t.id
                clip = midi_files.clip_from_dict(t.midi_clip)
                self.mixer.add_track(t.id, t.name, color=t.color, role="MIDI · synth", gain_db=t.gain_db,
                                     pan=t.pan, mute=t.mute, solo=t.solo)  # fmt: skip
                self.piano.set_clip(clip)
                self.piano.undo_stack.clear()
                self._send_midi(t, clip)
        plan = proj.plan()
        if plan is not None:
            with contextlib.suppress(AmcError, ValueError):
                self.mastering.set_plan(plan)
        with contextlib.suppress(AmcError, TypeError, ValueError):
            self.mastering.set_settings(proj.settings())
        self._dirty = recovered is not None
        self._update_title()
        self._remember_recent(self.project_folder)

    def save(self) -> bool:
        if self.project_folder is None:
            return self.save_as_dialog()
        return self._save_to(self.project_folder, save_as=False)

    def save_as_dialog(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", str(config.projects_dir() / self.project.name),
                                              "AMC project (*.amcproj)")  # fmt: skip
        if not path:
            return False
        folder = Path(path)
        if folder.suffix != PROJECT_SUFFIX:
            folder = folder.with_name(folder.name + PROJECT_SUFFIX)
        return self._save_to(folder, save_as=True)

    def _save_to(self, folder: Path, *, save_as: bool) -> bool:
        self.project.set_settings(self.mastering.settings())
        if save_as or self.project.name == "Untitled":
            self.project.name = folder.stem
        try:
            if save_as or self.project.folder is None:
                projects.save_as(self.project, folder)
            else:
                projects.save(self.project, folder)
        except AmcError as exc:
            self._error("Cannot save", str(exc))
            return False
        self.project_folder = self.project.folder or folder
        self._dirty = False
        self._update_title()
        self._remember_recent(self.project_folder)
        self.statusBar().showMessage(f"Saved {self.project_folder}", 4000)
        return True

    def autosave(self) -> None:
        """Every minute: the project state goes to ``autosave/`` (the saved file is untouched)."""
        if not self._dirty or not self.project.tracks:
            return
        self.project.set_settings(self.mastering.settings())
        try:
            self._ensure_session()
            projects.autosave(self.project, self.project_folder)
        except AmcError as exc:
            log.warning("autosave failed: %s", exc)

    def offer_recovery(self) -> None:
        """At start with no files: offer sessions a crashed Studio left behind."""
        try:
            found = projects.list_recoverable(self._scratch())
        except AmcError:
            return
        if not found:
            return
        newest = found[0]
        r = QMessageBox.question(
            self, "Recover unsaved work?",
            "The Studio did not close cleanly last time. Recover the unsaved session?",
        )  # fmt: skip
        if r == QMessageBox.StandardButton.Yes:
            try:
                proj = projects.recover(newest)
            except AmcError as exc:
                self._error("Cannot recover", str(exc))
                return
            self.open_project(newest, recovered=proj)
            self.project_folder = proj.folder

    # ================================================================== export

    def export_dialog(self) -> None:
        source = self._mastering_source()
        plan = self.mastering.plan()
        if source is None or plan is None:
            self._error("Nothing to export", "Add a mix and press Analyze or Master first.")
            return
        dlg = ExportDialog(self, default_path=config.projects_dir() / f"{source.name}-master.wav",
                           source_rate=plan.sample_rate)
        if not dlg.exec():
            return
        settings = dlg.settings()
        self.tasks.submit("Export master", export_master, self.project.audio_path(source), plan, settings)
        self.statusBar().showMessage(f"Exporting {settings.path.name}…", 4000)

    def export_midi_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export MIDI", str(config.projects_dir() / "clip.mid"), "MIDI (*.mid)")
        if path:
            try:
                midi_files.write_midi(Path(path), [self.piano.clip()])
            except AmcError as exc:
                self._error("Cannot export MIDI", str(exc))

    # ================================================================== account and sync

    def account_dialog(self) -> None:
        """Sign in to the embedded (this computer) or a remote service; sync the project."""
        dlg = AccountDialog(self, project_folder=self.project_folder, before_sync=self._save_for_sync)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.signed_in.connect(self.status_account.set_account)
        dlg.signed_out.connect(lambda: self.status_account.set_account(None))
        dlg.synced.connect(self._on_synced)
        dlg.open_requested.connect(lambda folder, d=dlg: self._open_downloaded(d, Path(folder)))
        dlg.open()

    def _save_for_sync(self) -> Path | None:
        """Sync pushes what is on disk: save first (a never-saved project asks where)."""
        if self.project_folder is None and not self.save():
            return None
        if self._dirty and not self.save():
            return None
        return self.project_folder

    def _on_synced(self, result: dict) -> None:
        self.status_account.update_usage(result.get("usage"))
        if result.get("reload"):  # a pull (or "keep theirs") rewrote project.json on disk
            self.open_project(Path(result["folder"]))

    def _open_downloaded(self, dlg: AccountDialog, folder: Path) -> None:
        """The account dialog downloaded a project and the musician asked to open it."""
        if self._confirm_discard():
            self.open_project(folder)
            dlg.set_project_folder(self.project_folder)

    # ================================================================== misc

    def _on_focus(self, _old: QWidget | None, new: QWidget | None) -> None:
        w = new
        while w is not None:
            if w is self.piano:
                self.undo_group.setActiveStack(self.piano.undo_stack)
                return
            w = w.parentWidget()
        if new is not None:
            self.undo_group.setActiveStack(self.undo_stack)

    def _remember_recent(self, path: Path | None) -> None:
        if path is None:
            return
        recent = [p for p in self.recent_files() if p != str(path)]
        recent.insert(0, str(path))
        self.settings.setValue("recent", recent[:MAX_RECENT])

    def recent_files(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            return [v]
        return [str(x) for x in (v or [])]

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.open_paths([Path(p)]))
        if not self.recent_files():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def _restore_settings(self) -> None:
        geo = self.settings.value("geometry")
        if isinstance(geo, QByteArray):
            self.restoreGeometry(geo)
        state = self.settings.value("window_state")
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def about(self) -> None:
        QMessageBox.about(self, "About", f"{config.APP_DISPLAY_NAME}\nOffline mastering to delivery specs, "
                                         "an AI model chain and MIDI, in one window.")  # fmt: skip

    def _error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.show()
        self.statusBar().showMessage(message, 10000)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not getattr(self, "_sized", False):
            self._sized = True
            if self.settings.value("window_state") is None:
                QTimer.singleShot(0, self._default_dock_sizes)

    def _default_dock_sizes(self) -> None:
        """The waveform gets the room; panels keep a usable minimum (first start only)."""
        self.resizeDocks([self._docks["tracks"]], [290], Qt.Orientation.Horizontal)
        self.resizeDocks([self._docks["meters"], self._docks["mastering"]], [190, 430], Qt.Orientation.Horizontal)
        self.resizeDocks([self._docks["piano"]], [max(240, self.height() // 3)], Qt.Orientation.Vertical)

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._confirm_discard():
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self._timer.stop()
        self._autosave_timer.stop()
        for tid in self.waveform.track_ids():  # no peak thread may outlive the view it reports to
            self.waveform.loader.cancel(tid)
        self.waveform.loader.wait(2.0)
        self.mastering.shutdown()
        self.model_bridge.close()
        self.tasks.shutdown(2.0)
        self._close_output()
        self._close_project()
        event.accept()


def _build_chain(plan: Any, *, progress: Any) -> LiveMasterChain:
    """Background: design the live chain's filters (tens of ms), off the UI and audio threads."""
    progress(0.5, "designing the live master chain")
    return LiveMasterChain(plan)


