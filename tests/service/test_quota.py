"""Tier quotas counted exactly under concurrency, burst limit, rate-limit headers, admin tiers."""

from __future__ import annotations

import asyncio
import collections
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.service.admin import promote
from app.service.db import normalise_url
from app.service.settings import Settings
from tests.service.conftest import Server, auth, running_server

GEN = {"prompt": "Create upbeat jazz music with saxophone", "genre": "jazz", "duration": 60}


async def _burst(base: str, headers: dict[str, str], n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        start = asyncio.Event()

        async def one() -> httpx.Response:
            await start.wait()
            return await c.post("/api/v1/music/generate", headers=headers, json=GEN)

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def _count_jobs(server: Server, user_id: str) -> int:
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM jobs WHERE user_id = :u"), {"u": user_id}).scalar_one()
    engine.dispose()
    return int(n)


def test_300_concurrent_requests_from_a_free_user_admit_exactly_100(server: Server):
    u = server.register()
    responses = asyncio.run(_burst(server.base, auth(u), 300))
    codes = collections.Counter(r.status_code for r in responses)
    assert codes == {202: 100, 429: 200}, codes
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses if r.status_code == 202)
    assert remaining == list(range(100)), "each admitted request saw its own count"
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["code"] == "rate_limited" and refused.json()["scope"] == "daily"
    assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["X-RateLimit-Remaining"] == "0"
    assert _count_jobs(server, u["id"]) == 100
    with server.client() as c:
        usage = c.get("/api/v1/usage", headers=auth(u)).json()
    assert usage["requests_today"] == 100 and usage["remaining"] == 0 and usage["daily_limit"] == 100


def test_rate_limit_headers(server: Server):
    u = server.register()
    with server.client() as c:
        r = c.post("/api/v1/music/generate", headers=auth(u), json=GEN)
        assert r.status_code == 202
        assert r.headers["X-RateLimit-Limit"] == "100" and r.headers["X-RateLimit-Remaining"] == "99"
        reset = datetime.fromtimestamp(int(r.headers["X-RateLimit-Reset"]), UTC)
        assert reset.hour == 0 and reset.minute == 0 and reset > datetime.now(UTC)
        # Reading usage or job status does not count.
        c.get("/api/v1/usage", headers=auth(u))
        assert c.get("/api/v1/usage", headers=auth(u)).json()["requests_today"] == 1


def test_admin_changes_tiers_and_the_new_quota_applies(server: Server):
    admin, user = server.register(), server.register()
    settings = Settings(mode="remote", database_url=server.database_url, secret_key=server.env["SECRET_KEY"])
    assert promote(settings, admin["email"]) is True
    assert promote(settings, "nobody@example.com") is False
    with server.client() as c:
        path = f"/api/v1/admin/users/{user['id']}/tier"
        assert c.put(path, headers=auth(user), json={"tier": "pro"}).status_code == 403
        assert c.put(path, headers=auth(admin), json={"tier": "gold"}).status_code == 422
        assert c.put("/api/v1/admin/users/" + "f" * 32 + "/tier", headers=auth(admin),
                     json={"tier": "pro"}).status_code == 404  # fmt: skip
        r = c.put(path, headers=auth(admin), json={"tier": "premium"})
        assert r.status_code == 200 and r.json()["tier"] == "premium"
        g = c.post("/api/v1/music/generate", headers=auth(user), json=GEN)
        assert g.headers["X-RateLimit-Limit"] == "1000"
        assert c.get("/api/v1/usage", headers=auth(user)).json()["storage_limit_bytes"] == 10 << 30


def test_per_minute_burst_limit(backend: str, request: pytest.FixtureRequest):
    with running_server(backend, request, RATE_BURST_PER_MINUTE="5") as srv:
        u = srv.register()
        with srv.client() as c:
            codes = [c.post("/api/v1/music/generate", headers=auth(u), json=GEN) for _ in range(7)]
        assert [r.status_code for r in codes] in ([202] * 5 + [429] * 2, [202] * 6 + [429])  # a minute may roll over
        last = codes[-1]
        assert last.json()["scope"] == "burst" and 1 <= int(last.headers["Retry-After"]) <= 60
        accepted = sum(r.status_code == 202 for r in codes)
        assert last.headers["X-RateLimit-Remaining"] == str(100 - accepted)  # the day's count, untouched
        assert _count_jobs(srv, u["id"]) == accepted  # a refused request leaves no job


def test_a_generate_with_a_bad_style_neither_counts_nor_leaves_a_job(server: Server):
    """A request refused for its body (an unknown style) is refused before anything is counted."""
    u = server.register()
    with server.client() as c:
        ok = c.post("/api/v1/music/generate", headers=auth(u), json=GEN)
        bad = c.post("/api/v1/music/generate", headers=auth(u), json={**GEN, "style": "no-such-style"})
        usage = c.get("/api/v1/usage", headers=auth(u)).json()
    assert ok.status_code == 202 and bad.status_code == 422, bad.text
    assert bad.json()["code"] == "validation_error" and "style" in bad.json()["detail"]
    assert usage["requests_today"] == 1 and _count_jobs(server, u["id"]) == 1
