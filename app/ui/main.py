"""``amc-studio``: start the Studio.

One place wires the app together (STYLE.md principle 14): logging to a rotating file
under the user data dir, the theme, the main window, files from the command line, and
an excepthook that shows errors as a dialog instead of killing the session.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import time
import traceback
from pathlib import Path

_T0 = time.perf_counter()
log = logging.getLogger("amc.studio")


def _setup_logging() -> Path:
    from app import config

    path = config.log_dir() / "studio.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="amc-studio", description="The AI Music Mastering Chain Studio.")
    p.add_argument("files", nargs="*", type=Path, help="audio or MIDI files, or a .amcproj project, to open")
    p.add_argument("--no-audio", action="store_true", help="do not open an audio output device")
    p.add_argument("--quit-after-ms", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    log_path = _setup_logging()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app import config
    from app.ui import theme
    from app.ui.main_window import MainWindow

    QApplication.setOrganizationName(config.ORGANIZATION)
    QApplication.setApplicationName(config.APP_NAME)
    QApplication.setApplicationDisplayName(config.APP_DISPLAY_NAME)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme.apply(app)  # type: ignore[arg-type]

    def excepthook(kind, value, tb) -> None:  # type: ignore[no-untyped-def]
        details = "".join(traceback.format_exception(kind, value, tb))
        log.error("unhandled error\n%s", details)
        box = QMessageBox(QMessageBox.Icon.Critical, "Something went wrong",
                          f"{value}\n\nYour project is autosaved. Details are in {log_path}.")  # fmt: skip
        box.setDetailedText(details)
        box.exec()

    sys.excepthook = excepthook
    window = MainWindow(audio=not args.no_audio and os.environ.get("AMC_NO_AUDIO") != "1")
    window.show()
    log.info("window shown %.3f s after start", time.perf_counter() - _T0)
    window.startup_seconds = time.perf_counter() - _T0
    if os.environ.get("AMC_REPORT_STARTUP") == "1":  # benchmarks/studio.py reads this line
        print(f"window-shown {window.startup_seconds:.4f}", flush=True)
    QTimer.singleShot(0, lambda: window.open_paths(args.files) if args.files else window.offer_recovery())
    if args.quit_after_ms is not None:
        QTimer.singleShot(args.quit_after_ms, window.close)
    return int(app.exec())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
