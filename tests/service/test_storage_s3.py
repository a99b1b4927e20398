"""The S3 storage backend against a real S3-compatible HTTP server: moto in server mode on a
free port, boto3 talking to it over the wire through ``endpoint_url`` (no in-process mock).

The storage contract (round trip, missing keys, unsafe keys, atomic puts) runs on both
backends; then the service itself runs with ``STORAGE_PROVIDER=s3`` (environment variables
as ``.env.example`` names them) and a boto3 client checks what landed in the bucket.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import pytest
import soundfile as sf
from moto.server import ThreadedMotoServer

from app.service.settings import Settings, SettingsError
from app.service.storage import LocalStorage, S3Storage, Storage, StorageError, StorageNotFound, key
from tests.service.conftest import (
    REPO,
    Server,
    auth,
    free_port,
    running_server,
    wait_job,
    write_mix,
)

BUCKET = "amc-test"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "amc-test-key", "aws_secret_access_key": "amc-test-secret"}
MB = 1 << 20


@dataclass
class S3Endpoint:
    url: str
    admin: object  # a boto3 S3 client of our own, to look into the bucket

    def settings(self, bucket: str = BUCKET) -> Settings:
        return Settings(database_url="sqlite://", secret_key=secrets.token_urlsafe(48), storage_provider="s3",
                        s3_bucket=bucket, s3_endpoint_url=self.url, s3_region=REGION,
                        s3_access_key_id=CREDENTIALS["aws_access_key_id"],
                        s3_secret_access_key=CREDENTIALS["aws_secret_access_key"])  # fmt: skip

    def body(self, k: str, bucket: str = BUCKET) -> bytes:
        return self.admin.get_object(Bucket=bucket, Key=k)["Body"].read()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    """moto's S3 server on 127.0.0.1:<free port>, one bucket. It must start: no skip."""
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        admin = boto3.client("s3", endpoint_url=url, region_name=REGION, **CREDENTIALS)
        admin.create_bucket(Bucket=BUCKET)
        yield S3Endpoint(url, admin)
    finally:
        srv.stop()


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "s3":
        return S3Storage(request.getfixturevalue("s3").settings())
    return LocalStorage(tmp_path / "storage")


def _file(folder: Path, data: bytes, name: str | None = None) -> Path:
    p = folder / (name or uuid.uuid4().hex)
    p.write_bytes(data)
    return p


def _fresh(*rest: str) -> str:
    return key("t", uuid.uuid4().hex, *rest)


# -- the Storage contract, on both backends ---------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 70_000])
def test_round_trip(store: Storage, tmp_path: Path, size: int):
    data = os.urandom(size)
    k = _fresh("blob.bin")
    assert not store.exists(k)
    store.put_file(k, _file(tmp_path, data))
    assert store.exists(k)
    out = tmp_path / "out.bin"
    store.get_to_file(k, out)
    assert out.read_bytes() == data
    with store.open(k) as f:
        assert f.read() == data
    if isinstance(store, S3Storage):
        assert store.local_path(k) is None  # routes stream S3 objects instead of serving a path
    store.delete(k)
    assert not store.exists(k)
    store.delete(k)  # deleting what is not there is not an error


def test_large_blob_round_trips_and_goes_multipart_on_s3(store: Storage, tmp_path: Path, request):
    data = os.urandom(12 * MB)  # above boto3's 8 MB multipart threshold
    k = _fresh("big.bin")
    store.put_file(k, _file(tmp_path, data))
    out = tmp_path / "big.out"
    store.get_to_file(k, out)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    if isinstance(store, S3Storage):
        s3: S3Endpoint = request.getfixturevalue("s3")
        etag = s3.admin.head_object(Bucket=BUCKET, Key=k)["ETag"]  # type: ignore[attr-defined]
        assert etag.strip('"').endswith("-2"), etag  # assembled from two parts
        assert s3.body(k) == data


def test_missing_key_is_storage_not_found(store: Storage, tmp_path: Path):
    k = _fresh("nothing.wav")
    dest = tmp_path / "dest.wav"
    with pytest.raises(StorageNotFound, match=re.escape(k)):
        store.get_to_file(k, dest)
    assert not dest.exists()  # no empty or partial file left behind
    with pytest.raises(StorageNotFound, match=re.escape(k)):
        store.open(k)
    assert store.exists(k) is False
    assert issubclass(StorageNotFound, StorageError)


@pytest.mark.parametrize("part", ["", ".", "..", "a..b", "../etc", "a/b", "A", "x" * 101, "-x", "é", "a\\b",
                                  "a b", "a\x00b"])  # fmt: skip
def test_key_refuses_unsafe_parts(part: str):
    with pytest.raises(StorageError, match="unsafe storage key"):
        key("jobs", part, "input.wav")


@pytest.mark.parametrize(
    "bad", ["../x", "jobs/../x", "/jobs/x", "jobs//x", "jobs/X", "jobs/x/", "jobs/a b"]
)
def test_every_method_refuses_unsafe_keys(store: Storage, tmp_path: Path, bad: str):
    src = _file(tmp_path, b"data")
    for call in (lambda: store.put_file(bad, src), lambda: store.get_to_file(bad, tmp_path / "o"),
                 lambda: store.open(bad), lambda: store.exists(bad), lambda: store.delete(bad)):  # fmt: skip
        with pytest.raises(StorageError, match="unsafe storage key"):
            call()


def test_put_is_atomic_for_concurrent_readers(store: Storage, tmp_path: Path):
    """Readers racing an overwrite see the old object or the whole new one, never a mix."""
    old, new = os.urandom(9 * MB), os.urandom(9 * MB)  # multipart on S3
    f_old, f_new = _file(tmp_path, old), _file(tmp_path, new)
    k = _fresh("blob.bin")
    store.put_file(k, f_old)
    allowed = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    seen: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set() or not seen:
                with store.open(k) as f:
                    seen.append(hashlib.sha256(f.read()).hexdigest())
        except BaseException as e:  # reported below, not lost in the thread
            failures.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(4):
            store.put_file(k, f_new if i % 2 == 0 else f_old)
    finally:
        done.set()
        t.join(30)
    assert not failures, failures
    assert seen and set(seen) <= allowed, f"{len(seen)} reads, {len(set(seen) - allowed)} torn"
    with store.open(k) as f:
        assert f.read() == old  # the last put wins


def test_failed_put_keeps_the_previous_object(store: Storage, tmp_path: Path):
    k = _fresh("blob.bin")
    store.put_file(k, _file(tmp_path, b"version 1"))
    with pytest.raises(OSError):
        store.put_file(k, tmp_path / "no-such-source")
    with store.open(k) as f:
        assert f.read() == b"version 1"


# -- S3 specifics ------------------------------------------------------------------------------


def test_missing_bucket_or_dead_endpoint_stops_the_service_at_start(s3: S3Endpoint):
    with pytest.raises(StorageError, match=r"'amc-no-such-bucket'.*does not exist"):
        S3Storage(s3.settings("amc-no-such-bucket"))
    dead = replace(s3.settings(), s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="unreachable"):
        S3Storage(dead)


def test_failures_after_start_are_storage_errors_naming_bucket_and_key(
    s3: S3Endpoint, tmp_path: Path
):
    bucket = f"amc-gone-{uuid.uuid4().hex[:8]}"
    s3.admin.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    store = S3Storage(s3.settings(bucket))
    s3.admin.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    k = key("jobs", "abc", "result.wav")
    src = _file(tmp_path, b"x")
    calls = {"put": lambda: store.put_file(k, src), "get": lambda: store.get_to_file(k, tmp_path / "o"),
             "open": lambda: store.open(k), "delete": lambda: store.delete(k)}  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(StorageError) as ei:
            call()
        assert not isinstance(ei.value, StorageNotFound), name  # a missing bucket is no missing key
        assert bucket in str(ei.value) and s3.url in str(ei.value), (name, str(ei.value))


def test_s3_settings_come_from_the_variables_env_example_names(s3: S3Endpoint):
    names = set(
        re.findall(r"^#?\s*((?:AWS|S3)_[A-Z0-9_]+)=", (REPO / ".env.example").read_text(), re.M)
    )
    assert names == {"AWS_S3_BUCKET", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_REGION"}  # fmt: skip
    env = {"MODE": "remote", "DATABASE_URL": "sqlite://", "SECRET_KEY": secrets.token_urlsafe(48),
           "STORAGE_PROVIDER": "s3", "AWS_S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": s3.url,
           "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
           "AWS_REGION": REGION}  # fmt: skip
    st = Settings.from_env(env)
    assert (st.s3_bucket, st.s3_endpoint_url, st.s3_access_key_id, st.s3_secret_access_key,
            st.s3_session_token, st.s3_region) == (BUCKET, s3.url, "id", "secret", "token", REGION)  # fmt: skip
    store = S3Storage(st)
    sent: list[dict[str, str | bytes]] = []
    store.client.meta.events.register(
        "before-send", lambda request, **_: sent.append(dict(request.headers))
    )
    assert store.client.meta.region_name == REGION
    assert not store.exists(key("t", "nothing"))
    token = sent[-1]["X-Amz-Security-Token"]  # temporary credentials are sent as a triple
    assert (token.decode() if isinstance(token, bytes) else token) == "token"
    with pytest.raises(SettingsError, match="AWS_SECRET_ACCESS_KEY"):
        Settings.from_env({**env, "AWS_SECRET_ACCESS_KEY": ""})


# -- the service on S3 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(s3: S3Endpoint, request: pytest.FixtureRequest) -> Iterator[Server]:
    env = {"STORAGE_PROVIDER": "s3", "AWS_S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": s3.url, "AWS_REGION": REGION,
           "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"]}  # fmt: skip
    with running_server("sqlite", request, **env) as srv:
        yield srv
        assert not srv.storage_dir.exists() or not any(
            srv.storage_dir.rglob("*")
        )  # nothing went local


def test_sync_blob_round_trip_lands_in_the_bucket(s3_server: Server, s3: S3Endpoint):
    u = s3_server.register()
    data = os.urandom(3 * MB)
    sha = hashlib.sha256(data).hexdigest()
    with s3_server.client() as c:
        assert c.head(f"/api/v1/sync/blobs/{sha}", headers=auth(u)).status_code == 404
        assert c.put(f"/api/v1/sync/blobs/{sha}", headers=auth(u), content=data).status_code == 201
        head = c.head(f"/api/v1/sync/blobs/{sha}", headers=auth(u))
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        got = c.get(f"/api/v1/sync/blobs/{sha}", headers=auth(u))
        assert got.status_code == 200 and got.content == data
    assert s3.body(f"blobs/{u['id']}/{sha[:2]}/{sha}") == data


def test_process_file_input_and_result_live_in_the_bucket(
    s3_server: Server, s3: S3Endpoint, tmp_path: Path
):
    u = s3_server.register()
    mix = write_mix(tmp_path / "mix.wav", seconds=2.0)
    with s3_server.client() as c, mix.open("rb") as f:
        r = c.post("/api/v1/music/process-file", headers=auth(u), data={"operation": "master"},
                   files={"file": ("mix.wav", f, "audio/wav")})  # fmt: skip
        assert r.status_code == 202, r.text
        job = wait_job(c, u, r.json()["job_id"], timeout_s=60)
        assert job["status"] == "succeeded", job
        res = c.get(job["result_url"], headers=auth(u))
        assert res.status_code == 200 and res.headers["content-type"] == "audio/wav"
        assert job["job_id"] in res.headers["content-disposition"]
    assert s3.body(f"jobs/{job['job_id']}/input.wav") == mix.read_bytes()
    assert s3.body(f"jobs/{job['job_id']}/result.wav") == res.content
    audio, sr = sf.read(io.BytesIO(res.content))
    assert sr == 44100 and audio.shape == (2 * 44100, 2)
