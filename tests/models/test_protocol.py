from __future__ import annotations

import pickle

import pytest

from app.models import protocol
from app.models.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    Failed,
    Hello,
    Job,
    Progress,
    ProtocolMismatch,
    Result,
    Shutdown,
    Started,
    StatusReport,
    StatusRequest,
    check_hello,
)


def test_messages_pickle_round_trip_and_are_frozen() -> None:
    job = Job.create("musicgen", "generate", output_dir="/tmp/x", params={"prompt": "lo-fi"},
                     inputs={"audio": "/a.wav"}, priority=3, seed=7)
    msgs = [
        job, Cancel(job.job_id), Shutdown(), StatusRequest("r"), Progress(job.job_id, 0.5, "half"),
        Started(job.job_id, "musicgen", "b"), Result(job.job_id, {"audio": "/o.wav"}, {"lufs": -14.0}, {"slot": "musicgen"}),
        Failed(job.job_id, "boom", "tb", "worker_died"), Hello(PROTOCOL_VERSION, "cpu", "2.13.0", 1),
        StatusReport("r", "cpu", None, ("a",), (), 0, 0, 1, 2),
    ]
    for m in msgs:
        assert pickle.loads(pickle.dumps(m)) == m
    with pytest.raises(AttributeError):
        job.priority = 1  # type: ignore[misc]


def test_job_create_gives_unique_ids_and_str_paths(tmp_path) -> None:
    a = Job.create("musicgen", "generate", output_dir=tmp_path, inputs={"audio": tmp_path / "in.wav"})
    b = Job.create("musicgen", "generate", output_dir=tmp_path)
    assert a.job_id != b.job_id
    assert a.inputs == {"audio": str(tmp_path / "in.wav")} and a.output_dir == str(tmp_path)
    assert (a.backend, a.priority, a.seed) == (None, 0, None)


def test_handshake_accepts_current_version_only() -> None:
    hello = Hello(PROTOCOL_VERSION, "cpu", None)
    assert check_hello(hello) is hello
    with pytest.raises(ProtocolMismatch, match=rf"v{PROTOCOL_VERSION + 1}.*v{PROTOCOL_VERSION}.*reinstall"):
        check_hello(Hello(PROTOCOL_VERSION + 1, "cpu", None))
    with pytest.raises(ProtocolMismatch, match="before its handshake"):
        check_hello(Progress("j", 0.1))
    assert issubclass(protocol.ProtocolMismatch, protocol.WorkerError)
