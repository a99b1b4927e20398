"""Attacks on a live account service, as plain functions of its base URL.

Used by the security tests (against servers they start on 127.0.0.1) and by
``benchmarks/service_security.py`` (against any server, with figures printed). Every attack
is bounded: a byte budget, a count and a deadline, and it stops by itself.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

CHUNK_BYTES = 1 << 20


@dataclass
class StreamResult:
    status: int | None  # None: no answer before the budget or the deadline ran out
    body: bytes
    sent_bytes: int  # body bytes the server let us send before it answered or hung up
    seconds: float
    closed_early: bool  # the server closed the connection before the whole body was sent


def _read_response(sock: socket.socket, deadline: float) -> tuple[int | None, bytes]:
    data = b""
    sock.setblocking(True)
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            part = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not part:
            break
        data += part
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)  # fmt: skip
            if length is not None and len(rest) >= length:
                break
    if not data.startswith(b"HTTP/"):
        return None, data
    return int(data.split(b" ", 2)[1]), data.partition(b"\r\n\r\n")[2]


def stream_body(base: str, method: str, path: str, *, total_bytes: int, headers: dict[str, str] | None = None,
                chunked: bool = True, prefix: bytes = b"", filler: bytes = b"\0",
                deadline_s: float = 60.0) -> StreamResult:  # fmt: skip
    """Send a body of ``total_bytes`` (``prefix`` then ``filler`` repeated) as fast as the
    server takes it, chunked or with its Content-Length, and stop at the first byte of an
    answer, when the server hangs up, or at the deadline."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    hdrs = {"Host": f"{host}:{port}", **(headers or {})}
    if chunked:
        hdrs["Transfer-Encoding"] = "chunked"
    else:
        hdrs["Content-Length"] = str(total_bytes)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    block = (filler * (CHUNK_BYTES // len(filler) + 1))[:CHUNK_BYTES]
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    sent = 0
    closed = False
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head.encode())
        pending = prefix
        while sent < total_bytes and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # an answer (or a hang-up) is waiting
            piece = (pending or block)[: total_bytes - sent]
            pending = pending[len(piece):] if pending else b""
            frame = (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked else piece
            try:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(frame)
            except (TimeoutError, OSError):
                closed = True
                break
            sent += len(piece)
        if chunked and sent >= total_bytes and not closed:
            try:
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                closed = True
        status, body = _read_response(sock, min(deadline, time.monotonic() + 30))
    return StreamResult(status, body, sent, time.monotonic() - t0, closed or sent < total_bytes)


def json_bomb_prefix(field: str = "email") -> bytes:
    """The start of a JSON object whose ``field`` is a string that never ends."""
    return json.dumps({field: ""})[:-2].encode()


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    """Bytes of the files under ``folder`` whose top-level entry matches ``pattern``."""
    total = 0
    for top in folder.glob(pattern):
        paths = [top] if top.is_file() else top.rglob("*")
        for p in paths:
            try:
                if p.is_file():
                    total += p.stat().st_size
            except OSError:
                pass
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def hwm_bytes(pid: int) -> int:
    """Peak resident set size of ``pid`` since it started (Linux /proc VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
