"""The embedded account service: the one entry point the Studio uses to run it.

:func:`start_embedded` runs the same FastAPI app as ``amc serve`` (embedded mode: SQLite,
storage and signing key under :func:`app.config.service_dir`) in a supervised child
process listening on 127.0.0.1, and returns its base URL once ``/health`` answers.
A child process rather than a thread: the service's job runner and SQLite work never
compete with the UI for the GIL, and a crash of the service is not a crash of the Studio.
The child watches a pipe to the parent and shuts down when the parent goes away (even
when the Studio is killed), so no orphan keeps the port.

The port is remembered in ``service_dir()/embedded.json``: sign-ins are kept in the
keyring per server URL, so a stable URL keeps the musician signed in across launches.

Thread rules: :func:`start_embedded` blocks for seconds (spawn + migrations) — call it from
a worker thread (``TaskRunner``), never the UI thread. All functions are thread-safe.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORT", "EmbeddedServiceError", "embedded_url", "start_embedded", "stop_embedded"]

#: First port tried when none is remembered (the CLI's default server, so `amc login` works too).
DEFAULT_PORT = 8000
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_HEALTH_TIMEOUT_S = 1.0
_POLL_S = 0.1
_STATE_FILE = "embedded.json"
#: Variables that describe a remote deployment: never applied to the embedded service.
_REMOTE_ONLY = frozenset({"MODE", "DATABASE_URL", "SECRET_KEY", "STORAGE_PROVIDER", "STORAGE_DIR", "REDIS_URL",
                          "JOB_BACKEND", "CORS_ORIGINS", "AUTO_MIGRATE"})  # fmt: skip

log = logging.getLogger("app.service.embedded")


class EmbeddedServiceError(RuntimeError):
    """The embedded service could not start (the message says why and where the log is)."""


@dataclass
class _Running:
    url: str
    process: Any | None  # multiprocessing.Process when this process owns the service
    conn: Connection | None  # parent end of the watch pipe


_lock = threading.Lock()
_running: _Running | None = None
_atexit_registered = False


# ---------------------------------------------------------------------------- child side
def _child_main(port: int, conn: Connection, log_path: str) -> None:
    """Entry point of the service process (spawned): serve until told to stop or orphaned."""
    import uvicorn

    from app.service.app import create_app
    from app.service.settings import Settings

    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.stderr = open(log_path, "a", encoding="utf-8", buffering=1)
    # Embedded defaults (SQLite, storage, key under service_dir, which honours AMC_HOME) even
    # when the shell exports a remote deployment's variables; tuning knobs (AMC_DEVICE, quotas,
    # rate limits) still pass through to Settings, the one reader of the environment.
    env = {k: v for k, v in os.environ.items() if k not in _REMOTE_ONLY and not k.startswith(("AWS_", "S3_"))}
    settings = Settings.from_env({**env, "MODE": "embedded"})
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None,
                            log_level="warning", lifespan="on", timeout_keep_alive=30)  # fmt: skip
    server = uvicorn.Server(config)

    def watch() -> None:
        # Any message, or EOF because the parent died, means: shut down gracefully.
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        server.should_exit = True

    threading.Thread(target=watch, name="amc-embedded-watch", daemon=True).start()
    server.run()


# ---------------------------------------------------------------------------- parent side
# 127.0.0.1 is never reached through the user's HTTP(S)_PROXY.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health(url: str) -> dict[str, Any] | None:
    """The /health body when an AMC account service answers at ``url``, else None."""
    try:
        with _NO_PROXY.open(url + "/health", timeout=_HEALTH_TIMEOUT_S) as r:
            body = json.loads(r.read().decode())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and "mode" in body and "version" in body else None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        if sys.platform != "win32":  # as uvicorn binds: a port in TIME_WAIT after a restart is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _state_path() -> Path:
    from app import config

    return config.service_dir() / _STATE_FILE


def _remembered_port() -> int | None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return int(json.loads(_state_path().read_text())["port"])
    return None


def _remember_port(port: int) -> None:
    with contextlib.suppress(OSError):
        _state_path().write_text(json.dumps({"port": port}))


def embedded_url() -> str | None:
    """The URL of the embedded service this process started (or found), if it runs."""
    with _lock:
        return _running.url if _running is not None else None


def start_embedded(*, port: int | None = None, timeout_s: float = START_TIMEOUT_S) -> str:
    """Start the embedded service (once) and return its base URL, e.g. ``http://127.0.0.1:8000``.

    Idempotent: a second call returns the running service's URL. When an AMC account
    service already answers on the port (``amc serve``, another Studio), it is used and
    left running on exit. Without ``port``: the remembered port, else :data:`DEFAULT_PORT`,
    else a free one (remembered for next time). Blocks until ``/health`` answers.

    Raises :class:`EmbeddedServiceError` when the service cannot start.
    """
    global _running, _atexit_registered
    with _lock:
        if _running is not None:
            alive = _running.process.is_alive() if _running.process is not None else bool(_health(_running.url))
            if alive:
                return _running.url
            _close(_running)
            _running = None
        from app import config

        candidates = [port] if port is not None else [p for p in (_remembered_port(), DEFAULT_PORT) if p]
        chosen: int | None = None
        for p in dict.fromkeys(candidates):
            url = f"http://127.0.0.1:{p}"
            body = _health(url)
            if body is not None:
                log.info("embedded account service: using the one already running at %s", url)
                _running = _Running(url, None, None)
                if port is None:
                    _remember_port(p)
                return url
            if _port_free(p):
                chosen = p
                break
        if chosen is None:
            if port is not None:
                raise EmbeddedServiceError(f"port {port} on 127.0.0.1 is taken by another program")
            chosen = _free_port()
        url = f"http://127.0.0.1:{chosen}"
        log_path = config.log_dir() / "embedded-service.log"
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_child_main, args=(chosen, child_conn, str(log_path)),
                           name="amc-embedded-service", daemon=True)  # fmt: skip
        t0 = time.monotonic()
        proc.start()
        child_conn.close()
        running = _Running(url, proc, parent_conn)
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if not proc.is_alive():
                _close(running)
                raise EmbeddedServiceError(f"the embedded account service exited (code {proc.exitcode}) "
                                           f"before it answered; see {log_path}:\n{_tail(log_path)}")  # fmt: skip
            if _health(url) is not None:
                _running = running
                if port is None:
                    _remember_port(chosen)
                if not _atexit_registered:
                    atexit.register(stop_embedded)
                    _atexit_registered = True
                log.info("embedded account service started at %s in %.1f s (pid %s)",
                         url, time.monotonic() - t0, proc.pid)  # fmt: skip
                return url
            time.sleep(_POLL_S)
        _close(running)
        raise EmbeddedServiceError(f"the embedded account service did not answer within {timeout_s:.0f} s; "
                                   f"see {log_path}:\n{_tail(log_path)}")  # fmt: skip


def stop_embedded(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the embedded service this process started (graceful, then terminate); a no-op
    when none runs or when the service found running belongs to another process."""
    global _running
    with _lock:
        running, _running = _running, None
    if running is not None:
        _close(running, timeout_s)


def _close(running: _Running, timeout_s: float = STOP_TIMEOUT_S) -> None:
    proc, conn = running.process, running.conn
    if conn is not None:
        with contextlib.suppress(OSError, ValueError):
            conn.send("stop")
        with contextlib.suppress(OSError):
            conn.close()
    if proc is None:
        return
    proc.join(timeout_s)
    if proc.is_alive():
        log.warning("embedded account service did not stop in %.0f s: terminating it", timeout_s)
        proc.terminate()
        proc.join(2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
