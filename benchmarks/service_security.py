"""The service under hostile bodies: peak memory and temp-folder bytes while anonymous clients
stream large bodies at it.

    .venv/bin/python benchmarks/service_security.py [--clients 10] [--gib 1] [--url URL --pid PID]

Without ``--url`` it starts the service as ``amc serve`` runs it (SQLite, local storage, one
job thread) on 127.0.0.1 with its own TMPDIR, and reads its memory from /proc. Half the
clients stream a chunked multipart upload to ``/music/process-file`` with no token, half a
chunked JSON body with one never-ending string to ``/auth/login``; each stops when the
service answers or hangs up, when its bytes are sent, or after ``--deadline`` seconds.
Prints, per client, the answer, the bytes the service let through and the time; then the
service's peak RSS (VmHWM) against the target (< 400 MB) and the bytes left in its TMPDIR.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.service import serve as bench_serve
from tests.service.attacks import (
    StreamResult,
    folder_bytes,
    hwm_bytes,
    json_bomb_prefix,
    rss_bytes,
    stream_body,
)
from tests.service.conftest import Server

TARGET_PEAK_RSS_MB = 400
MULTIPART_HEAD = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'


@contextlib.contextmanager
def serve(**extra_env: str) -> Iterator[Server]:
    """The load benchmark's server (SQLite), with a temporary folder of its own to watch."""
    folder = Path(tempfile.mkdtemp(prefix="amc-secbench-"))
    tmp = folder / "tmp"
    tmp.mkdir()
    try:
        with bench_serve(f"sqlite:///{folder / 'service.db'}", TMPDIR=str(tmp), **extra_env) as srv:
            yield srv
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def attack(base: str, clients: int, total_bytes: int, deadline_s: float) -> list[tuple[str, StreamResult]]:
    results: list[tuple[str, StreamResult]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if i % 2 == 0:
            path = "/api/v1/music/process-file"
            r = stream_body(base, "POST", path, total_bytes=total_bytes, prefix=MULTIPART_HEAD,
                            headers={"Content-Type": "multipart/form-data; boundary=x"}, deadline_s=deadline_s)  # fmt: skip
        else:
            path = "/api/v1/auth/login"
            r = stream_body(base, "POST", path, total_bytes=total_bytes, prefix=json_bomb_prefix(), filler=b"a",
                            headers={"Content-Type": "application/json"}, deadline_s=deadline_s)  # fmt: skip
        with lock:
            results.append((path, r))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + 60)
    return results


def report(results: list[tuple[str, StreamResult]], pid: int | None, tmp: Path | None, rss0: int) -> bool:
    for path, r in sorted(results, key=lambda x: x[0]):
        print(f"  {path:32s} answer {r.status}  body bytes taken {r.sent_bytes / 2**20:8.1f} MiB  {r.seconds:6.2f} s")
    ok = all(r.status in (401, 413) for _, r in results)
    if pid is not None:
        peak = hwm_bytes(pid) / 2**20
        print(f"service RSS before {rss0 / 2**20:.0f} MB, peak (VmHWM) {peak:.0f} MB, now {rss_bytes(pid) / 2**20:.0f} MB"
              f" (target < {TARGET_PEAK_RSS_MB} MB): {'PASS' if peak < TARGET_PEAK_RSS_MB else 'FAIL'}")  # fmt: skip
        ok = ok and peak < TARGET_PEAK_RSS_MB
    if tmp is not None:
        left = folder_bytes(tmp)
        print(f"bytes in the service's TMPDIR afterwards: {left}")
        ok = ok and left == 0
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--gib", type=float, default=1.0, help="body size per client, GiB")
    ap.add_argument("--deadline", type=float, default=120.0, help="seconds per client at most")
    ap.add_argument("--url", help="attack this running service instead of starting one")
    ap.add_argument("--pid", type=int, help="with --url: the service's pid, for its memory figures")
    args = ap.parse_args()
    total = int(args.gib * 2**30)
    print(f"{args.clients} anonymous clients, {args.gib:g} GiB chunked body each")
    if args.url:
        rss0 = rss_bytes(args.pid) if args.pid else 0
        t0 = time.monotonic()
        results = attack(args.url, args.clients, total, args.deadline)
        print(f"done in {time.monotonic() - t0:.1f} s")
        return 0 if report(results, args.pid, None, rss0) else 1
    with serve() as srv:
        assert srv.proc is not None
        rss0 = rss_bytes(srv.proc.pid)
        t0 = time.monotonic()
        results = attack(srv.base, args.clients, total, args.deadline)
        print(f"done in {time.monotonic() - t0:.1f} s")
        return 0 if report(results, srv.proc.pid, Path(srv.env["TMPDIR"]), rss0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
