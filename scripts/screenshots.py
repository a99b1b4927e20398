"""Render the Studio with a real project to PNGs under build/screenshots/ (offscreen Qt).

    .venv/bin/python scripts/screenshots.py [--mix MIX.wav] [--midi SONG.mid]

Without arguments it renders program material with the test suite's GM arrangement
(fluidsynth; ``./run-tests`` installs it).  Steps: open the mix as a track, analyse,
master (the take appears with its overlay), open a MIDI file in the piano roll, then
save the whole window and each panel.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _wait(app, predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mix", type=Path)
    p.add_argument("--midi", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "screenshots")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="amc-shots-")
    os.environ["AMC_HOME"] = home
    if args.mix is None or args.midi is None:
        from tests import material

        mix = material.program(30, 48000, style="pop")
        args.mix = args.mix or mix
        args.midi = args.midi or Path(str(mix)[:-4] + ".mid")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app import config
    from app.ui import theme
    from app.ui.main_window import MainWindow

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, home)
    QApplication.setOrganizationName(config.ORGANIZATION)
    QApplication.setApplicationName(config.APP_NAME)
    app = QApplication(sys.argv[:1])
    theme.apply(app)
    w = MainWindow(audio=False)
    w.resize(1600, 1000)
    w.show()
    added: list[str] = []
    takes: list[str] = []
    w.track_added.connect(added.append)
    w.take_added.connect(takes.append)
    w.open_paths([args.mix])
    if not _wait(app, lambda: added, 60):
        print("the mix did not load", file=sys.stderr)
        return 1
    w.grab().save(str(args.out / "studio-track.png"))
    w.mastering.master()
    if not _wait(app, lambda: takes, 180):
        print("mastering did not finish", file=sys.stderr)
        return 1
    _wait(app, lambda: False, 1.5)  # let the overlay and metrics paint
    w.open_paths([args.midi])
    _wait(app, lambda: False, 1.0)
    w.waveform.zoom_to_fit()
    w.act_play.trigger()
    _wait(app, lambda: False, 2.0)  # meters moving
    w.grab().save(str(args.out / "studio.png"))
    w.mastering.grab().save(str(args.out / "studio-mastering.png"))
    w.piano.grab().save(str(args.out / "studio-piano-roll.png"))
    print(f"screenshots in {args.out} (startup {w.startup_seconds if w.startup_seconds == w.startup_seconds else 0:.2f} s)")
    w._dirty = False
    w.close()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of Qt objects (PySide6 may crash there)


if __name__ == "__main__":
    raise SystemExit(main())
