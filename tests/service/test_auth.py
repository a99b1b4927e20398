"""Register, login, lockout, rotating refresh tokens, logout, API keys: on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import PASSWORD, Server, auth


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
        again = c.post("/api/v1/auth/register", json={"email": f"{n}@example.com", "username": n + "x",
                                                      "password": PASSWORD})  # fmt: skip
        assert again.status_code == 409 and again.json()["code"] == "already_registered"
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT password_hash FROM users WHERE id = :i"), {"i": body["id"]}).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_password_policy(server: Server):
    n = _name()
    with server.client() as c:
        for weak in ("short1A", "alllowercaseletters", "1234567890123", f"{n}Abc123!"):
            r = c.post("/api/v1/auth/register", json={"email": f"{n}@example.com", "username": n, "password": weak})
            assert r.status_code == 422 and r.json()["code"] == "weak_password", (weak, r.text)


def test_login_lockout_after_five_failures_even_with_the_right_password(server: Server):
    u = server.register()
    with server.client() as c:
        for _ in range(5):
            r = c.post("/api/v1/auth/login", json={"email": u["email"], "password": "WrongPass999"})
            assert r.status_code == 401 and r.json()["code"] == "invalid_credentials"
        r = c.post("/api/v1/auth/login", json={"email": u["email"], "password": PASSWORD})
        assert r.status_code == 429 and r.json()["code"] == "account_locked"
        assert int(r.headers["Retry-After"]) > 800
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


def test_logout_revokes_the_refresh_token(server: Server):
    u = server.register()
    with server.client() as c:
        assert c.post("/api/v1/auth/logout", json={"refresh_token": u["refresh"]}).status_code == 204
        r = c.post("/api/v1/auth/refresh", json={"refresh_token": u["refresh"]})
        assert r.status_code == 401


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
        assert c.get("/api/v1/auth/api-keys", headers=auth(u)).json()[0]["revoked"] is True
    engine = create_engine(normalise_url(server.database_url))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT key_hash, prefix FROM api_keys WHERE user_id = :i"), {"i": u["id"]}).one()
    engine.dispose()
    assert key not in row[0] and len(row[0]) == 64
