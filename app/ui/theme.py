"""The Studio's dark theme: a Fusion palette plus a small style sheet.

Colours are named once here so the views (waveform, piano roll, meters) match.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

BACKGROUND = "#1e1f22"
SURFACE = "#26282c"
SURFACE_RAISED = "#2e3136"
BORDER = "#3a3d43"
TEXT = "#d8dadf"
TEXT_DIM = "#8b9099"
ACCENT = "#4fa3ff"
ACCENT_DIM = "#2d5f96"
SOURCE_WAVE = "#5fb3a8"
MASTER_WAVE = "#f0a04b"
METER_GREEN = "#4cc36b"
METER_YELLOW = "#e3c341"
METER_RED = "#e5533d"
TRACK_COLORS = ("#5fb3a8", "#7e9cf0", "#c07ee0", "#e07e9a", "#9ccf6a", "#e0b35c", "#62c2e3", "#d98b5f")

_QSS = f"""
QMainWindow, QDialog {{ background: {BACKGROUND}; }}
QWidget {{ color: {TEXT}; font-size: 10pt; }}
QDockWidget {{ titlebar-close-icon: none; }}
QDockWidget::title {{ background: {SURFACE}; padding: 4px 8px; border-bottom: 1px solid {BORDER};
    font-weight: 600; color: {TEXT_DIM}; text-transform: uppercase; }}
QToolBar {{ background: {SURFACE}; border: none; border-bottom: 1px solid {BORDER}; spacing: 4px; padding: 3px; }}
QToolButton {{ background: transparent; border: 1px solid transparent; border-radius: 4px; padding: 4px 8px; }}
QToolButton:hover {{ background: {SURFACE_RAISED}; border-color: {BORDER}; }}
QToolButton:checked {{ background: {ACCENT_DIM}; border-color: {ACCENT}; }}
QPushButton {{ background: {SURFACE_RAISED}; border: 1px solid {BORDER}; border-radius: 4px; padding: 5px 12px; }}
QPushButton:hover {{ border-color: {ACCENT}; }}
QPushButton:pressed {{ background: {ACCENT_DIM}; }}
QPushButton:disabled {{ color: {TEXT_DIM}; background: {SURFACE}; }}
QPushButton[primary="true"] {{ background: {ACCENT_DIM}; border-color: {ACCENT}; font-weight: 600; }}
QComboBox, QSpinBox, QDoubleSpinBox, QLineEdit {{ background: {SURFACE_RAISED}; border: 1px solid {BORDER};
    border-radius: 3px; padding: 3px 6px; selection-background-color: {ACCENT_DIM}; }}
QComboBox:focus, QSpinBox:focus, QDoubleSpinBox:focus, QLineEdit:focus {{ border-color: {ACCENT}; }}
QSlider::groove:horizontal {{ height: 4px; background: {BORDER}; border-radius: 2px; }}
QSlider::handle:horizontal {{ background: {TEXT}; width: 12px; margin: -5px 0; border-radius: 6px; }}
QSlider::sub-page:horizontal {{ background: {ACCENT}; border-radius: 2px; }}
QProgressBar {{ background: {SURFACE_RAISED}; border: 1px solid {BORDER}; border-radius: 3px; text-align: center; height: 14px; }}
QProgressBar::chunk {{ background: {ACCENT}; border-radius: 2px; }}
QStatusBar {{ background: {SURFACE}; border-top: 1px solid {BORDER}; color: {TEXT_DIM}; }}
QStatusBar QLabel {{ color: {TEXT_DIM}; padding: 0 8px; }}
QMenuBar {{ background: {SURFACE}; }}
QMenuBar::item:selected, QMenu::item:selected {{ background: {ACCENT_DIM}; }}
QMenu {{ background: {SURFACE_RAISED}; border: 1px solid {BORDER}; }}
QTabWidget::pane {{ border: 1px solid {BORDER}; top: -1px; }}
QTabBar::tab {{ background: {SURFACE}; padding: 6px 14px; border: 1px solid {BORDER}; border-bottom: none; }}
QTabBar::tab:selected {{ background: {SURFACE_RAISED}; color: {TEXT}; border-top: 2px solid {ACCENT}; }}
QTabBar::tab:!selected {{ color: {TEXT_DIM}; }}
QHeaderView::section {{ background: {SURFACE}; border: none; border-right: 1px solid {BORDER}; padding: 3px 6px; color: {TEXT_DIM}; }}
QTableWidget, QTreeWidget, QListWidget {{ background: {SURFACE}; alternate-background-color: {SURFACE_RAISED};
    border: 1px solid {BORDER}; gridline-color: {BORDER}; }}
QGroupBox {{ border: 1px solid {BORDER}; border-radius: 4px; margin-top: 14px; padding-top: 6px; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 8px; padding: 0 4px; color: {TEXT_DIM}; }}
QScrollBar:horizontal, QScrollBar:vertical {{ background: {SURFACE}; border: none; }}
QScrollBar::handle {{ background: {BORDER}; border-radius: 4px; min-height: 20px; min-width: 20px; }}
QToolTip {{ background: {SURFACE_RAISED}; color: {TEXT}; border: 1px solid {BORDER}; }}
"""


def apply(app: QApplication) -> None:
    """Install the Fusion style, the dark palette and the style sheet on ``app``."""
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: BACKGROUND,
        QPalette.ColorRole.WindowText: TEXT,
        QPalette.ColorRole.Base: SURFACE,
        QPalette.ColorRole.AlternateBase: SURFACE_RAISED,
        QPalette.ColorRole.ToolTipBase: SURFACE_RAISED,
        QPalette.ColorRole.ToolTipText: TEXT,
        QPalette.ColorRole.Text: TEXT,
        QPalette.ColorRole.Button: SURFACE_RAISED,
        QPalette.ColorRole.ButtonText: TEXT,
        QPalette.ColorRole.BrightText: "#ffffff",
        QPalette.ColorRole.Highlight: ACCENT_DIM,
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: ACCENT,
        QPalette.ColorRole.PlaceholderText: TEXT_DIM,
    }
    for role, colour in roles.items():
        pal.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(TEXT_DIM))
    app.setPalette(pal)
    app.setStyleSheet(_QSS)
    font = QFont(app.font())
    font.setPointSizeF(10.0)
    app.setFont(font)


def track_color(index: int) -> str:
    """A stable colour per track index."""
    return TRACK_COLORS[index % len(TRACK_COLORS)]
