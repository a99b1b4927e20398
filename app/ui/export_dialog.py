"""Export a master: choose file, format, bit depth, dither and sample rate; render it.

:class:`ExportDialog` returns an :class:`ExportSettings`; :func:`export_master` does the
work (submit it to the :class:`~app.ui.tasks.TaskRunner`, ideally ``mode="process"``):

* same sample rate: the source is rendered again through the plan (whose solved gain
  is recorded) straight into the chosen format, with the engine's dither and its
  loudness / true-peak verification — the exported file meets the spec by construction;
* another sample rate: the plan is rendered to 32-bit float in a temp folder, resampled
  (soxr VHQ), trimmed if resampling pushed the true peak over the ceiling, then dithered
  and written atomically.  The engine has no resampling stage, so this is done here.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.engine import analysis, audio_io
from app.engine.errors import ParameterError
from app.engine.mastering import chain
from app.engine.mastering.plan import MasteringPlan
from app.ui.tasks import TaskHandle, TaskRunner

__all__ = ["DITHER_MODES", "ExportDialog", "ExportSettings", "export_master", "submit_export"]

Container = Literal["WAV", "FLAC"]
DitherMode = Literal["auto", "tpdf", "noise_shaped", "none"]

#: UI label -> (engine ``dither`` flag, ``noise_shaping``); see audio_io's dither policy.
DITHER_MODES: dict[DitherMode, tuple[str, bool | None, bool]] = {
    "auto": ("Auto (TPDF on 16-bit)", None, False),
    "tpdf": ("TPDF", True, False),
    "noise_shaped": ("TPDF + noise shaping", True, True),
    "none": ("None (round)", False, False),
}
EXPORT_RATES_HZ = (44100, 48000)
_TP_SAFETY_DB = 0.02


@dataclass(frozen=True)
class ExportSettings:
    """What to write.  ``sample_rate=None`` keeps the source's rate; ``bits=32`` is float."""

    path: Path
    container: Container = "WAV"
    bits: int = 24
    dither: DitherMode = "auto"
    sample_rate: int | None = None

    @property
    def format_name(self) -> str:
        """Key of :data:`app.engine.audio_io.OUTPUT_FORMATS`."""
        key = {("WAV", 16): "wav16", ("WAV", 24): "wav24", ("WAV", 32): "wav32f",
               ("FLAC", 16): "flac16", ("FLAC", 24): "flac"}.get((self.container, self.bits))  # fmt: skip
        if key is None:
            raise ParameterError(f"{self.container} cannot hold {self.bits}-bit {'float ' if self.bits == 32 else ''}samples")
        return key

    @property
    def output_format(self) -> audio_io.OutputFormat:
        return audio_io.OUTPUT_FORMATS[self.format_name]

    @property
    def dither_flag(self) -> bool | None:
        return DITHER_MODES[self.dither][1]

    @property
    def noise_shaping(self) -> bool:
        return DITHER_MODES[self.dither][2]


class ExportDialog(QDialog):
    """Modal dialog; :meth:`settings` (or :meth:`ask`) gives the choice."""

    def __init__(self, parent: QWidget | None = None, *, default_path: Path | None = None, source_rate: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export master")
        self._source_rate = source_rate
        form = QFormLayout(self)
        self.path_edit = QLineEdit(str(default_path) if default_path else "")
        self.path_edit.setPlaceholderText("Choose where to write the master")
        self.browse_button = QPushButton("Browse…")
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse_button)
        form.addRow("File", row)
        self.container_combo = QComboBox()
        self.container_combo.addItem("WAV", "WAV")
        self.container_combo.addItem("FLAC (lossless, smaller)", "FLAC")
        form.addRow("Format", self.container_combo)
        self.bits_combo = QComboBox()
        self.bits_combo.addItem("16-bit (CD)", 16)
        self.bits_combo.addItem("24-bit", 24)
        self.bits_combo.addItem("32-bit float", 32)
        self.bits_combo.setCurrentIndex(1)
        form.addRow("Bit depth", self.bits_combo)
        self.dither_combo = QComboBox()
        for key, (label, _d, _ns) in DITHER_MODES.items():
            self.dither_combo.addItem(label, key)
        form.addRow("Dither", self.dither_combo)
        self.rate_combo = QComboBox()
        keep = f"Keep ({source_rate / 1000:g} kHz)" if source_rate else "Keep source rate"
        self.rate_combo.addItem(keep, None)
        for r in EXPORT_RATES_HZ:
            if r != source_rate:
                self.rate_combo.addItem(f"{r / 1000:g} kHz (resample)", r)
        form.addRow("Sample rate", self.rate_combo)
        self.note_label = QLabel()
        self.note_label.setWordWrap(True)
        form.addRow(self.note_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        form.addRow(self.buttons)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.browse_button.clicked.connect(self._browse)
        self.container_combo.currentIndexChanged.connect(self._sync)
        self.bits_combo.currentIndexChanged.connect(self._sync)
        self.path_edit.textChanged.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        flac = self.container_combo.currentData() == "FLAC"
        model = self.bits_combo.model()
        model.item(2).setEnabled(not flac)  # FLAC has no float samples
        if flac and self.bits_combo.currentData() == 32:
            self.bits_combo.setCurrentIndex(1)
        is_float = self.bits_combo.currentData() == 32
        self.dither_combo.setEnabled(not is_float)
        ext = ".flac" if flac else ".wav"
        text = self.path_edit.text().strip()
        if text and Path(text).suffix.lower() != ext:
            p = Path(text)
            self.path_edit.blockSignals(True)
            self.path_edit.setText(str(p.with_suffix(ext)) if p.suffix else str(p) + ext)
            self.path_edit.blockSignals(False)
        self.note_label.setText(
            "Float keeps everything; no dither needed." if is_float
            else "Dither hides the quantisation of the last bit; keep it on for 16-bit."
        )  # fmt: skip
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.path_edit.text().strip()))

    def _browse(self) -> None:
        flac = self.container_combo.currentData() == "FLAC"
        filt = "FLAC (*.flac)" if flac else "WAV (*.wav)"
        path, _ = QFileDialog.getSaveFileName(self, "Export master", self.path_edit.text(), filt)
        if path:
            self.path_edit.setText(path)

    def settings(self) -> ExportSettings:
        bits = int(self.bits_combo.currentData())
        return ExportSettings(
            path=Path(self.path_edit.text().strip()),
            container=self.container_combo.currentData(),
            bits=bits,
            dither="none" if bits == 32 else self.dither_combo.currentData(),
            sample_rate=self.rate_combo.currentData(),
        )

    @classmethod
    def ask(cls, parent: QWidget | None = None, **kwargs: Any) -> ExportSettings | None:
        d = cls(parent, **kwargs)
        return d.settings() if d.exec() == QDialog.DialogCode.Accepted else None


def export_master(
    source: Path, plan: MasteringPlan, settings: ExportSettings, *, progress: chain.ProgressFn
) -> dict[str, Any]:
    """Render ``source`` through ``plan`` into ``settings.path`` (atomic); return a report.

    Runs in a worker (TaskRunner).  The report is ``MasterResult.to_report()`` plus an
    ``"export"`` entry with the format and the written file's measured figures.
    """
    fmt = settings.output_format
    out_plan = replace(
        plan,
        output=replace(plan.output, format=fmt.name, dither=settings.dither_flag, noise_shaping=settings.noise_shaping),
    )
    rate = settings.sample_rate
    if rate is None or rate == plan.sample_rate:
        res = chain.master_file(source, settings.path, plan=out_plan, progress=progress)
        report = res.to_report()
        report["export"] = {"path": str(settings.path), "format": fmt.name, "sample_rate": plan.sample_rate,
                            "integrated_lufs": res.after.integrated_lufs, "true_peak_dbtp": res.after.true_peak_dbtp}  # fmt: skip
        return report
    audio_io.check_output_path(settings.path, protect=[source])
    with tempfile.TemporaryDirectory(prefix="amc-export-", dir=settings.path.parent) as tmp:
        float_plan = replace(out_plan, output=replace(out_plan.output, format="wav32f", dither=None, noise_shaping=False))
        res = chain.master_file(source, Path(tmp) / "master.wav", plan=float_plan,
                                progress=lambda f, m: progress(0.8 * f, m))  # fmt: skip
        progress(0.82, f"resampling to {rate / 1000:g} kHz")
        x, _ = audio_io.read(Path(tmp) / "master.wav")
    y = audio_io.resample(x, plan.sample_rate, rate)
    del x
    ceiling = plan.limiter.ceiling_dbtp
    tp_db = 20 * math.log10(max(analysis.true_peak(y, rate), 1e-12))
    trim_db = min(0.0, ceiling - _TP_SAFETY_DB - tp_db)  # resampling can move inter-sample peaks
    if trim_db < 0.0:
        y *= np.float32(10 ** (trim_db / 20))
    progress(0.9, f"writing {settings.path.name}")
    audio_io.write(settings.path, y, sample_rate=rate, fmt=fmt, protect=[source],
                   dither=settings.dither_flag, noise_shaping=settings.noise_shaping)  # fmt: skip
    written = chain.analyze_file(settings.path)
    progress(1.0, "done")
    report = res.to_report()
    report["output"] = str(settings.path)
    report["export"] = {"path": str(settings.path), "format": fmt.name, "sample_rate": rate, "trim_db": trim_db,
                        "integrated_lufs": written.integrated_lufs, "true_peak_dbtp": written.true_peak_dbtp}  # fmt: skip
    return report


def submit_export(runner: TaskRunner, source: Path, plan: MasteringPlan, settings: ExportSettings) -> TaskHandle:
    """Run :func:`export_master` in a worker process; watch ``runner``'s signals for the report."""
    return runner.submit(f"Export {settings.path.name}", export_master, source, plan, settings, mode="process")
