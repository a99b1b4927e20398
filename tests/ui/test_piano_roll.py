"""The piano roll driven like a musician would: real mouse and key events on the widgets.

Positions are computed in scene coordinates through the roll's own geometry
(``scene_point``/``note_rect``) and mapped to viewport pixels with
``mapFromScene``; results are checked on the model (``clip()``), and undo/redo
must give back exactly the earlier clips.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QAction, QColor, QImage, QKeySequence
from PySide6.QtWidgets import QApplication, QMainWindow

from app.engine.errors import ParameterError
from app.midi.files import MidiClip, Note
from app.ui import theme
from app.ui.piano_roll import PianoRoll, demo_clip, row_label

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
SCREENSHOT = SCREENSHOTS / "piano_roll.png"
LEFT = Qt.MouseButton.LeftButton
NO_MODS = Qt.KeyboardModifier.NoModifier


@pytest.fixture
def roll(qtbot):
    widget = PianoRoll()
    qtbot.addWidget(widget)
    widget.resize(1000, 620)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def _load(roll: PianoRoll, notes: list[Note], **kwargs: object) -> MidiClip:
    clip = MidiClip("Test", tuple(notes), tempo_bpm=100.0, **kwargs)
    roll.set_clip(clip)
    QApplication.processEvents()
    return clip


def _vp(roll: PianoRoll, scene: QPointF) -> QPoint:
    point = roll.view.mapFromScene(scene)
    assert roll.view.viewport().rect().contains(point), "target is scrolled out of view"
    return point


def _at(roll: PianoRoll, beats: float, pitch: int) -> QPoint:
    return _vp(roll, roll.scene_point(beats, pitch))


def _drag(qtbot, roll, start: QPoint, end: QPoint, mods=NO_MODS) -> None:
    viewport = roll.view.viewport()
    qtbot.mousePress(viewport, LEFT, mods, start)
    mid = QPoint((start.x() + end.x()) // 2, (start.y() + end.y()) // 2)
    qtbot.mouseMove(viewport, mid)
    qtbot.mouseMove(viewport, end)
    qtbot.mouseRelease(viewport, LEFT, mods, end)


def _click(qtbot, roll, pos: QPoint, button=LEFT, mods=NO_MODS) -> None:
    qtbot.mouseClick(roll.view.viewport(), button, mods, pos)


def _body(roll: PianoRoll, index: int) -> QPoint:
    rect = roll.note_rect(index)
    return _vp(roll, QPointF(rect.left() + rect.width() * 0.3, rect.center().y()))


def _edge(roll: PianoRoll, index: int) -> QPoint:
    rect = roll.note_rect(index)
    return _vp(roll, QPointF(rect.right() - 2, rect.center().y()))


# --------------------------------------------------------------------------- editing


def test_draw_move_resize_delete_then_undo_and_redo_exactly(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 90)])
    roll.set_snap(0.25)
    roll.set_note_length(0.5)
    roll.set_tool("draw")
    history = [roll.clip()]
    changes: list[int] = []
    roll.clip_changed.connect(lambda: changes.append(1))

    _click(qtbot, roll, _at(roll, 1.1, 62))  # inside the 1.0..1.25 cell
    assert roll.clip().notes[1] == Note(62, 1.0, 0.5, 100)
    history.append(roll.clip())

    roll.set_tool("select")
    dx = roll.px_per_beat * 1.0
    dy = -roll.px_per_key * 2
    start = _body(roll, 1)
    _drag(qtbot, roll, start, start + QPoint(round(dx), round(dy)))
    assert roll.clip().notes[1] == Note(64, 2.0, 0.5, 100)
    history.append(roll.clip())

    edge = _edge(roll, 1)
    _drag(qtbot, roll, edge, edge + QPoint(round(roll.px_per_beat * 0.5), 0))
    assert roll.clip().notes[1] == Note(64, 2.0, 1.0, 100)
    history.append(roll.clip())

    assert roll.selected_indices() == {1}
    qtbot.keyClick(roll.view, Qt.Key.Key_Delete)
    assert roll.clip().notes == (Note(60, 0.0, 1.0, 90),)
    history.append(roll.clip())

    assert roll.undo_stack.count() == 4
    assert len(changes) == 4
    for expected in reversed(history[:-1]):
        roll.undo_stack.undo()
        assert roll.clip() == expected
    assert not roll.undo_stack.canUndo()
    for expected in history[1:]:
        roll.undo_stack.redo()
        assert roll.clip() == expected
    assert len(changes) == 12


def test_draw_drag_sets_length_and_becomes_the_current_length(qtbot, roll):
    _load(roll, [])
    roll.set_snap(0.25)
    roll.set_tool("draw")
    auditioned: list[tuple[int, int]] = []
    roll.note_auditioned.connect(lambda p, v: auditioned.append((p, v)))
    _drag(qtbot, roll, _at(roll, 2.05, 64), _at(roll, 3.6, 64))
    assert roll.clip().notes == (Note(64, 2.0, 1.5, 100),)
    assert roll.note_length_beats == 1.5
    assert auditioned == [(64, 100)]
    assert roll.undo_stack.count() == 1  # one gesture, one undo step


def test_snap_off_and_alt_place_notes_freely(qtbot, roll):
    _load(roll, [])
    roll.set_tool("draw")
    roll.set_note_length(0.5)
    tolerance = 1.5 / roll.px_per_beat
    roll.set_snap(None)
    _click(qtbot, roll, _at(roll, 1.37, 60))
    assert roll.clip().notes[0].start_beats == pytest.approx(1.37, abs=tolerance)
    assert roll.clip().notes[0].start_beats > 1.3  # snapped, the cell would start at 1.25
    roll.set_snap(0.5)
    _click(qtbot, roll, _at(roll, 2.37, 62))
    assert roll.clip().notes[1].start_beats == 2.0
    _click(qtbot, roll, _at(roll, 3.37, 64), mods=Qt.KeyboardModifier.AltModifier)
    assert roll.clip().notes[2].start_beats == pytest.approx(3.37, abs=tolerance)


def test_triplet_snap_moves_onto_thirds(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1 / 3, 100)])
    roll.set_snap(1 / 3)
    start = _body(roll, 0)
    _drag(qtbot, roll, start, start + QPoint(round(roll.px_per_beat * 0.7), 0))
    assert roll.clip().notes[0].start_beats == pytest.approx(2 / 3)


def test_move_keeps_notes_inside_the_grid(qtbot, roll):
    _load(roll, [Note(60, 0.5, 1.0, 100), Note(64, 1.0, 1.0, 100)])
    roll.set_selection([0, 1])
    start = _body(roll, 1)
    _drag(qtbot, roll, start, start - QPoint(round(roll.px_per_beat * 3), 0))
    notes = roll.clip().notes
    assert [n.start_beats for n in notes] == [0.0, 0.5]  # the group stops at beat 0
    assert [n.pitch for n in notes] == [60, 64]


def test_selection_click_shift_click_rubber_band_and_clear(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 100), Note(62, 1.0, 1.0, 100), Note(64, 2.0, 1.0, 100)])
    events: list[int] = []
    roll.selection_changed.connect(lambda: events.append(1))
    _click(qtbot, roll, _body(roll, 0))
    assert roll.selected_indices() == {0}
    _click(qtbot, roll, _body(roll, 2), mods=Qt.KeyboardModifier.ShiftModifier)
    assert roll.selected_indices() == {0, 2}
    _click(qtbot, roll, _body(roll, 0), mods=Qt.KeyboardModifier.ShiftModifier)
    assert roll.selected_indices() == {2}
    _click(qtbot, roll, _at(roll, 3.5, 70))  # empty space
    assert roll.selected_indices() == set()
    _drag(qtbot, roll, _at(roll, 0.8, 65), _at(roll, 2.2, 61))  # touches notes 1 and 2
    assert roll.selected_indices() == {1, 2}
    qtbot.keyClick(roll.view, Qt.Key.Key_Escape)
    assert roll.selected_indices() == set()
    qtbot.keyClick(roll.view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert roll.selected_indices() == {0, 1, 2}
    assert len(events) == 7
    assert roll.undo_stack.count() == 0  # selecting is not an edit


def test_erase_tool_drag_and_right_click_delete(qtbot, roll):
    notes = [Note(60, 0.0, 1.0, 100), Note(60, 1.0, 1.0, 100), Note(60, 2.0, 1.0, 100)]
    _load(roll, [*notes, Note(67, 0.0, 4.0, 80)])
    roll.set_tool("erase")
    _drag(qtbot, roll, _body(roll, 0), _body(roll, 1))
    assert roll.clip().notes == (notes[2], Note(67, 0.0, 4.0, 80))
    assert roll.undo_stack.count() == 1
    roll.set_tool("select")
    _click(qtbot, roll, _body(roll, 1), button=Qt.MouseButton.RightButton)
    assert roll.clip().notes == (notes[2],)
    roll.undo_stack.undo()
    roll.undo_stack.undo()
    assert roll.clip().notes == (*notes, Note(67, 0.0, 4.0, 80))


def test_velocity_lane_drag_changes_velocity_with_undo(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 40), Note(64, 2.0, 1.0, 50)])
    lane = roll.velocity_lane
    x = round(lane.x_for(2.0)) + 1
    qtbot.mousePress(lane, LEFT, NO_MODS, QPoint(x, round(lane.y_for(50))))
    qtbot.mouseMove(lane, QPoint(x, round(lane.y_for(90))))
    qtbot.mouseMove(lane, QPoint(x, 0))  # above the top: clamped
    qtbot.mouseRelease(lane, LEFT, NO_MODS, QPoint(x, 0))
    assert [n.velocity for n in roll.clip().notes] == [40, 127]
    assert roll.selected_indices() == {1}
    assert roll.undo_stack.count() == 1
    roll.undo_stack.undo()
    assert [n.velocity for n in roll.clip().notes] == [40, 50]


def test_velocity_lane_moves_a_selected_group_together(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 40), Note(64, 2.0, 1.0, 60)])
    roll.set_selection([0, 1])
    lane = roll.velocity_lane
    x = round(lane.x_for(0.0)) + 1
    qtbot.mousePress(lane, LEFT, NO_MODS, QPoint(x, round(lane.y_for(40))))
    qtbot.mouseMove(lane, QPoint(x, round(lane.y_for(60))))
    qtbot.mouseRelease(lane, LEFT, NO_MODS, QPoint(x, round(lane.y_for(60))))
    v0, v1 = (n.velocity for n in roll.clip().notes)
    assert abs(v0 - 60) <= 1 and v1 - v0 == 20


def test_quantize_key_on_selection_and_on_everything(qtbot, roll):
    off = [Note(60, 0.1, 0.5, 100), Note(62, 1.2, 0.5, 100), Note(64, 2.45, 0.5, 100)]
    _load(roll, off)
    roll.set_snap(0.5)
    roll.set_selection([1])
    qtbot.keyClick(roll.view, Qt.Key.Key_Q)
    assert [n.start_beats for n in roll.clip().notes] == [0.1, 1.0, 2.45]
    roll.set_selection([])
    qtbot.keyClick(roll.view, Qt.Key.Key_Q)
    assert [n.start_beats for n in roll.clip().notes] == [0.0, 1.0, 2.5]
    roll.undo_stack.undo()
    roll.undo_stack.undo()
    assert roll.clip().notes == tuple(off)
    assert roll.selected_indices() == {1}  # undo gives back the selection too
    roll.set_selection([])
    roll.set_snap(None)  # off: falls back to 1/16 notes
    qtbot.keyClick(roll.view, Qt.Key.Key_Q)
    assert [n.start_beats for n in roll.clip().notes] == [0.0, 1.25, 2.5]


def test_keyboard_transpose_nudge_copy_paste_duplicate(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 100), Note(64, 1.0, 0.5, 90)])
    roll.set_snap(0.25)
    ctrl = Qt.KeyboardModifier.ControlModifier
    roll.set_selection([0, 1])
    qtbot.keyClick(roll.view, Qt.Key.Key_Up)
    qtbot.keyClick(roll.view, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClick(roll.view, Qt.Key.Key_Right)
    assert roll.clip().notes == (Note(49, 0.25, 1.0, 100), Note(53, 1.25, 0.5, 90))
    qtbot.keyClick(roll.view, Qt.Key.Key_D, ctrl)  # span 1.5 beats -> copies start 1.5 later
    assert roll.clip().notes[2:] == (Note(49, 1.75, 1.0, 100), Note(53, 2.75, 0.5, 90))
    assert roll.selected_indices() == {2, 3}
    qtbot.keyClick(roll.view, Qt.Key.Key_C, ctrl)
    roll.set_playhead(8.0)
    qtbot.keyClick(roll.view, Qt.Key.Key_V, ctrl)
    assert roll.clip().notes[4:] == (Note(49, 8.0, 1.0, 100), Note(53, 9.0, 0.5, 90))
    qtbot.keyClick(roll.view, Qt.Key.Key_Z, ctrl)  # no window action here: the roll undoes
    assert len(roll.clip().notes) == 4
    qtbot.keyClick(roll.view, Qt.Key.Key_Z, ctrl | Qt.KeyboardModifier.ShiftModifier)
    assert len(roll.clip().notes) == 6


def test_piano_keys_audition_and_the_ruler_moves_the_playhead(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 100)])
    heard: list[tuple[int, int]] = []
    roll.note_auditioned.connect(lambda p, v: heard.append((p, v)))
    y = roll.view.mapFromScene(roll.scene_point(0, 60)).y()
    qtbot.mouseClick(roll.keyboard, LEFT, NO_MODS, QPoint(roll.keyboard.width() - 5, y))
    assert heard == [(60, 100)]
    moved: list[float] = []
    roll.playhead_moved.connect(moved.append)
    roll.set_snap(1.0)
    x = roll.view.mapFromScene(QPointF(roll.px_per_beat * 3.1, 0)).x()
    qtbot.mouseClick(roll.ruler, LEFT, NO_MODS, QPoint(x, 5))
    assert moved == [3.0] and roll.playhead_beats == 3.0


def test_set_clip_resets_history_and_keeps_clip_settings(qtbot, roll):
    clip = _load(roll, [Note(60, 0.0, 1.0, 100)], time_signature=(3, 4), program=40)
    roll.set_selection([0])
    qtbot.keyClick(roll.view, Qt.Key.Key_Up)
    edited = roll.clip()
    assert (edited.name, edited.tempo_bpm, edited.time_signature, edited.program) == (
        clip.name,
        clip.tempo_bpm,
        (3, 4),
        40,
    )
    assert edited.notes == (Note(61, 0.0, 1.0, 100),)
    roll.set_clip(clip)
    assert roll.undo_stack.count() == 0 and roll.selected_indices() == set()
    assert roll.clip() == clip


def test_zoom_keeps_model_and_rejects_bad_settings(qtbot, roll):
    _load(roll, [Note(60, 1.0, 1.0, 100)])
    roll.set_zoom(px_per_beat=96.0, px_per_key=20.0)
    assert roll.note_rect(0).width() == pytest.approx(96.0)
    assert roll.note_rect(0).height() == pytest.approx(20.0)
    roll.set_zoom(px_per_beat=1e6)
    assert roll.px_per_beat <= 400
    with pytest.raises(ParameterError):
        roll.set_tool("lasso")
    with pytest.raises(ParameterError):
        roll.set_snap(0.0)
    assert roll.clip().notes == (Note(60, 1.0, 1.0, 100),)


def test_grid_keys_win_over_window_shortcuts_but_undo_stays_with_the_window(qtbot):
    window = QMainWindow()
    qtbot.addWidget(window)
    roll = PianoRoll()
    window.setCentralWidget(roll)
    fired: list[str] = []
    shortcuts = (
        (QKeySequence.StandardKey.Delete, "delete"),
        (QKeySequence.StandardKey.Undo, "undo"),
        (QKeySequence("A"), "a"),
    )
    for sequence, name in shortcuts:
        action = QAction(name, window)
        action.setShortcut(sequence)
        action.triggered.connect(lambda _=False, n=name: fired.append(n))
        window.addAction(action)
    window.resize(900, 600)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()  # shortcuts only reach an active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
    roll.view.setFocus()
    roll.set_clip(MidiClip("x", (Note(60, 0.0, 1.0, 100),)))
    roll.set_selection([0])
    qtbot.keyClick(roll.view, Qt.Key.Key_Delete)
    qtbot.keyClick(roll.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(roll.view, Qt.Key.Key_A)
    assert roll.notes() == (), fired  # the grid deleted the note ...
    assert fired == ["undo", "a"]  # ... and left Ctrl+Z and unrelated keys to the window


def test_a_lost_mouse_release_does_not_leave_the_grid_stuck(qtbot, roll):
    _load(roll, [Note(60, 0.0, 1.0, 100)])
    roll.set_tool("draw")
    viewport = roll.view.viewport()
    qtbot.mousePress(viewport, LEFT, NO_MODS, _at(roll, 2.0, 62))  # release never comes
    qtbot.mouseMove(viewport, _at(roll, 3.0, 62))
    _click(qtbot, roll, _at(roll, 1.0, 65))
    assert roll.clip().notes[1:] == (Note(65, 1.0, roll.note_length_beats, 100),)
    assert roll.undo_stack.count() == 1


# --------------------------------------------------------------------------- looks


def test_screenshot_of_a_realistic_clip(qtbot):
    app = QApplication.instance()
    theme.apply(app)
    widget = PianoRoll()
    qtbot.addWidget(widget)
    widget.resize(1100, 680)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_clip(demo_clip())
    QApplication.processEvents()
    notes = widget.notes()
    widget.set_selection([len(notes) - 5, len(notes) - 4, len(notes) - 3])
    widget.set_playhead(5.5)
    QApplication.processEvents()
    image = widget.grab().toImage()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert image.save(str(SCREENSHOT))
    # Every note of the clip is in view (the view fits the clip on load)...
    viewport = widget.view.viewport().rect()
    for i in range(len(notes)):
        assert viewport.contains(widget.view.mapFromScene(widget.note_rect(i).center()))
    # ... and actually painted: sample the centre of a loud (amber) melody note.
    loud = next(i for i, n in enumerate(notes) if n.velocity == 110 and n.length_beats >= 1)
    centre = widget.view.viewport().mapTo(
        widget, widget.view.mapFromScene(widget.note_rect(loud).center())
    )
    colour = QColor(image.pixel(centre.x(), centre.y()))
    assert colour.red() > 180 and colour.blue() < 120, colour.name()
    assert QImage(str(SCREENSHOT)).width() == 1100


def test_drum_clips_name_rows_after_gm_sounds(qtbot):
    assert row_label(36, drum=True) == "Kick"
    assert row_label(42, drum=True) == "HH closed"
    assert row_label(20, drum=True) == "G#0"  # outside the GM kit: the note name
    assert row_label(36) == "C2"
    widget = PianoRoll()
    qtbot.addWidget(widget)
    widget.resize(900, 500)
    widget.show()
    qtbot.waitExposed(widget)
    beat = [Note(36, b, 0.25, 120) for b in (0.0, 1.5, 2.0)]
    beat += [Note(38, b, 0.25, 110) for b in (1.0, 3.0)]
    beat += [Note(42, i * 0.5, 0.25, 60 + 10 * (i % 2)) for i in range(8)]
    widget.set_clip(MidiClip("Drums", tuple(beat), is_drum=True))
    QApplication.processEvents()
    image = widget.grab().toImage()
    assert image.save(str(SCREENSHOTS / "piano_roll_drums.png"))
    # The kick row on the keyboard is a flat labelled row, not a black piano key.
    y = widget.view.mapFromScene(widget.scene_point(0, 37)).y()  # C#2, a black key on a piano
    pos = widget.keyboard.mapTo(widget, QPoint(5, y))
    assert QColor(image.pixel(pos.x(), pos.y())).lightness() > 150
