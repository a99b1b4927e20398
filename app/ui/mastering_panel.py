"""The mastering dock panel: target, style, amounts, references, plan, preview, master.

Flow: :meth:`MasteringPanel.set_source` -> *Analyze* (analysis + plan, background) ->
every change of a control or of a plan value re-plans / re-validates and, debounced
by :data:`PREVIEW_DEBOUNCE_MS`, re-renders the loudest 30 s (``preview_ready``) ->
*Master* renders the whole file into the render folder (``master_ready``).

Where the work runs (measured with ``benchmarks/ui_lag.py``: 7-min 48 kHz stereo mix,
5 ms UI timer, 2 cores shared with other work).  Without warm-up, mastering on a Python
thread stalled the event loop up to 40-56 ms (the engine's numba kernels load on first
use holding the GIL); in a spawned process the worst gap was ~9 ms on a quiet machine
and 22-36 ms at load average 4-8, for 1-5 s more wall time.  So analysis and master
run in a (niced) process (:data:`HEAVY_MODE`), isolated from the UI's GIL whatever the
engine does; the 30 s preview (0.15-0.5 s, must start at once) runs on a thread after
:func:`warm_up_job` has loaded the kernels (one ~0.1-0.3 s hitch at start-up).
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSignalBlocker, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.engine import analysis, audio_io
from app.engine.errors import AmcError, AudioInputError, ProcessingError
from app.engine.mastering import chain
from app.engine.mastering.plan import (
    LEVELS,
    STYLES,
    TARGETS,
    MasteringPlan,
    resolve_amounts,
    resolve_target,
)
from app.engine.mastering.planner import MasterSettings, SpectrumBands, make_plan
from app.ui import theme
from app.ui.tasks import TaskMode, TaskRunner

__all__ = ["HEAVY_MODE", "PREVIEW_DEBOUNCE_MS", "AnalysisBundle", "MasteringPanel", "PreviewResult"]

PREVIEW_DEBOUNCE_MS = 150
PREVIEW_BLOCK_FRAMES = 32768
HEAVY_MODE: TaskMode = "process"
_CUSTOM = "custom"

#: (Analysis.to_dict key, label with unit, decimals)
METRICS: tuple[tuple[str, str, int], ...] = (
    ("integrated_lufs", "Integrated loudness (LUFS)", 1),
    ("loudness_range_lu", "Loudness range (LU)", 1),
    ("true_peak_dbtp", "True peak (dBTP)", 2),
    ("plr_db", "Peak to loudness (dB)", 1),
    ("short_term_max_lufs", "Short-term max (LUFS)", 1),
    ("crest_factor_db", "Crest factor (dB)", 1),
    ("rms_dbfs", "RMS (dBFS)", 1),
    ("correlation", "L/R correlation", 2),
    ("width", "Stereo width (S/M)", 2),
)
_COLUMNS = ("Before", "Preview", "After")
#: Plan keys shown but not edited in the tree (set by the combos, or facts of the file).
_READ_ONLY = {"sample_rate", "channels", "version", "target", "style", "level", "amounts", "freqs_hz", "references", "notes"}


# ============================================================================ jobs (picklable)


@dataclass
class AnalysisBundle:
    """What *Analyze* produces: the source's analysis, reference spectra, a first plan."""

    before: analysis.Analysis
    reference_spectra: list[SpectrumBands]
    reference_names: list[str]
    plan: MasteringPlan


@dataclass
class PreviewResult:
    source: np.ndarray  # (channels, frames) float32
    master: np.ndarray  # (channels, frames) float32
    start_frame: int
    integrated_lufs: float
    true_peak_dbtp: float
    elapsed_s: float  # render + metering
    render_s: float = 0.0  # the render alone (the <= 0.5 s budget)
    excerpt: PreviewExcerpt | None = None
    gain_db: float = 0.0
    limiter_offset_db: float = 0.0


def plan_from_bundle(
    before: analysis.Analysis, settings: MasterSettings, spectra: list[SpectrumBands], names: list[str]
) -> MasteringPlan:
    """A plan from an existing analysis (cheap: no file is read). Mirrors ``chain.plan_for_file``."""
    return make_plan(
        sample_rate=before.sample_rate,
        channels=before.channels,
        integrated_lufs=before.integrated_lufs,
        loudness_range_lu=before.loudness_range_lu if before.loudness_range_lu is not None else math.nan,
        short_term_lufs=np.asarray([v if v is not None else -np.inf for v in before.short_term_series]),
        correlation=before.correlation,
        spectrum=chain.spectrum_of(before),
        settings=settings,
        references=spectra,
        reference_names=names,
        true_peak_dbtp=before.true_peak_dbtp if np.isfinite(before.true_peak_dbtp) else None,
    )


def analyze_job(path: Path, settings: MasterSettings, references: list[Path], *, progress: chain.ProgressFn) -> AnalysisBundle:
    """Analyse the source and references and make the first plan (runs in the worker)."""
    n = len(references)
    before = chain.analyze_file(path, progress=lambda f, m: progress(0.85 * f if n else f, m))
    spectra = []
    for k, r in enumerate(references):
        ra = chain.analyze_file(Path(r), true_peak=False, progress=lambda f, m, k=k: progress(0.85 + 0.15 * (k + f) / n, m))
        if ra.integrated_lufs is None or not np.isfinite(ra.integrated_lufs):
            raise AudioInputError(f"reference {Path(r).name} is silent")
        spectra.append(chain.spectrum_of(ra))
    chain._check_masterable(audio_io.probe(path), before)
    names = [Path(r).name for r in references]
    return AnalysisBundle(before, spectra, names, plan_from_bundle(before, settings, spectra, names))


@dataclass
class PreviewExcerpt:
    """The source span the preview plays (read once per source, reused on every re-render)."""

    path: Path
    start_frame: int
    audio: np.ndarray  # (channels, frames) float32
    offset_lu: float  # excerpt loudness minus the whole track's (0 when unknown)


def read_excerpt(path: Path, before: analysis.Analysis, *, seconds: float = chain.PREVIEW_SECONDS) -> PreviewExcerpt:
    """The loudest ``seconds`` of ``path`` (the same window as ``chain.preview``)."""
    start = chain.loudest_window(before.short_term_series, before.sample_rate, seconds=seconds)
    n = int(seconds * before.sample_rate)
    info = audio_io.probe(path)
    src, _ = audio_io.read(path, start_frame=start, frames=min(n, info.frames - start))
    offset = analysis.integrated_loudness(src, before.sample_rate) - before.integrated_lufs
    return PreviewExcerpt(path, start, src, offset if math.isfinite(offset) else 0.0)


def _pre_chain_pipelined(x: np.ndarray, plan: MasteringPlan) -> np.ndarray:
    """``PreChain`` over a whole excerpt, FIR and dynamics overlapped on two threads.

    Same stages and order as ``chain.render_array`` (equal to float rounding); blocks of
    PREVIEW_BLOCK_FRAMES make the FIR cheaper than one long convolution and let the
    GIL-free FIR of block k+1 run while the compressor works on block k.
    """
    pre = chain.PreChain(plan)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="amc-preview-fir") as fir:
        parts = [fir.submit(pre.linear, x[:, i : i + PREVIEW_BLOCK_FRAMES]) for i in range(0, x.shape[1], PREVIEW_BLOCK_FRAMES)]
        parts.append(fir.submit(pre.linear_flush))
        return np.concatenate([pre.dynamics(f.result()) for f in parts], axis=1)


def render_preview(
    excerpt: PreviewExcerpt, plan: MasteringPlan, *, limiter_offset_db: float | None = None
) -> tuple[np.ndarray, float, float, float]:
    """Render ``excerpt`` through ``plan`` at the master's loudness.

    Without a solved gain in the plan, the excerpt's target keeps its distance to the
    whole track's loudness (as ``chain.preview`` does) and the gain is solved here,
    starting from the previous render's limiter offset so it usually takes one pass.
    Returns ``(out (channels, frames) float32, gain_db, limiter_offset_db, integrated_lufs)``.
    """
    sr = plan.sample_rate
    y = chain.ride_in_memory(excerpt.audio, _pre_chain_pipelined(excerpt.audio, plan), plan)

    guard = plan.loudness.guard
    peaks = analysis.true_peak_frames(y, sr, oversample=plan.limiter.oversample) if guard and plan.soft_clip.enabled else None

    def final(g: float) -> tuple[chain.Prediction, np.ndarray]:
        return chain.render_predicted(y, peaks, plan, g)

    if plan.loudness.gain_db is not None:
        at, out = final(plan.loudness.gain_db)
        return out, plan.loudness.gain_db, limiter_offset_db or 0.0, at.lufs
    target = plan.loudness.target_lufs + excerpt.offset_lu
    pre_lufs = analysis.integrated_loudness(y, sr)
    if not math.isfinite(pre_lufs):
        raise ProcessingError("the processed signal is silent: cannot reach the loudness target")
    g = target - pre_lufs + (limiter_offset_db or 0.0)
    for _ in range(8):
        at, out = final(g)
        err = at.lufs - target
        if abs(err) <= chain.SOLVE_TOLERANCE_LU / 2:
            break
        g -= err
    if guard:
        # the dynamics guard, as the full render applies it: the preview plays what the master will
        if at.gain_db != g:
            at, out = final(g)
    lufs = at.lufs
    if guard:
        guarded, _ = chain.guard_gain_db(lambda gain: final(gain)[0], plan, g, at)
        if guarded < g:
            g = guarded
            at, out = final(g)
            lufs = at.lufs
    return out, g, g - (target - pre_lufs), lufs


def preview_job(
    path: Path, plan: MasteringPlan, before: analysis.Analysis, excerpt: PreviewExcerpt | None = None,
    limiter_offset_db: float | None = None, *, progress: chain.ProgressFn,
) -> PreviewResult:  # fmt: skip
    """Render the loudest 30 s with ``plan`` and measure it (runs on a thread)."""
    t0 = time.perf_counter()
    progress(0.0, "rendering preview")
    if excerpt is None or excerpt.path != path:
        excerpt = read_excerpt(path, before)
    out, gain_db, offset_db, lufs = render_preview(excerpt, plan, limiter_offset_db=limiter_offset_db)
    render_s = time.perf_counter() - t0
    tp = analysis.true_peak(out, plan.sample_rate)
    return PreviewResult(
        excerpt.audio, out, excerpt.start_frame, lufs, 20 * math.log10(max(tp, 1e-12)),
        time.perf_counter() - t0, render_s=render_s, excerpt=excerpt, gain_db=gain_db, limiter_offset_db=offset_db,
    )  # fmt: skip


def warm_up_job(*, progress: chain.ProgressFn) -> float:
    """Load the engine's compiled kernels (analysis, pre-chain, limiter) into this process.

    numba loads its cached machine code on first use, holding the GIL for ~0.5 s; done
    once at start-up, the first preview after *Analyze* does not stall the UI.  Returns s.
    """
    t0 = time.perf_counter()
    sr = 48000
    x = (np.random.default_rng(0).standard_normal((2, sr)) * 0.1).astype(np.float32)
    an = analysis.Analyzer(sr, 2, keep_musical=False)
    an.process(x)
    before = an.result()
    plan = plan_from_bundle(before, MasterSettings(), [], [])
    plan = replace(plan, multiband=replace(plan.multiband, enabled=True), soft_clip=replace(plan.soft_clip, enabled=True))
    render_preview(PreviewExcerpt(Path(), 0, x, 0.0), plan)
    analysis.true_peak(x, sr)
    return time.perf_counter() - t0


def master_job(
    path: Path, output: Path, settings: MasterSettings, references: list[Path], plan: MasteringPlan | None,
    *, progress: chain.ProgressFn,
) -> chain.MasterResult:  # fmt: skip
    """Master the whole file (runs in the worker process)."""
    return chain.master_file(path, output, settings, references=references, plan=plan, progress=progress)


# ============================================================================ widget


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


class MasteringPanel(QWidget):
    """Dock panel driving the offline mastering engine.

    Signals
    -------
    analysis_ready(AnalysisBundle)
    preview_ready(source (ch, n) float32, master (ch, n) float32, start_frame, sample_rate)
    master_ready(path of the new master, report dict (``MasterResult.to_report()``))
    plan_changed(MasteringPlan or None): after every re-plan, edit, master (solved gain)
    status_message(str)

    UI thread only.  Heavy work goes through the :class:`TaskRunner` given (or an own one).
    """

    analysis_ready = Signal(object)
    preview_ready = Signal(object, object, int, int)
    master_ready = Signal(object, object)  # (Path, dict); object: no QVariant conversion
    status_message = Signal(str)
    plan_changed = Signal(object)  # MasteringPlan | None: store it in the project

    def __init__(
        self, runner: TaskRunner | None = None, parent: QWidget | None = None, *,
        heavy_mode: TaskMode = HEAVY_MODE, warm_up: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(parent)
        self.setObjectName("MasteringPanel")
        self._owns_runner = runner is None
        self._runner = runner or TaskRunner(self)
        self._heavy_mode = heavy_mode
        self._source: Path | None = None
        self._source_name = ""
        self._sample_rate = 0
        self._render_folder: Path | None = None
        self._bundle: AnalysisBundle | None = None
        self._plan: MasteringPlan | None = None
        self._plan_edited = False
        self._job: tuple[str, str] | None = None  # (task id, "analyze" | "master")
        self._preview_task: str | None = None
        self._preview_pending = False
        self.last_preview: PreviewResult | None = None
        self.last_master: chain.MasterResult | None = None
        self._build()
        self._runner.progress.connect(self._on_progress)
        self._runner.finished.connect(self._on_finished)
        self._runner.failed.connect(self._on_failed)
        self._runner.cancelled.connect(self._on_cancelled)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(PREVIEW_DEBOUNCE_MS)
        self._debounce.timeout.connect(self._start_preview)
        self._sync_enabled()
        self.warm_up_task: str | None = None
        if warm_up:
            self.warm_up()

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(6, 6, 6, 6)
        root.setSpacing(6)
        self.source_label = QLabel("No source — drop a mix on the timeline")
        self.source_label.setWordWrap(True)
        root.addWidget(self.source_label)

        tgt = QGroupBox("Target")
        form = QFormLayout(tgt)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.target_combo = QComboBox()
        for t in TARGETS.values():
            self.target_combo.addItem(f"{t.name.capitalize()}  ({t.lufs:g} LUFS, {t.ceiling_dbtp:g} dBTP)", t.name)
            self.target_combo.setItemData(self.target_combo.count() - 1, t.description, Qt.ItemDataRole.ToolTipRole)
        self.target_combo.addItem("Custom", _CUSTOM)
        self.lufs_spin = QDoubleSpinBox(decimals=1, minimum=-40.0, maximum=-3.0, singleStep=0.5, suffix=" LUFS")
        self.ceiling_spin = QDoubleSpinBox(decimals=1, minimum=-20.0, maximum=0.0, singleStep=0.1, suffix=" dBTP")
        loud_row = QHBoxLayout()
        loud_row.addWidget(self.lufs_spin)
        loud_row.addWidget(self.ceiling_spin)
        self.style_combo = QComboBox()
        for name, desc in STYLES.items():
            self.style_combo.addItem(name.capitalize(), name)
            self.style_combo.setItemData(self.style_combo.count() - 1, desc, Qt.ItemDataRole.ToolTipRole)
        self.level_combo = QComboBox()
        for name in LEVELS:
            self.level_combo.addItem(name.capitalize(), name)
        self.level_combo.setCurrentIndex(list(LEVELS).index("moderate"))
        form.addRow("Preset", self.target_combo)
        form.addRow("Loudness / ceiling", loud_row)
        form.addRow("Style", self.style_combo)
        form.addRow("Level", self.level_combo)
        self.sliders: dict[str, QSlider] = {}
        self._slider_labels: dict[str, QLabel] = {}
        for key, label in (("eq", "EQ amount"), ("dynamics", "Dynamics amount"), ("width", "Width amount")):
            s = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=200, singleStep=5, pageStep=10)
            s.setToolTip(f"{label} in % of the style's move (100 % = full, 0 % = off)")
            lab = QLabel()
            lab.setMinimumWidth(44)
            lab.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            row = QHBoxLayout()
            row.addWidget(s, 1)
            row.addWidget(lab)
            form.addRow(label, row)
            self.sliders[key], self._slider_labels[key] = s, lab
        root.addWidget(tgt)

        refs = QGroupBox("References")
        rl = QHBoxLayout(refs)
        self.reference_hint = QLabel("None: the EQ follows the style.\nAdd tracks to match their tone.")
        self.reference_hint.setEnabled(False)  # dim text
        self.reference_list = QListWidget()
        self.reference_list.setMaximumHeight(54)
        self.reference_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.reference_list.setToolTip("Tracks whose tonal balance the EQ should match (replaces the style curve)")
        rb = QVBoxLayout()
        self.add_ref_button = QPushButton("Add…")
        self.remove_ref_button = QPushButton("Remove")
        rb.addWidget(self.add_ref_button)
        rb.addWidget(self.remove_ref_button)
        rb.addStretch(1)
        rl.addWidget(self.reference_list, 1)
        rl.addWidget(self.reference_hint, 1)
        rl.addLayout(rb)
        root.addWidget(refs)

        actions = QHBoxLayout()
        self.analyze_button = QPushButton("Analyze")
        self.master_button = QPushButton("Master")
        self.master_button.setDefault(True)
        self.master_button.setProperty("primary", True)  # theme.py's accent button
        self.master_button.setToolTip("Render the whole mix with the plan into the project's renders")
        self.analyze_button.setToolTip("Measure the mix (and references) and make a plan; starts the preview")
        self.cancel_button = QPushButton("Cancel")
        actions.addWidget(self.analyze_button)
        actions.addWidget(self.master_button)
        actions.addStretch(1)
        actions.addWidget(self.cancel_button)
        root.addLayout(actions)
        self.progress_bar = QProgressBar(minimum=0, maximum=1000, textVisible=True)
        self.progress_bar.setFormat("Idle")
        self.progress_bar.setValue(0)
        root.addWidget(self.progress_bar)

        self.tabs = QTabWidget()
        self.metrics_table = QTableWidget(len(METRICS), len(_COLUMNS))
        self.metrics_table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.metrics_table.setVerticalHeaderLabels([m[1] for m in METRICS])
        self.metrics_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.metrics_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.metrics_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.metrics_table.setAlternatingRowColors(True)
        # As tall as its rows: no empty grid under them, the verdict sits right below.
        self.metrics_table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.metrics_table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.metrics_table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
        self.metrics_table.setToolTip("Preview = the loudest 30 s rendered with the current plan")
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        mt = QWidget()
        ml = QVBoxLayout(mt)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addWidget(self.metrics_table)
        ml.addWidget(self.verdict_label)
        ml.addStretch(1)
        self.tabs.addTab(mt, "Metrics")
        self.plan_tree = QTreeWidget()
        self.plan_tree.setColumnCount(2)
        self.plan_tree.setHeaderLabels(["Parameter", "Value"])
        self.plan_tree.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )  # fmt: skip
        self.plan_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.plan_tree.setToolTip("Double-click a value to edit it; the preview re-renders")
        self.reset_plan_button = QPushButton("Reset plan edits")
        pt = QWidget()
        pl = QVBoxLayout(pt)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.plan_tree)
        pl.addWidget(self.reset_plan_button, 0, Qt.AlignmentFlag.AlignRight)
        self.tabs.addTab(pt, "Plan")
        self.tabs.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        root.addWidget(self.tabs, 1)

        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        self.lufs_spin.valueChanged.connect(self._settings_changed)
        self.ceiling_spin.valueChanged.connect(self._settings_changed)
        self.style_combo.currentIndexChanged.connect(self._settings_changed)
        self.level_combo.currentIndexChanged.connect(self._on_level_changed)
        for s in self.sliders.values():
            s.valueChanged.connect(self._on_slider)
        self.add_ref_button.clicked.connect(self._add_references_dialog)
        self.remove_ref_button.clicked.connect(self._remove_selected_references)
        self.analyze_button.clicked.connect(self.analyze)
        self.master_button.clicked.connect(self.master)
        self.cancel_button.clicked.connect(self.cancel)
        self.plan_tree.itemChanged.connect(self._on_plan_item_changed)
        self.reset_plan_button.clicked.connect(self._replan)
        self._on_target_changed()
        self._on_level_changed()
        self._sync_references()

    # ------------------------------------------------------------------ public API
    def set_source(self, path: Path, sample_rate: int, *, name: str | None = None) -> None:
        """Use ``path`` (never written) as the mix to master; ``name`` is what the musician
        calls it (a project keeps media under content hashes), used in labels and file names.

        Clears the analysis and the plan, except a plan given with :meth:`set_plan` (or
        edited) for the same sample rate, which is kept (with its gain to be solved again).
        """
        self._source = Path(path)
        self._source_name = name or self._source.stem
        self._sample_rate = int(sample_rate)
        self._bundle = None
        kept = self._plan if self._plan_edited and self._plan is not None and self._plan.sample_rate == sample_rate else None
        if kept is not None:
            # A plan given with set_plan (the project's) outlives loading its source; its
            # solved gain belonged to the old render, so it is solved again.
            kept = replace(kept, loudness=replace(kept.loudness, gain_db=None))
            self.status_message.emit("using the project's mastering plan; Analyze to preview it")
        self._set_plan(kept, edited=kept is not None)
        self.last_preview = self.last_master = None
        self.source_label.setText(f"<b>{self._source_name}</b> · {sample_rate / 1000:g}\u00a0kHz")
        self.source_label.setToolTip(str(self._source))
        self._clear_metrics()
        self._fill_tree()
        self._sync_enabled()

    def set_render_folder(self, folder: Path) -> None:
        """Masters are written into ``folder`` (the project's ``renders/``)."""
        self._render_folder = Path(folder)

    def set_references(self, paths: list[Path]) -> None:
        self.reference_list.clear()
        for p in paths:
            self._add_reference(Path(p))
        self._sync_references()

    def references(self) -> list[Path]:
        return [Path(self.reference_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.reference_list.count())]

    def settings(self) -> MasterSettings:
        """The settings the controls show (feeds the planner)."""
        target = self.target_combo.currentData()
        custom = target == _CUSTOM
        return MasterSettings(
            target=target,
            lufs=self.lufs_spin.value() if custom else None,
            ceiling_dbtp=self.ceiling_spin.value() if custom else None,
            style=self.style_combo.currentData(),
            level=self.level_combo.currentData(),
            amount_eq_pct=float(self.sliders["eq"].value()),
            amount_dynamics_pct=float(self.sliders["dynamics"].value()),
            amount_width_pct=float(self.sliders["width"].value()),
        )

    def set_settings(self, s: MasterSettings) -> None:
        """Show ``s`` in the controls (e.g. from a project); re-plans when analysed."""
        blockers = [QSignalBlocker(w) for w in (self.target_combo, self.lufs_spin, self.ceiling_spin,
                                                 self.style_combo, self.level_combo, *self.sliders.values())]  # fmt: skip
        custom = s.target == _CUSTOM
        self.target_combo.setCurrentIndex(self.target_combo.findData(s.target))
        t = resolve_target(s.target, lufs=s.lufs, ceiling_dbtp=s.ceiling_dbtp) if not custom or s.lufs is not None else None
        if t is not None:
            self.lufs_spin.setValue(t.lufs)
            self.ceiling_spin.setValue(t.ceiling_dbtp)
        self.lufs_spin.setEnabled(custom)
        self.ceiling_spin.setEnabled(custom)
        self.style_combo.setCurrentIndex(self.style_combo.findData(s.style))
        self.level_combo.setCurrentIndex(self.level_combo.findData(s.level))
        a = resolve_amounts(s.level, eq_pct=s.amount_eq_pct, dynamics_pct=s.amount_dynamics_pct, width_pct=s.amount_width_pct)
        for key, v in (("eq", a.eq_pct), ("dynamics", a.dynamics_pct), ("width", a.width_pct)):
            self.sliders[key].setValue(round(v))
            self._slider_labels[key].setText(f"{round(v)} %")
        del blockers
        self._settings_changed()

    def plan(self) -> MasteringPlan | None:
        return self._plan

    def set_plan(self, plan: MasteringPlan) -> None:
        """Use ``plan`` as is (e.g. the project's last plan); needs a matching analysis to preview."""
        plan.validate()
        self._set_plan(plan, edited=True)
        self._schedule_preview()

    def _set_plan(self, plan: MasteringPlan | None, *, edited: bool, refill: bool = True) -> None:
        self._plan, self._plan_edited = plan, edited
        if refill:
            self._fill_tree()
        self._sync_enabled()
        self.plan_changed.emit(plan)

    def warm_up(self) -> str:
        """Load the engine's kernels on a thread now (see :func:`warm_up_job`); returns the task id."""
        self.warm_up_task = self._runner.submit("Warm up", warm_up_job).task_id
        return self.warm_up_task

    @property
    def busy(self) -> bool:
        return self._job is not None

    def shutdown(self) -> None:
        """Stop the preview timer and cancel this panel's jobs (the runner too, if it is the panel's own)."""
        self._debounce.stop()
        if self._owns_runner:
            self._runner.shutdown()
            return
        mine = {self._job[0] if self._job else None, self._preview_task, self.warm_up_task}
        for h in self._runner.active():
            if h.task_id in mine:
                h.cancel()

    # ------------------------------------------------------------------ actions
    @Slot()
    def analyze(self) -> None:
        if self._source is None or self.busy:
            return
        h = self._runner.submit(
            "Analyze", analyze_job, self._source, self.settings(), self.references(), mode=self._heavy_mode
        )
        self._begin(h.task_id, "analyze", "Analysing…")

    @Slot()
    def master(self) -> None:
        if self._source is None or self.busy:
            return
        folder = self._render_folder
        if folder is None:
            from app import config

            folder = config.cache_dir() / "renders"
            self.status_message.emit(f"no project render folder set: writing masters to {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.status_message.emit(f"cannot create the render folder {folder}: {exc.strerror or exc}")
            return
        plan = self._plan
        fmt = audio_io.OUTPUT_FORMATS[plan.output.format if plan else "wav24"]
        out = folder / f"{self._source_name}-master-{time.strftime('%Y%m%d-%H%M%S')}{fmt.extension}"
        k = 2
        while out.exists():
            out = out.with_name(f"{self._source_name}-master-{time.strftime('%Y%m%d-%H%M%S')}-{k}{fmt.extension}")
            k += 1
        h = self._runner.submit(
            "Master", master_job, self._source, out, self.settings(), self.references(), plan, mode=self._heavy_mode
        )
        self._begin(h.task_id, "master", "Mastering…")

    @Slot()
    def cancel(self) -> None:
        if self._job is not None:
            self._runner.handle(self._job[0]).cancel()
            self.progress_bar.setFormat("Cancelling…")

    def _begin(self, task_id: str, kind: str, text: str) -> None:
        self._job = (task_id, kind)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(text)
        self.status_message.emit(text)
        self._sync_enabled()

    def _end(self, text: str) -> None:
        self._job = None
        self.progress_bar.setFormat(text)
        self._sync_enabled()

    def _sync_enabled(self) -> None:
        has_src, busy = self._source is not None, self.busy
        self.analyze_button.setEnabled(has_src and not busy)
        self.master_button.setEnabled(has_src and not busy)
        self.cancel_button.setEnabled(busy)
        self.plan_tree.setEnabled(self._plan is not None)
        self.reset_plan_button.setEnabled(self._plan_edited and self._bundle is not None)

    # ------------------------------------------------------------------ task events
    @Slot(str, float, str)
    def _on_progress(self, task_id: str, fraction: float, message: str) -> None:
        if self._job and task_id == self._job[0]:
            self.progress_bar.setValue(round(1000 * fraction))
            self.progress_bar.setFormat(f"{message[:1].upper()}{message[1:]} — %p%")

    def _forget_internal(self, task_id: str) -> None:
        """Previews and the warm-up are not user jobs: keep them out of the jobs list (and memory)."""
        if task_id in (self._preview_task, self.warm_up_task):
            QTimer.singleShot(0, lambda: self._runner.forget(task_id))  # after every slot saw it

    @Slot(str, object)
    def _on_finished(self, task_id: str, result: Any) -> None:
        self._forget_internal(task_id)
        if task_id == self._preview_task:
            self._preview_done(result)
            return
        if not self._job or task_id != self._job[0]:
            return
        kind = self._job[1]
        if kind == "analyze":
            bundle: AnalysisBundle = result
            self._bundle = bundle
            keep = self._plan is not None and self._plan_edited and (
                (self._plan.sample_rate, self._plan.channels) == (bundle.plan.sample_rate, bundle.plan.channels))
            if keep:  # a plan set or edited by hand (e.g. the project's) survives a re-analysis
                self.status_message.emit("kept the edited plan; 'Reset plan edits' re-plans from the settings")
            else:
                self._set_plan(bundle.plan, edited=False)
            self._fill_metrics(0, bundle.before.to_dict())
            self._fill_tree()
            self._end("Analysed")
            self.status_message.emit(
                f"{self._source_name if self._source else ''}: {_fmt(bundle.before.integrated_lufs, 1)} LUFS, "
                f"true peak {_fmt(bundle.before.true_peak_dbtp, 2)} dBTP"
            )
            self.analysis_ready.emit(bundle)
            self._schedule_preview()
        else:
            res: chain.MasterResult = result
            self.last_master = res
            report = res.to_report()
            if self._bundle is None:  # mastered without analysing first: keep what it learnt
                self._bundle = AnalysisBundle(res.before, [], [], res.plan)
                self._fill_metrics(0, res.before.to_dict())
            # The plan now carries the solved gain: the preview plays at the master's loudness.
            self._set_plan(res.plan, edited=self._plan_edited)
            self._schedule_preview()
            self._fill_metrics(2, res.after.to_dict())
            r = report["result"]
            ok = r["within_spec"]
            mark = (f"<span style='color:{theme.METER_GREEN}'>✔ Within spec</span>" if ok
                    else f"<span style='color:{theme.METER_RED}'>✘ Out of spec</span>")  # fmt: skip
            self.verdict_label.setText(
                f"{mark}: {r['loudness_error_lu']:+.2f} LU from "
                f"{res.plan.loudness.target_lufs:g} LUFS, {r['true_peak_margin_db']:.2f} dB under the "
                f"{res.plan.limiter.ceiling_dbtp:g} dBTP ceiling · {res.elapsed_s:.1f} s"
            )
            self._end("Mastered")
            self.status_message.emit(f"master written: {res.output}")
            assert res.output is not None
            self.master_ready.emit(Path(res.output), report)

    @Slot(str, str, str)
    def _on_failed(self, task_id: str, message: str, details: str) -> None:
        self._forget_internal(task_id)
        if task_id == self._preview_task:
            self._preview_task = None
            self.status_message.emit(f"preview failed: {message}")
            self._maybe_rerun_preview()
            return
        if self._job and task_id == self._job[0]:
            what = self._job[1]
            self._end(f"{what.capitalize()} failed")
            self.progress_bar.setToolTip(details)
            self.status_message.emit(f"{what} failed: {message}")

    @Slot(str)
    def _on_cancelled(self, task_id: str) -> None:
        self._forget_internal(task_id)
        if task_id == self._preview_task:
            self._preview_task = None
            self._maybe_rerun_preview()
            return
        if self._job and task_id == self._job[0]:
            what = self._job[1]
            self._end("Cancelled")
            self.status_message.emit(f"{what} cancelled")

    # ------------------------------------------------------------------ controls -> plan
    @Slot()
    def _on_target_changed(self) -> None:
        name = self.target_combo.currentData()
        custom = name == _CUSTOM
        if not custom:
            t = TARGETS[name]
            with QSignalBlocker(self.lufs_spin), QSignalBlocker(self.ceiling_spin):
                self.lufs_spin.setValue(t.lufs)
                self.ceiling_spin.setValue(t.ceiling_dbtp)
        self.lufs_spin.setEnabled(custom)
        self.ceiling_spin.setEnabled(custom)
        self._settings_changed()

    @Slot()
    def _on_level_changed(self) -> None:
        a = LEVELS[self.level_combo.currentData()]
        for key, v in (("eq", a.eq_pct), ("dynamics", a.dynamics_pct), ("width", a.width_pct)):
            with QSignalBlocker(self.sliders[key]):
                self.sliders[key].setValue(round(v))
            self._slider_labels[key].setText(f"{round(v)} %")
        self._settings_changed()

    @Slot()
    def _on_slider(self) -> None:
        for key, s in self.sliders.items():
            self._slider_labels[key].setText(f"{s.value()} %")
        self._settings_changed()

    @Slot()
    def _settings_changed(self) -> None:
        if self._bundle is not None:
            self._replan()

    @Slot()
    def _replan(self) -> None:
        if self._bundle is None:
            return
        b = self._bundle
        try:
            plan = plan_from_bundle(b.before, self.settings(), b.reference_spectra, b.reference_names)
        except AmcError as exc:
            self.status_message.emit(str(exc))
            return
        if self._plan_edited:
            self.status_message.emit("plan edits replaced by the new settings")
        self._set_plan(plan, edited=False)
        self._schedule_preview()

    # ------------------------------------------------------------------ references
    def _add_reference(self, p: Path) -> None:
        if p in self.references():
            return
        self.reference_list.addItem(p.name)
        item = self.reference_list.item(self.reference_list.count() - 1)
        item.setData(Qt.ItemDataRole.UserRole, str(p))
        item.setToolTip(str(p))
        self._sync_references()

    def _sync_references(self) -> None:
        empty = self.reference_list.count() == 0
        self.reference_list.setVisible(not empty)
        self.reference_hint.setVisible(empty)
        self.remove_ref_button.setEnabled(not empty)

    @Slot()
    def _add_references_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add reference tracks", "", "Audio (*.wav *.flac *.aiff *.aif *.mp3 *.ogg)")
        for f in files:
            self._add_reference(Path(f))
        if files:
            self.status_message.emit("references changed: press Analyze to match them")

    @Slot()
    def _remove_selected_references(self) -> None:
        for item in self.reference_list.selectedItems():
            self.reference_list.takeItem(self.reference_list.row(item))
        self._sync_references()
        if self._bundle is not None:
            self.status_message.emit("references changed: press Analyze to match them")

    # ------------------------------------------------------------------ plan tree
    def _fill_tree(self) -> None:
        with QSignalBlocker(self.plan_tree):
            self.plan_tree.clear()
            if self._plan is not None:
                d = self._plan.to_dict()
                freqs = d["eq"]["freqs_hz"]
                for key, value in d.items():
                    self._add_node(self.plan_tree.invisibleRootItem(), key, value, (key,), freqs)
                for i in range(self.plan_tree.topLevelItemCount()):
                    it = self.plan_tree.topLevelItem(i)
                    it.setExpanded(it.text(0) in ("loudness", "limiter", "compressor", "imager"))
        self._sync_enabled()

    def _add_node(self, parent: QTreeWidgetItem, key: str, value: Any, path: tuple, freqs: list[float]) -> None:
        item = QTreeWidgetItem(parent, [key])
        if isinstance(value, dict):
            for k, v in value.items():
                self._add_node(item, k, v, (*path, k), freqs)
            return
        if isinstance(value, list) and value and all(isinstance(v, (int, float, dict)) for v in value) and path[-1] not in _READ_ONLY:
            item.setText(1, f"{len(value)} values")
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    self._add_node(item, f"band {i + 1}", v, (*path, i), freqs)
                else:
                    child = QTreeWidgetItem(item, [f"{freqs[i]:g} Hz" if path[-2:] in (("eq", "mid_gain_db"), ("eq", "side_gain_db")) else f"[{i}]"])
                    self._set_leaf(child, v, (*path, i), editable=True)
            return
        editable = not any(p in _READ_ONLY for p in path if isinstance(p, str))
        self._set_leaf(item, value, path, editable=editable)

    def _set_leaf(self, item: QTreeWidgetItem, value: Any, path: tuple, *, editable: bool) -> None:
        if isinstance(value, list):
            text = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "–"
        elif isinstance(value, float):
            text = f"{value:.4g}"
        elif value is None:
            text = "auto" if path[-1] in ("gain_db", "dither") else "off"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        item.setText(1, text)
        item.setData(0, Qt.ItemDataRole.UserRole, (path, value))
        if editable:
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        else:
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            item.setForeground(1, self.palette().placeholderText())

    @staticmethod
    def _parse(text: str, old: Any) -> Any:
        t = text.strip().lower()
        if isinstance(old, bool):
            if t in ("true", "on", "yes", "1"):
                return True
            if t in ("false", "off", "no", "0"):
                return False
            raise ValueError("expected true or false")
        if t in ("", "none", "auto", "off"):
            if old is None or isinstance(old, float | int):
                return None
        if isinstance(old, int) and not isinstance(old, bool):
            return int(t)
        if isinstance(old, float) or old is None:
            return float(t)
        return text.strip()

    @Slot(QTreeWidgetItem, int)
    def _on_plan_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        data = item.data(0, Qt.ItemDataRole.UserRole)
        if column != 1 or self._plan is None or data is None:
            return
        path, old = data
        d = copy.deepcopy(self._plan.to_dict())
        try:
            new = self._parse(item.text(1), old)
            node = d
            for p in path[:-1]:
                node = node[p]
            node[path[-1]] = new
            if path[0] != "loudness" or path[-1] != "gain_db":
                d["loudness"]["gain_db"] = None  # any other change invalidates the solved gain
            plan = MasteringPlan.from_dict(d)
            plan.validate()
        except (AmcError, ValueError, TypeError, KeyError) as exc:
            self.status_message.emit(f"{'.'.join(map(str, path))}: {exc}")
            QTimer.singleShot(0, self._fill_tree)  # put the old value back (not inside the signal)
            return
        item.setData(0, Qt.ItemDataRole.UserRole, (path, new))
        self._set_plan(plan, edited=True, refill=False)
        self._schedule_preview()

    # ------------------------------------------------------------------ preview
    def _schedule_preview(self) -> None:
        if self._bundle is not None and self._plan is not None and self._source is not None:
            self._debounce.start()

    @Slot()
    def _start_preview(self) -> None:
        if self._bundle is None or self._plan is None or self._source is None:
            return
        if self._preview_task is not None:
            self._preview_pending = True  # render again with the newest plan when this one ends
            return
        self._preview_pending = False
        last = self.last_preview
        h = self._runner.submit(
            "Preview", preview_job, self._source, self._plan, self._bundle.before,
            last.excerpt if last else None, last.limiter_offset_db if last else None, mode="thread",
        )  # fmt: skip
        self._preview_task = h.task_id

    def _preview_done(self, res: PreviewResult) -> None:
        self._preview_task = None
        self.last_preview = res
        self._fill_metrics(1, {
            "integrated_lufs": res.integrated_lufs, "true_peak_dbtp": res.true_peak_dbtp,
            "plr_db": res.true_peak_dbtp - res.integrated_lufs,
        })  # fmt: skip
        self.preview_ready.emit(res.source, res.master, res.start_frame, self._sample_rate)
        self._maybe_rerun_preview()

    def _maybe_rerun_preview(self) -> None:
        if self._preview_pending:
            self._start_preview()

    # ------------------------------------------------------------------ metrics
    def _clear_metrics(self) -> None:
        self.metrics_table.clearContents()
        self.verdict_label.setText("Analyze to see the mix's figures; Master to render.")

    def _fill_metrics(self, column: int, values: dict[str, Any]) -> None:
        for row, (key, _label, digits) in enumerate(METRICS):
            if key in values or column != 1:
                item = QTableWidgetItem(_fmt(values.get(key), digits))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.metrics_table.setItem(row, column, item)

    def metric_text(self, key: str, column: str) -> str:
        """Text shown for ``key`` (e.g. ``"integrated_lufs"``) in ``column`` (Before/Preview/After)."""
        row = [m[0] for m in METRICS].index(key)
        item = self.metrics_table.item(row, _COLUMNS.index(column))
        return item.text() if item is not None else ""

