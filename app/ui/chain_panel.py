"""The model-chain dock: the twelve slots with their status, and the jobs they run.

:class:`ChainPanel` lists every slot (title, role, status colour-coded: green ready,
amber weights missing / needs an API key, grey package missing / not available yet, red unsupported device
or an error; the tooltip says what each backend lacks and where to get it), offers
*Generate…* (the :class:`app.ui.generate_dialog.GenerateDialog`), *Enhance selected
track* (a request the main window answers with the file) and *Refresh*, and shows the
jobs: name, slot · backend, progress, state, a Cancel button while running; finished
jobs show their elapsed time and key figures, failed ones the reason.

Signals
-------
result_ready(job_id, outputs: dict[str, str], metrics: dict, plan: dict)
    a job finished: ``outputs["audio"]`` is a new track, ``outputs["midi"]`` a clip.
enhance_requested()
    the user pressed *Enhance selected track*; answer with
    ``panel.run_job("aces", "enhance", {}, {"audio": path}, "Enhance <name>")``.
job_failed(job_id, message, kind)
    a job ended without a result (kind: error, cancelled, worker_died).

UI thread only.  The panel does not own the bridge: whoever made it closes it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.registry import SLOTS
from app.ui import theme
from app.ui.generate_dialog import GenerateDialog, GenerateRequest
from app.ui.model_bridge import STATE_LABELS, ModelBridge, describe_slot

__all__ = ["STATE_COLORS", "ChainPanel", "JobRow"]

STATE_COLORS = {
    "ready": theme.METER_GREEN,
    "weights_missing": theme.METER_YELLOW,
    "needs_api_key": theme.METER_YELLOW,
    "wrong_task": theme.METER_YELLOW,
    "package_missing": theme.TEXT_DIM,
    "not_available": theme.TEXT_DIM,
    "degraded": theme.METER_YELLOW,
    "checking": theme.TEXT_DIM,
    "unsupported_device": theme.METER_RED,
    "error": theme.METER_RED,
}
WORKER_STATES = {
    "stopped": ("Model worker: starts with the first job", theme.TEXT_DIM),
    "starting": ("Model worker: starting…", theme.TEXT_DIM),
    "ready": ("Model worker: ready", theme.METER_GREEN),
    "busy": ("Model worker: working", theme.ACCENT),
    "restarting": ("Model worker: restarting after a crash…", theme.METER_YELLOW),
    "dead": ("Model worker: stopped", theme.METER_RED),
    "closed": ("Model worker: closed", theme.TEXT_DIM),
}
ELAPSED_REFRESH_MS = 500
MAX_FINISHED_ROWS = 30
_LOG_NOTE = re.compile(r"\s*\((?:log|see): [^)]*\)|;?\s*see /\S+$")


def _fmt_seconds(s: float) -> str:
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"


def key_metrics(metrics: dict[str, Any], *, limit: int = 3) -> str:
    """The few figures a musician looks at first ("8.0 s audio · RTF 0.41 · cpu")."""
    parts: list[str] = []

    def num(key: str) -> float | None:
        v = metrics.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    if (v := num("output_s") or num("duration_s")) is not None:
        parts.append(f"{v:.1f} s audio")
    if (v := num("real_time_factor")) is not None:
        parts.append(f"RTF {v:.2f}")
    for key in ("loudness_after_lufs", "loudness_lufs", "integrated_lufs"):
        if (v := num(key)) is not None:
            parts.append(f"{v:.1f} LUFS")
            break
    for key in ("true_peak_after_dbtp", "true_peak_dbtp"):
        if (v := num(key)) is not None:
            parts.append(f"{v:.1f} dBTP")
            break
    if not parts:  # a backend with figures of its own: show the first scalar ones
        for key, value in metrics.items():
            if key in ("pid", "device", "seed") or isinstance(value, bool):
                continue
            if isinstance(value, float):
                parts.append(f"{key} {value:.3g}")
            elif isinstance(value, int | str) and len(str(value)) <= 24:
                parts.append(f"{key} {value}")
            if len(parts) >= limit:
                break
    if len(parts) < limit and isinstance(metrics.get("device"), str):
        parts.append(str(metrics["device"]))
    return " · ".join(parts[:limit])


def _metrics_tooltip(metrics: dict[str, Any], outputs: dict[str, str]) -> str:
    lines = [f"{k}: {v}" for k, v in metrics.items()]
    lines += [f"output {k}: {v}" for k, v in outputs.items()]
    return "\n".join(lines)


@dataclass
class _Job:
    job_id: str
    title: str
    slot: str
    task: str
    submitted_s: float


class JobRow(QFrame):
    """One job in the jobs list: name, slot · backend, progress, state and Cancel.

    ``state``: queued, running, cancelling, finished, failed, cancelled.
    """

    def __init__(self, job: _Job, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.job = job
        self.state = "queued"
        self.backend = ""
        self.fraction = 0.0
        self.message = ""
        self.ended_s: float | None = None
        self.state_text = ""
        self.setObjectName("jobRow")
        self.setStyleSheet(f"#jobRow {{ background: {theme.SURFACE_RAISED}; border: 1px solid {theme.BORDER};"
                           " border-radius: 4px; }")
        self.title_label = QLabel(job.title)
        font = QFont(self.title_label.font())
        font.setBold(True)
        self.title_label.setFont(font)
        self.title_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.where_label = QLabel(job.slot)
        self.where_label.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this job (the worker stops it at its next step)")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setFixedHeight(8)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        self.state_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.setSpacing(8)
        top.addWidget(self.title_label, 1)
        top.addWidget(self.where_label)
        top.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 6)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(self.progress_bar)
        lay.addWidget(self.state_label)
        self._show()

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    @property
    def elapsed_s(self) -> float:
        return (self.ended_s or time.monotonic()) - self.job.submitted_s

    def mark_started(self, backend: str) -> None:
        self.backend = backend
        if self.state == "queued":
            self.state = "running"
        self._show()

    def mark_progress(self, fraction: float, message: str) -> None:
        if self.done:
            return
        if self.state == "queued":
            self.state = "running"
        self.fraction = min(1.0, max(0.0, fraction))
        self.message = message
        self._show()

    def mark_cancelling(self) -> None:
        if not self.done:
            self.state = "cancelling"
            self._show()

    def mark_finished(self, outputs: dict[str, str], metrics: dict[str, Any]) -> None:
        self.state, self.ended_s, self.fraction = "finished", time.monotonic(), 1.0
        figures = key_metrics(metrics)
        self.state_text = f"Done in {_fmt_seconds(self.elapsed_s)}" + (f" · {figures}" if figures else "")
        self._show(tooltip=_metrics_tooltip(metrics, outputs))

    def mark_failed(self, message: str, kind: str, details: str = "") -> None:
        self.ended_s = time.monotonic()
        if kind == "cancelled":
            self.state = "cancelled"
            self.state_text = f"Cancelled after {_fmt_seconds(self.elapsed_s)}"
        else:
            self.state = "failed"
            short = _LOG_NOTE.sub("", message).strip()
            self.state_text = ("Worker died: " if kind == "worker_died" else "Failed: ") + short
        tip = message + (f"\n\n{details.strip()[-2000:]}" if details.strip() else "")
        self._show(tooltip=tip)

    def refresh_elapsed(self) -> None:
        if not self.done:
            self._show()

    def _show(self, tooltip: str | None = None) -> None:
        self.where_label.setText(f"{self.job.slot} · {self.backend}" if self.backend else self.job.slot)
        running = not self.done
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(self.state in ("queued", "running"))
        self.progress_bar.setValue(round(self.fraction * 1000))
        colour = theme.TEXT_DIM
        if self.state == "queued":
            self.state_text = f"Queued · {_fmt_seconds(self.elapsed_s)}"
        elif self.state == "running":
            pct = f"{self.fraction * 100:.0f} %"
            self.state_text = " · ".join(p for p in (f"Running {pct}", self.message, _fmt_seconds(self.elapsed_s)) if p)
            colour = theme.TEXT
        elif self.state == "cancelling":
            self.state_text = "Cancelling…"
        elif self.state == "finished":
            colour = theme.METER_GREEN
        elif self.state == "failed":
            colour = theme.METER_RED
        bar = {"finished": theme.METER_GREEN, "failed": theme.METER_RED, "cancelled": theme.BORDER}.get(
            self.state, theme.ACCENT)
        self.progress_bar.setStyleSheet(f"QProgressBar::chunk {{ background: {bar}; border-radius: 2px; }}")
        self.state_label.setText(self.state_text)
        self.state_label.setStyleSheet(f"color: {colour};")
        if tooltip is not None:
            self.setToolTip(tooltip)
            self.state_label.setToolTip(tooltip)


class ChainPanel(QWidget):
    """The model-chain dock (see the module docstring)."""

    result_ready = Signal(str, object, object, object)
    enhance_requested = Signal()
    job_failed = Signal(str, str, str)

    def __init__(self, bridge: ModelBridge | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge: ModelBridge | None = None
        self.statuses: list[dict[str, Any]] | None = None
        self.generate_dialog: GenerateDialog | None = None
        self._rows: dict[str, JobRow] = {}
        self._enhance_target: str | None = None
        self._enhance_target_known = False  # until the main window says, the button does not judge

        self.worker_label = QLabel()
        self.generate_button = QPushButton("Generate…")
        self.generate_button.setProperty("primary", True)
        self.generate_button.setToolTip("Generate audio from a text prompt")
        self.enhance_button = QPushButton("Enhance selected track")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Check again which models can run (after a download or an install)")
        self.generate_button.clicked.connect(self.open_generate_dialog)
        self.enhance_button.clicked.connect(self.enhance_requested)
        self.refresh_button.clicked.connect(self.refresh)

        self.slot_table = QTableWidget(0, 4)
        self.slot_table.setHorizontalHeaderLabels(["#", "Slot", "Role", "Status"])
        self.slot_table.verticalHeader().setVisible(False)
        self.slot_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.slot_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.slot_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.slot_table.setAlternatingRowColors(True)
        self.slot_table.setShowGrid(False)
        self.slot_table.setWordWrap(False)
        self.slot_table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.slot_table.verticalHeader().setDefaultSectionSize(24)
        header = self.slot_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)

        self._jobs_box = QWidget()
        self._jobs_layout = QVBoxLayout(self._jobs_box)
        self._jobs_layout.setContentsMargins(0, 0, 0, 0)
        self._jobs_layout.setSpacing(4)
        self.empty_label = QLabel("No model jobs yet. Generate audio, or enhance a track.")
        self.empty_label.setStyleSheet(f"color: {theme.TEXT_DIM}; padding: 6px;")
        self._jobs_layout.addWidget(self.empty_label)
        self._jobs_layout.addStretch(1)
        self.jobs_area = QScrollArea()
        self.jobs_area.setWidgetResizable(True)
        self.jobs_area.setFrameShape(QFrame.Shape.NoFrame)
        self.jobs_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.jobs_area.setWidget(self._jobs_box)

        slots_box = QWidget()
        sl = QVBoxLayout(slots_box)
        sl.setContentsMargins(0, 0, 0, 0)
        sl.addWidget(self.slot_table)
        jobs_box = QWidget()
        jl = QVBoxLayout(jobs_box)
        jl.setContentsMargins(0, 4, 0, 0)
        jobs_title = QLabel("JOBS")
        jobs_title.setStyleSheet(f"color: {theme.TEXT_DIM}; font-weight: 600;")
        jl.addWidget(jobs_title)
        jl.addWidget(self.jobs_area, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(slots_box)
        split.addWidget(jobs_box)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        self.splitter = split
        self._splitter_moved = False
        split.splitterMoved.connect(self._on_splitter_moved)

        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.enhance_button)
        buttons.addStretch(1)
        buttons.addWidget(self.refresh_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.worker_label)
        lay.addLayout(buttons)
        lay.addWidget(split, 1)

        self._tick = QTimer(self)
        self._tick.setInterval(ELAPSED_REFRESH_MS)
        self._tick.timeout.connect(self._refresh_elapsed)

        self._fill_slots(None)
        self._show_worker_state("stopped", "")
        if bridge is not None:
            self.set_bridge(bridge)
        else:
            self._update_buttons()

    # ------------------------------------------------------------------ API
    def set_bridge(self, bridge: ModelBridge) -> None:
        """Use ``bridge`` for jobs and statuses (once; the panel does not close it)."""
        if self.bridge is not None:
            raise RuntimeError("the chain panel already has a model bridge")
        self.bridge = bridge
        bridge.job_started.connect(self._on_started)
        bridge.job_progress.connect(self._on_progress)
        bridge.job_finished.connect(self._on_finished)
        bridge.job_failed.connect(self._on_failed)
        bridge.worker_state_changed.connect(self._show_worker_state)
        bridge.status_ready.connect(self._fill_slots)
        self._show_worker_state(bridge.state, bridge.state_detail)
        self.refresh()

    def refresh(self) -> None:
        """Check every slot's status again (in the background)."""
        if self.bridge is not None:
            self.refresh_button.setEnabled(False)
            self.bridge.slot_status()

    def run_job(self, slot: str, task: str, params: dict[str, Any] | None, inputs: dict[str, Any] | None,
                title: str, *, backend: str | None = None) -> str:
        """Submit a job and show it in the jobs list; returns its id."""
        if self.bridge is None:
            raise RuntimeError("the chain panel has no model bridge")
        job_id = self.bridge.submit(slot, task, params or {}, inputs or {}, backend=backend)
        row = JobRow(_Job(job_id, title, slot, task, time.monotonic()))
        row.cancel_button.clicked.connect(lambda _=False, j=job_id: self.cancel_job(j))
        self._rows[job_id] = row
        self._jobs_layout.insertWidget(0, row)  # newest on top
        self.empty_label.hide()
        self._trim_finished()
        if not self._tick.isActive():
            self._tick.start()
        return job_id

    def run_request(self, request: GenerateRequest) -> str:
        return self.run_job(request.slot, request.task, request.params, request.inputs, request.title)

    def cancel_job(self, job_id: str) -> None:
        row = self._rows.get(job_id)
        if row is None or row.done or self.bridge is None:
            return
        row.mark_cancelling()
        self.bridge.cancel(job_id)

    def job_row(self, job_id: str) -> JobRow:
        return self._rows[job_id]

    def job_rows(self) -> list[JobRow]:
        """Rows newest first."""
        out: list[JobRow] = []
        for i in range(self._jobs_layout.count()):
            w = self._jobs_layout.itemAt(i).widget()
            if isinstance(w, JobRow):
                out.append(w)
        return out

    def slot_row_text(self, row: int) -> tuple[str, str, str, str]:
        """``(number, title, role, status)`` as shown in the slot table."""
        return tuple(self.slot_table.item(row, c).text() for c in range(4))  # type: ignore[return-value]

    def set_enhance_target(self, name: str | None) -> None:
        """The selected track's name for the Enhance button; None disables it (no audio track selected)."""
        self._enhance_target = name
        self._enhance_target_known = True
        self._update_buttons()

    def open_generate_dialog(self) -> GenerateDialog:
        """Open *Generate…* (window-modal, non-blocking); accepted requests run here."""
        if self.generate_dialog is not None:
            self.generate_dialog.raise_()
            return self.generate_dialog
        dlg = GenerateDialog(self.statuses, self)
        self.generate_dialog = dlg

        def accepted() -> None:
            try:
                request = dlg.request()
            except ValueError:
                return
            self.run_request(request)

        dlg.accepted.connect(accepted)
        dlg.finished.connect(self._on_dialog_closed)
        dlg.open()
        return dlg

    # ------------------------------------------------------------------ internals
    def _on_splitter_moved(self) -> None:
        self._splitter_moved = True

    def _on_dialog_closed(self) -> None:
        dlg, self.generate_dialog = self.generate_dialog, None
        if dlg is not None:
            dlg.deleteLater()

    def _fill_slots(self, rows: list[dict[str, Any]] | None) -> None:
        self.statuses = rows
        if rows is None:  # before the first status check: the twelve, "checking"
            rows = [{"slot": s.key, "number": s.number, "title": s.title, "role": s.role,
                     "capabilities": list(s.capabilities), "backends": None} for s in SLOTS]
        self.refresh_button.setEnabled(True)
        table = self.slot_table
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            if row.get("backends") is None:
                state, text, tip = "checking", STATE_LABELS["checking"], f"{row['title']} — {row['role']}"
            else:
                state, text, tip = describe_slot(row)
            cells = [str(row["number"]), str(row["title"]), str(row["role"]), text]
            for c, value in enumerate(cells):
                item = QTableWidgetItem(value)
                item.setToolTip(tip)
                item.setData(Qt.ItemDataRole.UserRole, row["slot"])
                if c == 0:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    item.setForeground(QColor(theme.TEXT_DIM))
                if c == 2:
                    item.setForeground(QColor(theme.TEXT_DIM))
                if c == 3:
                    item.setForeground(QColor(STATE_COLORS.get(state, theme.TEXT)))
                    item.setData(Qt.ItemDataRole.UserRole + 1, state)
                table.setItem(r, c, item)
        # no taller than its rows; until the user moves the splitter, the table shows them all
        # and the rest of the dock goes to the jobs
        rows_h = (table.horizontalHeader().sizeHint().height() + table.verticalHeader().length()
                  + 2 * table.frameWidth() + 4)
        table.setMaximumHeight(rows_h)
        if not self._splitter_moved:
            self.splitter.setSizes([rows_h, max(1, self.splitter.height() - rows_h)])
        if self.generate_dialog is not None and self.statuses is not None:
            self.generate_dialog.set_statuses(self.statuses)
        self._update_buttons()

    def slot_state(self, slot: str) -> str | None:
        """The state shown for ``slot`` (ready, weights_missing, ..., checking)."""
        for r in range(self.slot_table.rowCount()):
            item = self.slot_table.item(r, 3)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == slot:
                return str(item.data(Qt.ItemDataRole.UserRole + 1))
        return None

    def _update_buttons(self) -> None:
        has_bridge = self.bridge is not None
        self.generate_button.setEnabled(has_bridge)
        aces = self.slot_state("aces")
        if not has_bridge:
            why = "The model chain is not connected"
        elif aces != "ready":
            why = "The enhancement slot (ACES) is not ready: " + STATE_LABELS.get(aces or "", aces or "unknown")
        elif self._enhance_target is None and self._enhance_target_known:
            why = "Select an audio track to enhance"
        elif self._enhance_target is None:
            why = "Enhance the selected track (denoise, de-click, EQ repair, master) as a new track"
        else:
            why = f"Enhance “{self._enhance_target}” (denoise, de-click, EQ repair, master) as a new track"
        no_track = self._enhance_target_known and self._enhance_target is None
        self.enhance_button.setEnabled(has_bridge and aces == "ready" and not no_track)
        self.enhance_button.setToolTip(why)

    def _show_worker_state(self, state: str, detail: str) -> None:
        text, colour = WORKER_STATES.get(state, (f"Model worker: {state}", theme.TEXT_DIM))
        if state in ("ready", "busy") and self.bridge is not None and self.bridge.device:
            text += f" · {self.bridge.device}"
        if state == "dead" and detail:
            text += f": {_LOG_NOTE.sub('', detail)}"
        self.worker_label.setText(text)
        self.worker_label.setStyleSheet(f"color: {colour};")
        self.worker_label.setToolTip(detail)

    def _on_started(self, job_id: str, slot: str, backend: str) -> None:
        row = self._rows.get(job_id)
        if row is not None:
            row.mark_started(backend)

    def _on_progress(self, job_id: str, fraction: float, message: str) -> None:
        row = self._rows.get(job_id)
        if row is not None:
            row.mark_progress(fraction, message)

    def _on_finished(self, job_id: str, result: Any) -> None:
        row = self._rows.get(job_id)
        if row is None:
            return  # not ours (another view submitted it through the same bridge)
        outputs = dict(result.outputs)
        metrics = dict(result.metrics)
        plan = dict(result.plan or {})
        if plan.get("backend"):
            row.backend = str(plan["backend"])
        row.mark_finished(outputs, metrics)
        self._stop_tick_if_idle()
        self.result_ready.emit(job_id, outputs, metrics, plan)

    def _on_failed(self, job_id: str, message: str, kind: str) -> None:
        row = self._rows.get(job_id)
        if row is None:
            return
        details = ""
        outcome = self.bridge.outcome(job_id) if self.bridge is not None else None
        if outcome is not None:
            details = getattr(outcome, "traceback", "") or ""
        row.mark_failed(message, kind, details)
        self._stop_tick_if_idle()
        self.job_failed.emit(job_id, message, kind)

    def _refresh_elapsed(self) -> None:
        for row in self._rows.values():
            row.refresh_elapsed()

    def _stop_tick_if_idle(self) -> None:
        if all(r.done for r in self._rows.values()):
            self._tick.stop()

    def _trim_finished(self) -> None:
        done = [r for r in self.job_rows() if r.done]
        for row in done[MAX_FINISHED_ROWS:]:
            self._rows.pop(row.job.job_id, None)
            self._jobs_layout.removeWidget(row)
            row.deleteLater()
