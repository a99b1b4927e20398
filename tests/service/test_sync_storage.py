"""Freeing sync storage: deleting a server project frees the media only it named; uploads no
revision ever named are swept after a day; a freed blob uploaded again, or named by a push
racing the sweep, is never left as a row without its object."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.service import db
from app.service.blobs import blob_key, free_unreferenced, referenced, sweep_unreferenced
from app.service.models import Blob, utcnow
from app.service.storage import LocalStorage
from tests.service.conftest import PASSWORD, Server, auth

DAY = timedelta(days=1)


def _blob(n: int = 3000) -> tuple[bytes, str]:
    data = os.urandom(n)
    return data, hashlib.sha256(data).hexdigest()


@pytest.fixture
def factory(server: Server) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(server.database_url)
    yield db.make_sessionmaker(engine)
    engine.dispose()


def _push(c: httpx.Client, h: dict, pid: str, base: int, media: dict[str, str]) -> httpx.Response:
    return c.post(f"/api/v1/sync/projects/{pid}/revisions", headers=h,
                  json={"base_revision": base, "project": {"v": base}, "media": media})  # fmt: skip


def _project(c: httpx.Client, h: dict, name: str) -> str:
    r = c.post("/api/v1/sync/projects", headers=h, json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _upload(c: httpx.Client, h: dict, *blobs: tuple[bytes, str]) -> None:
    for data, sha in blobs:
        assert c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data).status_code == 201


def _age(factory: sessionmaker[Session], user_id: str, *shas: str) -> None:
    with factory() as s, s.begin():
        s.execute(update(Blob).where(Blob.user_id == user_id, Blob.sha256.in_(shas))
                  .values(created_at=utcnow() - 2 * DAY))  # fmt: skip


def test_deleting_a_project_frees_the_media_only_it_named(server: Server):
    u, other = server.register(), server.register()
    h = auth(u)
    (a, sha_a), (b, sha_b), (c_, sha_c) = _blob(1000), _blob(2000), _blob(4000)
    storage = LocalStorage(server.storage_dir)
    with server.client() as c:
        p1, p2 = _project(c, h, "One.amcproj"), _project(c, h, "Two.amcproj")
        _upload(c, h, (a, sha_a), (b, sha_b), (c_, sha_c))
        assert _push(c, h, p1, 0, {"media/a.wav": sha_a, "media/b.wav": sha_b}).status_code == 201
        assert _push(c, h, p1, 1, {"media/a.wav": sha_a}).status_code == 201  # b stays in the history
        assert _push(c, h, p2, 0, {"media/a.wav": sha_a, "media/c.wav": sha_c}).status_code == 201
        assert c.get("/api/v1/usage", headers=h).json()["storage_bytes"] == 7000

        assert c.delete(f"/api/v1/sync/projects/{p1}", headers=auth(other)).status_code == 404
        r = c.delete(f"/api/v1/sync/projects/{p1}", headers=h)
        assert r.status_code == 200, r.text
        assert r.json() == {"id": p1, "name": "One.amcproj", "revisions_deleted": 2,
                            "blobs_freed": 1, "bytes_freed": 2000}  # fmt: skip
        # b is gone (row and object); a is still named by Two, c was never One's.
        assert c.head(f"/api/v1/sync/blobs/{sha_b}", headers=h).status_code == 404
        assert not storage.exists(blob_key(u["id"], sha_b))
        for data, sha in ((a, sha_a), (c_, sha_c)):
            assert c.get(f"/api/v1/sync/blobs/{sha}", headers=h).content == data
        assert c.get(f"/api/v1/sync/projects/{p1}", headers=h).status_code == 404
        assert c.get(f"/api/v1/sync/projects/{p1}/revisions/1", headers=h).status_code == 404
        assert [p["id"] for p in c.get("/api/v1/sync/projects", headers=h).json()] == [p2]
        assert c.get("/api/v1/usage", headers=h).json()["storage_bytes"] == 5000
        assert c.delete(f"/api/v1/sync/projects/{p1}", headers=h).status_code == 404

        # A push naming the freed blob is told it is missing; uploaded again, it syncs.
        missing = _push(c, h, p2, 1, {"media/b.wav": sha_b})
        assert missing.status_code == 422 and missing.json()["missing"] == [sha_b]
        _upload(c, h, (b, sha_b))
        assert _push(c, h, p2, 1, {"media/b.wav": sha_b}).status_code == 201
        assert c.get(f"/api/v1/sync/blobs/{sha_b}", headers=h).content == b
        # The name is free again.
        assert _project(c, h, "One.amcproj")


def test_uploads_no_revision_names_are_swept_after_a_day(server: Server, factory):  # type: ignore[no-untyped-def]
    u = server.register()
    h = auth(u)
    storage = LocalStorage(server.storage_dir)
    (d, sha_d), (e, sha_e), (f, sha_f) = _blob(), _blob(), _blob()
    with server.client() as c:
        pid = _project(c, h, "Song.amcproj")
        _upload(c, h, (d, sha_d), (e, sha_e), (f, sha_f))
        assert _push(c, h, pid, 0, {"media/e.wav": sha_e}).status_code == 201
    _age(factory, u["id"], sha_d, sha_e)  # d and e two days old; f just uploaded (a sync in progress)

    freed = sweep_unreferenced(factory, storage)
    assert freed[0] >= 1  # other tests' users may have old unreferenced blobs too
    with factory() as s:
        left = set(s.scalars(select(Blob.sha256).where(Blob.user_id == u["id"])))
    assert left == {sha_e, sha_f}
    assert not storage.exists(blob_key(u["id"], sha_d))
    assert storage.exists(blob_key(u["id"], sha_e)) and storage.exists(blob_key(u["id"], sha_f))
    assert sweep_unreferenced(factory, storage) == (0, 0)  # nothing left to do


class _FailingDeletes(LocalStorage):
    def delete(self, key: str) -> None:
        raise OSError("bucket unreachable")


def test_a_blob_whose_object_cannot_be_deleted_keeps_its_row(server: Server, factory):  # type: ignore[no-untyped-def]
    u = server.register()
    data, sha = _blob()
    with server.client() as c:
        _upload(c, auth(u), (data, sha))
    _age(factory, u["id"], sha)
    assert free_unreferenced(factory, _FailingDeletes(server.storage_dir), u["id"],
                             uploaded_before=utcnow()) == (0, 0)  # fmt: skip
    with server.client() as c:  # still listed and still readable: rows and objects in step
        assert c.get(f"/api/v1/sync/blobs/{sha}", headers=auth(u)).content == data
    assert free_unreferenced(factory, LocalStorage(server.storage_dir), u["id"], uploaded_before=utcnow()) == (1, 3000)
    assert not LocalStorage(server.storage_dir).exists(blob_key(u["id"], sha))


def test_a_blob_uploaded_again_while_it_is_freed_keeps_its_object(server: Server, factory):  # type: ignore[no-untyped-def]
    """The row comes back between the two steps (an upload of the same content): the object,
    now the upload's, is not deleted."""
    u = server.register()
    data, sha = _blob()
    storage = LocalStorage(server.storage_dir)
    with server.client() as c:
        _upload(c, auth(u), (data, sha))
    sessions = 0

    def racing_factory():  # type: ignore[no-untyped-def]
        nonlocal sessions
        sessions += 1
        if sessions == 2:  # step 1 has deleted the row: the upload records it again
            with factory() as s, s.begin():
                s.add(Blob(user_id=u["id"], sha256=sha, size=len(data)))
        return factory()

    assert free_unreferenced(racing_factory, storage, u["id"], candidates={sha}) == (0, 0)
    assert storage.exists(blob_key(u["id"], sha))
    with server.client() as c:
        assert c.get(f"/api/v1/sync/blobs/{sha}", headers=auth(u)).content == data


def test_pushes_racing_the_sweep_never_name_a_missing_blob(server: Server, factory):  # type: ignore[no-untyped-def]
    """A client pushes a revision naming an old blob no revision names (HEAD said it is there)
    while the sweep frees it: either the push lands first and the blob is kept, or the push
    is told the blob is missing and uploads it again. Every named blob is readable after."""
    u = server.register()
    h = auth(u)
    storage = LocalStorage(server.storage_dir)
    with server.client() as c:
        pid = _project(c, h, "Race.amcproj")
        base = 0
        for i in range(12):
            data, sha = _blob(500)
            _upload(c, h, (data, sha))
            _age(factory, u["id"], sha)
            sweeper = threading.Thread(target=sweep_unreferenced, args=(factory, storage))
            sweeper.start()
            r = _push(c, h, pid, base, {f"media/{i}.wav": sha})
            if r.status_code == 422:
                assert r.json()["missing"] == [sha]
                _upload(c, h, (data, sha))
                r = _push(c, h, pid, base, {f"media/{i}.wav": sha})
            sweeper.join()
            assert r.status_code == 201, r.text
            base = r.json()["number"]
        with factory() as s:
            named = referenced(s, u["id"])
        assert len(named) == 12
        for sha in named:
            assert storage.exists(blob_key(u["id"], sha))
            assert c.head(f"/api/v1/sync/blobs/{sha}", headers=h).status_code == 200


def test_an_upload_puts_back_an_object_freed_under_it(tmp_path: Path):
    """The object is written, then (a concurrent freeing of the same content) deleted before
    the upload records its row: the upload writes it again."""
    from fastapi.testclient import TestClient

    from app.service.app import create_app
    from app.service.settings import Settings

    class FreedUnderIt(LocalStorage):
        def put_file(self, key: str, src: Path) -> None:
            super().put_file(key, src)
            if not getattr(self, "freed", False):
                self.freed = True
                self.delete(key)

    settings = Settings(mode="remote", database_url=f"sqlite:///{tmp_path / 's.db'}", secret_key="k" * 40,
                        storage_dir=tmp_path / "storage")  # fmt: skip
    app = create_app(settings)
    data, sha = _blob()
    with TestClient(app) as c:
        app.state.storage = FreedUnderIt(tmp_path / "storage")
        assert c.post("/api/v1/auth/register", json={"email": "a@example.com", "username": "aaa",
                                                     "password": PASSWORD}).status_code == 201  # fmt: skip
        token = c.post("/api/v1/auth/login", json={"email": "a@example.com", "password": PASSWORD}).json()
        h = {"Authorization": f"Bearer {token['access_token']}"}
        assert c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data).status_code == 201
        assert app.state.storage.freed
        assert c.get(f"/api/v1/sync/blobs/{sha}", headers=h).content == data
