"""Latency of an authenticated, quota-checked request at 50 concurrent clients, on SQLite and
on PostgreSQL.

    .venv/bin/python benchmarks/service.py [--clients 50] [--seconds 20] [--think 1 0.5 0.25 0]
                                           [--backend sqlite postgresql]

The request is ``POST /api/v1/music/generate`` (token check, atomic quota UPSERT of the burst
and daily counters, job insert, job hand-off); ``GET /api/v1/auth/me`` (token check only) is
measured beside it.

Each of the 50 clients is a separate PRO-tier user with its own token, on a kept-alive
connection, and behaves like a script or a Studio: send a request, wait for the answer, think
for an exponentially distributed time (mean ``--think`` seconds), repeat. Every think time is
run for ``--seconds``; think 0 is the saturated case, where each client sends its next request
the moment the last one is answered: latency there is queueing (Little's law: p50 ~ clients /
throughput) and the figure that matters is the throughput.

As deployed: SQLite runs the embedded service (jobs in the service's own job thread);
PostgreSQL runs the remote service, which hands jobs to Celery through a real redis-server
(no Celery worker consumes them here: the workers are GPU machines, not the API's cores).
One uvicorn process (``--web-workers N``: N for PostgreSQL), access log off (LOG_LEVEL=WARNING).
The load generator (a lean HTTP/1.1 client, ~0.07 ms of CPU per request) shares the machine's
cores with it, so figures are end to end. Between runs the embedded runner's queued jobs are
drained; the service CPU per request counts their work too. Target: p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, alembic_upgrade, free_port, start_postgres, start_redis

TARGET_P99_MS = 25.0
GENERATE = ("generate (auth + quota + job)", "POST", "/api/v1/music/generate", {"prompt": "bench"})
ME = ("me (auth only)", "GET", "/api/v1/auth/me", None)


@contextlib.contextmanager
def serve(url: str, **env: str) -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="amc-bench-"))
    alembic_upgrade(url)
    full_env = {**os.environ, "MODE": "remote", "DATABASE_URL": url, "SECRET_KEY": secrets.token_urlsafe(48),
                "STORAGE_DIR": str(folder / "storage"), "AMC_HOME": str(folder), "AUTO_MIGRATE": "false",
                "RATE_BURST_PER_MINUTE": "1000000", "LOG_LEVEL": "WARNING", "REGISTER_PER_CLIENT_PER_HOUR": "0", **env}  # fmt: skip
    srv = Server(f"http://127.0.0.1:{free_port()}", url, folder / "storage", full_env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


class Connection:
    """One kept-alive HTTP/1.1 connection speaking just enough of the protocol for these
    requests: the request bytes are built once, a response is read by its Content-Length.

    httpx spent ~1.1 ms of CPU per request here, as much as the service itself, on the same
    two cores; this client spends ~0.1 ms, so the figures are the service's, not the load
    generator's. Deployed, clients are on other machines."""

    def __init__(self, base: str, token: str) -> None:
        self.host, port = base.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.token = token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def request_bytes(self, method: str, path: str, body: dict | None) -> bytes:
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Authorization: Bearer {self.token}", "Accept: application/json"]  # fmt: skip
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not expected here")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def load(base: str, tokens: list[str], case: tuple, think_s: float, seconds: float) -> np.ndarray:
    """One client per token, each on its own connection, for ``seconds``; the latencies in ms."""
    _, method, path, body = case
    latencies: list[float] = []
    conns = [Connection(base, t) for t in tokens]
    try:
        for c in conns:  # open the connections before the clock starts
            await c.open()
        stop = time.perf_counter() + seconds

        async def client(c: Connection, rng: random.Random) -> None:
            request = c.request_bytes(method, path, body)
            if think_s > 0:
                await asyncio.sleep(rng.uniform(0, think_s))  # clients do not start in step
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                status, answer = await c.send(request)
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    raise RuntimeError(f"{status}: {answer[:200]!r}")
                if think_s > 0:
                    await asyncio.sleep(rng.expovariate(1.0 / think_s))

        await asyncio.gather(*(client(c, random.Random(i)) for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    return np.array(latencies) * 1000.0


def run_loop(coro):  # type: ignore[no-untyped-def]
    """uvloop where installed (uvicorn's own choice), asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def report(backend: str, case: tuple, clients: int, think: str, ms: np.ndarray, seconds: float,
           cpu_ms: float) -> float:  # fmt: skip
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    print(f"{backend:10s} {case[0]:30s} clients={clients:2d} think={think:>6s}  n={len(ms):5d} "
          f"{len(ms) / seconds:6.0f} req/s  p50={p50:6.1f} ms  p99={p99:7.1f} ms  max={ms.max():7.1f} ms  "
          f"service CPU {cpu_ms:4.2f} ms/req", flush=True)  # fmt: skip
    return float(p99)


def service_cpu_s(pid: int) -> float:
    """CPU seconds used so far by the service process and its children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:  # itself, or ppid == pid
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def drain(engine: Engine, local_jobs: bool) -> None:
    """Wait for the embedded runner to finish the jobs of the last run, so that its work is
    not charged to the next one (the remote service's jobs wait for GPU workers instead)."""
    deadline = time.monotonic() + 300
    while local_jobs and time.monotonic() < deadline:
        with engine.connect() as conn:
            if not conn.scalar(text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")):
                return
        time.sleep(0.2)


def run(backend: str, url: str, clients: int, seconds: float, thinks: list[float], **env: str) -> list[tuple]:
    rows = []
    local_jobs = env.get("JOB_BACKEND", "local") == "local"
    with serve(url, **env) as srv:
        assert srv.proc is not None
        users = [srv.register() for _ in range(clients)]
        engine = create_engine(normalise_url(url))
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET tier='pro'"))
        tokens = [u["access"] for u in users]

        def measure(n: int, case: tuple, think: float, seconds: float) -> tuple[np.ndarray, float]:
            """Latencies (ms) and the service's CPU per request (ms), its jobs' work included."""
            drain(engine, local_jobs)
            cpu0 = service_cpu_s(srv.proc.pid)  # type: ignore[union-attr]
            ms = run_loop(load(srv.base, tokens[:n], case, think, seconds))
            drain(engine, local_jobs)  # the jobs these requests queued are part of their cost
            cpu = service_cpu_s(srv.proc.pid) - cpu0  # type: ignore[union-attr]
            return ms, cpu / len(ms) * 1000.0

        # Warm-up, not measured: every API process compiles its statements and schemas on its
        # first requests (with --web-workers, one process would otherwise start cold mid-run).
        run_loop(load(srv.base, tokens, GENERATE, 0.0, 2.0))
        for case in (GENERATE, ME):  # one client, no think time: the service time without queueing
            ms, cpu = measure(1, case, 0.0, min(seconds, 5.0))
            report(backend, case, 1, "0", ms, min(seconds, 5.0), cpu)
        for think in thinks:
            ms, cpu = measure(clients, GENERATE, think, seconds)
            p99 = report(backend, GENERATE, clients, f"{think:g} s", ms, seconds, cpu)
            rows.append((backend, think, len(ms) / seconds, p99))
        ms, cpu = measure(clients, ME, 0.0, seconds)
        report(backend, ME, clients, "0", ms, seconds, cpu)
        engine.dispose()
    return rows


def cpu_probe_s() -> float:
    """Seconds for a fixed pure-Python loop: on a shared host the speed of a core drifts, and
    runs are comparable only at similar readings."""
    t0, total = time.perf_counter(), 0
    for i in range(10_000_000):
        total += i
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0, help="per think time (default 20)")
    ap.add_argument("--think", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.0],
                    help="mean think times in seconds (default 1 0.5 0.25 0)")  # fmt: skip
    ap.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--web-workers", type=int, default=1,
                    help="uvicorn processes for PostgreSQL (WEB_CONCURRENCY; default 1)")  # fmt: skip
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"CPU probe: {cpu_probe_s():.2f} s for 10M Python additions (lower is faster)")  # fmt: skip
    rows: list[tuple] = []
    for backend in args.backend:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                rows += run(backend, f"sqlite:///{d}/bench.db", args.clients, args.seconds, args.think)
        else:
            try:
                with start_postgres() as pg, start_redis() as redis_url:
                    rows += run(backend, pg.new_database(), args.clients, args.seconds, args.think,
                                JOB_BACKEND="celery", REDIS_URL=redis_url,
                                WEB_CONCURRENCY=str(args.web_workers))  # fmt: skip
            except FileNotFoundError as e:
                print(f"postgresql skipped: {e}")
    print(f"\ntarget p99 <= {TARGET_P99_MS:g} ms for the quota-checked request, {args.clients} clients:")
    for backend, think, rate, p99 in rows:
        verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
        print(f"  {backend:10s} think {think:>4g} s  {rate:6.0f} req/s  p99 {p99:7.1f} ms  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
