"""Register, login, lockout, rotating refresh tokens, logout, API keys: on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
import time
import uuid

import httpx
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import PASSWORD, Server, auth, running_server


def _name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


def test_register_returns_the_public_user_and_never_the_password(server: Server):
    n = _name()
    with server.client() as c:
        r = c.post("/api/v1/auth/register", json={"email": f"{n}@Example.com", "username": n,
                                                  "password": PASSWORD, "full_name": "Music Producer"})  # fmt: skip
        assert r.status_code == 201, r.text
        body = r.json()
        assert set(body) == {"id", "email", "username", "full_name", "tier", "role", "is_active", "created_at"}
        assert body["email"] == f"{n}@example.com" and body["tier"] == "free" and body["role"] == "user"
        # A taken email gets the same answer (nothing revealed) and nothing is created.
        again = c.post("/api/v1/auth/register", json={"email": f"{n}@example.com", "username": n + "x",
                                                      "password": "another long passphrase"})  # fmt: skip
        assert again.status_code == 201 and set(again.json()) == set(body), again.text
        assert c.post("/api/v1/auth/login", json={"email": f"{n}@example.com",
                                                  "password": "another long passphrase"}).status_code == 401  # fmt: skip
        assert c.post("/api/v1/auth/login", json={"email": f"{n}@example.com", "password": PASSWORD}).status_code == 200
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE id = :i"), {"i": body["id"]}).scalar_one()
        count = conn.execute(text("SELECT count(*) FROM users WHERE email = :e OR username = :u"),
                             {"e": f"{n}@example.com", "u": n + "x"}).scalar_one()  # fmt: skip
    engine.dispose()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored and count == 1


def test_registration_takes_the_same_time_for_a_taken_email(server: Server):
    n = _name()
    with server.client() as c:
        def timed(email: str, username: str) -> float:
            t0 = time.perf_counter()
            r = c.post("/api/v1/auth/register", json={"email": email, "username": username, "password": PASSWORD})
            assert r.status_code == 201, r.text
            return time.perf_counter() - t0

        timed(f"{n}@example.com", n)
        new, taken = [], []
        for i in range(7):  # interleaved, so a neighbour's load on the shared CPU hits both alike
            new.append(timed(f"{n}{i}@example.com", f"{n}{i}"))
            taken.append(timed(f"{n}@example.com", f"{n}t{i}"))
    # Both hash the password (argon2id, ~50-300 ms); the insert is the only difference.
    ratio = statistics.median(taken) / statistics.median(new)
    assert 0.5 < ratio < 2.0, (sorted(taken), sorted(new))


def test_password_policy(server: Server):
    n = _name()
    with server.client() as c:
        # ASVS L2: length and a common-password list, no composition rules.
        for weak in ("Password1!", "Summer2026!", "Aa1aaaaaaa", "Password2026!", "qwertyuiop123", "monkey12345678",
                     "aaaaaaaaaaaaaaaa", "abcabcabcabcabc", f"{n}Abc123!xyz"):  # fmt: skip
            r = c.post("/api/v1/auth/register", json={"email": f"{n}@example.com", "username": n, "password": weak})
            assert r.status_code == 422 and r.json()["code"] in ("weak_password", "validation_error"), (weak, r.text)
        for good in ("correct horse battery staple", "alllowercaseletters", "звуковая дорожка"):
            m = _name()
            r = c.post("/api/v1/auth/register", json={"email": f"{m}@example.com", "username": m, "password": good})
            assert r.status_code == 201, (good, r.text)


def test_login_lockout_after_five_failures_locks_that_client_not_the_owner(server: Server):
    u = server.register()
    with server.client() as c:
        for _ in range(5):
            r = c.post("/api/v1/auth/login", json={"email": u["email"], "password": "WrongPass999"})
            assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
        r = c.post("/api/v1/auth/login", json={"email": u["email"], "password": PASSWORD})
        assert r.status_code == 429 and r.json()["code"] == "account_locked"
        assert 1 <= int(r.headers["Retry-After"]) <= 61  # the first lockout: a minute
    # The owner on another machine (here: another loopback address) signs in all the same.
    with server.client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as owner:
        r = owner.post("/api/v1/auth/login", json={"email": u["email"], "password": PASSWORD})
        assert r.status_code == 200, r.text
    with server.client() as c:
        # Unknown emails lock the same way (the answer reveals nothing about who is registered).
        ghost = f"{_name()}@example.com"
        codes = [c.post("/api/v1/auth/login", json={"email": ghost, "password": "x"}).status_code for _ in range(6)]
        assert codes == [401] * 5 + [429]


def test_refresh_rotates_and_reuse_revokes_the_family(server: Server):
    u = server.register()
    with server.client() as c:
        r1 = c.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh"]})
        assert r1.status_code == 200, r1.text
        new = r1.json()
        assert new["refresh_token"] != u["refresh"] and new["token_type"] == "bearer"
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {new['access_token']}"}).status_code == 200
        # The old (rotated) token comes back: theft. The whole family dies, the new token too.
        reuse = c.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh"]})
        assert reuse.status_code == 401 and reuse.json()["code"] == "refresh_token_reused"
        dead = c.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]})
        assert dead.status_code == 401 and dead.json()["code"] == "invalid_refresh_token"
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        hashes = conn.execute(text("SELECT token_hash FROM refresh_tokens WHERE user_id = :i"), {"i": u["id"]}).scalars().all()
    engine.dispose()
    assert len(hashes) == 2 and u["refresh"] not in hashes and new["refresh_token"] not in hashes


def test_logout_revokes_the_refresh_token_and_the_access_token(server: Server):
    u = server.register()
    with server.client() as c:
        assert c.get("/api/v1/auth/me", headers=auth(u)).status_code == 200
        assert c.post("/api/v1/auth/logout", json={"refresh_token": u["refresh"]}).status_code == 204
        r = c.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh"]})
        assert r.status_code == 401
        me = c.get("/api/v1/auth/me", headers=auth(u))
        assert me.status_code == 401 and me.json()["code"] == "invalid_token"


def test_me_needs_a_valid_token(server: Server):
    u = server.register()
    with server.client() as c:
        assert c.get("/api/v1/auth/me").status_code == 401
        bad = c.get("/api/v1/auth/me", headers={"Authorization": "Bearer " + u["access"][:-3] + "abc"})
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_token"
        me = c.get("/api/v1/auth/me", headers=auth(u))
        assert me.status_code == 200 and me.json()["email"] == u["email"]


def test_api_keys_create_list_use_revoke(server: Server):
    u, other = server.register(), server.register()
    with server.client() as c:
        r = c.post("/api/v1/auth/api-keys", json={"name": "studio"}, headers=auth(u))
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        assert key.startswith("amc_") and r.json()["prefix"] == key[:12]
        listed = c.get("/api/v1/auth/api-keys", headers=auth(u)).json()
        assert [k["name"] for k in listed] == ["studio"] and "key" not in listed[0]
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()["id"] == u["id"]
        assert c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}).json()["id"] == u["id"]
        # Someone else's key id is 404, and nothing is revoked.
        assert c.delete(f"/api/v1/auth/api-keys/{r.json()['id']}", headers=auth(other)).status_code == 404
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 200
        assert c.delete(f"/api/v1/auth/api-keys/{r.json()['id']}", headers=auth(u)).status_code == 204
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
        listed = c.get("/api/v1/auth/api-keys", headers=auth(u)).json()
        assert listed[0]["revoked"] is True and listed[0]["last_used_at"] is not None
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT key_hash, prefix FROM api_keys WHERE user_id = :i"), {"i": u["id"]}).one()
    engine.dispose()
    assert key not in row[0] and len(row[0]) == 64


def test_an_api_key_stops_at_its_expiry(server: Server):
    u = server.register()
    with server.client() as c:
        r = c.post("/api/v1/auth/api-keys", json={"name": "ci", "expires_in_days": 1}, headers=auth(u))
        assert r.status_code == 201 and r.json()["expires_at"] is not None, r.text
        key = r.json()["key"]
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 200
        engine = create_engine(normalise_url(server.database_url))
        with engine.begin() as conn:
            conn.execute(text("UPDATE api_keys SET expires_at = :t WHERE id = :i"),
                         {"t": "2020-01-01 00:00:00", "i": r.json()["id"]})  # fmt: skip
        engine.dispose()
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
        assert c.post("/api/v1/auth/api-keys", json={"name": "x", "expires_in_days": 0}, headers=auth(u)).status_code == 422


def test_registrations_per_client_are_limited(backend: str, request):  # type: ignore[no-untyped-def]
    """Each registration costs an argon2 hash: a remote service takes
    REGISTER_PER_CLIENT_PER_HOUR from one address, then locks that address (only) out."""
    with running_server(backend, request, REGISTER_PER_CLIENT_PER_HOUR="3") as s:

        def reg(c: httpx.Client) -> httpx.Response:
            n = _name()
            return c.post("/api/v1/auth/register", json={"email": f"{n}@example.com", "username": n,
                                                         "password": PASSWORD})  # fmt: skip

        with s.client() as c:
            codes = [reg(c).status_code for _ in range(4)]
            assert codes == [201, 201, 201, 429], codes
            r = reg(c)
            assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 61, r.text
        with s.client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            assert reg(other).status_code == 201
