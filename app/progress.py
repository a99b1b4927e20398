"""The command line's one-line progress bar on stderr.

A module of its own (standard library only) so that every command module (``app.cli``,
``app.models.cli_jobs``, ``app.service.commands``) shows the same bar without importing
``app.cli``, which imports them.  Any thread may call a bar, one at a time.
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """One-line progress on stderr when it is a terminal (or forced)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._last = -1.0
        self._t0 = time.monotonic()
        self._msg = ""

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction - self._last < 0.01 and message == self._msg and fraction < 1.0:
            return
        self._last, self._msg = fraction, message
        width = 30
        fill = round(fraction * width)
        bar = "#" * fill + "-" * (width - fill)
        el = time.monotonic() - self._t0
        sys.stderr.write(f"\r[{bar}] {fraction * 100:5.1f}% {el:5.1f}s  {message[:40]:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._last >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()
