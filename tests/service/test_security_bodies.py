"""Request bodies against a real server (SQLite and PostgreSQL): a body is refused before it is
read when the caller is not signed in, and counted while it streams (chunked or not)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.attacks import folder_bytes, hwm_bytes, json_bomb_prefix, rss_bytes, stream_body
from tests.service.conftest import Server, auth, running_server

MiB = 1 << 20


@pytest.fixture(scope="module")
def srv(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("svc-tmp")
    with running_server(backend, request, TMPDIR=str(tmp), MAX_UPLOAD_MB="16") as s:
        s.env["TMPDIR"] = str(tmp)
        yield s


def _tmp(srv: Server) -> Path:
    return Path(srv.env["TMPDIR"])


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_anonymous_upload_is_refused_before_its_body_is_read(srv: Server, chunked: bool):
    # Under the upload limit, so only the missing sign-in can refuse it.
    r = stream_body(srv.base, "POST", "/api/v1/music/process-file", total_bytes=15 * MiB, chunked=chunked,
                    headers={"Content-Type": "multipart/form-data; boundary=x"},
                    prefix=b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n')  # fmt: skip
    assert r.status == 401, r
    assert r.closed_early and r.sent_bytes < 8 * MiB, r  # what socket buffers hold, not the body
    assert folder_bytes(_tmp(srv)) == 0


def test_a_bad_token_is_refused_before_the_body_too(srv: Server):
    r = stream_body(srv.base, "PUT", "/api/v1/sync/blobs/" + "a" * 64, total_bytes=15 * MiB,
                    headers={"Authorization": "Bearer not-a-token"})  # fmt: skip
    assert r.status == 401 and b"invalid_token" in r.body, r
    assert r.sent_bytes < 8 * MiB, r


def test_a_chunked_upload_over_the_limit_stops_at_the_limit(srv: Server):
    u = srv.register()
    r = stream_body(srv.base, "PUT", "/api/v1/sync/blobs/" + "b" * 64, total_bytes=64 * MiB, headers=auth(u))
    assert r.status == 413 and b"payload_too_large" in r.body, r
    assert r.sent_bytes < 24 * MiB, r
    assert folder_bytes(_tmp(srv)) == 0  # the partial blob's temp folder is gone


@pytest.mark.parametrize("path", ["/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh"])
def test_a_chunked_json_body_is_capped_while_it_streams(srv: Server, path: str):
    before = rss_bytes(srv.proc.pid)  # type: ignore[union-attr]
    r = stream_body(srv.base, "POST", path, total_bytes=150 * MiB, headers={"Content-Type": "application/json"},
                    prefix=json_bomb_prefix(), filler=b"a")  # fmt: skip
    assert r.status == 413 and b"payload_too_large" in r.body, r
    assert r.sent_bytes < 8 * MiB, r
    assert rss_bytes(srv.proc.pid) - before < 40 * MiB  # type: ignore[union-attr]
    # The same with a declared length: refused before a byte is read.
    r = stream_body(srv.base, "POST", path, total_bytes=150 * MiB, chunked=False,
                    headers={"Content-Type": "application/json"}, prefix=json_bomb_prefix(), filler=b"a")  # fmt: skip
    assert r.status == 413 and r.sent_bytes < 8 * MiB, r


def test_ten_anonymous_streams_leave_memory_and_disk_alone(srv: Server):
    """The issue's figure, scaled to the test (the benchmark streams 1 GiB each)."""
    pid = srv.proc.pid  # type: ignore[union-attr]
    results: list[object] = []
    targets = ["/api/v1/music/process-file", "/api/v1/auth/login"] * 5

    def one(path: str) -> None:
        results.append(stream_body(srv.base, "POST", path, total_bytes=128 * MiB, filler=b"a",
                                   headers={"Content-Type": "application/json"}, deadline_s=60))  # fmt: skip

    threads = [threading.Thread(target=one, args=(p,)) for p in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 10
    assert all(r.status in (401, 413) for r in results), results  # type: ignore[attr-defined]
    assert hwm_bytes(pid) < 400 * MiB
    assert folder_bytes(_tmp(srv)) == 0
    # The service still answers.
    with srv.client() as c:
        assert c.get("/health").status_code == 200
