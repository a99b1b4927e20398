"""Track strips: name, role, mute / solo, gain and pan for every track of the session.

The panel owns no audio state: it emits past-tense signals that the main window turns
into playback-engine commands and project edits.  UI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QDial,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme

GAIN_MIN_DB = -60.0
GAIN_MAX_DB = 12.0
GAIN_STEPS_PER_DB = 10


class TrackStrip(QFrame):
    """One row: colour chip, name, M / S, gain fader (dB), pan knob."""

    def __init__(self, track_id: str, name: str, color: str, role: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.track_id = track_id
        self.setObjectName("trackStrip")
        self.setStyleSheet(
            f"#trackStrip {{ background: {theme.SURFACE_RAISED}; border: 1px solid {theme.BORDER}; border-radius: 4px; }}"
            f"#trackStrip[selected='true'] {{ border-color: {theme.ACCENT}; }}"
        )
        row = QHBoxLayout(self)
        row.setContentsMargins(6, 4, 6, 4)
        row.setSpacing(6)
        chip = QLabel()
        chip.setFixedSize(6, 30)
        chip.setStyleSheet(f"background: {color}; border-radius: 2px;")
        row.addWidget(chip)
        names = QVBoxLayout()
        names.setSpacing(0)
        self.name_label = QLabel(name)
        self.name_label.setToolTip(name)
        self.name_label.setStyleSheet("font-weight: 600;")
        self.name_label.setMinimumWidth(70)
        self.name_label.setMaximumWidth(110)
        self.role_label = QLabel("master take" if role == "master" else role)
        self.role_label.setStyleSheet(
            f"color: {theme.MASTER_WAVE if role == 'master' else theme.TEXT_DIM}; font-size: 8pt;"
        )
        names.addWidget(self.name_label)
        names.addWidget(self.role_label)
        row.addLayout(names)
        self.mute = self._toggle("M", "Mute", "#c9a227")
        self.solo = self._toggle("S", "Solo", "#3f9e5a")
        row.addWidget(self.mute)
        row.addWidget(self.solo)
        self.gain = QSlider(Qt.Orientation.Horizontal)
        self.gain.setRange(int(GAIN_MIN_DB * GAIN_STEPS_PER_DB), int(GAIN_MAX_DB * GAIN_STEPS_PER_DB))
        self.gain.setValue(0)
        self.gain.setMinimumWidth(50)
        self.gain.setToolTip("Track gain (dB); double-click the value to reset")
        self.gain_label = QLabel("0.0 dB")
        self.gain_label.setFixedWidth(46)
        self.gain_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.gain, 1)
        row.addWidget(self.gain_label)
        self.pan = QDial()
        self.pan.setRange(-100, 100)
        self.pan.setValue(0)
        self.pan.setFixedSize(30, 30)
        self.pan.setNotchesVisible(True)
        self.pan.setToolTip("Pan: C")
        row.addWidget(self.pan)

    def _toggle(self, text: str, tip: str, on_colour: str) -> QPushButton:
        b = QPushButton(text)
        b.setCheckable(True)
        b.setFixedSize(26, 24)
        b.setToolTip(tip)
        b.setStyleSheet(
            f"QPushButton {{ padding: 0; font-weight: 700; }} QPushButton:checked {{ background: {on_colour}; color: #111; }}"
        )
        return b

    def set_selected(self, selected: bool) -> None:
        self.setProperty("selected", "true" if selected else "false")
        self.style().unpolish(self)
        self.style().polish(self)


class MixerPanel(QWidget):
    """A scrolling list of :class:`TrackStrip` rows."""

    gain_changed = Signal(str, float)  # track id, gain dB
    pan_changed = Signal(str, float)  # track id, pan -1 (left) .. +1 (right)
    mute_toggled = Signal(str, bool)
    solo_toggled = Signal(str, bool)
    track_selected = Signal(str)
    clip_gain_requested = Signal(str)  # track id: the user asked to edit the clip gain

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._strips: dict[str, TrackStrip] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        body = QWidget()
        self._rows = QVBoxLayout(body)
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.setSpacing(4)
        self._empty = QLabel("No tracks yet — drop audio or MIDI files on the window.")
        self._empty.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self._empty.setWordWrap(True)
        self._rows.addWidget(self._empty)
        self._rows.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll)

    def track_ids(self) -> list[str]:
        return list(self._strips)

    def strip(self, track_id: str) -> TrackStrip:
        return self._strips[track_id]

    def add_track(
        self, track_id: str, name: str, *, color: str, role: str = "source",
        gain_db: float = 0.0, pan: float = 0.0, mute: bool = False, solo: bool = False,
    ) -> TrackStrip:  # fmt: skip
        s = TrackStrip(track_id, name, color, role)
        s.gain.setValue(round(gain_db * GAIN_STEPS_PER_DB))
        s.gain_label.setText(f"{gain_db:.1f} dB")
        s.pan.setValue(round(pan * 100))
        s.mute.setChecked(mute)
        s.solo.setChecked(solo)
        s.gain.valueChanged.connect(lambda v, s=s: self._on_gain(s, v))
        s.pan.valueChanged.connect(lambda v, s=s: self._on_pan(s, v))
        s.mute.toggled.connect(lambda on, t=track_id: self.mute_toggled.emit(t, on))
        s.solo.toggled.connect(lambda on, t=track_id: self.solo_toggled.emit(t, on))
        s.mousePressEvent = lambda _e, t=track_id: self.select(t)  # type: ignore[method-assign]
        s.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        clip = QAction("Clip gain…", s)
        clip.triggered.connect(lambda _=False, t=track_id: self.clip_gain_requested.emit(t))
        s.addAction(clip)
        self._strips[track_id] = s
        self._rows.insertWidget(self._rows.count() - 1, s)
        self._empty.setVisible(False)
        return s

    def remove_track(self, track_id: str) -> None:
        s = self._strips.pop(track_id, None)
        if s is not None:
            s.setParent(None)
            s.deleteLater()
        self._empty.setVisible(not self._strips)

    def clear(self) -> None:
        for t in list(self._strips):
            self.remove_track(t)

    def select(self, track_id: str) -> None:
        for t, s in self._strips.items():
            s.set_selected(t == track_id)
        self.track_selected.emit(track_id)

    def _on_gain(self, s: TrackStrip, value: int) -> None:
        db = value / GAIN_STEPS_PER_DB
        s.gain_label.setText(f"{db:.1f} dB")
        self.gain_changed.emit(s.track_id, db)

    def _on_pan(self, s: TrackStrip, value: int) -> None:
        s.pan.setToolTip("Pan: C" if value == 0 else f"Pan: {'L' if value < 0 else 'R'}{abs(value)}")
        self.pan_changed.emit(s.track_id, value / 100.0)
