"""The arrange view's waveforms: one lane per track, drawn from peak pyramids.

Each redraw asks every lane's :class:`~app.engine.peaks.PeakPyramid` for the
envelope of the *visible* range at the lane's width in pixels (one min/max
column per pixel) and rasterises it into one image per lane, so a
redraw costs the same for a 3-second and a 3-hour file, and no sample is ever
plotted one by one (deep zoom aside, where a column is one sample).

Layout: a time ruler (mm:ss.ms, loop region, playhead) above a scrolling
column of lanes; each lane is a header (name, state) and a pyqtgraph view box
with one row per channel.  The visible time range is owned here, not by
pyqtgraph: every zoom/scroll goes through :meth:`WaveformView.set_view`.

Mouse: click seeks; drag selects; shift+drag or middle-drag scrolls; wheel
zooms around the cursor; shift+wheel (or a horizontal wheel) scrolls; drag in
the ruler sets the loop; the loop's edges can be dragged in the ruler.

Loading a file: :meth:`WaveformView.open_file` (or :class:`PeakLoader` for
full control) builds or loads the pyramid on a worker thread.  The lane
appears at once and fills in left to right as blocks are decoded
(progressive first paint); the cached or finished pyramid replaces it at the
end.  All methods of :class:`WaveformView` are for the UI thread.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
import pyqtgraph.functions as fn
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPolygonF
from PySide6.QtWidgets import QHBoxLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from app.engine import audio_io
from app.engine.errors import AmcError, ParameterError
from app.engine.peaks import PeakCache, PeakPyramid, build_from_file, warm_up
from app.ui import theme

__all__ = ["PeakLoader", "TimeAxisItem", "WaveformView", "format_time"]

HEADER_WIDTH_PX = 132
RULER_HEIGHT_PX = 34
CHANNEL_ROW_MIN_PX = 34
LANE_MAX_PX = 220
MIN_VIEW_S = 0.002
WHEEL_ZOOM_PER_NOTCH = 1.25
SCROLL_PER_NOTCH = 0.1
BUTTON_ZOOM = 2.0
PROGRESS_INTERVAL_S = 0.05
FOLLOW_MARGIN = 0.1  # the playhead is paged back to this fraction of the view
DEFAULT_VIEW_S = 10.0

_SELECTION_BRUSH = (255, 255, 255, 34)
_LOOP_BRUSH = (79, 163, 255, 46)
_LOOP_RULER_BRUSH = (79, 163, 255, 110)
_PLAYHEAD = "#f2f2f2"
_GRID = (255, 255, 255, 22)


def format_time(seconds: float, decimals: int = 3) -> str:
    """``m:ss.mmm`` (``h:mm:ss.mmm`` past an hour; ``decimals`` digits after the point)."""
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds), decimals)
    hours, rest = divmod(total, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    width = 2 + (decimals + 1 if decimals else 0)
    sec_text = f"{secs:0{width}.{decimals}f}"
    if hours:
        return f"{sign}{int(hours)}:{int(minutes):02d}:{sec_text}"
    return f"{sign}{int(minutes)}:{sec_text}"


class TimeAxisItem(pg.AxisItem):
    """An axis that labels seconds as ``m:ss.mmm``, with as many decimals as the tick spacing needs."""

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        decimals = 0 if spacing >= 1 else min(3, max(1, math.ceil(-math.log10(spacing) - 1e-9)))
        return [format_time(v, decimals) for v in values]


# --------------------------------------------------------------------------- loading


class _Job:
    def __init__(self, track_id: str, path: Path) -> None:
        self.track_id = track_id
        self.path = path
        self.cancelled = threading.Event()
        self.last_emit = 0.0


class _Cancelled(Exception):
    """Raised from the progress callback to stop a build."""


class PeakLoader(QObject):
    """Builds (or loads from a :class:`PeakCache`) pyramids on worker threads.

    Signals are emitted from the worker thread and, Qt's automatic connection
    being queued across threads, arrive on the receiver's (UI) thread.

    Signals
    -------
    started(track_id, pyramid)
        The growing pyramid; draw it now and refresh on ``progressed``.
    progressed(track_id, fraction, message)
        At most every 50 ms.
    finished(track_id, pyramid)
        The complete pyramid (may be another object than ``started``'s).
    failed(track_id, message)
        The file is not usable (one line).  Not emitted after :meth:`cancel`.

    Parameters
    ----------
    cache : PeakCache or None
        Where pyramids are kept; None builds every time.

    Notes
    -----
    Create it when the app starts: it loads the compiled peak kernels on a
    background thread right away (:func:`app.engine.peaks.warm_up`).
    """

    started = Signal(str, object)
    progressed = Signal(str, float, str)
    finished = Signal(str, object)
    failed = Signal(str, str)

    def __init__(self, cache: PeakCache | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.cache = cache
        self._jobs: dict[str, _Job] = {}
        # Numba's first call costs about a second even from its disk cache; pay it now,
        # in the background, so that the first file opened paints at once.
        warm = threading.Thread(target=warm_up, name="peaks warm-up", daemon=True)
        warm.start()
        self._threads: list[threading.Thread] = [warm]

    def load(self, track_id: str, path: str | os.PathLike[str]) -> None:
        """Start loading ``path`` for ``track_id`` (cancels an earlier load of that id).  UI thread."""
        self.cancel(track_id)
        job = _Job(track_id, Path(path))
        self._jobs[track_id] = job
        thread = threading.Thread(
            target=self._run, args=(job,), name=f"peaks {track_id}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def cancel(self, track_id: str) -> None:
        """Stop loading ``track_id`` (no further signals for that load).  UI thread."""
        job = self._jobs.pop(track_id, None)
        if job is not None:
            job.cancelled.set()

    def busy(self) -> bool:
        """True while any load runs."""
        return any(t.is_alive() for t in self._threads)

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Block until every load has ended (tests, shutdown).  True if all ended."""
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return not self.busy()

    def _run(self, job: _Job) -> None:
        def progress(fraction: float, message: str) -> None:
            if job.cancelled.is_set():
                raise _Cancelled()
            now = time.monotonic()
            # the first report is sent at once: it is the first paint
            if (
                now - job.last_emit >= PROGRESS_INTERVAL_S
                or fraction >= 1.0
                or job.last_emit == 0.0
            ):
                if fraction > 0.0:
                    job.last_emit = now
                self.progressed.emit(job.track_id, float(fraction), message)

        def partial(pyramid: PeakPyramid) -> None:
            if not job.cancelled.is_set():
                self.started.emit(job.track_id, pyramid)

        try:
            warm_up()  # here, not in the UI thread's first redraw
            if self.cache is not None:
                pyramid = self.cache.load_or_build(job.path, progress=progress, on_partial=partial)
            else:
                pyramid = build_from_file(job.path, progress=progress, on_partial=partial)
        except _Cancelled:
            return
        except AmcError as exc:
            if not job.cancelled.is_set():
                self.failed.emit(job.track_id, str(exc))
            return
        except Exception as exc:  # a bug must still reach the user, not kill a thread silently
            if not job.cancelled.is_set():
                self.failed.emit(
                    job.track_id, f"Cannot draw {job.path.name}: {type(exc).__name__}: {exc}"
                )
            return
        if not job.cancelled.is_set():
            self.finished.emit(job.track_id, pyramid)


# --------------------------------------------------------------------------- plot items


class _LaneViewBox(pg.ViewBox):
    """A view box whose mouse gestures are handled by the owning view."""

    def __init__(self, view: WaveformView, *, ruler: bool = False) -> None:
        super().__init__(enableMenu=False)
        self._view = view
        self._ruler = ruler
        self.setMouseEnabled(x=False, y=False)

    def wheelEvent(self, ev, axis=None) -> None:  # type: ignore[no-untyped-def]
        self._view._on_wheel(self, ev)

    def mouseDragEvent(self, ev, axis=None) -> None:  # type: ignore[no-untyped-def]
        self._view._on_drag(self, ev, ruler=self._ruler)

    def mouseClickEvent(self, ev) -> None:  # type: ignore[no-untyped-def]
        self._view._on_click(self, ev)


def _plot(view: WaveformView, *, ruler: bool) -> tuple[pg.GraphicsView, pg.ViewBox]:
    """A lane: a bare view box filling a graphics view.  The ruler: a plot showing only its top axis.

    Lanes carry no axes at all: pyqtgraph updates even hidden axes on every
    range change, which was a third of a pan's cost.
    """
    vb = _LaneViewBox(view, ruler=ruler)
    vb.setDefaultPadding(0.0)
    if not ruler:
        lane = pg.GraphicsView(background=theme.BACKGROUND)
        lane.setCentralItem(vb)
        lane.setFrameShape(lane.Shape.NoFrame)
        lane.setAntialiasing(False)
        return lane, vb
    widget = pg.PlotWidget(
        viewBox=vb, axisItems={"top": TimeAxisItem("top")}, background=theme.SURFACE
    )
    item = widget.getPlotItem()
    item.hideButtons()
    item.setMenuEnabled(False)
    for name in ("left", "bottom", "right", "top"):
        item.getAxis(name).enableAutoSIPrefix(False)
        item.hideAxis(name)
    item.showAxis("top")
    top = item.getAxis("top")
    top.setPen(pg.mkPen(theme.BORDER))
    top.setTextPen(pg.mkPen(theme.TEXT_DIM))
    top.setStyle(tickLength=-6, tickTextOffset=3, maxTickLevel=1, maxTextLevel=0)
    item.layout.setContentsMargins(0, 0, 0, 0)
    widget.setFrameShape(widget.Shape.NoFrame)
    widget.setAntialiasing(False)
    return widget, vb


@dataclass
class _Lane:
    track_id: str
    name: str
    sample_rate: int
    color: QColor
    row: QWidget
    label: QLabel
    widget: pg.GraphicsView
    vb: pg.ViewBox
    pyramid: PeakPyramid | None
    channels: int
    gain_db: float = 0.0
    overlay: PeakPyramid | None = None
    pending: float | None = None
    error: str | None = None
    image: _LaneImage | None = None
    curves: list[_ChannelEnvelope] = field(default_factory=list)
    overlay_curves: list[_ChannelEnvelope] = field(default_factory=list)
    decorations: list[pg.GraphicsObject] = field(default_factory=list)
    playhead: pg.InfiniteLine | None = None
    loop: pg.LinearRegionItem | None = None
    selection: pg.LinearRegionItem | None = None
    frames_shown: int = 0


class _ChannelEnvelope:
    """What a lane shows of one channel: column centres (s) and lower/upper edges (view y)."""

    def __init__(self) -> None:
        self._data: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.empty(0),) * 3

    def set(self, xs: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        ok = np.isfinite(lower) & np.isfinite(upper)
        self._data = (xs[ok], lower[ok], upper[ok])

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xs, lower, upper)`` of the columns with audio."""
        return self._data


def _bridge(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widen neighbouring columns that do not touch so each covers half the gap.

    Zoomed in to a sample or so per column, or on a steep slope, the columns'
    ranges are disjoint and would draw as loose dots; meeting half-way draws
    the continuous trace a line through the samples would.  Display only: the
    envelope itself is untouched.
    """
    lo, hi = lower.copy(), upper.copy()
    with np.errstate(invalid="ignore"):  # NaN columns compare False and stay as they are
        up = lower[1:] > upper[:-1]  # the next column starts above this one
        mid = np.where(up, (upper[:-1] + lower[1:]) / 2, np.nan)
        hi[:-1] = np.fmax(hi[:-1], mid)
        lo[1:] = np.fmin(lo[1:], mid)
        down = upper[1:] < lower[:-1]  # ... or ends below it
        mid = np.where(down, (lower[:-1] + upper[1:]) / 2, np.nan)
        lo[:-1] = np.fmin(lo[:-1], mid)
        hi[1:] = np.fmax(hi[1:], mid)
    return lo, hi


class _LaneImage(pg.GraphicsObject):
    """A lane's waveforms rasterised with numpy into one image of exactly the lane's pixels.

    Each pixel column is filled from its min row to its max row: a ``(rows,
    columns)`` comparison, well under a millisecond.  Qt's own path filling
    and line drawing were measured at 5-25 ms per channel on dense material
    (a thin band that swings up and down every few pixels), too slow for a
    16 ms redraw.  The overlay (master) is drawn on top as two 1-px polylines
    per channel, which Qt draws in a fraction of a millisecond.
    """

    def __init__(self, color: QColor, overlay_color: QColor) -> None:
        super().__init__()
        self._argb = np.uint32(QColor(color).rgba() | 0xFF000000)
        self._pen = pg.mkPen(overlay_color, width=1)
        self._rect = QRectF()
        self._pixels = np.zeros((1, 1), dtype=np.uint32)
        self._image = QImage()
        self._lines: list[QPolygonF] = []

    def render(
        self,
        waves: list[tuple[np.ndarray, np.ndarray]],
        masters: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        rect: QRectF,
        width_px: int,
        height_px: int,
    ) -> None:
        """Rasterise ``waves`` (per channel ``(lower, upper)`` of ``width_px`` columns, view y,
        NaN = no audio) into ``rect`` (view coordinates), and outline ``masters`` (per channel
        ``(xs, lower, upper)``)."""
        width, height = max(1, width_px), max(1, height_px)
        pixels = np.zeros((height, width), dtype=np.uint32)
        y0, dy = rect.top(), rect.height() / height  # row 0 is the bottom: the view's y points up
        for lower, upper in waves:
            lower, upper = _bridge(lower, upper)
            ok = np.isfinite(lower) & np.isfinite(upper)
            if not ok.any():
                continue
            first = np.floor((np.where(ok, lower, np.inf) - y0) / dy)
            stop = np.ceil((np.where(ok, upper, -np.inf) - y0) / dy)
            stop = np.maximum(stop, first + 1)  # a silent column is still one pixel
            r0 = int(max(0, first[ok].min()))
            r1 = int(min(height, stop[ok].max()))
            if r1 <= r0:
                continue
            rows = np.arange(r0, r1, dtype=np.float64)[:, None]
            band = (rows >= first) & (rows < stop)
            pixels[r0:r1][band] = self._argb
        self.prepareGeometryChange()
        self._pixels = pixels  # the image uses this buffer
        self._image = QImage(
            pixels.data, width, height, 4 * width, QImage.Format.Format_ARGB32_Premultiplied
        )
        self._rect = QRectF(rect)
        lines = []
        for xs, lower, upper in masters:
            for edge in (upper, lower):
                ok = np.isfinite(edge)
                if ok.sum() < 1:
                    continue
                poly = fn.create_qpolygonf(int(ok.sum()))
                pts = fn.ndarray_from_qpolygonf(poly)
                pts[:, 0] = xs[ok]
                pts[:, 1] = edge[ok]
                lines.append(poly)
        self._lines = lines
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter, *args) -> None:  # type: ignore[no-untyped-def]
        if self._rect.isEmpty():
            return
        painter.setRenderHint(painter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(self._rect, self._image)
        painter.setPen(self._pen)
        for poly in self._lines:
            painter.drawPolyline(poly)


# --------------------------------------------------------------------------- the view


class WaveformView(QWidget):
    """Track lanes with waveforms, a time ruler, playhead, selection and loop.

    Signals
    -------
    selection_changed(start_s, end_s)
        After a drag over the lanes.
    loop_changed(start_s, end_s)
        Loop set or moved in the ruler, or by :meth:`set_loop` (both None when cleared).
    seek_requested(seconds)
        A click on a lane or the ruler.
    view_changed(start_s, end_s)
        The visible range changed.
    track_loaded(track_id)
        A file opened with :meth:`open_file` is fully drawn.
    track_failed(track_id, message)
        A file opened with :meth:`open_file` could not be read.

    Notes
    -----
    UI thread only.
    """

    selection_changed = Signal(float, float)
    loop_changed = Signal(object, object)
    seek_requested = Signal(float)
    view_changed = Signal(float, float)
    track_loaded = Signal(str)
    track_failed = Signal(str, str)

    def __init__(self, parent: QWidget | None = None, *, loader: PeakLoader | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self.setObjectName("waveformView")
        self.setStyleSheet(
            f"#waveformView, #waveformLanes {{ background: {theme.BACKGROUND}; }}"
            f"QLabel#laneHeader {{ background: {theme.SURFACE}; color: {theme.TEXT};"
            f" border-right: 1px solid {theme.BORDER}; border-bottom: 1px solid {theme.BORDER};"
            " padding: 6px 8px; }"
            f"QLabel#rulerCorner {{ background: {theme.SURFACE}; border-right: 1px solid {theme.BORDER};"
            f" border-bottom: 1px solid {theme.BORDER}; color: {theme.TEXT_DIM}; padding: 0 8px; }}"
        )
        self._lanes: dict[str, _Lane] = {}
        self._view = (0.0, DEFAULT_VIEW_S)
        self._playhead_s = 0.0
        self._follow = False
        self._loop: tuple[float, float] | None = None
        self._selection: tuple[float, float] | None = None
        self._drag_anchor: float | None = None
        self._pan_origin: tuple[float, float, float] | None = None
        self._loader = loader
        self._names: dict[str, str] = {}

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        ruler_row = QHBoxLayout()
        ruler_row.setSpacing(0)
        corner = QLabel("")
        corner.setObjectName("rulerCorner")
        corner.setFixedSize(HEADER_WIDTH_PX, RULER_HEIGHT_PX)
        self._corner = corner
        self._ruler, self._ruler_vb = _plot(self, ruler=True)
        self._ruler.setFixedHeight(RULER_HEIGHT_PX)
        self._ruler_vb.setYRange(0, 1, padding=0)
        ruler_row.addWidget(corner)
        ruler_row.addWidget(self._ruler, 1)
        outer.addLayout(ruler_row)

        self._ruler_playhead = pg.InfiniteLine(
            0.0, angle=90, pen=pg.mkPen(_PLAYHEAD, width=1), movable=False
        )
        self._ruler_vb.addItem(self._ruler_playhead, ignoreBounds=True)
        self._ruler_loop = pg.LinearRegionItem(
            (0, 1), brush=pg.mkBrush(_LOOP_RULER_BRUSH), pen=pg.mkPen(theme.ACCENT, width=2),
            hoverBrush=pg.mkBrush(79, 163, 255, 150), movable=True, swapMode="sort",
        )  # fmt: skip
        self._ruler_loop.setZValue(5)
        self._ruler_loop.hide()
        self._ruler_loop.sigRegionChanged.connect(self._on_loop_dragged)
        self._ruler_loop.sigRegionChangeFinished.connect(self._on_loop_drag_finished)
        self._ruler_vb.addItem(self._ruler_loop, ignoreBounds=True)

        self._scroll = QScrollArea()
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        lanes = QWidget()
        lanes.setObjectName("waveformLanes")
        self._lanes_box = QVBoxLayout(lanes)
        self._lanes_box.setContentsMargins(0, 0, 0, 0)
        self._lanes_box.setSpacing(1)
        self._lanes_box.addStretch(1)
        self._scroll.setWidget(lanes)
        outer.addWidget(self._scroll, 1)
        # The ruler must stay as wide as the lanes when their scroll bar shows.
        self._ruler_margin = QWidget()
        self._ruler_margin.setFixedWidth(0)
        ruler_row.addWidget(self._ruler_margin)
        self._scroll.verticalScrollBar().rangeChanged.connect(self._sync_ruler_margin)
        self._ruler_vb.sigResized.connect(self._redraw_all)
        self._apply_view(emit=False)

    def _sync_ruler_margin(self, *_: object) -> None:
        bar = self._scroll.verticalScrollBar()
        self._ruler_margin.setFixedWidth(bar.sizeHint().width() if bar.maximum() > 0 else 0)

    # ----------------------------------------------------------------- tracks
    def add_track(
        self,
        track_id: str,
        name: str,
        pyramid: PeakPyramid | None,
        sample_rate: int,
        color: str | QColor | None = None,
    ) -> None:
        """Add a lane (or replace the one with this id).

        Parameters
        ----------
        track_id : str
            Stable id used by every other call.
        name : str
            Shown in the lane header.
        pyramid : PeakPyramid or None
            The waveform; None shows an empty lane until :meth:`set_pyramid`.
        sample_rate : int
            Sample rate of the track in Hz (frames <-> seconds).
        color : str or QColor, optional
            Waveform colour; by default the next of :data:`theme.TRACK_COLORS`.
        """
        if not isinstance(sample_rate, int) or sample_rate < 1:
            raise ParameterError(f"sample_rate must be a positive integer, got {sample_rate!r}.")
        if track_id in self._lanes:
            self.remove_track(track_id)
        if color is None:
            color = theme.TRACK_COLORS[len(self._names) % len(theme.TRACK_COLORS)]
        self._names[track_id] = name
        row = QWidget()
        box = QHBoxLayout(row)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        label = QLabel()
        label.setObjectName("laneHeader")
        label.setFixedWidth(HEADER_WIDTH_PX)
        label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        label.setWordWrap(True)
        widget, vb = _plot(self, ruler=False)
        box.addWidget(label)
        box.addWidget(widget, 1)
        lane = _Lane(
            track_id=track_id, name=name, sample_rate=sample_rate, color=QColor(color), row=row,
            label=label, widget=widget, vb=vb, pyramid=pyramid,
            channels=pyramid.channels if pyramid is not None else 2,
        )  # fmt: skip
        self._lanes[track_id] = lane
        self._lanes_box.insertWidget(self._lanes_box.count() - 1, row)
        self._build_lane_items(lane)
        vb.sigResized.connect(lambda *_: self._redraw_lane(lane))
        self._update_header(lane)
        self._apply_view(emit=False)

    def _build_lane_items(self, lane: _Lane) -> None:
        vb = lane.vb
        for item in [*lane.decorations, *([lane.image] if lane.image is not None else [])]:
            vb.removeItem(item)
        lane.decorations = []
        ch = lane.channels
        lane.row.setMinimumHeight(CHANNEL_ROW_MIN_PX * ch + 8)
        lane.row.setMaximumHeight(max(LANE_MAX_PX, CHANNEL_ROW_MIN_PX * ch + 8))
        vb.setYRange(0.0, 2.0 * ch, padding=0.02)
        overlay_color = QColor(theme.MASTER_WAVE)
        overlay_color.setAlpha(225)
        lane.image = _LaneImage(lane.color, overlay_color)
        vb.addItem(lane.image, ignoreBounds=True)
        lane.curves = [_ChannelEnvelope() for _ in range(ch)]
        lane.overlay_curves = [_ChannelEnvelope() for _ in range(ch)]
        for c in range(ch):
            centre = 2.0 * (ch - 1 - c) + 1.0
            zero = pg.InfiniteLine(centre, angle=0, pen=pg.mkPen(_GRID), movable=False)
            zero.setZValue(1)  # over the waveform: the zero line shows through
            vb.addItem(zero, ignoreBounds=True)
            lane.decorations.append(zero)
            if c:
                sep = pg.InfiniteLine(
                    centre + 1.0, angle=0, pen=pg.mkPen(theme.BORDER), movable=False
                )
                vb.addItem(sep, ignoreBounds=True)
                lane.decorations.append(sep)
        if lane.playhead is None:
            lane.loop = pg.LinearRegionItem(
                (0, 1), brush=pg.mkBrush(_LOOP_BRUSH), pen=pg.mkPen(None), movable=False
            )
            lane.selection = pg.LinearRegionItem(
                (0, 1),
                brush=pg.mkBrush(_SELECTION_BRUSH),
                pen=pg.mkPen((255, 255, 255, 90)),
                movable=False,
            )
            lane.playhead = pg.InfiniteLine(
                self._playhead_s, angle=90, pen=pg.mkPen(_PLAYHEAD, width=1), movable=False
            )
            lane.playhead.setZValue(10)
            for item in (lane.loop, lane.selection, lane.playhead):
                vb.addItem(item, ignoreBounds=True)
            self._sync_regions(lane)

    def remove_track(self, track_id: str) -> None:
        """Remove a lane (and stop loading its file).  Unknown ids are ignored."""
        if self._loader is not None:
            self._loader.cancel(track_id)
        lane = self._lanes.pop(track_id, None)
        self._names.pop(track_id, None)
        if lane is None:
            return
        self._lanes_box.removeWidget(lane.row)
        lane.row.setParent(None)
        lane.row.deleteLater()

    def track_ids(self) -> list[str]:
        """Ids of the lanes, top to bottom."""
        return list(self._lanes)

    def set_pyramid(self, track_id: str, pyramid: PeakPyramid | None) -> None:
        """Replace a lane's waveform (e.g. the finished pyramid after a progressive one)."""
        lane = self._lane(track_id)
        lane.pyramid = pyramid
        if pyramid is not None and pyramid.channels != lane.channels:
            lane.channels = pyramid.channels
            self._build_lane_items(lane)
        self._redraw_lane(lane)

    def set_overlay(self, track_id: str, pyramid: PeakPyramid | None) -> None:
        """Draw another waveform (the master) over a lane's for A/B; None removes it."""
        lane = self._lane(track_id)
        lane.overlay = pyramid
        self._redraw_lane(lane)

    def has_overlay(self, track_id: str) -> bool:
        """True when the lane shows an overlay."""
        return self._lane(track_id).overlay is not None

    def set_clip_gain(self, track_id: str, gain_db: float) -> None:
        """Draw a lane scaled by a clip gain in dB (clamped at full scale)."""
        lane = self._lane(track_id)
        if not math.isfinite(gain_db):
            raise ParameterError(f"gain_db must be finite, got {gain_db!r}.")
        lane.gain_db = float(gain_db)
        self._update_header(lane)
        self._redraw_lane(lane)

    def set_pending(self, track_id: str, fraction: float | None) -> None:
        """Show a lane as being built (``fraction`` in [0, 1]) or done (None), and redraw what is ready."""
        lane = self._lane(track_id)
        lane.pending = None if fraction is None else min(1.0, max(0.0, float(fraction)))
        self._update_header(lane)
        self._redraw_lane(lane)

    def frames_shown(self, track_id: str) -> int:
        """Frames of the track's audio drawn so far (grows while its pyramid builds)."""
        return self._lane(track_id).frames_shown

    def _lane(self, track_id: str) -> _Lane:
        try:
            return self._lanes[track_id]
        except KeyError:
            raise ParameterError(f"No track {track_id!r} in the waveform view.") from None

    def _update_header(self, lane: _Lane) -> None:
        lines = [f"<b>{_escape(lane.name)}</b>"]
        dim = theme.TEXT_DIM
        if lane.error:
            lines.append(f"<span style='color:{theme.METER_RED}'>{_escape(lane.error)}</span>")
        elif lane.pending is not None:
            lines.append(
                f"<span style='color:{dim}'>building peaks {lane.pending * 100:.0f} %</span>"
            )
        else:
            chans = {1: "mono", 2: "stereo"}.get(lane.channels, f"{lane.channels} ch")
            rate = f"{lane.sample_rate / 1000:g} kHz"
            lines.append(f"<span style='color:{dim}'>{chans} · {rate}</span>")
        if lane.gain_db:
            lines.append(f"<span style='color:{dim}'>gain {lane.gain_db:+.1f} dB</span>")
        lane.label.setText("<br>".join(lines))
        lane.label.setToolTip(lane.error or lane.name)

    # ----------------------------------------------------------------- loading
    @property
    def loader(self) -> PeakLoader:
        """The loader used by :meth:`open_file` (created on first use, no cache)."""
        if self._loader is None:
            self._loader = PeakLoader(None, self)
            self._connect_loader(self._loader)
        return self._loader

    def set_loader(self, loader: PeakLoader) -> None:
        """Use ``loader`` (with the app's :class:`PeakCache`) for :meth:`open_file`."""
        self._loader = loader
        self._connect_loader(loader)

    def _connect_loader(self, loader: PeakLoader) -> None:
        loader.started.connect(self._on_load_started)
        loader.progressed.connect(self._on_load_progress)
        loader.finished.connect(self._on_load_finished)
        loader.failed.connect(self._on_load_failed)

    def open_file(
        self,
        track_id: str,
        name: str,
        path: str | os.PathLike[str],
        sample_rate: int | None = None,
        *,
        color: str | QColor | None = None,
    ) -> None:
        """Add a lane for a media file and build/load its peaks off the UI thread.

        The lane appears at once and fills in left to right while the file is
        decoded (the first lane added is zoomed to fit as soon as its length
        is known); :attr:`track_loaded` or :attr:`track_failed` tells the end.

        Parameters
        ----------
        track_id, name, color
            As for :meth:`add_track`.
        path : str or os.PathLike
            The media file.
        sample_rate : int, optional
            The file's rate in Hz if known; otherwise the header is read here
            (:func:`app.engine.audio_io.probe`, a few ms).

        Raises
        ------
        AudioInputError
            Only when ``sample_rate`` is None and the file is not usable
            audio; with a rate given, a bad file ends in :attr:`track_failed`.
        """
        loader = self.loader
        if sample_rate is None:
            sample_rate = audio_io.probe(path).sample_rate
        self.add_track(track_id, name, None, sample_rate, color)
        self.set_pending(track_id, 0.0)
        loader.load(track_id, path)

    def _on_load_started(self, track_id: str, pyramid: PeakPyramid) -> None:
        if track_id in self._lanes:
            self._lanes[track_id].sample_rate = pyramid.sample_rate
            self.set_pyramid(track_id, pyramid)
            if len(self._lanes) == 1:  # the first file dropped in: show all of it
                self.zoom_to_fit()

    def _on_load_progress(self, track_id: str, fraction: float, message: str) -> None:
        lane = self._lanes.get(track_id)
        if lane is not None and lane.pending is not None:
            self.set_pending(track_id, fraction)

    def _on_load_finished(self, track_id: str, pyramid: PeakPyramid) -> None:
        if track_id in self._lanes:
            lane = self._lanes[track_id]
            first_sight = lane.pyramid is None  # a cache hit skips `started`
            lane.pending = None
            lane.sample_rate = pyramid.sample_rate
            self._update_header(lane)
            self.set_pyramid(track_id, pyramid)
            if first_sight and len(self._lanes) == 1:
                self.zoom_to_fit()
            self.track_loaded.emit(track_id)

    def _on_load_failed(self, track_id: str, message: str) -> None:
        lane = self._lanes.get(track_id)
        if lane is not None:
            lane.pending = None
            lane.error = message
            self._update_header(lane)
            self.track_failed.emit(track_id, message)

    # ----------------------------------------------------------------- view range
    def _total_s(self) -> float:
        lengths = [
            lane.pyramid.duration_s for lane in self._lanes.values() if lane.pyramid is not None
        ]
        return max(lengths, default=0.0)

    def view_range(self) -> tuple[float, float]:
        """The visible time range ``(start_s, end_s)``."""
        return self._view

    def set_view(self, start_s: float, end_s: float) -> None:
        """Show ``[start_s, end_s]`` (kept at least 2 ms long and near the audio)."""
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            raise ParameterError(f"View bounds must be finite, got {start_s!r}, {end_s!r}.")
        start, end = (start_s, end_s) if start_s <= end_s else (end_s, start_s)
        span = max(end - start, MIN_VIEW_S)
        total = max(self._total_s(), DEFAULT_VIEW_S)
        margin = 0.02 * total
        span = min(span, total + 2 * margin)
        start = min(max(start, -margin), total + margin - span)
        self._view = (start, start + span)
        self._apply_view(emit=True)

    def zoom(self, factor: float, *, around_s: float | None = None) -> None:
        """Zoom in by ``factor`` (> 1) or out (< 1) keeping ``around_s`` (default: the centre) in place."""
        start, end = self._view
        anchor = (start + end) / 2 if around_s is None else around_s
        self.set_view(anchor - (anchor - start) / factor, anchor + (end - anchor) / factor)

    def zoom_in(self) -> None:
        """Show half as much time."""
        self.zoom(BUTTON_ZOOM)

    def zoom_out(self) -> None:
        """Show twice as much time."""
        self.zoom(1.0 / BUTTON_ZOOM)

    def zoom_to_fit(self) -> None:
        """Show every track from start to end."""
        total = self._total_s()
        self.set_view(0.0, total if total > 0 else DEFAULT_VIEW_S)

    def scroll_by(self, seconds: float) -> None:
        """Move the view later (positive) or earlier without zooming."""
        start, end = self._view
        self.set_view(start + seconds, end + seconds)

    def _apply_view(self, *, emit: bool) -> None:
        start, end = self._view
        self._ruler_vb.setXRange(start, end, padding=0)
        for lane in self._lanes.values():
            lane.vb.setXRange(start, end, padding=0)
        self._redraw_all()
        if emit:
            self.view_changed.emit(start, end)

    # ----------------------------------------------------------------- drawing
    def _redraw_all(self, *_: object) -> None:
        for lane in self._lanes.values():
            self._redraw_lane(lane)

    def _columns(self, lane: _Lane) -> int:
        width = lane.vb.width()
        if width < 2:  # not laid out yet: the widget's width is the best guess
            width = self.width() - HEADER_WIDTH_PX
        return max(1, int(width))

    def _redraw_lane(self, lane: _Lane) -> None:
        cols = self._columns(lane)
        gain = 10.0 ** (lane.gain_db / 20.0)
        ch = lane.channels
        vy0, vy1 = lane.vb.viewRange()[1]
        layers: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        x0, x1 = self._view
        for records, pyr in ((lane.curves, lane.pyramid), (lane.overlay_curves, lane.overlay)):
            got = self._envelope(pyr, cols)
            layer = []
            for c, record in enumerate(records):
                if got is None or c >= got[0].shape[0]:
                    record.set(np.empty(0), np.empty(0), np.empty(0))
                    continue
                env, x0, x1 = got
                xs = x0 + (np.arange(cols) + 0.5) * ((x1 - x0) / cols)
                # clamped at full scale so that a boosted lane stays in its row
                vals = np.clip(env[c].astype(np.float64) * gain, -1.0, 1.0) + (
                    2.0 * (ch - 1 - c) + 1.0
                )
                record.set(xs, vals[:, 0], vals[:, 1])
                layer.append((xs, vals[:, 0], vals[:, 1]))
            layers.append(layer)
        assert lane.image is not None
        height = max(1, round(lane.vb.height()))
        rect = QRectF(x0, vy0, x1 - x0, vy1 - vy0)
        lane.image.render([(lo, hi) for _, lo, hi in layers[0]], layers[1], rect, cols, height)
        lane.frames_shown = lane.pyramid.frames_ready if lane.pyramid is not None else 0

    def _envelope(
        self, pyr: PeakPyramid | None, cols: int
    ) -> tuple[np.ndarray, float, float] | None:
        """``(envelope (channels, cols, 2), x0_s, x1_s)`` of the visible range, or None."""
        if pyr is None:
            return None
        start_s, end_s = self._view
        sr = pyr.sample_rate
        f0 = math.floor(start_s * sr)
        f1 = max(f0 + 1, math.ceil(end_s * sr))
        return pyr.envelope(f0, f1, cols), f0 / sr, f1 / sr

    # ----------------------------------------------------------------- playhead, loop, selection
    def set_playhead(self, seconds: float) -> None:
        """Move the playhead; with follow on, page the view to keep it visible."""
        self._playhead_s = float(seconds)
        self._ruler_playhead.setValue(self._playhead_s)
        for lane in self._lanes.values():
            if lane.playhead is not None:
                lane.playhead.setValue(self._playhead_s)
        if self._follow:
            start, end = self._view
            span = end - start
            if not start <= self._playhead_s <= end - FOLLOW_MARGIN * span:
                new_start = self._playhead_s - FOLLOW_MARGIN * span
                self.set_view(new_start, new_start + span)

    def playhead(self) -> float:
        """The playhead's position in seconds."""
        return self._playhead_s

    def set_follow_playhead(self, follow: bool) -> None:
        """Page the view along with the playhead (True) or leave it where it is."""
        self._follow = bool(follow)
        if self._follow:
            self.set_playhead(self._playhead_s)

    def follow_playhead(self) -> bool:
        """Whether the view follows the playhead."""
        return self._follow

    def set_loop(self, start_s: float | None, end_s: float | None = None) -> None:
        """Show a loop region (``start_s`` None or ``end_s`` None clears it); emits :attr:`loop_changed`."""
        if start_s is None or end_s is None:
            self._loop = None
        else:
            a, b = sorted((float(start_s), float(end_s)))
            if b - a <= 0:
                raise ParameterError(f"A loop needs end after start, got {start_s!r}..{end_s!r}.")
            self._loop = (a, b)
        self._sync_loop_items()
        self.loop_changed.emit(*(self._loop or (None, None)))

    def loop(self) -> tuple[float, float] | None:
        """The loop region in seconds, or None."""
        return self._loop

    def selection(self) -> tuple[float, float] | None:
        """The selected time range in seconds, or None."""
        return self._selection

    def set_selection(self, start_s: float | None, end_s: float | None = None) -> None:
        """Select a time range (None clears); emits :attr:`selection_changed` for a range."""
        if start_s is None or end_s is None:
            self._selection = None
        else:
            a, b = sorted((float(start_s), float(end_s)))
            self._selection = (a, b)
        for lane in self._lanes.values():
            self._sync_regions(lane)
        if self._selection is not None:
            self.selection_changed.emit(*self._selection)

    def _sync_loop_items(self) -> None:
        if self._loop is None:
            self._ruler_loop.hide()
        else:
            self._ruler_loop.blockSignals(True)
            self._ruler_loop.setRegion(self._loop)
            self._ruler_loop.blockSignals(False)
            self._ruler_loop.show()
        for lane in self._lanes.values():
            self._sync_regions(lane)

    def _sync_regions(self, lane: _Lane) -> None:
        for item, span in ((lane.loop, self._loop), (lane.selection, self._selection)):
            if item is None:
                continue
            if span is None:
                item.hide()
            else:
                item.setRegion(span)
                item.show()

    def _on_loop_dragged(self) -> None:
        a, b = self._ruler_loop.getRegion()
        self._loop = (float(a), float(b))
        for lane in self._lanes.values():
            self._sync_regions(lane)

    def _on_loop_drag_finished(self) -> None:
        self._on_loop_dragged()
        if self._loop is not None:
            self.loop_changed.emit(*self._loop)

    # ----------------------------------------------------------------- mouse
    def _x_at(self, vb: pg.ViewBox, scene_pos: QPointF) -> float:
        return float(vb.mapSceneToView(scene_pos).x())

    def _on_wheel(self, vb: pg.ViewBox, ev) -> None:  # type: ignore[no-untyped-def]
        ev.accept()
        delta = ev.delta()
        if not delta:
            return
        notches = delta / 120.0
        horizontal = ev.orientation() == Qt.Orientation.Horizontal
        if horizontal or ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            start, end = self._view
            self.scroll_by(-notches * SCROLL_PER_NOTCH * (end - start))
        else:
            self.zoom(WHEEL_ZOOM_PER_NOTCH**notches, around_s=self._x_at(vb, ev.scenePos()))

    def _on_click(self, vb: pg.ViewBox, ev) -> None:  # type: ignore[no-untyped-def]
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        ev.accept()
        seconds = max(0.0, self._x_at(vb, ev.scenePos()))
        if self._selection is not None:
            self.set_selection(None)
        self.seek_requested.emit(seconds)

    def _on_drag(self, vb: pg.ViewBox, ev, *, ruler: bool) -> None:  # type: ignore[no-untyped-def]
        button = ev.button()
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and shift):
            ev.accept()
            # Measured in pixels from the press, against the view at the press: the
            # mapping moves under the mouse while scrolling.
            if ev.isStart() or self._pan_origin is None:
                self._pan_origin = (*self._view, float(ev.buttonDownScenePos().x()))
            start, end, down_x = self._pan_origin
            seconds_per_px = (end - start) / max(1.0, vb.width())
            shift_s = -(float(ev.scenePos().x()) - down_x) * seconds_per_px
            self.set_view(start + shift_s, end + shift_s)
            if ev.isFinish():
                self._pan_origin = None
            return
        if button != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        if ev.isStart():
            self._drag_anchor = self._x_at(vb, ev.buttonDownScenePos())
        if self._drag_anchor is None:
            return
        here = self._x_at(vb, ev.scenePos())
        a, b = sorted((max(0.0, self._drag_anchor), max(0.0, here)))
        if ruler:
            if b > a:
                self._loop = (a, b)
                self._sync_loop_items()
                if ev.isFinish():
                    self.loop_changed.emit(a, b)
        else:
            self._selection = (a, b)
            for lane in self._lanes.values():
                self._sync_regions(lane)
            if ev.isFinish():
                self.selection_changed.emit(a, b)
        if ev.isFinish():
            self._drag_anchor = None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
