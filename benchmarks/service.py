"""Latency of an authenticated, quota-checked request (POST /api/v1/music/generate: token
check, atomic quota UPSERT, job insert) at 50 concurrent clients, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/service.py [--requests 3000] [--clients 50] [--backend sqlite postgresql]

Starts its own uvicorn server (one process) and, for PostgreSQL, its own postgres server.
The load generator shares the machine's cores with the server; figures are end to end.
Target: p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, alembic_upgrade, free_port, start_postgres

TARGET_P99_MS = 25.0


@contextlib.contextmanager
def serve(url: str) -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="amc-bench-"))
    import os

    alembic_upgrade(url)
    env = {**os.environ, "MODE": "remote", "DATABASE_URL": url, "SECRET_KEY": secrets.token_urlsafe(48),
           "STORAGE_DIR": str(folder / "storage"), "AMC_HOME": str(folder), "AUTO_MIGRATE": "false",
           "RATE_BURST_PER_MINUTE": "1000000", "LOG_LEVEL": "WARNING"}  # fmt: skip
    srv = Server(f"http://127.0.0.1:{free_port()}", url, folder / "storage", env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def load(base: str, headers: dict[str, str], method: str, path: str, body: dict | None,
               n: int, clients: int) -> np.ndarray:  # fmt: skip
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits, headers=headers) as c:
        todo = iter(range(n))

        async def client() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                r = await c.request(method, path, json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code >= 300:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")

        for _ in range(clients):  # warm the connections
            await c.get("/health")
        await asyncio.gather(*(client() for _ in range(clients)))
    return np.array(latencies) * 1000.0


def run(backend: str, url: str, n: int, clients: int) -> bool:
    with serve(url) as srv:
        u = srv.register()
        engine = create_engine(normalise_url(url))
        with engine.begin() as conn:
            conn.execute(text("UPDATE users SET tier='pro' WHERE id=:i"), {"i": u["id"]})
        engine.dispose()
        headers = {"Authorization": f"Bearer {u['access']}"}
        ok = True
        cases = [
            ("generate (auth + quota + insert)", "POST", "/api/v1/music/generate", {"prompt": "bench"}),
            ("me (auth only)", "GET", "/api/v1/auth/me", None),
        ]
        # One client first: the service time of one request without queueing.
        for (label, method, path, body), k, m in [(c, 1, max(100, n // 10)) for c in cases] + [(c, clients, n) for c in cases]:
            n, clients_now = m, k
            t0 = time.perf_counter()
            ms = asyncio.run(load(srv.base, headers, method, path, body, n, clients_now))
            wall = time.perf_counter() - t0
            p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
            print(f"{backend:10s} {label:34s} n={n:5d} clients={clients_now:2d} p50={p50:6.1f} ms  p99={p99:6.1f} ms  "
                  f"max={ms.max():6.1f} ms  {n / wall:6.0f} req/s")  # fmt: skip
            if path.endswith("generate") and clients_now == clients:
                ok = ok and p99 <= TARGET_P99_MS
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    results = []
    for backend in args.backend:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                results.append(run(backend, f"sqlite:///{d}/bench.db", args.requests, args.clients))
        else:
            try:
                with start_postgres() as pg:
                    results.append(run(backend, pg.new_database(), args.requests, args.clients))
            except FileNotFoundError as e:
                print(f"postgresql skipped: {e}")
    print(f"target p99 <= {TARGET_P99_MS} ms for the quota-checked request: "
          f"{'met' if all(results) else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
