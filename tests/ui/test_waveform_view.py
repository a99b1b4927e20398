"""WaveformView: lanes, zoom/scroll, mouse gestures, playhead follow, overlay, async loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.engine.errors import ParameterError
from app.engine.peaks import PeakCache, build_from_array
from app.ui.waveform_view import PeakLoader, WaveformView, format_time

SR = 48000



SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "screenshots" / "waveform.png"


def _audio(rng: np.random.Generator, channels: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    decay = np.exp(-(t % 2.0) / 0.35)
    tones = [np.sin(2 * np.pi * f * t) for f in (110.0, 165.0, 220.0, 55.0, 330.0, 82.0)]
    x = np.stack(
        [0.55 * decay * tones[c] + 0.04 * rng.standard_normal(t.size) for c in range(channels)]
    )
    return x.astype(np.float32)


@pytest.fixture
def view(qtbot):
    w = WaveformView()
    qtbot.addWidget(w)
    w.resize(1000, 520)
    w.show()
    qtbot.waitExposed(w)
    yield w
    if w._loader is not None:
        w._loader.wait(10)


@pytest.fixture
def stereo(rng):
    return _audio(rng, 2, 30.0)


def _lane_widget(view: WaveformView, track_id: str):
    return view._lanes[track_id].widget


def _x_px(view: WaveformView, track_id: str, seconds: float) -> int:
    """Viewport x (pixels) of a time in a lane."""
    lane = view._lanes[track_id]
    scene = lane.vb.mapViewToScene(QPointF(seconds, 1.0))
    return round(lane.widget.mapFromScene(scene).x())


def _npoints(item) -> int:
    return len(item.data()[0])


def _settle(view: WaveformView) -> None:
    QApplication.processEvents()
    view._redraw_all()


def test_format_time():
    assert format_time(0.0) == "0:00.000"
    assert format_time(83.25) == "1:23.250"
    assert format_time(3725.5, 1) == "1:02:05.5"
    assert format_time(59.9996, 0) == "1:00"
    assert format_time(-1.5, 1) == "-0:01.5"


def test_add_remove_tracks_and_fit(view, rng, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.add_track("mono", "Bass", build_from_array(_audio(rng, 1, 12.0), SR), SR, color="#ff00ff")
    view.add_track("surround", "5.1", build_from_array(_audio(rng, 6, 8.0), SR), SR)
    assert view.track_ids() == ["mix", "mono", "surround"]
    view.zoom_to_fit()
    assert view.view_range() == pytest.approx((0.0, 30.0))
    _settle(view)
    assert [_npoints(c) > 0 for c in view._lanes["surround"].curves] == [True] * 6
    view.remove_track("mono")
    view.remove_track("never-added")
    assert view.track_ids() == ["mix", "surround"]
    with pytest.raises(ParameterError):
        view.set_clip_gain("mono", 1.0)


def test_ruler_stays_aligned_with_lanes_when_they_scroll(view, rng):
    pyr = build_from_array(_audio(rng, 6, 2.0), SR)
    for k in range(6):  # 6 x 6-channel lanes: taller than the view
        view.add_track(f"t{k}", f"Track {k}", pyr, SR)
    view.set_view(0.0, 2.0)
    _settle(view)
    assert view._scroll.verticalScrollBar().maximum() > 0
    lane = view._lanes["t0"]
    for seconds in (0.0, 1.0, 2.0):
        ruler_x = view._ruler.mapToGlobal(
            view._ruler.mapFromScene(view._ruler_vb.mapViewToScene(QPointF(seconds, 0.5)))
        ).x()
        lane_x = lane.widget.mapToGlobal(
            lane.widget.mapFromScene(lane.vb.mapViewToScene(QPointF(seconds, 1.0)))
        ).x()
        assert abs(ruler_x - lane_x) <= 1, seconds


def test_redraw_fetches_one_column_per_pixel_of_the_visible_range(view, stereo):
    pyr = build_from_array(stereo, SR)
    calls: list[tuple[int, int, int]] = []
    real = pyr.envelope
    pyr.envelope = lambda a, b, c: calls.append((a, b, c)) or real(a, b, c)  # type: ignore[method-assign]
    view.add_track("mix", "Mix", pyr, SR)
    _settle(view)
    calls.clear()
    view.set_view(10.0, 12.5)
    width = int(view._lanes["mix"].vb.width())
    assert calls and calls[-1] == (10 * SR, int(12.5 * SR), width)
    xs, lower, upper = view._lanes["mix"].curves[0].data()
    assert len(xs) == width and (lower <= upper).all()
    assert xs.min() >= 10.0 and xs.max() <= 12.5


def test_zoom_and_scroll_change_the_view(view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    changes: list[tuple[float, float]] = []
    view.view_changed.connect(lambda a, b: changes.append((a, b)))
    view.set_view(10.0, 20.0)
    view.zoom_in()
    assert view.view_range() == pytest.approx((12.5, 17.5))
    view.zoom_out()
    assert view.view_range() == pytest.approx((10.0, 20.0))
    view.scroll_by(2.0)
    assert view.view_range() == pytest.approx((12.0, 22.0))
    view.scroll_by(1000.0)  # kept near the audio
    start, end = view.view_range()
    assert end <= 30.0 * 1.02 + 1e-9 and end - start == pytest.approx(10.0)
    view.set_view(5.0, 5.0)
    assert view.view_range()[1] - view.view_range()[0] == pytest.approx(0.002)
    assert len(changes) == 6
    with pytest.raises(ParameterError):
        view.set_view(float("nan"), 1.0)


def _wheel(
    view: WaveformView,
    track_id: str,
    x_px: int,
    notches: float,
    modifiers=Qt.KeyboardModifier.NoModifier,
):
    viewport = _lane_widget(view, track_id).viewport()
    pos = QPointF(x_px, viewport.height() / 2)
    event = QWheelEvent(
        pos, QPointF(viewport.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, int(120 * notches)),
        Qt.MouseButton.NoButton, modifiers, Qt.ScrollPhase.NoScrollPhase, False,
    )  # fmt: skip
    QApplication.sendEvent(viewport, event)


def test_wheel_zooms_around_the_cursor_and_shift_wheel_scrolls(view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(0.0, 20.0)
    _settle(view)
    x = _x_px(view, "mix", 15.0)
    _wheel(view, "mix", x, 1)
    start, end = view.view_range()
    assert end - start == pytest.approx(20.0 / 1.25, rel=1e-6)
    # the time under the cursor stays under the cursor (to a pixel)
    assert (15.0 - start) / (end - start) == pytest.approx(15.0 / 20.0, abs=1.5 / 868)
    _wheel(view, "mix", x, -1)
    assert view.view_range()[1] - view.view_range()[0] == pytest.approx(20.0, rel=1e-6)
    before = view.view_range()
    _wheel(view, "mix", x, -1, Qt.KeyboardModifier.ShiftModifier)
    after = view.view_range()
    assert after[0] - before[0] == pytest.approx(2.0, rel=1e-6)
    assert after[1] - after[0] == pytest.approx(before[1] - before[0])


def _drag(qtbot, widget, x0: int, x1: int, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    viewport = widget.viewport()
    y = viewport.height() // 2
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, modifier, QPoint(x0, y))
    for x in np.linspace(x0, x1, 8).astype(int)[1:]:
        qtbot.mouseMove(viewport, QPoint(int(x), y))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, modifier, QPoint(x1, y))


def test_drag_selects_and_click_seeks(qtbot, view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(0.0, 20.0)
    _settle(view)
    px_per_s = view._lanes["mix"].vb.width() / 20.0
    with qtbot.waitSignal(view.selection_changed, timeout=2000) as sel:
        _drag(qtbot, _lane_widget(view, "mix"), _x_px(view, "mix", 4.0), _x_px(view, "mix", 9.0))
    a, b = sel.args
    assert a == pytest.approx(4.0, abs=2 / px_per_s) and b == pytest.approx(9.0, abs=2 / px_per_s)
    assert view.selection() == (a, b)
    assert view._lanes["mix"].selection.isVisible()

    with qtbot.waitSignal(view.seek_requested, timeout=2000) as seek:
        qtbot.mouseClick(_lane_widget(view, "mix").viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(_x_px(view, "mix", 12.0), 40))  # fmt: skip
    assert seek.args[0] == pytest.approx(12.0, abs=2 / px_per_s)
    assert view.selection() is None


def test_shift_drag_scrolls(qtbot, view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(10.0, 20.0)
    _settle(view)
    widget = _lane_widget(view, "mix")
    selections: list[tuple[float, float]] = []
    view.selection_changed.connect(lambda a, b: selections.append((a, b)))
    _drag(
        qtbot,
        widget,
        _x_px(view, "mix", 16.0),
        _x_px(view, "mix", 14.0),
        Qt.KeyboardModifier.ShiftModifier,
    )
    start, end = view.view_range()
    assert start == pytest.approx(12.0, abs=0.05) and end - start == pytest.approx(10.0)
    assert not selections


def test_loop_from_ruler_drag_and_set_loop(qtbot, view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(0.0, 20.0)
    _settle(view)
    ruler = view._ruler
    vb = view._ruler_vb

    def rx(seconds: float) -> int:
        return round(ruler.mapFromScene(vb.mapViewToScene(QPointF(seconds, 0.5))).x())

    with qtbot.waitSignal(view.loop_changed, timeout=2000) as sig:
        _drag(qtbot, ruler, rx(2.0), rx(6.0))
    assert sig.args[0] == pytest.approx(2.0, abs=0.1) and sig.args[1] == pytest.approx(6.0, abs=0.1)
    assert view._ruler_loop.isVisible() and view._lanes["mix"].loop.isVisible()

    with qtbot.waitSignal(view.loop_changed) as sig:
        view.set_loop(8.0, 3.0)
    assert sig.args == [3.0, 8.0] and view.loop() == (3.0, 8.0)
    assert view._lanes["mix"].loop.getRegion() == pytest.approx((3.0, 8.0))
    with qtbot.waitSignal(view.loop_changed) as sig:
        view.set_loop(None)
    assert sig.args == [None, None] and view.loop() is None
    assert not view._ruler_loop.isVisible()


def test_follow_playhead_pages_the_view(view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(0.0, 10.0)
    view.set_playhead(12.0)
    assert view.view_range() == pytest.approx((0.0, 10.0))  # not following
    assert view._lanes["mix"].playhead.value() == 12.0
    view.set_follow_playhead(True)
    assert view.view_range() == pytest.approx((11.0, 21.0))
    view.set_playhead(15.0)  # still inside: no jump
    assert view.view_range() == pytest.approx((11.0, 21.0))
    view.set_playhead(20.5)  # near the right edge: page on
    assert view.view_range() == pytest.approx((19.5, 29.5))
    view.set_playhead(2.0)  # seek back
    assert view.view_range() == pytest.approx((1.0, 11.0))


def test_overlay_and_clip_gain(view, stereo):
    view.add_track("mix", "Mix", build_from_array(stereo, SR), SR)
    view.set_view(0.0, 4.0)
    _settle(view)
    lane = view._lanes["mix"]
    assert all(_npoints(c) == 0 for c in lane.overlay_curves)
    view.set_overlay("mix", build_from_array(np.tanh(2.5 * stereo), SR))
    assert view.has_overlay("mix")
    for item in lane.overlay_curves:
        xs, _lower, upper = item.data()
        assert len(xs) == int(lane.vb.width()) and np.isfinite(upper).all()
    master_top = lane.overlay_curves[0].data()[2] - 3.0  # channel 0 is centred at y = 3
    source_top = lane.curves[0].data()[2] - 3.0
    assert (master_top >= source_top - 1e-6).all() and master_top.mean() > source_top.mean() + 0.05

    before = np.stack(lane.curves[1].data()[1:])
    view.set_clip_gain("mix", -6.0)
    after = np.stack(lane.curves[1].data()[1:])
    np.testing.assert_allclose(after - 1.0, (before - 1.0) * 10 ** (-6 / 20), atol=1e-6)
    view.set_overlay("mix", None)
    assert not view.has_overlay("mix")
    assert all(_npoints(c) == 0 for c in lane.overlay_curves)


def test_open_file_loads_off_the_ui_thread_and_uses_the_cache(qtbot, view, tmp_path, stereo):
    path = tmp_path / "mix.wav"
    sf.write(path, stereo.T, SR, subtype="PCM_24")
    loader = PeakLoader(PeakCache(tmp_path / "peaks"))
    view.set_loader(loader)
    started: list[object] = []
    loader.started.connect(lambda tid, pyr: started.append(pyr))
    with qtbot.waitSignal(view.track_loaded, timeout=20000) as done:
        view.open_file("mix", "Mix", path, SR)
        assert view._lanes["mix"].pending == 0.0
        assert "building peaks" in view._lanes["mix"].label.text()
    assert done.args == ["mix"] and started
    assert view.frames_shown("mix") == stereo.shape[1]
    assert view._lanes["mix"].pending is None
    assert len(list((tmp_path / "peaks").glob("*.peaks"))) == 1
    view.zoom_to_fit()
    assert view.view_range() == pytest.approx((0.0, 30.0))

    with qtbot.waitSignal(view.track_loaded, timeout=20000):
        view.open_file("again", "Again", path, SR)
    assert view.frames_shown("again") == stereo.shape[1]

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with qtbot.waitSignal(view.track_failed, timeout=20000) as failed:
        view.open_file("bad", "Bad", bad, SR)
    assert "not an audio file" in failed.args[1]
    assert "not an audio file" in view._lanes["bad"].label.text()


def test_cancel_on_remove_stops_the_load(qtbot, tmp_path, rng):
    path = tmp_path / "long.wav"
    sf.write(path, _audio(rng, 2, 120.0).T, SR, subtype="FLOAT")
    loader = PeakLoader(None)
    finished: list[str] = []
    loader.finished.connect(lambda tid, pyr: finished.append(tid))
    loader.load("x", path)
    loader.cancel("x")
    assert loader.wait(20)
    QApplication.processEvents()
    assert not finished


def test_screenshot(qtbot, view, rng, stereo):
    view.resize(1200, 560)
    view.add_track("mix", "Mix.wav", build_from_array(stereo, SR), SR)
    view.set_overlay("mix", build_from_array(np.tanh(2.2 * stereo) * 0.9, SR))
    bass = (0.35 * np.sin(2 * np.pi * 2 * np.arange(30 * SR) / SR) * rng.standard_normal(30 * SR))[
        None
    ]
    view.add_track("bass", "Bass DI (mono)", build_from_array(bass.astype(np.float32), SR), SR)
    view.set_clip_gain("bass", -3.0)
    view.zoom_to_fit()
    view.set_loop(4.0, 8.0)
    view.set_selection(12.0, 15.5)
    view.set_playhead(10.2)
    _settle(view)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert view.grab().save(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_disjoint_columns_are_bridged_for_display_only():
    from app.ui.waveform_view import _bridge

    lower = np.array([0.0, 0.5, 0.1, np.nan, -0.2])
    upper = np.array([0.1, 0.6, 0.2, np.nan, 0.3])
    lo, hi = _bridge(lower, upper)
    # 0.1 -> 0.5 gap meets at 0.3; 0.5 -> 0.2 gap meets at 0.35; NaN columns stay empty
    np.testing.assert_allclose(lo, [0.0, 0.3, 0.1, np.nan, -0.2])
    np.testing.assert_allclose(hi, [0.3, 0.6, 0.35, np.nan, 0.3])
    assert lower[1] == 0.5  # inputs untouched
