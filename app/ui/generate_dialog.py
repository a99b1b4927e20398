"""*Generate…*: the text-to-audio request form of the model chain.

:class:`GenerateDialog` asks for a prompt, genre, mood, style, duration, the slot to use
(only slots with the ``text_to_audio`` capability; a slot that cannot run here is listed
but disabled, with the reason), an optional seed and the guidance scale, and returns a
:class:`GenerateRequest` whose ``params`` are the names the text-to-audio backends read
(``prompt``, ``duration_s``, ``guidance_scale``, ``seed``; Stable Audio also ``steps``
and ``negative_prompt``).  Genre, mood and style are folded into the prompt, which is
how MusicGen and Stable Audio take them.

UI thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QShowEvent, QStandardItemModel
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.ui import theme
from app.ui.model_bridge import describe_slot, slot_reason

__all__ = ["TASK", "GenerateDialog", "GenerateRequest", "compose_prompt"]

TASK = "text_to_audio"
GENRES = ("", "ambient", "cinematic", "classical", "electronic", "folk", "hip hop", "house", "jazz", "lo-fi",
          "metal", "pop", "r&b", "reggae", "rock", "techno")
MOODS = ("", "calm", "dark", "dreamy", "energetic", "epic", "happy", "melancholic", "relaxing", "tense", "upbeat")
STYLES = ("", "acoustic", "cinematic", "lo-fi", "minimal", "modern", "orchestral", "professional", "vintage", "warm")

#: Longest request per slot, in seconds (MusicGen: 30 s; Stable Audio Open: 47 s); others 300 s.
MAX_DURATION_S = {"musicgen": 30.0, "stable-audio": 47.0}
#: Classifier-free guidance the backends use by default.
DEFAULT_GUIDANCE = {"musicgen": 3.0, "stable-audio": 7.0}
DEFAULT_STEPS = 100  # Stable Audio diffusion steps
TITLE_CHARS = 40


@dataclass(frozen=True)
class GenerateRequest:
    """What the dialog asks the chain to run: submit ``slot``/``task`` with ``params``."""

    slot: str
    task: str
    params: dict[str, Any]
    title: str
    prompt: str = ""  # the user's text, before genre/mood/style were folded in
    genre: str = ""
    mood: str = ""
    style: str = ""
    inputs: dict[str, str] = field(default_factory=dict)


def compose_prompt(prompt: str, *, genre: str = "", mood: str = "", style: str = "") -> str:
    """``"warm piano, 80 bpm"`` + lo-fi/calm/vintage -> ``"warm piano, 80 bpm, lo-fi, calm mood, vintage style"``.

    A genre/mood/style already named in the prompt is not repeated.
    """
    text = " ".join(prompt.split()).strip(" ,.;")
    parts = [text] if text else []
    lowered = text.lower()
    for value, suffix in ((genre, ""), (mood, " mood"), (style, " style")):
        value = " ".join(value.split())
        if value and value.lower() not in lowered:
            parts.append(value + suffix)
    return ", ".join(parts)


def _combo(values: tuple[str, ...], placeholder: str) -> QComboBox:
    box = QComboBox()
    box.setEditable(True)
    box.addItems(list(values))
    box.setCurrentIndex(0)
    line = box.lineEdit()
    if line is not None:
        line.setPlaceholderText(placeholder)
    return box


class GenerateDialog(QDialog):
    """The *Generate…* form; ``request()`` holds the result once accepted.

    ``statuses`` are :func:`app.models.registry.slot_status` rows (as
    :class:`app.ui.model_bridge.ModelBridge` delivers them); None while unknown.
    """

    def __init__(self, statuses: list[dict[str, Any]] | None, parent: QWidget | None = None, *,
                 default_slot: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Generate audio")
        self.setMinimumWidth(520)
        self._guidance_touched = False
        self._slots: list[tuple[str, str, str, str]] = []  # key, state, short text, tooltip
        self._reasons: dict[str, str] = {}  # key -> one sentence on its status

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Describe the music: instruments, tempo, feel, e.g. "
                                            "“warm lo-fi piano with soft vinyl crackle, 80 bpm”")
        self.prompt_edit.setFixedHeight(78)
        self.genre_box = _combo(GENRES, "any genre")
        self.mood_box = _combo(MOODS, "any mood")
        self.style_box = _combo(STYLES, "any style")
        self.duration_spin = QDoubleSpinBox()
        self.duration_spin.setRange(1.0, 300.0)
        self.duration_spin.setDecimals(1)
        self.duration_spin.setSingleStep(1.0)
        self.duration_spin.setSuffix(" s")
        self.duration_spin.setValue(10.0)

        self.slot_box = QComboBox()
        self.slot_reason = QLabel()
        self.slot_reason.setWordWrap(True)
        self.slot_reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.seed_check = QCheckBox("Fixed seed")
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2**31 - 1)
        self.seed_spin.setValue(1234)
        self.seed_spin.setEnabled(False)
        self.seed_check.toggled.connect(self.seed_spin.setEnabled)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed_check)
        seed_row.addWidget(self.seed_spin, 1)

        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setDecimals(1)
        self.guidance_spin.setSingleStep(0.5)
        self.guidance_spin.setValue(DEFAULT_GUIDANCE["musicgen"])
        self.guidance_spin.setToolTip("How closely the audio follows the prompt (classifier-free guidance); "
                                      "higher follows it more literally, with less variety")
        self.guidance_spin.valueChanged.connect(self._on_guidance_edited)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.steps_spin.setToolTip("Diffusion steps (Stable Audio): more is slower and cleaner")
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("what to avoid, e.g. “vocals, distortion” (Stable Audio)")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Genre", self.genre_box)
        form.addRow("Mood", self.mood_box)
        form.addRow("Style", self.style_box)
        form.addRow("Duration", self.duration_spin)
        model_field = QWidget()  # combo + reason in one field: the form sizes wrapped text badly
        mf = QVBoxLayout(model_field)
        mf.setContentsMargins(0, 0, 0, 0)
        mf.setSpacing(4)
        mf.addWidget(self.slot_box)
        mf.addWidget(self.slot_reason)
        mf.addStretch(1)
        form.addRow("Model", model_field)
        form.addRow("Seed", seed_row)
        form.addRow("Guidance", self.guidance_spin)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Avoid", self.negative_edit)
        self._form = form

        self.preview_label = QLabel()
        self.preview_label.setWordWrap(True)
        self.preview_label.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Generate")
        self.ok_button.setProperty("primary", True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview_label)
        layout.addWidget(self.buttons)

        self.prompt_edit.textChanged.connect(self._update)
        for box in (self.genre_box, self.mood_box, self.style_box):
            box.currentTextChanged.connect(self._update)
        self.slot_box.currentIndexChanged.connect(self._on_slot_changed)
        self.set_statuses(statuses, default_slot=default_slot)

    # ------------------------------------------------------------------ API
    def set_statuses(self, statuses: list[dict[str, Any]] | None, *, default_slot: str | None = None) -> None:
        """(Re)fill the model list from slot-status rows; keeps the choice when still usable."""
        keep = default_slot or self.current_slot()
        self._slots = []
        self._reasons = {}
        for row in statuses or []:
            if TASK not in row.get("capabilities", []):
                continue
            state, text, tip = describe_slot(row, task=TASK)
            self._reasons[str(row["slot"])] = slot_reason(row, task=TASK)
            self._slots.append((str(row["slot"]), state, f"{row['title']} — {text}", tip))
        self.slot_box.blockSignals(True)
        self.slot_box.clear()
        model = self.slot_box.model()
        assert isinstance(model, QStandardItemModel)
        for i, (key, state, label, tip) in enumerate(self._slots):
            self.slot_box.addItem(label, key)
            item = model.item(i)
            item.setToolTip(tip)
            item.setEnabled(state == "ready")
        ready = [i for i, s in enumerate(self._slots) if s[1] == "ready"]
        wanted = next((i for i, s in enumerate(self._slots) if s[0] == keep and s[1] == "ready"), None)
        index = wanted if wanted is not None else (ready[0] if ready else 0)
        if self._slots:
            self.slot_box.setCurrentIndex(index)
        self.slot_box.blockSignals(False)
        self._on_slot_changed()

    def current_slot(self) -> str | None:
        data = self.slot_box.currentData()
        return str(data) if data is not None else None

    def slot_enabled(self, key: str) -> bool:
        """True when ``key`` is listed and can be chosen (its backend is ready here)."""
        return any(k == key and state == "ready" for k, state, _, _ in self._slots)

    def listed_slots(self) -> list[str]:
        return [k for k, *_ in self._slots]

    def set_slot(self, key: str) -> bool:
        """Choose ``key`` if listed and ready; False otherwise."""
        for i, (k, state, _, _) in enumerate(self._slots):
            if k == key and state == "ready":
                self.slot_box.setCurrentIndex(i)
                return True
        return False

    def composed_prompt(self) -> str:
        return compose_prompt(self.prompt_edit.toPlainText(), genre=self.genre_box.currentText(),
                              mood=self.mood_box.currentText(), style=self.style_box.currentText())

    def can_generate(self) -> tuple[bool, str]:
        """Whether *Generate* is enabled and, when not, why."""
        if not self._slots:
            return False, "Checking which models can run here…"
        key = self.current_slot()
        if key is None or not self.slot_enabled(key):
            if not any(s[1] == "ready" for s in self._slots):
                return False, ("No text-to-audio model can run here yet: download weights with "
                               "“amc models download facebook/musicgen-small”, or set a cloud API key "
                               "(hover a model for details).")
            return False, "This model cannot run here (hover it for the reason)."
        if not self.composed_prompt():
            return False, "Describe the music you want (or pick a genre or mood)."
        return True, ""

    def request(self) -> GenerateRequest:
        """The request as the form stands; raises ValueError when it cannot be generated."""
        ok, why = self.can_generate()
        if not ok:
            raise ValueError(why)
        key = self.current_slot()
        assert key is not None
        prompt = self.composed_prompt()
        params: dict[str, Any] = {
            "prompt": prompt,
            "duration_s": round(float(self.duration_spin.value()), 3),
            "guidance_scale": round(float(self.guidance_spin.value()), 3),
        }
        if self.seed_check.isChecked():
            params["seed"] = int(self.seed_spin.value())
        if key == "stable-audio":
            params["steps"] = int(self.steps_spin.value())
            negative = self.negative_edit.text().strip()
            if negative:
                params["negative_prompt"] = negative
        short = prompt if len(prompt) <= TITLE_CHARS else prompt[: TITLE_CHARS - 1].rstrip() + "…"
        return GenerateRequest(
            slot=key, task=TASK, params=params, title=f"Generate “{short}”",
            prompt=self.prompt_edit.toPlainText().strip(), genre=self.genre_box.currentText().strip(),
            mood=self.mood_box.currentText().strip(), style=self.style_box.currentText().strip(),
        )

    def fit_height(self) -> None:
        """Height for the current width: wrapped labels otherwise leave gaps (Qt sizes them narrower)."""
        layout = self.layout()
        if layout is not None and layout.hasHeightForWidth():
            self.resize(self.width(), max(layout.totalHeightForWidth(self.width()), self.minimumSizeHint().height()))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.fit_height()

    # ------------------------------------------------------------------ internals
    def _on_guidance_edited(self) -> None:
        if not self.guidance_spin.signalsBlocked():
            self._guidance_touched = True

    def _on_slot_changed(self) -> None:
        key = self.current_slot() or ""
        self.duration_spin.setMaximum(MAX_DURATION_S.get(key, 300.0))
        if not self._guidance_touched:
            self.guidance_spin.blockSignals(True)
            self.guidance_spin.setValue(DEFAULT_GUIDANCE.get(key, DEFAULT_GUIDANCE["musicgen"]))
            self.guidance_spin.blockSignals(False)
        diffusion = key == "stable-audio"  # only the diffusion model reads these
        for w in (self.steps_spin, self.negative_edit):
            w.setEnabled(diffusion)
            self._form.setRowVisible(w, diffusion)
        self._update()

    def _update(self) -> None:
        entry = next((s for s in self._slots if s[0] == self.current_slot()), None)
        if entry is None:
            self.slot_reason.setText("Checking which models can run here…" if not self._slots else "")
        else:
            state = entry[1]
            colour = theme.METER_GREEN if state == "ready" else theme.METER_YELLOW
            self.slot_reason.setText(self._reasons.get(entry[0], ""))
            self.slot_reason.setStyleSheet(f"color: {colour};")
            self.slot_reason.setToolTip(entry[3])
        ok, why = self.can_generate()
        self.ok_button.setEnabled(ok)
        self.ok_button.setToolTip(why)
        prompt = self.composed_prompt()
        self.preview_label.setText(why if not ok else f"Prompt sent to the model: “{prompt}”")
