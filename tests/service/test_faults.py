"""The fault suite: a real server killed with SIGKILL in the middle of an upload, a storage write,
a job and a sync push, then restarted; after each restart the database and the folders must
agree. Run on SQLite and PostgreSQL.

Checked after every restart (:func:`audit`): no scratch folder in the service's TMPDIR, no
partial write, no job folder without its job, no blob object without its row (nor a row
without its object), every job finished (resumed, or failed with a code and a reason; never
``succeeded`` with an error), the quota charged exactly once per job, and a project's head
revision is its last revision. ``AMC_FAULT_CYCLES`` (default 20) sets the number of kill and
restart cycles of the slow test; the quick one runs each fault once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from app.service.db import normalise_url
from tests.service.conftest import Server, auth, running_server, write_mix

FAULTS = ("upload", "storage_write", "job", "sync_push")


@dataclass
class Tally:
    cycles: int = 0
    by_fault: dict[str, int] = field(default_factory=dict)
    orphaned_files: int = 0
    inconsistent_rows: int = 0
    problems: list[str] = field(default_factory=list)


def _raw_post(base: str, path: str, headers: dict[str, str], body: bytes, *, send_fraction: float,
              wait_answer: bool) -> None:  # fmt: skip
    """Send ``body`` (up to ``send_fraction`` of it) on a socket of its own; the server is
    killed under it, so every error is expected."""
    url = urlsplit(base)
    try:
        with socket.create_connection((url.hostname, url.port), timeout=20) as s:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"  # fmt: skip
            s.sendall(head.encode())
            s.sendall(body[: int(len(body) * send_fraction)])
            if wait_answer:
                s.recv(100)
    except OSError:
        pass


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = "amcfaultboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\nmaster\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mix.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return body, f"multipart/form-data; boundary={boundary}"


def _kill_after(srv: Server, delay_s: float) -> None:
    time.sleep(delay_s)
    assert srv.proc is not None
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(15)
    srv.proc = None


def _inject(srv: Server, fault: str, user: dict[str, str], mixes: dict[str, Path], rng: random.Random) -> None:
    """Start the operation ``fault`` names and SIGKILL the service in the middle of it."""
    h = auth(user)
    if fault in ("upload", "storage_write"):
        body, ctype = _multipart(mixes["big"])
        fraction = rng.uniform(0.2, 0.9) if fault == "upload" else 1.0
        t = threading.Thread(target=_raw_post, args=(srv.base, "/api/v1/music/process-file",
                                                     {**h, "Content-Type": ctype}, body),
                             kwargs={"send_fraction": fraction, "wait_answer": fault == "storage_write"})  # fmt: skip
        t.start()
        # Mid-body, or after the body while the file is checked, stored and its job recorded.
        _kill_after(srv, rng.uniform(0.05, 0.3) if fault == "upload" else rng.uniform(0.0, 0.25))
        t.join(30)
    elif fault == "job":
        with srv.client() as c, mixes["long"].open("rb") as f:
            r = c.post("/api/v1/music/process-file", headers=h, data={"operation": "master"},
                       files={"file": ("long.wav", f, "audio/wav")})  # fmt: skip
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while c.get(f"/api/v1/music/jobs/{job_id}", headers=h).json()["status"] == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        _kill_after(srv, rng.uniform(0.0, 1.5))
    elif fault == "sync_push":
        with srv.client() as c:
            p = c.post("/api/v1/sync/projects", headers=h, json={"name": f"P{rng.randrange(10**9)}.amcproj"})
            pid = p.json()["id"]
        data = rng.randbytes(3 << 20)
        sha = hashlib.sha256(data).hexdigest()
        push = json.dumps({"base_revision": 0, "project": {"schema": 1}, "media": {"media/a.wav": sha}}).encode()

        def blob_then_push() -> None:
            try:
                with srv.client() as c:
                    c.put(f"/api/v1/sync/blobs/{sha}", headers=h, content=data)
                _raw_post(srv.base, f"/api/v1/sync/projects/{pid}/revisions",
                          {**h, "Content-Type": "application/json"}, push, send_fraction=1.0, wait_answer=True)  # fmt: skip
            except Exception:
                pass

        t = threading.Thread(target=blob_then_push)
        t.start()
        _kill_after(srv, rng.uniform(0.0, 0.4))
        t.join(30)
    else:  # pragma: no cover
        raise AssertionError(fault)


def _rows(srv: Server, sql: str) -> list[tuple]:
    engine = create_engine(normalise_url(srv.database_url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _wait_jobs_finished(srv: Server, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while _rows(srv, "SELECT id FROM jobs WHERE status IN ('queued', 'running')"):
        if time.monotonic() > deadline:
            return  # audit() reports them
        time.sleep(0.2)


def audit(srv: Server, tally: Tally) -> None:
    """Count orphaned files and inconsistent rows; add the reasons to ``tally.problems``."""

    def orphan(why: str) -> None:
        tally.orphaned_files += 1
        tally.problems.append(why)

    def bad(why: str) -> None:
        tally.inconsistent_rows += 1
        tally.problems.append(why)

    tmp = Path(srv.env["TMPDIR"])
    for p in tmp.iterdir():
        if p.name.startswith("amc-"):
            orphan(f"scratch left: {p.name}")
    root = srv.storage_dir
    for p in root.rglob(".part-*"):
        orphan(f"partial write left: {p.relative_to(root)}")
    jobs = {r[0]: r for r in _rows(srv, "SELECT id, status, error_code, error, input_key, result_key, attempts, "
                                         "user_id FROM jobs")}  # fmt: skip
    for folder in (root / "jobs").glob("*"):
        if folder.name not in jobs:
            orphan(f"job folder with no job: {folder.name}")
    for job_id, status, code, error, input_key, result_key, attempts, _user in jobs.values():
        if status in ("queued", "running"):
            bad(f"job {job_id} still {status} after restart")
        if status == "failed" and not (code and error):
            bad(f"job {job_id} failed with no code or reason")
        if status == "succeeded" and (code or error or not result_key):
            bad(f"job {job_id} succeeded with error {code!r} or no result")
        if input_key and not (root / input_key).is_file():
            bad(f"job {job_id} names a missing input")
        if result_key and not (root / result_key).is_file():
            bad(f"job {job_id} names a missing result")
        if attempts > 3:
            bad(f"job {job_id} ran {attempts} times")
    blobs = set(_rows(srv, "SELECT user_id, sha256 FROM blobs"))
    for obj in (root / "blobs").glob("*/??/*"):
        if (obj.parts[-3], obj.name) not in blobs:
            orphan(f"blob object with no row: {obj.name[:12]}")
    for user_id, sha in blobs:
        if not (root / "blobs" / user_id / sha[:2] / sha).is_file():
            bad(f"blob row with no object: {sha[:12]}")
    charged = dict(_rows(srv, "SELECT user_id, sum(count) FROM usage_counters WHERE period LIKE 'd:%' GROUP BY user_id"))
    per_user: dict[str, int] = {}
    for r in jobs.values():
        per_user[r[7]] = per_user.get(r[7], 0) + 1
    for user_id in set(charged) | set(per_user):
        if int(charged.get(user_id, 0)) != per_user.get(user_id, 0):
            bad(f"user charged {charged.get(user_id, 0)} requests for {per_user.get(user_id, 0)} jobs")
    for pid, head, top in _rows(srv, "SELECT p.id, p.head_revision, coalesce(max(r.number), 0) FROM projects p "
                                     "LEFT JOIN project_revisions r ON r.project_id = p.id GROUP BY p.id, p.head_revision"):  # fmt: skip
        if head != top:
            bad(f"project {pid} head {head} but last revision {top}")


def run_cycles(kind: str, request: pytest.FixtureRequest, tmp: Path, cycles: int, seed: int) -> Tally:
    rng = random.Random(seed)
    scratch = tmp / "tmp"
    scratch.mkdir()
    mixes = {"big": write_mix(tmp / "big.wav", seconds=50.0), "long": write_mix(tmp / "long.wav", seconds=40.0)}
    tally = Tally()
    with running_server(kind, request, TMPDIR=str(scratch), RATE_BURST_PER_MINUTE="100000") as srv:
        user = srv.register()
        for i in range(cycles):
            fault = FAULTS[i % len(FAULTS)]
            _inject(srv, fault, user, mixes, rng)
            srv.start()
            _wait_jobs_finished(srv)
            before = len(tally.problems)
            audit(srv, tally)
            tally.problems[before:] = [f"cycle {i} ({fault}): {p}" for p in tally.problems[before:]]
            tally.cycles += 1
            tally.by_fault[fault] = tally.by_fault.get(fault, 0) + 1
    print(f"\nfault suite on {kind}: {tally.cycles} kill -9 + restart cycles {tally.by_fault}; "
          f"orphaned files {tally.orphaned_files}, inconsistent rows {tally.inconsistent_rows}")
    for p in tally.problems:
        print("  " + p)
    return tally


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_each_fault_once_leaves_nothing_behind(kind: str, request: pytest.FixtureRequest, tmp_path: Path):
    tally = run_cycles(kind, request, tmp_path, len(FAULTS), seed=16)
    assert (tally.orphaned_files, tally.inconsistent_rows) == (0, 0), tally.problems


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_twenty_kill_restart_cycles_leave_nothing_behind(kind: str, request: pytest.FixtureRequest, tmp_path: Path):
    cycles = int(os.environ.get("AMC_FAULT_CYCLES", "20"))
    tally = run_cycles(kind, request, tmp_path, cycles, seed=1616)
    assert tally.cycles == cycles
    assert (tally.orphaned_files, tally.inconsistent_rows) == (0, 0), tally.problems
