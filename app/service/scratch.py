"""Temp folders of requests and jobs: named so that the ones a dead process left are found.

Every scratch folder the service makes lives in ``$TMPDIR`` as ``amc-<kind>-<pid>-<random>``
(kind: ``job``, ``upload``, ``blob``). ``TemporaryDirectory`` removes it on every error path
in the process; a process killed with SIGKILL leaves it, and :func:`sweep` — run at start and
with the hourly housekeeping — removes every such folder whose process is gone (folders of an
older build, without a pid, once they are a day old). Several services on one machine share
``$TMPDIR`` safely: a live process's folders are never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

KINDS = ("job", "upload", "blob")
_NAME = re.compile(r"^amc-(?:job|upload|blob)-(?:(\d+)-)?[A-Za-z0-9_]+$")
#: A scratch folder with no pid in its name (an older build's) is removed at this age.
UNOWNED_AGE_S = 24 * 3600.0


def temp_dir(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A scratch folder for ``kind`` (``job``/``upload``/``blob``), removed when the ``with``
    block ends however it ends."""
    assert kind in KINDS
    return tempfile.TemporaryDirectory(prefix=f"amc-{kind}-{os.getpid()}-")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return True  # cannot tell (another platform): keep it
    return True


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def sweep(folder: Path | None = None, now: float | None = None) -> tuple[int, int]:
    """Remove the scratch folders left by processes that are gone; returns (folders, bytes)."""
    folder = Path(folder or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = [0, 0]
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0, 0
    for entry in entries:
        m = _NAME.match(entry.name)
        if m is None or not entry.is_dir(follow_symlinks=False):
            continue
        pid = m.group(1)
        try:
            if pid is not None:
                if _alive(int(pid)):
                    continue
            elif now - entry.stat(follow_symlinks=False).st_mtime < UNOWNED_AGE_S:
                continue
        except OSError:
            continue
        size = folder_bytes(Path(entry.path))
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed[0] += 1
            removed[1] += size
    if removed[0]:
        log.info("removed %d scratch folders (%d bytes) left by stopped processes", *removed)
    return removed[0], removed[1]
