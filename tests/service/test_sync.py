"""Cloud sync: content-addressed blobs (HEAD, upload only missing), revisions, 409 on a stale
base, media names that try to leave the project, storage quota, cross-user 404."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.service.conftest import Server, auth, running_server


def _blob(n: int = 5000) -> tuple[bytes, str]:
    data = os.urandom(n)
    return data, hashlib.sha256(data).hexdigest()


def test_push_pull_and_stale_revision_conflict(server: Server):
    u = server.register()
    h = auth(u)
    data, sha = _blob()
    with server.client() as c:
        p = c.post("/api/v1/sync/projects", headers=h, json={"name": "Song.amcproj"})
        assert p.status_code == 201 and p.json()["head_revision"] == 0
        pid = p.json()["id"]
        assert c.post("/api/v1/sync/projects", headers=h, json={"name": "Song.amcproj"}).status_code == 409
        # Only missing blobs travel: HEAD says 404, upload, HEAD says 200, a second PUT is a no-op.
        assert c.head(f"/api/v1/sync/blobs/{sha}", headers=h).status_code == 404
        push = {"base_revision": 0, "project": {"schema": 1, "tracks": [{"clip": "media/kick.wav"}]},
                "media": {"media/kick.wav": sha}}  # fmt: skip
        missing = c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h, json=push)
        assert missing.status_code == 422 and missing.json()["missing"] == [sha]
        assert c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data).status_code == 201
        assert c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data).status_code == 200
        head = c.head(f"/api/v1/sync/blobs/{sha}", headers=h)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        r1 = c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h, json=push)
        assert r1.status_code == 201 and r1.json()["number"] == 1
        # A second device pushes from revision 0 again: conflict with both revisions, no overwrite.
        stale = c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h,
                       json={**push, "project": {"schema": 1, "tracks": []}})  # fmt: skip
        assert stale.status_code == 409
        assert stale.json()["code"] == "stale_revision"
        assert (stale.json()["base_revision"], stale.json()["head_revision"]) == (0, 1)
        got = c.get(f"/api/v1/sync/projects/{pid}/revisions/1", headers=h).json()
        assert got["project"] == push["project"] and got["media"] == push["media"]
        assert c.get(f"/api/v1/sync/blobs/{sha}", headers=h).content == data
        assert c.get(f"/api/v1/sync/projects/{pid}", headers=h).json()["head_revision"] == 1
        r2 = c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h, json={**push, "base_revision": 1})
        assert r2.status_code == 201 and r2.json()["number"] == 2


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "media/../../x.wav", "..",
                                  "media\\..\\x.wav", "media//x.wav", "C:/x.wav", "",
                                  "project.json", ".amcsync.json", "autosave/project.json", "media/.hidden",
                                  "media", "renders/../project.json"])  # fmt: skip
def test_media_names_that_leave_the_project_are_rejected(server: Server, name: str):
    u = server.register()
    h = auth(u)
    data, sha = _blob(100)
    with server.client() as c:
        pid = c.post("/api/v1/sync/projects", headers=h, json={"name": "P"}).json()["id"]
        c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data)
        r = c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h,
                   json={"base_revision": 0, "project": {}, "media": {name: sha}})  # fmt: skip
        assert r.status_code == 422 and r.json()["code"] == "invalid_media_name", r.text


def test_blob_names_must_be_sha256_and_match_the_body(server: Server):
    u = server.register()
    h = auth(u)
    data, sha = _blob(100)
    with server.client() as c:
        for bad in ("..%2F..%2Fetc%2Fpasswd", "A" * 64, sha[:-1], sha + "0"):
            assert c.put(f"/api/v1/sync/blobs/{bad}", headers=h, content=data).status_code in (404, 422)
        wrong = c.put(f"/api/v1/sync/blobs/{'0' * 64}", headers=h, content=data)
        assert wrong.status_code == 422 and wrong.json()["code"] == "hash_mismatch"
        assert c.head(f"/api/v1/sync/blobs/{'0' * 64}", headers=h).status_code == 404
    assert not any(p.name == "passwd" for p in server.storage_dir.rglob("*"))


def test_other_users_projects_and_blobs_are_404(server: Server):
    owner, other = server.register(), server.register()
    data, sha = _blob()
    with server.client() as c:
        pid = c.post("/api/v1/sync/projects", headers=auth(owner), json={"name": "Mine"}).json()["id"]
        c.put(f"/api/v1/sync/blobs/{sha}", headers=auth(owner), content=data)
        c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=auth(owner),
               json={"base_revision": 0, "project": {"a": 1}, "media": {"media/m.wav": sha}})  # fmt: skip
        assert c.get(f"/api/v1/sync/projects/{pid}", headers=auth(other)).status_code == 404
        assert c.get(f"/api/v1/sync/projects/{pid}/revisions/1", headers=auth(other)).status_code == 404
        assert c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=auth(other),
                      json={"base_revision": 1, "project": {}}).status_code == 404  # fmt: skip
        assert c.get(f"/api/v1/sync/blobs/{sha}", headers=auth(other)).status_code == 404
        assert c.head(f"/api/v1/sync/blobs/{sha}", headers=auth(other)).status_code == 404
        assert c.get("/api/v1/sync/projects", headers=auth(other)).json() == []
        # The other user cannot reference the owner's blob by hash either.
        p2 = c.post("/api/v1/sync/projects", headers=auth(other), json={"name": "Theirs"}).json()["id"]
        r = c.post(f"/api/v1/sync/projects/{p2}/revisions", headers=auth(other),
                   json={"base_revision": 0, "project": {}, "media": {"media/m.wav": sha}})  # fmt: skip
        assert r.status_code == 422 and r.json()["missing"] == [sha]


def test_storage_quota_per_tier(request: pytest.FixtureRequest):
    with running_server("sqlite", request, STORAGE_QUOTA_MB_FREE="0.01") as srv:  # 10 KiB
        u = srv.register()
        h = auth(u)
        a, sha_a = _blob(6000)
        b, sha_b = _blob(6000)
        with srv.client() as c:
            assert c.put(f"/api/v1/sync/blobs/{sha_a}", headers=h, content=a).status_code == 201
            r = c.put(f"/api/v1/sync/blobs/{sha_b}", headers=h, content=b)
            assert r.status_code == 413 and r.json()["code"] == "storage_quota_exceeded"
            usage = c.get("/api/v1/usage", headers=h).json()
            assert usage["storage_bytes"] == 6000 and usage["storage_limit_bytes"] == 10485


def test_a_revision_number_out_of_range_is_422_not_500(server: Server):
    """Found by schemathesis: a number past 64 bits overflowed the database driver (500)."""
    u = server.register()
    h = auth(u)
    with server.client() as c:
        pid = c.post("/api/v1/sync/projects", headers=h, json={"name": "Range.amcproj"}).json()["id"]
        for n in ("-277057578437108662272", str(2**40), "-1"):
            r = c.get(f"/api/v1/sync/projects/{pid}/revisions/{n}", headers=h)
            assert r.status_code == 422, (n, r.status_code, r.text)
        assert c.get(f"/api/v1/sync/projects/{pid}/revisions/5", headers=h).status_code == 404
