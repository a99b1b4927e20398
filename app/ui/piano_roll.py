"""The piano roll: a note grid with a keyboard, a bar/beat ruler and a velocity lane.

Model and view
    The widget's model is a tuple of :class:`~app.midi.files.Note` plus the
    current selection (a set of indices into that tuple).  Graphics items are
    *derived*: every change rebuilds them from the model, and nothing reads
    state back from an item.  Every edit is one :class:`QUndoCommand` holding
    the whole note tuple and selection before and after, so undo and redo
    restore exactly the previous clip (``piano_roll.undo_stack``; the main
    window adds it to its ``QUndoGroup`` for Ctrl+Z / Ctrl+Shift+Z).  While a
    mouse drag is in progress the items show a *preview* tuple; the command is
    pushed on release, so one gesture is one undo step.

Coordinates
    Scene x is ``beats * px_per_beat`` and scene y is ``(127 - pitch) *
    px_per_key``; the view is never scaled, so zooming changes those two
    factors and rebuilds the items (pens and labels stay crisp).  A beat is a
    quarter note.

Gestures
    *select* tool: click a note to select it (Shift toggles), drag empty space
    for a rubber band, drag a note body to move it (vertical = pitch), drag its
    right edge to resize.  *draw* tool: the same on notes; click/drag empty
    space to add a note of the current length.  *erase* tool: click or drag
    over notes.  Right-click deletes the note under the cursor in any tool.
    Holding Alt while dragging turns snapping off for that drag.

Keys (when the grid has focus)
    Delete/Backspace delete, Q quantizes the selection (everything when
    nothing is selected) to the snap grid, Ctrl+A selects all, Escape clears
    the selection, Ctrl+C / Ctrl+V copy and paste at the playhead, Ctrl+D
    duplicates after the selection, Up/Down transpose (Shift: an octave),
    Left/Right move by one grid step, Ctrl(+Shift)+wheel zooms.

Threading: GUI thread only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QResizeEvent,
    QUndoCommand,
    QUndoStack,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFrame,
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QStyleOptionGraphicsItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.errors import ParameterError
from app.midi.files import MidiClip, Note, pitch_name, quantize
from app.ui import theme

__all__ = [
    "DEFAULT_NOTE_LENGTH_BEATS",
    "DEFAULT_SNAP_BEATS",
    "LENGTH_CHOICES",
    "SNAP_CHOICES",
    "TOOLS",
    "PianoRoll",
    "demo_clip",
    "row_label",
]

#: Snap menu entries: label -> grid in beats (quarter notes); ``None`` = off.
SNAP_CHOICES: tuple[tuple[str, float | None], ...] = (
    ("1/4", 1.0),
    ("1/8", 0.5),
    ("1/16", 0.25),
    ("1/32", 0.125),
    ("1/8 triplet", 1 / 3),
    ("1/16 triplet", 1 / 6),
    ("Off", None),
)
#: New-note length menu entries: label -> length in beats.
LENGTH_CHOICES: tuple[tuple[str, float], ...] = (
    ("1/1", 4.0),
    ("1/2", 2.0),
    ("1/4", 1.0),
    ("1/8", 0.5),
    ("1/16", 0.25),
    ("1/32", 0.125),
    ("1/8 triplet", 1 / 3),
)
TOOLS = ("select", "draw", "erase")
DEFAULT_SNAP_BEATS = 0.25
DEFAULT_NOTE_LENGTH_BEATS = 0.5
DEFAULT_VELOCITY = 100
MIN_NOTE_BEATS = 1 / 64  # shortest note an unsnapped resize can make

KEYBOARD_WIDTH_PX = 64
RULER_HEIGHT_PX = 26
VELOCITY_LANE_HEIGHT_PX = 80
EDGE_GRAB_PX = 6.0
DRAG_START_PX = 3.0
DEFAULT_PX_PER_BEAT = 48.0
DEFAULT_PX_PER_KEY = 14.0
PX_PER_BEAT_RANGE = (6.0, 400.0)
PX_PER_KEY_RANGE = (5.0, 40.0)
MIN_SCENE_BARS = 8
EXTRA_SCENE_BARS = 4

_BLACK_KEYS = frozenset({1, 3, 6, 8, 10})
_ROW_WHITE = QColor("#26282c")
_ROW_BLACK = QColor(theme.BACKGROUND)
_LINE_SUB = QColor("#2b2d32")
_LINE_BEAT = QColor("#363940")
_LINE_BAR = QColor("#565a63")
_LINE_OCTAVE = QColor("#3b3e45")
_VELOCITY_STOPS = ((1, QColor("#3f6fb0")), (64, QColor("#47b39a")), (127, QColor("#f0a04b")))


# General MIDI percussion (channel 10), short enough for the keyboard column.
_GM_DRUMS = {
    35: "Kick 2", 36: "Kick", 37: "Side stick", 38: "Snare", 39: "Clap", 40: "Snare 2",
    41: "Low tom 2", 42: "HH closed", 43: "Low tom", 44: "HH pedal", 45: "Mid tom 2",
    46: "HH open", 47: "Mid tom", 48: "High tom 2", 49: "Crash", 50: "High tom",
    51: "Ride", 52: "China", 53: "Ride bell", 54: "Tambourine", 55: "Splash",
    56: "Cowbell", 57: "Crash 2", 58: "Vibraslap", 59: "Ride 2", 60: "Hi bongo",
    61: "Lo bongo", 62: "Mute conga", 63: "Hi conga", 64: "Lo conga", 65: "Hi timbale",
    66: "Lo timbale", 67: "Hi agogo", 68: "Lo agogo", 69: "Cabasa", 70: "Maracas",
    71: "Whistle", 72: "Long whistle", 73: "Guiro", 74: "Long guiro", 75: "Claves",
    76: "Hi block", 77: "Lo block", 78: "Cuica mute", 79: "Cuica open", 80: "Triangle m.",
    81: "Triangle",
}  # fmt: skip


def row_label(pitch: int, *, drum: bool = False) -> str:
    """What a row or note is called: ``"C4"``, or the GM drum sound for a drum clip."""
    return _GM_DRUMS.get(pitch, pitch_name(pitch)) if drum else pitch_name(pitch)


def _velocity_color(velocity: int) -> QColor:
    """Note fill for a velocity 1..127: cool blue (soft) -> teal -> amber (loud)."""
    for (v0, c0), (v1, c1) in itertools.pairwise(_VELOCITY_STOPS):
        if velocity <= v1:
            t = (velocity - v0) / (v1 - v0)
            return QColor.fromRgbF(
                c0.redF() + t * (c1.redF() - c0.redF()),
                c0.greenF() + t * (c1.greenF() - c0.greenF()),
                c0.blueF() + t * (c1.blueF() - c0.blueF()),
            )
    return QColor(_VELOCITY_STOPS[-1][1])


def _snap_round(beats: float, grid: float | None) -> float:
    return beats if grid is None else round(beats / grid) * grid


def _snap_floor(beats: float, grid: float | None) -> float:
    # The epsilon keeps a click exactly on a line from falling into the previous cell.
    return beats if grid is None else math.floor(beats / grid + 1e-9) * grid


class _EditNotes(QUndoCommand):
    """One edit: the whole note tuple and selection before and after."""

    def __init__(
        self,
        roll: PianoRoll,
        text: str,
        before: tuple[Note, ...],
        after: tuple[Note, ...],
        sel_before: frozenset[int],
        sel_after: frozenset[int],
    ) -> None:
        super().__init__(text)
        self._roll = roll
        self._before, self._after = before, after
        self._sel_before, self._sel_after = sel_before, sel_after

    def redo(self) -> None:
        self._roll._apply(self._after, self._sel_after)

    def undo(self) -> None:
        self._roll._apply(self._before, self._sel_before)


class _NoteItem(QGraphicsItem):
    """A note drawn as a rounded rectangle; a pure view of one model note."""

    def __init__(self, rect: QRectF, note: Note, selected: bool, drum: bool = False) -> None:
        super().__init__()
        self._rect = rect
        self._note = note
        self._selected = selected
        self._drum = drum
        self.setZValue(2 if selected else 1)

    def show_state(self, rect: QRectF, note: Note, selected: bool, drum: bool = False) -> None:
        """Redraw as ``note`` at scene ``rect``; a no-op when nothing changed."""
        same_rect = rect.getRect() == self._rect.getRect()
        if same_rect and (note, selected, drum) == (self._note, self._selected, self._drum):
            return
        self.prepareGeometryChange()
        self._rect, self._note, self._selected, self._drum = rect, note, selected, drum
        self.setZValue(2 if selected else 1)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect.adjusted(-1.5, -1.5, 1.5, 1.5)

    def paint(
        self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None
    ) -> None:
        r = self._rect.adjusted(0.5, 0.5, -0.5, -0.5)
        radius = min(3.0, r.height() / 3, r.width() / 3)
        fill = _velocity_color(self._note.velocity)
        if self._selected:
            fill = fill.lighter(135)
            pen = QPen(QColor("#ffffff"), 1.6)
        else:
            pen = QPen(fill.darker(180), 1.0)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(pen)
        painter.setBrush(fill)
        painter.drawRoundedRect(r, radius, radius)
        if r.width() >= 30 and r.height() >= 10:
            font = QFont(painter.font())
            font.setPixelSize(max(8, min(11, int(r.height()) - 3)))
            painter.setFont(font)
            painter.setPen(QColor("#101114"))
            painter.drawText(
                r.adjusted(4, 0, -2, 0),
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                row_label(self._note.pitch, drum=self._drum),
            )


@dataclass
class _Drag:
    mode: str  # "move" | "resize" | "draw" | "rubber" | "erase" | "velocity"
    press_scene: QPointF
    base: tuple[Note, ...]
    base_sel: frozenset[int]
    index: int | None = None
    grid: float | None = None
    additive: bool = False
    moved: bool = False
    erased: set[int] = field(default_factory=set)
    last_pitch: int | None = None


class _GridView(QGraphicsView):
    """The note grid; turns mouse and key events into PianoRoll edits."""

    # Keys the grid claims from window shortcuts while it has focus (key, needs Ctrl).
    _PLAIN_KEYS = frozenset(
        {
            Qt.Key.Key_Delete,
            Qt.Key.Key_Backspace,
            Qt.Key.Key_Escape,
            Qt.Key.Key_Q,
            Qt.Key.Key_Up,
            Qt.Key.Key_Down,
            Qt.Key.Key_Left,
            Qt.Key.Key_Right,
        }
    )
    _CTRL_KEYS = frozenset({Qt.Key.Key_A, Qt.Key.Key_C, Qt.Key.Key_V, Qt.Key.Key_D})

    def __init__(self, roll: PianoRoll, scene: QGraphicsScene) -> None:
        super().__init__(scene)
        self._roll = roll
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setBackgroundBrush(QBrush(QColor(theme.BACKGROUND)))

    # Grid ------------------------------------------------------------------
    def drawBackground(self, painter: QPainter, rect: QRectF) -> None:
        roll = self._roll
        kh, ppb = roll.px_per_key, roll.px_per_beat
        painter.fillRect(rect, QColor(theme.BACKGROUND))
        top = max(0, int(rect.top() // kh))
        bottom = min(127, int(rect.bottom() // kh))
        for row in range(top, bottom + 1):
            pitch = 127 - row
            y = row * kh
            colour = _ROW_BLACK if pitch % 12 in _BLACK_KEYS else _ROW_WHITE
            painter.fillRect(QRectF(rect.left(), y, rect.width(), kh), colour)
            if pitch % 12 == 0:  # the line under each C marks the octave
                painter.setPen(QPen(_LINE_OCTAVE, 0))
                painter.drawLine(QPointF(rect.left(), y + kh), QPointF(rect.right(), y + kh))
            elif pitch % 12 == 5:  # E/F: two white rows meet
                painter.setPen(QPen(_LINE_SUB, 0))
                painter.drawLine(QPointF(rect.left(), y + kh), QPointF(rect.right(), y + kh))
        beats_per_bar = roll._clip.beats_per_bar  # settings only: no need to build clip()
        beat_unit = 4.0 / roll._clip.time_signature[1]
        first = max(0.0, rect.left() / ppb)
        last = rect.right() / ppb
        grid = roll.snap_beats
        if grid is not None and grid * ppb >= 6:
            self._vlines(painter, rect, grid, first, last, _LINE_SUB)
        if beat_unit * ppb >= 4:
            self._vlines(painter, rect, beat_unit, first, last, _LINE_BEAT)
        self._vlines(painter, rect, beats_per_bar, first, last, _LINE_BAR)

    def _vlines(
        self,
        painter: QPainter,
        rect: QRectF,
        step: float,
        first: float,
        last: float,
        colour: QColor,
    ) -> None:
        painter.setPen(QPen(colour, 0))
        k = math.floor(first / step)
        while k * step <= last:
            x = round(k * step * self._roll.px_per_beat) + 0.5
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
            k += 1

    # Input -----------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self._roll._grid_press(self.mapToScene(event.position().toPoint()), event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._roll._grid_move(self.mapToScene(event.position().toPoint()), event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._roll._grid_release(self.mapToScene(event.position().toPoint()), event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.mousePressEvent(event)  # a fast second click is just another click

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._roll._viewport_resized()

    def wheelEvent(self, event: QWheelEvent) -> None:
        mods = event.modifiers()
        if mods & Qt.KeyboardModifier.ControlModifier:
            factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
            if mods & Qt.KeyboardModifier.ShiftModifier:
                self._roll.set_zoom(px_per_key=self._roll.px_per_key * factor)
            else:
                self._roll.set_zoom(px_per_beat=self._roll.px_per_beat * factor)
            event.accept()
            return
        super().wheelEvent(event)

    def event(self, event: QEvent) -> bool:
        # Claim our keys before window-level shortcuts (a main window's Delete or
        # Ctrl+A action) while the grid has focus.
        if event.type() == QEvent.Type.ShortcutOverride and isinstance(event, QKeyEvent):
            key = Qt.Key(event.key())
            ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            if (key in self._CTRL_KEYS) if ctrl else (key in self._PLAIN_KEYS):
                event.accept()
                return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if not self._roll._key(event):
            super().keyPressEvent(event)


class _Keyboard(QWidget):
    """Vertical piano keyboard aligned with the grid rows; a click auditions a key."""

    def __init__(self, roll: PianoRoll) -> None:
        super().__init__(roll)
        self._roll = roll
        self._pressed: int | None = None
        self.setFixedWidth(KEYBOARD_WIDTH_PX)

    def pitch_at(self, y: float) -> int:
        """The pitch of the key at widget y (px)."""
        scene_y = self._roll.view.mapToScene(0, int(y)).y()
        return self._roll._pitch_at(scene_y)

    def paintEvent(self, event: QPaintEvent) -> None:
        roll = self._roll
        view = roll.view
        kh = roll.px_per_key
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("#d9dadd"))
        font = QFont(p.font())
        font.setPixelSize(max(7, min(11, int(kh) - 2)))
        p.setFont(font)
        w = self.width()
        drum = roll._clip.is_drum
        for pitch in range(128):
            y = view.mapFromScene(QPointF(0, (127 - pitch) * kh)).y()
            if y > self.height() or y + kh < 0:
                continue
            row = QRectF(0, y, w, kh)
            if drum:  # a drum clip names every row after its sound instead of a key
                shade = (
                    QColor(theme.ACCENT)
                    if pitch == self._pressed
                    else QColor("#d9dadd" if pitch % 2 else "#c9cbcf")
                )
                p.fillRect(row, shade)
                if kh >= 9:
                    p.setPen(QColor("#202124"))
                    p.drawText(
                        row.adjusted(3, 0, -3, 0),
                        int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft),
                        row_label(pitch, drum=True),
                    )
                continue
            black = pitch % 12 in _BLACK_KEYS
            if pitch == self._pressed:
                p.fillRect(QRectF(0, y, w * (0.62 if black else 1.0), kh), QColor(theme.ACCENT))
            elif black:
                p.fillRect(QRectF(0, y, w * 0.62, kh), QColor("#25262a"))
            if not black and pitch % 12 in (0, 5):  # boundary between adjacent white keys
                p.setPen(QPen(QColor("#9a9ca3"), 1))
                p.drawLine(QPointF(0, row.bottom()), QPointF(w, row.bottom()))
            if pitch % 12 == 0:
                p.setPen(QColor("#202124") if pitch != self._pressed else QColor("#ffffff"))
                p.drawText(
                    row.adjusted(0, 0, -4, 0),
                    int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                    pitch_name(pitch),
                )
        p.setPen(QPen(QColor(theme.BORDER), 1))
        p.drawLine(w - 1, 0, w - 1, self.height())
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        self._pressed = self.pitch_at(event.position().y())
        self.update()
        self._roll.note_auditioned.emit(self._pressed, DEFAULT_VELOCITY)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._pressed = None
        self.update()


class _Ruler(QWidget):
    """Bar numbers, beat ticks and the playhead; a click moves the playhead."""

    def __init__(self, roll: PianoRoll) -> None:
        super().__init__(roll)
        self._roll = roll
        self.setFixedHeight(RULER_HEIGHT_PX)

    def paintEvent(self, event: QPaintEvent) -> None:
        roll = self._roll
        clip = roll._clip  # tempo and meter only
        view = roll.view
        ppb = roll.px_per_beat
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(theme.SURFACE))
        h = self.height()
        left_beats = view.mapToScene(0, 0).x() / ppb
        right_beats = view.mapToScene(self.width(), 0).x() / ppb
        bar = clip.beats_per_bar
        unit = 4.0 / clip.time_signature[1]
        # Label every bar, or every 2nd/4th/... bar when bars are narrow.
        every = 1
        while bar * every * ppb < 28:
            every *= 2
        font = QFont(p.font())
        font.setPixelSize(11)
        p.setFont(font)
        k = max(0, math.floor(left_beats / unit))
        while k * unit <= right_beats:
            beats = k * unit
            x = round(view.mapFromScene(QPointF(beats * ppb, 0)).x()) + 0.5
            bar_index = beats / bar
            if abs(bar_index - round(bar_index)) < 1e-9:
                number = round(bar_index) + 1
                p.setPen(QPen(QColor(theme.TEXT_DIM), 1))
                p.drawLine(QPointF(x, h * 0.35), QPointF(x, h))
                if (number - 1) % every == 0:
                    p.setPen(QColor(theme.TEXT))
                    p.drawText(
                        QRectF(x + 3, 0, 40, h * 0.6),
                        int(Qt.AlignmentFlag.AlignVCenter),
                        str(number),
                    )
            elif unit * ppb >= 8:
                p.setPen(QPen(QColor(theme.BORDER), 1))
                p.drawLine(QPointF(x, h * 0.7), QPointF(x, h))
            k += 1
        x = view.mapFromScene(QPointF(roll.playhead_beats * ppb, 0)).x()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        path = QPainterPath()
        path.moveTo(x - 6, h - 10)
        path.lineTo(x + 6, h - 10)
        path.lineTo(x, h)
        path.closeSubpath()
        p.fillPath(path, QColor(theme.ACCENT))
        p.setPen(QPen(QColor(theme.BORDER), 1))
        p.drawLine(0, h - 1, self.width(), h - 1)
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        scene_x = self._roll.view.mapToScene(int(event.position().x()), 0).x()
        beats = max(0.0, _snap_round(scene_x / self._roll.px_per_beat, self._roll.snap_beats))
        self._roll.set_playhead(beats)
        self._roll.playhead_moved.emit(beats)


class _VelocityLane(QWidget):
    """One stem per note, as tall as its velocity; drag a stem to change it."""

    PAD_PX = 6

    def __init__(self, roll: PianoRoll) -> None:
        super().__init__(roll)
        self._roll = roll
        self.setFixedHeight(VELOCITY_LANE_HEIGHT_PX)

    def velocity_at(self, y: float) -> int:
        """The velocity 1..127 that a stem top at widget y (px) stands for."""
        span = self.height() - 2 * self.PAD_PX
        return int(min(127, max(1, round((self.height() - self.PAD_PX - y) / span * 127))))

    def y_for(self, velocity: int) -> float:
        """Widget y (px) of the top of a stem for ``velocity``."""
        span = self.height() - 2 * self.PAD_PX
        return self.height() - self.PAD_PX - velocity / 127 * span

    def x_for(self, beats: float) -> float:
        """Widget x (px) of a position in beats."""
        return self._roll.view.mapFromScene(QPointF(beats * self._roll.px_per_beat, 0)).x()

    def stem_at(self, x: float) -> int | None:
        """Index of the note whose stem is nearest to widget x, within 6 px; selected first."""
        roll = self._roll
        notes = roll._shown_notes()
        best: tuple[bool, float, int] | None = None
        for i, n in enumerate(notes):
            d = abs(self.x_for(n.start_beats) - x)
            if d <= 6:
                key = (i not in roll._shown_selection(), d, -i)
                if best is None or key < best:
                    best = key
        return None if best is None else -best[2]

    def paintEvent(self, event: QPaintEvent) -> None:
        roll = self._roll
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(theme.SURFACE))
        p.setPen(QPen(QColor(theme.BORDER), 1))
        p.drawLine(0, 0, self.width(), 0)
        for v in (32, 64, 96, 127):
            y = round(self.y_for(v)) + 0.5
            p.setPen(QPen(QColor("#303338"), 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(0, y), QPointF(self.width(), y))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        notes = roll._shown_notes()
        selection = roll._shown_selection()
        order = sorted(range(len(notes)), key=lambda i: i in selection)  # selected on top
        base = self.height() - self.PAD_PX
        for i in order:
            n = notes[i]
            x = self.x_for(n.start_beats)
            if x < -8 or x > self.width() + 8:
                continue
            colour = _velocity_color(n.velocity)
            if i in selection:
                colour = colour.lighter(140)
            top = self.y_for(n.velocity)
            p.setPen(QPen(colour, 2))
            p.drawLine(QPointF(x + 1, base), QPointF(x + 1, top))
            p.setBrush(colour)
            p.setPen(QPen(QColor("#ffffff") if i in selection else colour.darker(160), 1))
            p.drawEllipse(QPointF(x + 1, top), 3.5, 3.5)
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        index = self.stem_at(event.position().x())
        if index is not None:
            self._roll._velocity_press(index, self.velocity_at(event.position().y()))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._roll._velocity_move(self.velocity_at(event.position().y()))

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._roll._velocity_release()


class PianoRoll(QWidget):
    """Edit the notes of one :class:`~app.midi.files.MidiClip`.

    Signals
    -------
    clip_changed()
        The notes changed by an edit, an undo or a redo (not by :meth:`set_clip`).
    note_auditioned(int, int)
        Play this (pitch, velocity) now: a keyboard key was clicked, a note was
        drawn, grabbed or moved to a new pitch.
    selection_changed()
        The set of selected notes changed.
    playhead_moved(float)
        The user clicked the ruler; the new playhead position in beats.

    Parameters
    ----------
    parent : QWidget, optional
        Owner widget.
    """

    clip_changed = Signal()
    note_auditioned = Signal(int, int)
    selection_changed = Signal()
    playhead_moved = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._clip = MidiClip()
        self._notes: tuple[Note, ...] = ()
        self._selection: frozenset[int] = frozenset()
        self._preview: tuple[tuple[Note, ...], frozenset[int]] | None = None
        self._drag: _Drag | None = None
        self._tool = "select"
        self._snap: float | None = DEFAULT_SNAP_BEATS
        self._length = DEFAULT_NOTE_LENGTH_BEATS
        self._ppb = DEFAULT_PX_PER_BEAT
        self._kh = DEFAULT_PX_PER_KEY
        self._playhead = 0.0
        self._clipboard: tuple[Note, ...] = ()
        self._items: list[_NoteItem] = []
        self._auto_fit = True  # keep the clip fitted to the view until the user zooms or edits

        self.undo_stack = QUndoStack(self)
        self._scene = QGraphicsScene(self)
        self.view = _GridView(self, self._scene)
        self.keyboard = _Keyboard(self)
        self.ruler = _Ruler(self)
        self.velocity_lane = _VelocityLane(self)

        self._playhead_item = QGraphicsLineItem()
        self._playhead_item.setPen(QPen(QColor(theme.ACCENT), 0))
        self._playhead_item.setZValue(10)
        self._scene.addItem(self._playhead_item)
        self._band = QGraphicsRectItem()
        self._band.setPen(QPen(QColor(theme.ACCENT), 0))
        band_fill = QColor(theme.ACCENT)
        band_fill.setAlpha(40)
        self._band.setBrush(band_fill)
        self._band.setZValue(20)
        self._band.hide()
        self._scene.addItem(self._band)

        self._build_layout()
        self.view.horizontalScrollBar().valueChanged.connect(self._scrolled)
        self.view.verticalScrollBar().valueChanged.connect(self._scrolled)
        self._rebuild()
        self._scroll_to_notes()

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(6, 4, 6, 4)
        bar.setSpacing(4)
        self._tool_group = QButtonGroup(self)
        self._tool_group.setExclusive(True)
        self._tool_buttons: dict[str, QToolButton] = {}
        tips = {
            "select": "Select, move (drag) and resize (drag the right edge) notes",
            "draw": "Click or drag on empty space to add notes",
            "erase": "Click or drag over notes to delete them",
        }
        for name in TOOLS:
            button = QToolButton(self)
            button.setText(name.capitalize())
            button.setCheckable(True)
            button.setToolTip(tips[name])
            button.clicked.connect(lambda _=False, n=name: self.set_tool(n))
            self._tool_group.addButton(button)
            self._tool_buttons[name] = button
            bar.addWidget(button)
        self._tool_buttons[self._tool].setChecked(True)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Snap", self))
        self._snap_combo = QComboBox(self)
        for label, value in SNAP_CHOICES:
            self._snap_combo.addItem(label, value)
        self._snap_combo.currentIndexChanged.connect(
            lambda i: self.set_snap(self._snap_combo.itemData(i))
        )
        bar.addWidget(self._snap_combo)
        bar.addWidget(QLabel("Length", self))
        self._length_combo = QComboBox(self)
        for label, value in LENGTH_CHOICES:
            self._length_combo.addItem(label, value)
        self._length_combo.currentIndexChanged.connect(
            lambda i: self.set_note_length(self._length_combo.itemData(i))
        )
        bar.addWidget(self._length_combo)
        quantize_button = QToolButton(self)
        quantize_button.setText("Quantize")
        quantize_button.setToolTip(
            "Quantize the selected notes (all when none) to the snap grid (Q)"
        )
        quantize_button.clicked.connect(self.quantize_selection)
        bar.addWidget(quantize_button)
        bar.addSpacing(12)
        for text, factor, tip in (
            ("−", 1 / 1.25, "Zoom out (Ctrl+wheel)"),
            ("+", 1.25, "Zoom in (Ctrl+wheel)"),
        ):
            zoom = QToolButton(self)
            zoom.setText(text)
            zoom.setToolTip(tip)
            zoom.clicked.connect(lambda _=False, f=factor: self.set_zoom(px_per_beat=self._ppb * f))
            bar.addWidget(zoom)
        bar.addStretch(1)
        self._info = QLabel(self)
        self._info.setStyleSheet(f"color: {theme.TEXT_DIM};")
        # the info may elide away in a narrow dock rather than widen the window
        self._info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for combo in (self._snap_combo, self._length_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        bar.addWidget(self._info)
        self._sync_combos()

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(0)
        corner = QWidget(self)
        corner.setFixedSize(KEYBOARD_WIDTH_PX, RULER_HEIGHT_PX)
        corner.setAutoFillBackground(True)
        lane_label = QLabel("Velocity", self)
        lane_label.setFixedWidth(KEYBOARD_WIDTH_PX)
        lane_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        lane_label.setStyleSheet(
            f"background: {theme.SURFACE}; color: {theme.TEXT_DIM}; font-size: 8pt;"
            f" border-top: 1px solid {theme.BORDER};"
        )
        grid.addWidget(corner, 0, 0)
        grid.addWidget(self.ruler, 0, 1)
        grid.addWidget(self.keyboard, 1, 0)
        grid.addWidget(self.view, 1, 1)
        grid.addWidget(lane_label, 2, 0)
        grid.addWidget(self.velocity_lane, 2, 1)
        grid.setRowStretch(1, 1)
        grid.setColumnStretch(1, 1)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addLayout(bar)
        outer.addLayout(grid)

    def sizeHint(self) -> QSize:
        return QSize(900, 520)

    # ------------------------------------------------------------------ public API
    def set_clip(self, clip: MidiClip) -> None:
        """Show ``clip`` for editing; clears the selection and the undo history.

        Does not emit :attr:`clip_changed` (nothing was edited).
        """
        self._end_drag()
        self._clip = clip
        self._notes = tuple(clip.notes)
        self.undo_stack.clear()
        self._auto_fit = True
        changed = bool(self._selection)
        self._selection = frozenset()
        self._rebuild()
        self._scroll_to_notes()
        if changed:
            self.selection_changed.emit()

    def clip(self) -> MidiClip:
        """The edited clip: the clip given to :meth:`set_clip` with the current notes."""
        return replace(self._clip, notes=self._notes)

    def notes(self) -> tuple[Note, ...]:
        """The current notes, in model order (indices match :meth:`selected_indices`)."""
        return self._notes

    def selected_indices(self) -> frozenset[int]:
        """Indices into :meth:`notes` of the selected notes."""
        return self._selection

    def selected_notes(self) -> list[Note]:
        """The selected notes, in model order."""
        return [n for i, n in enumerate(self._notes) if i in self._selection]

    def set_selection(self, indices: Iterable[int]) -> None:
        """Select the notes at ``indices`` (others are deselected); not an undo step."""
        sel = frozenset(i for i in indices if 0 <= i < len(self._notes))
        self._set_selection(sel)

    @property
    def playhead_beats(self) -> float:
        """Playhead position in beats."""
        return self._playhead

    def set_playhead(self, beats: float) -> None:
        """Move the playhead line to ``beats`` (e.g. from the transport's position snapshot)."""
        self._playhead = max(0.0, float(beats))
        self._place_playhead()
        self.ruler.update()

    @property
    def snap_beats(self) -> float | None:
        """The snap grid in beats, or ``None`` when snapping is off."""
        return self._snap

    def set_snap(self, grid_beats: float | None) -> None:
        """Set the snap grid in beats (0.25 = 1/16 notes, 1/3 = 1/8 triplets); ``None`` = off."""
        if grid_beats is not None and not (math.isfinite(grid_beats) and grid_beats > 0):
            raise ParameterError(f"snap grid must be > 0 beats or None, got {grid_beats!r}")
        self._snap = None if grid_beats is None else float(grid_beats)
        self._sync_combos()
        self.view.viewport().update()

    @property
    def note_length_beats(self) -> float:
        """Length in beats of notes the draw tool creates."""
        return self._length

    def set_note_length(self, beats: float) -> None:
        """Set the length in beats of newly drawn notes."""
        if not (math.isfinite(beats) and beats > 0):
            raise ParameterError(f"note length must be > 0 beats, got {beats!r}")
        self._length = float(beats)
        self._sync_combos()

    @property
    def tool(self) -> str:
        """The active tool: one of :data:`TOOLS`."""
        return self._tool

    def set_tool(self, name: str) -> None:
        """Activate a tool: ``"select"``, ``"draw"`` or ``"erase"``."""
        if name not in TOOLS:
            raise ParameterError(f"unknown piano-roll tool {name!r}; use one of {', '.join(TOOLS)}")
        self._tool = name
        self._tool_buttons[name].setChecked(True)
        cursors = {
            "select": Qt.CursorShape.ArrowCursor,
            "draw": Qt.CursorShape.CrossCursor,
            "erase": Qt.CursorShape.PointingHandCursor,
        }
        self.view.viewport().setCursor(cursors[name])

    @property
    def px_per_beat(self) -> float:
        """Horizontal zoom: pixels per beat."""
        return self._ppb

    @property
    def px_per_key(self) -> float:
        """Vertical zoom: pixels per semitone row."""
        return self._kh

    def set_zoom(
        self, *, px_per_beat: float | None = None, px_per_key: float | None = None
    ) -> None:
        """Zoom; the scene position at the left/top of the view stays in place.

        After this the view no longer refits itself to the clip when resized.
        """
        self._auto_fit = False
        left_beats = self.view.mapToScene(0, 0).x() / self._ppb
        top_rows = self.view.mapToScene(0, 0).y() / self._kh
        if px_per_beat is not None:
            self._ppb = float(min(max(px_per_beat, PX_PER_BEAT_RANGE[0]), PX_PER_BEAT_RANGE[1]))
        if px_per_key is not None:
            self._kh = float(min(max(px_per_key, PX_PER_KEY_RANGE[0]), PX_PER_KEY_RANGE[1]))
        self._rebuild()
        self.view.horizontalScrollBar().setValue(round(left_beats * self._ppb))
        self.view.verticalScrollBar().setValue(round(top_rows * self._kh))

    def note_rect(self, index: int) -> QRectF:
        """Scene rectangle (px) of the note at ``index`` as currently shown."""
        return self._rect(self._shown_notes()[index])

    def scene_point(self, beats: float, pitch: int) -> QPointF:
        """Scene point (px) at ``beats`` on the vertical middle of ``pitch``'s row."""
        return QPointF(beats * self._ppb, (127 - pitch + 0.5) * self._kh)

    # ------------------------------------------------------------------ edits
    def delete_selection(self) -> None:
        """Delete the selected notes (one undo step)."""
        if self._selection:
            keep = tuple(n for i, n in enumerate(self._notes) if i not in self._selection)
            self._push("Delete notes", keep, frozenset())

    def select_all(self) -> None:
        """Select every note."""
        self._set_selection(frozenset(range(len(self._notes))))

    def quantize_selection(self, strength: float = 1.0) -> None:
        """Quantize the selected notes' starts (all notes when none is selected) to the snap grid.

        With snapping off the grid is 1/16 notes.
        """
        targets = self._selection or frozenset(range(len(self._notes)))
        if not targets:
            return
        grid = self._snap or DEFAULT_SNAP_BEATS
        order = sorted(targets)
        moved = quantize([self._notes[i] for i in order], grid, strength)
        after = list(self._notes)
        for i, n in zip(order, moved, strict=True):
            after[i] = n
        self._push("Quantize", tuple(after), self._selection)

    def transpose_selection(self, semitones: int) -> None:
        """Move the selected notes up (positive) or down by ``semitones``, within 0..127."""
        sel = self._selection
        if not sel or semitones == 0:
            return
        pitches = [self._notes[i].pitch for i in sel]
        semitones = min(max(semitones, -min(pitches)), 127 - max(pitches))
        after = tuple(
            replace(n, pitch=n.pitch + semitones) if i in sel else n
            for i, n in enumerate(self._notes)
        )
        self._push("Transpose", after, sel)

    def nudge_selection(self, beats: float) -> None:
        """Move the selected notes later (positive) or earlier by ``beats``, not before beat 0."""
        sel = self._selection
        if not sel:
            return
        beats = max(beats, -min(self._notes[i].start_beats for i in sel))
        if beats == 0:
            return
        after = tuple(
            replace(n, start_beats=n.start_beats + beats) if i in sel else n
            for i, n in enumerate(self._notes)
        )
        self._push("Move notes", after, sel)

    def copy_selection(self) -> None:
        """Copy the selected notes to the piano roll's clipboard."""
        chosen = self.selected_notes()
        if chosen:
            origin = min(n.start_beats for n in chosen)
            self._clipboard = tuple(replace(n, start_beats=n.start_beats - origin) for n in chosen)

    def paste(self, at_beats: float | None = None) -> None:
        """Paste the clipboard at ``at_beats`` (default: the playhead); the pasted notes get selected."""
        if not self._clipboard:
            return
        at = self._playhead if at_beats is None else max(0.0, at_beats)
        pasted = tuple(replace(n, start_beats=n.start_beats + at) for n in self._clipboard)
        n0 = len(self._notes)
        self._push("Paste", self._notes + pasted, frozenset(range(n0, n0 + len(pasted))))

    def duplicate_selection(self) -> None:
        """Copy the selected notes to just after the selection, rounded up to the grid."""
        chosen = self.selected_notes()
        if not chosen:
            return
        start = min(n.start_beats for n in chosen)
        end = max(n.end_beats for n in chosen)
        grid = self._snap or DEFAULT_SNAP_BEATS
        span = max(grid, math.ceil((end - start) / grid - 1e-9) * grid)
        copies = tuple(replace(n, start_beats=n.start_beats + span) for n in chosen)
        n0 = len(self._notes)
        self._push("Duplicate", self._notes + copies, frozenset(range(n0, n0 + len(copies))))

    # ------------------------------------------------------------------ model plumbing
    def _push(self, text: str, after: tuple[Note, ...], sel_after: frozenset[int]) -> None:
        if after == self._notes and sel_after == self._selection:
            return
        self._auto_fit = False  # an edit pins the view where the user is working
        self.undo_stack.push(_EditNotes(self, text, self._notes, after, self._selection, sel_after))

    def _apply(self, notes: tuple[Note, ...], selection: frozenset[int]) -> None:
        """Make ``notes``/``selection`` the model (undo commands only) and redraw."""
        self._end_drag()
        old_sel = self._selection
        self._notes = notes
        self._selection = selection
        self._rebuild()
        self.clip_changed.emit()
        if selection != old_sel:
            self.selection_changed.emit()

    def _set_selection(self, selection: frozenset[int]) -> None:
        if selection != self._selection:
            self._selection = selection
            self._rebuild_items()
            self.selection_changed.emit()

    def _shown_notes(self) -> tuple[Note, ...]:
        return self._preview[0] if self._preview else self._notes

    def _shown_selection(self) -> frozenset[int]:
        return self._preview[1] if self._preview else self._selection

    def _rect(self, n: Note) -> QRectF:
        return QRectF(
            n.start_beats * self._ppb,
            (127 - n.pitch) * self._kh,
            n.length_beats * self._ppb,
            self._kh,
        )

    def _rebuild(self) -> None:
        self._update_scene_rect()
        self._rebuild_items()
        self._place_playhead()
        self._update_info()

    def _rebuild_items(self) -> None:
        """Make the note items show the model (or the drag preview).

        Item i always shows note i; existing items are updated in place so a drag
        over a large clip only repaints the notes that moved.
        """
        notes, selection = self._shown_notes(), self._shown_selection()
        drum = self._clip.is_drum
        while len(self._items) > len(notes):
            self._scene.removeItem(self._items.pop())
        for i, n in enumerate(notes):
            rect, selected = self._rect(n), i in selection
            if i < len(self._items):
                self._items[i].show_state(rect, n, selected, drum)
            else:
                item = _NoteItem(rect, n, selected, drum)
                self._scene.addItem(item)
                self._items.append(item)
        self.view.viewport().update()
        self.velocity_lane.update()
        self.ruler.update()

    def _update_scene_rect(self) -> None:
        bar = self._clip.beats_per_bar
        end = max(
            self._clip.end_beats, *(n.end_beats for n in self._shown_notes()), self._playhead, 0.0
        )
        bars = max(MIN_SCENE_BARS, math.ceil(end / bar) + EXTRA_SCENE_BARS)
        self._scene.setSceneRect(QRectF(0, 0, bars * bar * self._ppb, 128 * self._kh))

    def _place_playhead(self) -> None:
        x = self._playhead * self._ppb
        self._playhead_item.setLine(x, 0, x, 128 * self._kh)

    def _update_info(self) -> None:
        c = self._clip
        num, den = c.time_signature
        self._info.setText(
            f"{c.name}  ·  {c.tempo_bpm:g} bpm  ·  {num}/{den}  ·  {len(self._notes)} notes"
        )

    def _sync_combos(self) -> None:
        for combo, value in ((self._snap_combo, self._snap), (self._length_combo, self._length)):
            index = next(
                (
                    i
                    for i in range(combo.count())
                    if (combo.itemData(i) is None and value is None)
                    or (
                        combo.itemData(i) is not None
                        and value is not None
                        and abs(combo.itemData(i) - value) < 1e-9
                    )
                ),
                -1,
            )
            if index < 0:  # a value set through the API that the menu lacks
                combo.addItem(f"{value:g} beats", value)
                index = combo.count() - 1
            combo.blockSignals(True)
            combo.setCurrentIndex(index)
            combo.blockSignals(False)

    def _scroll_to_notes(self) -> None:
        """Zoom so the clip's pitch range and length fit (within limits), then show them."""
        viewport = self.view.viewport()
        if self._auto_fit and viewport.height() > 50 and viewport.width() > 50:
            if self._notes:
                low = min(n.pitch for n in self._notes)
                high = max(n.pitch for n in self._notes)
                rows = high - low + 1 + 4  # two rows of air above and below
                self._kh = float(min(max(viewport.height() / rows, 10.0), 22.0))
                bars = math.ceil(self._clip.end_beats / self._clip.beats_per_bar - 1e-9)
                beats = max(bars, 1) * self._clip.beats_per_bar + 0.25  # show the closing bar line
                self._ppb = float(
                    min(
                        max(viewport.width() / beats, DEFAULT_PX_PER_BEAT / 2),
                        DEFAULT_PX_PER_BEAT * 3,
                    )
                )
            self._rebuild()
        pitches = [n.pitch for n in self._notes] or [60]
        middle = (min(pitches) + max(pitches) + 1) / 2
        top = (127 - middle) * self._kh - viewport.height() / 2
        self.view.verticalScrollBar().setValue(round(top))
        self.view.horizontalScrollBar().setValue(0)

    def _scrolled(self) -> None:
        self.keyboard.update()
        self.ruler.update()
        self.velocity_lane.update()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._scrolled()

    def _viewport_resized(self) -> None:
        if self._auto_fit:
            self._scroll_to_notes()
        self._scrolled()

    # ------------------------------------------------------------------ mouse on the grid
    def _pitch_at(self, scene_y: float) -> int:
        return int(min(127, max(0, 127 - math.floor(scene_y / self._kh))))

    def _note_at(self, pos: QPointF) -> int | None:
        """Index of the note under a scene point; selected notes (drawn on top) first."""
        hits = [i for i, n in enumerate(self._notes) if self._rect(n).contains(pos)]
        if not hits:
            return None
        selected = [i for i in hits if i in self._selection]
        return (selected or hits)[-1]

    def _grid_press(self, pos: QPointF, event: QMouseEvent) -> None:
        self._abandon_stale_drag()
        mods = event.modifiers()
        grid = None if mods & Qt.KeyboardModifier.AltModifier else self._snap
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        index = self._note_at(pos)
        if event.button() == Qt.MouseButton.RightButton:
            if index is not None:
                after = tuple(n for i, n in enumerate(self._notes) if i != index)
                self._push("Delete note", after, self._reindex_after_delete({index}))
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        drag = _Drag("", pos, self._notes, self._selection, index, grid, shift)
        if self._tool == "erase":
            drag.mode = "erase"
            if index is not None:
                drag.erased.add(index)
            self._drag = drag
            self._erase_preview()
            return
        if index is not None:
            sel = self._selection
            if shift:
                sel = sel ^ {index}
                self._set_selection(sel)
                if index not in sel:
                    return  # toggled off: nothing to drag
            elif index not in sel:
                self._set_selection(frozenset({index}))
            drag.base_sel = self._selection
            rect = self._rect(self._notes[index])
            grab = min(EDGE_GRAB_PX, rect.width() / 3)
            drag.mode = "resize" if pos.x() >= rect.right() - grab else "move"
            note = self._notes[index]
            drag.last_pitch = note.pitch
            self.note_auditioned.emit(note.pitch, note.velocity)
            self._drag = drag
            return
        if self._tool == "draw":
            pitch = self._pitch_at(pos.y())
            start = max(0.0, _snap_floor(pos.x() / self._ppb, grid))
            new = Note(pitch, start, self._length, DEFAULT_VELOCITY)
            drag.mode = "draw"
            drag.index = len(self._notes)
            self._drag = drag
            self._preview = ((*self._notes, new), frozenset({drag.index}))
            self._rebuild_items()
            self.note_auditioned.emit(pitch, DEFAULT_VELOCITY)
            return
        drag.mode = "rubber"
        if not shift:
            self._set_selection(frozenset())
        drag.base_sel = self._selection
        self._drag = drag
        self._band.setRect(QRectF(pos, pos))
        self._band.show()

    def _grid_move(self, pos: QPointF, event: QMouseEvent) -> None:
        drag = self._drag
        if drag is None:
            self._hover(pos)
            return
        delta = pos - drag.press_scene
        if not drag.moved and max(abs(delta.x()), abs(delta.y())) < DRAG_START_PX:
            return
        drag.moved = True
        if drag.mode == "move":
            self._move_preview(drag, delta)
        elif drag.mode == "resize":
            self._resize_preview(drag, delta)
        elif drag.mode == "draw":
            self._draw_preview(drag, pos)
        elif drag.mode == "rubber":
            band = QRectF(drag.press_scene, pos).normalized()
            self._band.setRect(band)
            inside = {i for i, n in enumerate(self._notes) if band.intersects(self._rect(n))}
            self._preview = (self._notes, frozenset(inside) | drag.base_sel)
            self._rebuild_items()
        elif drag.mode == "erase":
            index = self._note_at(pos)
            if index is not None and index not in drag.erased:
                drag.erased.add(index)
                self._erase_preview()

    def _grid_release(self, pos: QPointF, event: QMouseEvent) -> None:
        drag = self._drag
        if drag is None:
            return
        preview = self._preview
        self._end_drag()
        if drag.mode in ("move", "resize"):
            if preview is not None and preview[0] != drag.base:
                self._push("Move notes" if drag.mode == "move" else "Resize notes", *preview)
            elif not drag.moved and not drag.additive and drag.index is not None:
                self._set_selection(frozenset({drag.index}))  # a plain click picks one note
            else:
                self._rebuild_items()
        elif drag.mode == "draw" and preview is not None:
            note = preview[0][-1]
            self._length = note.length_beats if drag.moved else self._length
            self._sync_combos()
            self._push("Add note", *preview)
        elif drag.mode == "rubber":
            self._band.hide()
            sel = preview[1] if preview is not None else drag.base_sel
            self._rebuild_items()
            self._set_selection(sel)
        elif drag.mode == "erase" and drag.erased:
            keep = tuple(n for i, n in enumerate(self._notes) if i not in drag.erased)
            self._push("Erase notes", keep, self._reindex_after_delete(drag.erased))
        else:
            self._rebuild_items()

    def _abandon_stale_drag(self) -> None:
        # A press while a drag is open means its release never arrived (a popup took
        # the mouse): drop that gesture instead of leaving the grid stuck in it.
        if self._drag is not None:
            self._end_drag()
            self._rebuild_items()

    def _end_drag(self) -> None:
        self._drag = None
        self._preview = None
        self._band.hide()

    def _reindex_after_delete(self, removed: set[int]) -> frozenset[int]:
        kept = [i for i in range(len(self._notes)) if i not in removed]
        new_index = {old: new for new, old in enumerate(kept)}
        return frozenset(new_index[i] for i in self._selection if i in new_index)

    def _move_preview(self, drag: _Drag, delta: QPointF) -> None:
        assert drag.index is not None
        sel = drag.base_sel
        anchor = drag.base[drag.index]
        new_start = _snap_round(anchor.start_beats + delta.x() / self._ppb, drag.grid)
        d_beats = max(new_start - anchor.start_beats, -min(drag.base[i].start_beats for i in sel))
        d_pitch = -round(delta.y() / self._kh)
        pitches = [drag.base[i].pitch for i in sel]
        d_pitch = min(max(d_pitch, -min(pitches)), 127 - max(pitches))
        moved = tuple(
            replace(n, start_beats=max(0.0, n.start_beats + d_beats), pitch=n.pitch + d_pitch)
            if i in sel
            else n
            for i, n in enumerate(drag.base)
        )
        self._preview = (moved, sel)
        self._rebuild_items()
        pitch = anchor.pitch + d_pitch
        if pitch != drag.last_pitch:
            drag.last_pitch = pitch
            self.note_auditioned.emit(pitch, anchor.velocity)

    def _resize_preview(self, drag: _Drag, delta: QPointF) -> None:
        assert drag.index is not None
        anchor = drag.base[drag.index]
        shortest = drag.grid or MIN_NOTE_BEATS
        new_end = _snap_round(anchor.end_beats + delta.x() / self._ppb, drag.grid)
        new_length = max(new_end - anchor.start_beats, shortest)
        d_len = new_length - anchor.length_beats
        resized = tuple(
            replace(
                n,
                length_beats=new_length
                if i == drag.index
                else max(n.length_beats + d_len, shortest),
            )
            if i in drag.base_sel
            else n
            for i, n in enumerate(drag.base)
        )
        self._preview = (resized, drag.base_sel)
        self._rebuild_items()

    def _draw_preview(self, drag: _Drag, pos: QPointF) -> None:
        assert self._preview is not None
        new = self._preview[0][-1]
        shortest = drag.grid or MIN_NOTE_BEATS
        end = _snap_round(pos.x() / self._ppb, drag.grid)
        length = max(end - new.start_beats, shortest)
        self._preview = ((*drag.base, replace(new, length_beats=length)), self._preview[1])
        self._rebuild_items()

    def _erase_preview(self) -> None:
        drag = self._drag
        assert drag is not None
        self._preview = (
            tuple(n for i, n in enumerate(drag.base) if i not in drag.erased),
            frozenset(),
        )
        self._rebuild_items()

    def _hover(self, pos: QPointF) -> None:
        if self._tool == "erase":
            return
        index = self._note_at(pos)
        cursor = Qt.CursorShape.CrossCursor if self._tool == "draw" else Qt.CursorShape.ArrowCursor
        if index is not None:
            rect = self._rect(self._notes[index])
            edge = pos.x() >= rect.right() - min(EDGE_GRAB_PX, rect.width() / 3)
            cursor = Qt.CursorShape.SizeHorCursor if edge else Qt.CursorShape.SizeAllCursor
        self.view.viewport().setCursor(cursor)

    # ------------------------------------------------------------------ velocity lane
    def _velocity_press(self, index: int, velocity: int) -> None:
        self._abandon_stale_drag()
        if index not in self._selection:
            self._set_selection(frozenset({index}))
        self._drag = _Drag("velocity", QPointF(), self._notes, self._selection, index)
        self._velocity_move(velocity)

    def _velocity_move(self, velocity: int) -> None:
        drag = self._drag
        if drag is None or drag.mode != "velocity" or drag.index is None:
            return
        d_vel = velocity - drag.base[drag.index].velocity
        # The grabbed stem follows the mouse; other selected notes keep their differences.
        changed = tuple(
            replace(n, velocity=int(min(127, max(1, n.velocity + d_vel))))
            if i in drag.base_sel
            else n
            for i, n in enumerate(drag.base)
        )
        self._preview = (changed, drag.base_sel)
        self._rebuild_items()

    def _velocity_release(self) -> None:
        drag = self._drag
        if drag is None or drag.mode != "velocity":
            return
        preview = self._preview
        self._end_drag()
        if preview is not None and preview[0] != drag.base:
            self._push("Change velocity", *preview)
        else:
            self._rebuild_items()

    # ------------------------------------------------------------------ keys
    def _key(self, event: QKeyEvent) -> bool:
        key = event.key()
        mods = event.modifiers()
        ctrl = bool(mods & Qt.KeyboardModifier.ControlModifier)
        shift = bool(mods & Qt.KeyboardModifier.ShiftModifier)
        step = self._snap or DEFAULT_SNAP_BEATS
        if key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.delete_selection()
        elif key == Qt.Key.Key_Q and not ctrl:
            self.quantize_selection()
        elif key == Qt.Key.Key_A and ctrl:
            self.select_all()
        elif key == Qt.Key.Key_C and ctrl:
            self.copy_selection()
        elif key == Qt.Key.Key_V and ctrl:
            self.paste()
        elif key == Qt.Key.Key_D and ctrl:
            self.duplicate_selection()
        elif key == Qt.Key.Key_Escape:
            self._set_selection(frozenset())
        elif key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            self.transpose_selection((12 if shift else 1) * (1 if key == Qt.Key.Key_Up else -1))
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
            self.nudge_selection(step if key == Qt.Key.Key_Right else -step)
        elif key == Qt.Key.Key_Z and ctrl:
            # Reached only when no window-level undo action took the shortcut.
            (self.undo_stack.redo if shift else self.undo_stack.undo)()
        elif key == Qt.Key.Key_Y and ctrl:
            self.undo_stack.redo()
        else:
            return False
        return True


def demo_clip(bars: int = 4) -> MidiClip:
    """A short melody over block chords in C major at 96 bpm: for screenshots and demos.

    Parameters
    ----------
    bars : int, optional
        Number of 4/4 bars; the chord progression (C, Am, F, G) repeats.
    """
    chords = ((48, 52, 55), (45, 48, 52), (41, 45, 48), (43, 47, 50))
    melody = (
        (72, 0.0, 1.0),
        (74, 1.0, 0.5),
        (76, 1.5, 0.5),
        (79, 2.0, 1.5),
        (76, 3.5, 0.5),
        (77, 4.0, 0.75),
        (76, 4.75, 0.25),
        (72, 5.0, 1.0),
        (69, 6.0, 2.0),
        (69, 8.0, 0.5),
        (72, 8.5, 0.5),
        (77, 9.0, 1.0),
        (76, 10.0, 0.5),
        (74, 10.5, 0.5),
        (72, 11.0, 1.0),
        (71, 12.0, 1 / 3),
        (72, 12 + 1 / 3, 1 / 3),
        (74, 12 + 2 / 3, 1 / 3),
        (79, 13.0, 1.0),
        (74, 14.0, 2.0),
    )
    notes: list[Note] = []
    for bar in range(bars):
        chord = chords[bar % 4]
        for beat in (0.0, 2.0):
            for k, pitch in enumerate(chord):
                notes.append(Note(pitch, bar * 4.0 + beat, 1.75, 64 + 8 * k - (10 if beat else 0)))
    for repeat in range(0, bars, 4):
        for pitch, start, length in melody:
            if start + 4 * repeat < bars * 4:
                accent = 110 if start % 1 == 0 else 84  # downbeats a little louder
                notes.append(Note(pitch, start + 4.0 * repeat, length, accent))
    return MidiClip("Melody + chords", tuple(notes), tempo_bpm=96.0, program=0)
