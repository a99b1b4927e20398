"""Level meters: sample peak and true peak per channel, momentary / short-term LUFS, correlation.

The main window pulls the playback engine's latest meter snapshot on a timer (screen
rate) and hands the numbers to :meth:`MeterPanel.set_levels`; this widget only keeps the
latest values plus a decaying peak hold, so it never queues work (Friture pattern).
UI thread only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.ui import theme

FLOOR_DB = -60.0
LUFS_FLOOR = -40.0
LUFS_TOP = 0.0
PEAK_HOLD_S = 1.5
FALL_DB_PER_S = 24.0  # display ballistics (IEC 60268-18 style fall-back)
TICKS_DB = (0, -3, -6, -9, -12, -18, -24, -36, -48, -60)


def _fmt(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return f"-inf {unit}".strip()
    return f"{value:+.1f} {unit}".strip() if value > 0 else f"{value:.1f} {unit}".strip()


class MeterPanel(QWidget):
    """Vertical peak / true-peak bars per channel, two loudness bars and a correlation bar."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(180)
        self._peak_db: list[float] = [FLOOR_DB, FLOOR_DB]
        self._true_peak_db: list[float] = [FLOOR_DB, FLOOR_DB]
        self._shown_db: list[float] = [FLOOR_DB, FLOOR_DB]
        self._hold_db: list[float] = [FLOOR_DB, FLOOR_DB]
        self._hold_t: list[float] = [0.0, 0.0]
        self._max_true_peak_db = -math.inf
        self._momentary: float | None = None
        self._short_term: float | None = None
        self._correlation: float | None = None
        self._target_lufs: float | None = -14.0
        self._last = time.monotonic()
        self.setToolTip("Peak / true peak (dBFS / dBTP), momentary and short-term loudness (LUFS), correlation")

    def sizeHint(self) -> QSize:
        return QSize(190, 260)

    # ------------------------------------------------------------------ data in

    def set_target_lufs(self, lufs: float | None) -> None:
        """Draw the delivery target as a line on the loudness bars."""
        self._target_lufs = lufs
        self.update()

    def reset(self) -> None:
        """Clear the holds and the max true peak (e.g. after a seek or on click)."""
        n = len(self._peak_db)
        self._hold_db = [FLOOR_DB] * n
        self._shown_db = [FLOOR_DB] * n
        self._max_true_peak_db = -math.inf
        self.update()

    def set_levels(
        self,
        peak_db: Sequence[float],
        true_peak_db: Sequence[float],
        momentary_lufs: float | None,
        short_term_lufs: float | None,
        correlation: float | None,
    ) -> None:
        """Latest block values; dB below the floor (or -inf) show as empty."""
        now = time.monotonic()
        dt = max(0.0, now - self._last)
        self._last = now
        n = len(peak_db)
        if n != len(self._shown_db):
            self._shown_db = [FLOOR_DB] * n
            self._hold_db = [FLOOR_DB] * n
            self._hold_t = [0.0] * n
        self._peak_db = [max(FLOOR_DB, float(v)) if math.isfinite(v) else FLOOR_DB for v in peak_db]
        self._true_peak_db = [max(FLOOR_DB, float(v)) if math.isfinite(v) else FLOOR_DB for v in true_peak_db]
        for i, v in enumerate(self._true_peak_db):
            self._shown_db[i] = max(v, self._shown_db[i] - FALL_DB_PER_S * dt)
            if v >= self._hold_db[i] or now - self._hold_t[i] > PEAK_HOLD_S:
                self._hold_db[i], self._hold_t[i] = v, now
            if math.isfinite(true_peak_db[i]):
                self._max_true_peak_db = max(self._max_true_peak_db, float(true_peak_db[i]))
        self._momentary = momentary_lufs
        self._short_term = short_term_lufs
        self._correlation = correlation
        self.update()

    @property
    def max_true_peak_db(self) -> float:
        return self._max_true_peak_db

    def mousePressEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.reset()

    # ------------------------------------------------------------------ painting

    @staticmethod
    def _y(db: float, top: float, height: float, lo: float, hi: float) -> float:
        f = (min(max(db, lo), hi) - lo) / (hi - lo)
        return top + height * (1.0 - f)

    def _bar(self, p: QPainter, rect: QRectF, value: float | None, lo: float, hi: float, grad: QLinearGradient) -> None:
        p.fillRect(rect, QColor(theme.SURFACE_RAISED))
        if value is None or not math.isfinite(value) or value <= lo:
            return
        y = self._y(value, rect.top(), rect.height(), lo, hi)
        p.fillRect(QRectF(rect.left(), y, rect.width(), rect.bottom() - y), grad)

    def paintEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.fillRect(self.rect(), QColor(theme.SURFACE))
        small = QFont(self.font())
        small.setPointSizeF(7.5)
        p.setFont(small)
        w, h = self.width(), self.height()
        top, bottom = 22.0, h - 46.0
        bar_h = bottom - top

        grad = QLinearGradient(0, bottom, 0, top)
        grad.setColorAt(0.0, QColor(theme.METER_GREEN))
        grad.setColorAt((-12 - FLOOR_DB) / -FLOOR_DB, QColor(theme.METER_GREEN))
        grad.setColorAt((-6 - FLOOR_DB) / -FLOOR_DB, QColor(theme.METER_YELLOW))
        grad.setColorAt(1.0, QColor(theme.METER_RED))

        # channel bars (true peak, with sample peak as a thin inner line and a hold tick)
        n = max(1, len(self._shown_db))
        scale_w = 24.0
        x = 8.0
        bw = min(14.0, (w * 0.42 - scale_w) / n - 3)
        p.setPen(QColor(theme.TEXT_DIM))
        for db in TICKS_DB:
            y = self._y(db, top, bar_h, FLOOR_DB, 0.0)
            p.drawText(QRectF(x, y - 6, scale_w - 4, 12), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, str(db))
        x += scale_w
        for i in range(n):
            r = QRectF(x, top, bw, bar_h)
            self._bar(p, r, self._shown_db[i], FLOOR_DB, 0.0, grad)
            sp = self._peak_db[i] if i < len(self._peak_db) else FLOOR_DB
            if sp > FLOOR_DB:
                ys = self._y(sp, top, bar_h, FLOOR_DB, 0.0)
                p.setPen(QPen(QColor(255, 255, 255, 90), 1))
                p.drawLine(int(r.left()), int(ys), int(r.right()), int(ys))
            if self._hold_db[i] > FLOOR_DB:
                yh = self._y(self._hold_db[i], top, bar_h, FLOOR_DB, 0.0)
                p.setPen(QPen(QColor(theme.METER_RED if self._hold_db[i] > -1.0 else theme.TEXT), 2))
                p.drawLine(int(r.left()), int(yh), int(r.right()), int(yh))
            p.setPen(QColor(theme.TEXT_DIM))
            p.drawText(QRectF(x, bottom + 2, bw, 12), Qt.AlignmentFlag.AlignCenter, "LR"[i] if n == 2 else str(i + 1))
            x += bw + 3
        p.setPen(QColor(theme.METER_RED if self._max_true_peak_db > -1.0 else theme.TEXT))
        p.drawText(QRectF(8, 2, x - 8, 16), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   "TP " + _fmt(self._max_true_peak_db, ""))  # fmt: skip

        # loudness bars (M, S) on a LUFS scale with the target line
        lg = QLinearGradient(0, bottom, 0, top)
        lg.setColorAt(0.0, QColor(theme.ACCENT_DIM))
        lg.setColorAt(1.0, QColor(theme.ACCENT))
        x += 14
        lw = 16.0
        for label, value in (("M", self._momentary), ("S", self._short_term)):
            r = QRectF(x, top, lw, bar_h)
            self._bar(p, r, value, LUFS_FLOOR, LUFS_TOP, lg)
            if self._target_lufs is not None:
                yt = self._y(self._target_lufs, top, bar_h, LUFS_FLOOR, LUFS_TOP)
                p.setPen(QPen(QColor(theme.MASTER_WAVE), 1, Qt.PenStyle.DashLine))
                p.drawLine(int(r.left() - 2), int(yt), int(r.right() + 2), int(yt))
            p.setPen(QColor(theme.TEXT_DIM))
            p.drawText(QRectF(x, bottom + 2, lw, 12), Qt.AlignmentFlag.AlignCenter, label)
            x += lw + 4
        p.setPen(QColor(theme.TEXT_DIM))
        for lufs in (0, -10, -20, -30, -40):
            y = self._y(lufs, top, bar_h, LUFS_FLOOR, LUFS_TOP)
            p.drawText(QRectF(x, y - 6, 26, 12), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, str(lufs))
        p.setPen(QColor(theme.TEXT))
        p.drawText(QRectF(x - 2 * (lw + 4), 2, w - x + 2 * (lw + 4) - 4, 16), Qt.AlignmentFlag.AlignLeft,
                   "S " + _fmt(self._short_term, "LUFS"))  # fmt: skip

        # correlation: -1 .. +1 horizontal bar
        cy = h - 26.0
        cr = QRectF(8, cy, w - 16, 8)
        p.fillRect(cr, QColor(theme.SURFACE_RAISED))
        p.setPen(QColor(theme.BORDER))
        p.drawLine(int(cr.center().x()), int(cr.top() - 2), int(cr.center().x()), int(cr.bottom() + 2))
        if self._correlation is not None and math.isfinite(self._correlation):
            c = max(-1.0, min(1.0, self._correlation))
            cx = cr.left() + (c + 1.0) / 2.0 * cr.width()
            colour = theme.METER_GREEN if c >= 0.2 else theme.METER_YELLOW if c >= -0.2 else theme.METER_RED
            p.fillRect(QRectF(min(cx, cr.center().x()), cr.top(), abs(cx - cr.center().x()) or 2, cr.height()), QColor(colour))
        p.setPen(QColor(theme.TEXT_DIM))
        p.drawText(QRectF(8, cy + 9, w - 16, 12), Qt.AlignmentFlag.AlignLeft, "-1")
        p.drawText(QRectF(8, cy + 9, w - 16, 12), Qt.AlignmentFlag.AlignHCenter,
                   "corr " + ("—" if self._correlation is None else f"{self._correlation:+.2f}"))  # fmt: skip
        p.drawText(QRectF(8, cy + 9, w - 16, 12), Qt.AlignmentFlag.AlignRight, "+1")
        p.end()
