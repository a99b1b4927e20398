"""Replays every curl example of the API seed, verbatim, with the real ``curl`` against a real
server; only host:port, the token placeholder and the audio file (a real WAV named as in the
seed, in curl's working folder) are substituted. A copy of the seed lives in data/; when the
shared original is present the two must be identical."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.service.conftest import Server, running_server, write_mix

SEED = Path(__file__).with_name("data") / "ai-music-mastering-api.md"
SHARED_SEED = Path("/work/shared/seed/ai-music-mastering-api.md")


def seed_curls(text: str) -> list[str]:
    """Every curl command in the seed's ```bash blocks, read the way the shell reads them:
    a backslash-newline continues the line, a quoted string may span lines."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        buf: str | None = None
        for line in block.splitlines():
            if buf is None:
                if not line.strip().startswith("curl "):
                    continue
                buf = line.strip()
            else:
                buf += "\n" + line
            if buf.endswith("\\"):
                buf = buf[:-1]
                continue
            try:
                shlex.split(buf)
            except ValueError:  # an open quote: the command goes on
                continue
            commands.append(buf)
            buf = None
        assert buf is None, f"unterminated curl command in the seed: {buf}"
    return commands


def _method_path(argv: list[str]) -> tuple[str, str]:
    method = argv[argv.index("-X") + 1] if "-X" in argv else ("POST" if "-F" in argv or "-d" in argv else "GET")
    url = next(a for a in argv if a.startswith("http"))
    return method, "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"


def test_the_shared_seed_and_our_copy_agree():
    if not SHARED_SEED.exists():
        pytest.skip(f"{SHARED_SEED} is not on this machine; the copy in {SEED.parent} is used")
    assert SHARED_SEED.read_text() == SEED.read_text()


def test_every_curl_example_of_the_seed(request: pytest.FixtureRequest, tmp_path: Path):
    if shutil.which("curl") is None:
        pytest.fail("the curl program is needed: apt-get install curl")
    commands = seed_curls(SEED.read_text())
    assert len(commands) == 8, commands  # the seed's examples; a parse slip must not pass silently
    write_mix(tmp_path / "your-audio-file.wav")
    with running_server("sqlite", request) as srv:
        token = None
        seen: list[tuple[str, str]] = []
        jobs: list[str] = []
        for command in commands:
            line = command.replace("http://localhost:8000", srv.base)
            if "YOUR_TOKEN" in line:
                assert token, "the seed uses the token before logging in"
                line = line.replace("YOUR_TOKEN", token)
            argv = shlex.split(line)
            out = subprocess.run([argv[0], "-sS", "-w", "\n%{http_code}", *argv[1:]], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
            assert out.returncode == 0, out.stderr
            raw, status = out.stdout.rsplit("\n", 1)
            body = json.loads(raw)
            key = _method_path(argv)
            seen.append(key)
            token = _check(key, int(status), body, argv, token, jobs)
        assert set(seen) == {
            ("POST", "/api/v1/auth/register"), ("POST", "/api/v1/auth/login"),
            ("POST", "/api/v1/music/generate"), ("POST", "/api/v1/music/process-file"),
            ("GET", "/api/v1/music/agent/status"), ("GET", "/api/v1/music/capabilities"), ("GET", "/health"),
        }  # fmt: skip
        _finish_jobs(srv, token, jobs)


def _check(key: tuple[str, str], status: int, body: dict, argv: list[str], token: str | None,
           jobs: list[str]) -> str | None:  # fmt: skip
    sent = json.loads(argv[argv.index("-d") + 1]) if "-d" in argv else {}
    form = dict(a.split("=", 1) for a in (argv[i + 1] for i, v in enumerate(argv) if v == "-F"))
    match key:
        case ("POST", "/api/v1/auth/register"):
            assert status == 201, body
            for f in ("email", "username", "full_name"):
                assert body[f] == sent[f]
            assert "password" not in body and body["tier"] == "free"
        case ("POST", "/api/v1/auth/login"):
            assert status == 200, body
            assert body["token_type"] == "bearer" and body["user"]["email"] == sent["email"]
            return str(body["access_token"])
        case ("POST", "/api/v1/music/generate"):
            assert status == 202, body
            assert body["params"] == {**sent, "duration": float(sent["duration"])}  # field for field
            assert body["status"] in ("queued", "running") and body["error"] is None
            jobs.append(body["job_id"])
        case ("POST", "/api/v1/music/process-file"):
            assert status == 202, body
            assert body["operation"] == form["operation"] == "enhance"
            for f in ("style", "enhancement_level"):
                assert body["params"][f] == form[f]
            assert body["params"]["filename"] == "your-audio-file.wav"
            jobs.append(body["job_id"])
        case ("GET", "/api/v1/music/agent/status"):
            assert status == 200 and body["engine"]["state"] == "ready", body
            assert ("your_jobs" in body) == any("Authorization" in a for a in argv)
        case ("GET", "/api/v1/music/capabilities"):
            assert status == 200 and {o["name"] for o in body["operations"]} >= {"master", "enhance"}
        case ("GET", "/health"):
            assert status == 200 and body["status"] == "ok" and body["database"] == "ok"
        case _:
            pytest.fail(f"the seed has a curl example this test does not know: {key}")
    return token


def _finish_jobs(srv: Server, token: str | None, jobs: list[str]) -> None:
    """The enhance job succeeds; the generate job (60 s of music) succeeds when this machine
    has a ready generator, else it fails with the registry's reason, as /capabilities says."""
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
        cap = {o["name"]: o for o in c.get("/api/v1/music/capabilities").json()["operations"]}
        for job_id in jobs:
            deadline = time.monotonic() + 600
            while (j := c.get(f"/api/v1/music/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            if j["operation"] == "generate" and not cap["generate"]["available"]:
                assert j["status"] == "failed" and j["error"]["code"] == "backend_unavailable", j
                assert "no generator can run here" in j["error"]["message"], j
                continue
            assert j["status"] == "succeeded", j
            assert j["report"]["plan"]["status"] == "done", j  # enhance and generate: the model chain's plan
