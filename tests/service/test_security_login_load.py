"""Sign-ins hash passwords outside any write transaction: while clients sign in in loops, other
writes are not queued behind the hashing (on SQLite a transaction holds the database's one
write lock). A real server on SQLite and PostgreSQL; bounded loops."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service.conftest import PASSWORD, Server, auth

LOGIN_LOOPS = 8
SECONDS = 6.0


def test_writes_are_not_queued_behind_password_hashing(server: Server):
    users = [server.register() for _ in range(LOGIN_LOOPS)]
    writer = server.register()
    stop = threading.Event()
    logins: list[int] = []

    def sign_in_loop(u: dict[str, str]) -> None:
        with server.client() as c:
            while not stop.is_set():
                logins.append(c.post("/api/v1/auth/login", json={"email": u["email"], "password": PASSWORD}).status_code)

    threads = [threading.Thread(target=sign_in_loop, args=(u,)) for u in users]
    for t in threads:
        t.start()
    latencies: list[float] = []
    statuses: list[int] = []
    try:
        time.sleep(0.5)  # the loops are hashing
        deadline = time.monotonic() + SECONDS
        with server.client() as c:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    r = c.post("/api/v1/auth/api-keys", json={"name": "k"}, headers=auth(writer), timeout=30)
                    statuses.append(r.status_code)
                except httpx.TimeoutException:
                    statuses.append(0)
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert logins and set(logins) == {200}, set(logins)
    assert statuses and set(statuses) == {201}, statuses
    median = statistics.median(latencies)
    # Hashing ~8 passwords at once on a shared CPU is slow; the writes must not wait for it.
    print(f"write median {median * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms over {len(latencies)} writes; "
          f"{len(logins)} sign-ins meanwhile")
    assert median < 0.5 and max(latencies) < 2.0, (median, max(latencies), len(latencies), len(logins))


def test_concurrent_failed_sign_ins_are_all_counted_and_none_fails(server: Server):
    """Twelve wrong passwords at once for one email from one client: every answer is 401 or
    429 (the first failure's counter row is created once, never a 500 on its key), and the
    client is locked out of that account afterwards."""
    u = server.register()

    def wrong(_: int) -> int:
        with server.client() as c:
            return c.post("/api/v1/auth/login", json={"email": u["email"], "password": "not the password"}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(wrong, range(12)))
    assert set(codes) <= {401, 429} and codes.count(401) >= 5, codes
    with server.client() as c:
        assert c.post("/api/v1/auth/login", json={"email": u["email"], "password": PASSWORD}).status_code == 429
