"""app.account against a real server, tokens in an in-memory keyring; the amc commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

from app.account import AccountClient, NotSignedInError, OfflineError, SyncConflictError
from app.service.commands import add_commands
from tests.service.conftest import PASSWORD, Server, free_port


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.store.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(previous)


def test_login_whoami_auto_refresh_logout(server: Server, memory_keyring: MemoryKeyring):
    u = server.register()
    c = AccountClient(server.base)
    assert c.login(u["email"], PASSWORD)["id"] == u["id"]
    first_refresh = c.refresh_token
    assert first_refresh and PASSWORD not in json.dumps(list(memory_keyring.store.values()))
    assert c.whoami()["email"] == u["email"]
    # A fresh client (a new Studio session) has only the keyring: it refreshes and rotates.
    c2 = AccountClient(server.base)
    assert c2.whoami()["id"] == u["id"]
    assert c2.refresh_token != first_refresh
    # An access token the server rejects: the client refreshes once and retries.
    c2._access = "expired"
    assert c2.usage()["tier"] == "free"
    c2.logout()
    assert c2.refresh_token is None
    with pytest.raises(NotSignedInError, match="amc login"):
        AccountClient(server.base).whoami()


def test_offline_is_a_clear_error(memory_keyring: MemoryKeyring):
    c = AccountClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(OfflineError, match="cannot reach the account service"):
        c.login("a@example.com", "x")


def test_sync_pushes_only_missing_media_and_detects_conflicts(server: Server, memory_keyring: MemoryKeyring,
                                                              tmp_path: Path):  # fmt: skip
    u = server.register()
    proj = tmp_path / "Song.amcproj"
    (proj / "media").mkdir(parents=True)
    (proj / "media" / "kick.wav").write_bytes(b"kick" * 1000)
    (proj / "media" / "snare.wav").write_bytes(b"snare" * 1000)
    (proj / "project.json").write_text(json.dumps({"schema": 1, "tracks": ["kick", "snare"]}))
    c = AccountClient(server.base)
    c.login(u["email"], PASSWORD)
    r1 = c.push_project(proj)
    assert (r1.revision, r1.uploaded_blobs, r1.skipped_blobs) == (1, 2, 0)
    (proj / "media" / "hat.wav").write_bytes(b"hat" * 1000)
    r2 = c.push_project(proj)
    assert (r2.revision, r2.uploaded_blobs, r2.skipped_blobs) == (2, 1, 2)
    # Another device's copy, still at revision 1, pushes: conflict, nothing overwritten.
    state = json.loads((proj / ".amcsync.json").read_text())
    (proj / ".amcsync.json").write_text(json.dumps({**state, "revision": 1}))
    with pytest.raises(SyncConflictError) as e:
        c.push_project(proj)
    assert e.value.status == 409 and e.value.body["head_revision"] == 2


def test_amc_account_commands(server: Server, memory_keyring: MemoryKeyring, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    import io

    u = server.register()
    parser = argparse.ArgumentParser(prog="amc")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)

    def amc(*argv: str) -> int:
        args = parser.parse_args(argv)
        return int(args.func(args))

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert amc("login", u["email"], "--password-stdin", "--server", server.base) == 0
    assert amc("whoami", "--server", server.base) == 0
    assert f"{u['username']} <{u['email']}>" in capsys.readouterr().out
    assert amc("logout", "--server", server.base) == 0
    assert amc("whoami", "--server", server.base) == 1
    assert "amc login" in capsys.readouterr().err
    serve = parser.parse_args(["serve", "--port", "9999"])
    assert serve.port == 9999 and serve.func.__name__ == "cmd_serve"
