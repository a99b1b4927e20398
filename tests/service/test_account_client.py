"""app.account against a real server, tokens in an in-memory keyring; the amc commands."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend

from app.account import (
    SYNC_STATE_FILE,
    AccountClient,
    AccountError,
    NotSignedInError,
    OfflineError,
    SyncConflictError,
    SyncIntegrityError,
)
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


# ---------------------------------------------------------------------------- two machines
@dataclass
class Machine:
    """One computer: its own keyring (sign-in) and its own AccountClient."""

    client: AccountClient
    keyring: MemoryKeyring

    @contextmanager
    def active(self) -> Iterator[AccountClient]:
        previous = keyring.get_keyring()
        keyring.set_keyring(self.keyring)
        try:
            yield self.client
        finally:
            keyring.set_keyring(previous)


def machine(base: str, email: str) -> Machine:
    """Another computer signed in to ``base`` as ``email``."""
    m = Machine(AccountClient(base), MemoryKeyring())
    with m.active() as c:
        c.login(email, PASSWORD)
    return m


def song(folder: Path, *, media: dict[str, bytes], doc: dict[str, Any]) -> Path:
    (folder / "media").mkdir(parents=True, exist_ok=True)
    for name, data in media.items():
        (folder / "media" / name).write_bytes(data)
    (folder / "project.json").write_text(json.dumps(doc, indent=2))
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """Every synced file's bytes (media/ and renders/), by name."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for d in ("media", "renders") for p in sorted((folder / d).rglob("*")) if p.is_file()}  # fmt: skip


def edit(folder: Path, **changes: Any) -> dict[str, Any]:
    doc = {**json.loads((folder / "project.json").read_text()), **changes}
    (folder / "project.json").write_text(json.dumps(doc))
    return doc


def test_two_machines_clone_edit_sync_and_fast_forward(server: Server, memory_keyring: MemoryKeyring,
                                                       tmp_path: Path):  # fmt: skip
    u = server.register()
    a, b = machine(server.base, u["email"]), machine(server.base, u["email"])
    kick, hat = os.urandom(70_000), os.urandom(30_000)
    pa = song(
        tmp_path / "a" / "Song.amcproj",
        media={"kick.wav": kick},
        doc={"schema": 1, "tracks": ["kick"]},
    )
    (pa / "renders").mkdir()
    (pa / "renders" / "Song-master-1.wav").write_bytes(b"master" * 500)
    steps: list[tuple[float, str]] = []
    with a.active() as ca:
        r1 = ca.push_project(pa, progress=lambda f, m: steps.append((f, m)))
        assert (r1.action, r1.revision, r1.uploaded_blobs) == ("pushed", 1, 2)
        listed = ca.list_projects()
    fractions = [f for f, _m in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(set(fractions)) > 3
    assert [p["name"] for p in listed] == ["Song.amcproj"] and listed[0]["head_revision"] == 1

    # Machine B: clone into a new folder; refuse a non-empty one.
    pb = tmp_path / "b" / "Song.amcproj"
    (tmp_path / "b" / "busy").mkdir(parents=True)
    (tmp_path / "b" / "busy" / "x").write_text("mine")
    with b.active() as cb:
        with pytest.raises(AccountError, match="not empty"):
            cb.clone_project(listed[0]["id"], tmp_path / "b" / "busy")
        assert (tmp_path / "b" / "busy" / "x").read_text() == "mine"
        steps.clear()
        rc = cb.clone_project(listed[0]["id"], pb, progress=lambda f, m: steps.append((f, m)))
        assert (rc.action, rc.revision, rc.downloaded_blobs, rc.project_changed) == (
            "cloned",
            1,
            2,
            True,
        )
        assert tree(pb) == tree(pa) and json.loads((pb / "project.json").read_text()) == json.loads(
            (pa / "project.json").read_text())  # fmt: skip
        assert [f for f, _m in steps] == sorted(f for f, _m in steps) and steps[-1][0] == 1.0
        assert cb.sync_project(pb).action == "up_to_date"  # nothing changed anywhere
        # B edits project.json and adds a media file, then syncs: a push of only the new blob.
        (pb / "media" / "hat.wav").write_bytes(hat)
        doc_b = edit(pb, tracks=["kick", "hat"], tempo_bpm=92)
        rb = cb.sync_project(pb)
        assert (rb.action, rb.revision, rb.uploaded_blobs, rb.skipped_blobs) == ("pushed", 2, 1, 2)
    with a.active() as ca:
        ra = ca.sync_project(pa)  # A had no edits: fast-forward
        assert (ra.action, ra.revision, ra.downloaded_blobs, ra.project_changed, ra.backup) == (
            "pulled", 2, 1, True, None)  # fmt: skip
        assert json.loads((pa / "project.json").read_text()) == doc_b
        assert (pa / "media" / "hat.wav").read_bytes() == hat and tree(pa) == tree(pb)
        assert ca.sync_project(pa).action == "up_to_date"
        # ... and back: A edits, B fast-forwards.
        doc_a = edit(pa, tempo_bpm=100)
        assert ca.sync_project(pa).action == "pushed"
    with b.active() as cb:
        assert cb.sync_project(pb).action == "pulled"
        assert json.loads((pb / "project.json").read_text()) == doc_a and tree(pb) == tree(pa)
        assert not list(pb.glob("project.local-*")) and not list(pa.glob("project.local-*"))
        assert not [p for p in pb.rglob(".*") if p.name != ".amcsync.json"]  # no temp files left


@pytest.mark.parametrize("keep", ["mine", "theirs", "both"])
def test_concurrent_edits_conflict_and_each_resolution_loses_nothing(server: Server, memory_keyring: MemoryKeyring,
                                                                     tmp_path: Path, keep: str):  # fmt: skip
    u = server.register()
    a, b = machine(server.base, u["email"]), machine(server.base, u["email"])
    pa = song(
        tmp_path / "a" / "Duet.amcproj",
        media={"v.wav": b"voice" * 999},
        doc={"schema": 1, "who": "base"},
    )
    pb = tmp_path / "b" / "Duet.amcproj"
    with a.active() as ca:
        pid = ca.push_project(pa).project_id
    with b.active() as cb:
        cb.clone_project(pid, pb)
        (pb / "media" / "b.wav").write_bytes(b"bee" * 999)
        theirs = edit(pb, who="B")
        assert cb.sync_project(pb).revision == 2
    with a.active() as ca:
        (pa / "media" / "a.wav").write_bytes(b"ay" * 999)
        mine = edit(pa, who="A")
        with pytest.raises(SyncConflictError) as e:
            ca.sync_project(pa)
        assert (e.value.base_revision, e.value.head_revision, e.value.status) == (1, 2, 409)
        assert json.loads((pa / "project.json").read_text()) == mine  # nothing moved
        assert json.loads((pa / SYNC_STATE_FILE).read_text())["revision"] == 1
        r = ca.sync_project(pa, keep=keep)  # type: ignore[arg-type]
        assert r.action == f"kept_{keep}"
        head = {p["id"]: p for p in ca.list_projects()}
        if keep == "mine":
            assert r.revision == 3 and head[pid]["head_revision"] == 3
            assert json.loads((pa / "project.json").read_text()) == mine
        elif keep == "theirs":
            assert r.revision == 2 and r.project_changed and r.backup is not None
            assert json.loads((pa / "project.json").read_text()) == theirs
            assert json.loads(r.backup.read_text()) == mine  # A's edit kept beside
            assert (pa / "media" / "a.wav").exists() and (pa / "media" / "b.wav").exists()
        else:
            assert r.project_id != pid and "conflict copy" in r.name and r.revision == 1
            assert head[pid]["head_revision"] == 2 and head[r.project_id]["name"] == r.name
        assert ca.sync_project(pa).action in ("up_to_date", "pushed")  # settled
    # Whatever was kept, both edits survive somewhere, and B's machine catches up without conflict.
    with b.active() as cb:
        rb = cb.sync_project(pb)
        assert rb.action in ("up_to_date", "pulled")
        if keep == "mine":
            assert (
                json.loads((pb / "project.json").read_text()) == mine
                and (pb / "media" / "a.wav").exists()
            )
            assert rb.backup is None  # B had nothing unsynced
            old = cb._call("GET", f"/api/v1/sync/projects/{pid}/revisions/2").json()
            assert old["project"] == theirs  # theirs stays in the history


def amc_cli(server: str) -> Callable[..., int]:
    """``amc(*argv)``: run an account command against ``server`` in-process; its exit code."""
    parser = argparse.ArgumentParser(prog="amc")
    add_commands(parser.add_subparsers(dest="command"))

    def amc(*argv: str) -> int:
        args = parser.parse_args([*argv, "--server", server])
        return int(args.func(args))

    return amc


def test_cli_projects_clone_and_sync(server: Server, memory_keyring: MemoryKeyring, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]):  # fmt: skip
    u = server.register()
    amc = amc_cli(server.base)

    assert amc("projects") == 1 and "amc login" in capsys.readouterr().err
    AccountClient(server.base).login(u["email"], PASSWORD)
    assert amc("projects") == 0 and "no projects" in capsys.readouterr().out
    pa = song(tmp_path / "Tune.amcproj", media={"a.wav": b"a" * 5000}, doc={"schema": 1, "n": 0})
    assert amc("sync", str(pa)) == 0
    assert "pushed as revision 1 (1 media uploaded, 0 already there)" in capsys.readouterr().out
    assert amc("sync", str(pa)) == 0 and "up to date (revision 1)" in capsys.readouterr().out
    assert amc("projects") == 0
    out = capsys.readouterr().out.splitlines()
    pid = out[1].split()[0]
    assert out[0].split() == ["ID", "REVISION", "UPDATED", "NAME"] and out[1].endswith(
        " Tune.amcproj"
    )
    assert out[1].split()[1] == "1"
    pb = tmp_path / "second" / "Tune.amcproj"
    assert amc("clone", pid, str(pb)) == 0
    assert "revision 1 downloaded (1 media)" in capsys.readouterr().out
    assert (pb / "media" / "a.wav").read_bytes() == b"a" * 5000
    assert amc("clone", "Tune.amcproj", str(pb)) == 1 and "not empty" in capsys.readouterr().err
    assert (
        amc("clone", "nope", str(tmp_path / "x")) == 1 and "amc projects" in capsys.readouterr().err
    )
    edit(pb, n=1)
    assert amc("sync", str(pb)) == 0 and "pushed as revision 2" in capsys.readouterr().out
    assert amc("sync", str(pa)) == 0 and "updated to revision 2" in capsys.readouterr().out
    edit(pa, n="a")
    edit(pb, n="b")
    assert amc("sync", str(pb)) == 0
    capsys.readouterr()
    assert amc("sync", str(pa)) == 1
    err = capsys.readouterr().err
    assert (
        "based on revision 2, the server has revision 3" in err and "Nothing was overwritten" in err
    )
    assert all(f"--keep {k}" in err for k in ("mine", "theirs", "both"))
    assert amc("sync", str(pa), "--keep", "theirs") == 0
    out = capsys.readouterr().out
    assert "now holds the server's revision 3" in out and "project.local-" in out
    assert json.loads((pa / "project.json").read_text())["n"] == "b"
    assert json.loads(next(pa.glob("project.local-*.json")).read_text())["n"] == "a"
    assert amc("clone", pid, str(tmp_path / "old"), "--revision", "1") == 0
    assert json.loads((tmp_path / "old" / "project.json").read_text())["n"] == 0


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tamper_revision(server: Server, project_id: str, number: int, media: dict[str, str]) -> None:
    """What a compromised server could send: rewrite a stored revision's media map in its database."""
    from sqlalchemy import create_engine, text

    url = server.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.begin() as db:
            n = db.execute(text("UPDATE project_revisions SET media = :m WHERE project_id = :p AND number = :n"),
                           {"m": json.dumps(media), "p": project_id, "n": number}).rowcount  # fmt: skip
            assert n == 1
    finally:
        engine.dispose()


def test_media_names_outside_the_project_are_refused_on_pull(server: Server, memory_keyring: MemoryKeyring,
                                                             tmp_path: Path):  # fmt: skip
    u = server.register()
    c = AccountClient(server.base)
    c.login(u["email"], PASSWORD)
    data = b"payload" * 100
    src = song(tmp_path / "src" / "Evil.amcproj", media={"ok.wav": data}, doc={"schema": 1})
    r = c.push_project(src)
    sha = json.loads((src / SYNC_STATE_FILE).read_text())["files"]["media/ok.wav"][0]
    victim = song(
        tmp_path / "victim" / "Evil.amcproj",
        media={"mine.wav": b"mine"},
        doc={"schema": 1, "me": 1},
    )
    outside = tmp_path / "victim" / "evil.wav"
    # Names the service accepts but that would overwrite the project's own files, and names that
    # leave the folder (a tampered revision): each refuses the whole revision, nothing is written.
    for bad in ["project.json", ".amcsync.json", "autosave/project.json", "session.lock", "evil.wav",
                "media/.hidden", "../evil.wav", "media/../../evil.wav", "/tmp/evil.wav", "media\\..\\..\\evil.wav",
                "media//x.wav", "renders/../../evil.wav"]:  # fmt: skip
        _tamper_revision(server, r.project_id, 1, {"media/ok.wav": sha, bad: sha})
        before = _snapshot(victim)
        with pytest.raises(SyncIntegrityError, match=r"nothing was changed|outside"):
            c.pull_project(victim, project_id=r.project_id, revision=1)
        assert _snapshot(victim) == before and not outside.exists(), bad
    _tamper_revision(server, r.project_id, 1, {"media/ok.wav": sha})
    assert c.pull_project(victim, project_id=r.project_id).downloaded_blobs == 1
    assert (victim / "media" / "ok.wav").read_bytes() == data and (
        victim / "media" / "mine.wav"
    ).exists()
    assert json.loads(next(victim.glob("project.local-*.json")).read_text()) == {
        "schema": 1,
        "me": 1,
    }


def test_a_damaged_blob_download_changes_nothing(
    server: Server, memory_keyring: MemoryKeyring, tmp_path: Path
):
    u = server.register()
    a, b = machine(server.base, u["email"]), machine(server.base, u["email"])
    pa = song(
        tmp_path / "a" / "Take.amcproj", media={"one.wav": b"1" * 4000}, doc={"schema": 1, "v": 1}
    )
    with a.active() as ca:
        pid = ca.push_project(pa).project_id
    pb = tmp_path / "b" / "Take.amcproj"
    with b.active() as cb:
        cb.clone_project(pid, pb)
    two = os.urandom(9000)
    with a.active() as ca:
        (pa / "media" / "two.wav").write_bytes(two)
        (pa / "media" / "three.wav").write_bytes(b"3" * 3000)
        edit(pa, v=2)
        ca.sync_project(pa)
    # The server's stored copy of one blob rots: its bytes no longer hash to its name.
    stored = [p for p in server.storage_dir.rglob("*") if p.is_file() and p.read_bytes() == two]
    assert len(stored) == 1
    stored[0].write_bytes(two[:-1] + bytes([two[-1] ^ 1]))
    before = _snapshot(pb)
    with b.active() as cb:
        with pytest.raises(SyncIntegrityError, match="does not match its SHA-256"):
            cb.sync_project(pb)
        assert _snapshot(pb) == before  # no project.json, no media, no state, no temp file changed
        with pytest.raises(SyncIntegrityError):
            cb.clone_project(pid, tmp_path / "c" / "Take.amcproj")
        assert not (tmp_path / "c" / "Take.amcproj").exists()
        stored[0].write_bytes(two)  # repaired: the same sync now goes through
        assert (
            cb.sync_project(pb).action == "pulled"
            and (pb / "media" / "two.wav").read_bytes() == two
        )


def test_cancel_from_progress_stops_before_anything_changes(server: Server, memory_keyring: MemoryKeyring,
                                                            tmp_path: Path):  # fmt: skip
    u = server.register()
    c = AccountClient(server.base)
    c.login(u["email"], PASSWORD)
    p = song(
        tmp_path / "Stop.amcproj",
        media={"x.wav": b"x" * 3000, "y.wav": b"y" * 3000},
        doc={"schema": 1},
    )

    class Stop(Exception):
        pass

    def stop_at(word: str):  # type: ignore[no-untyped-def]
        def progress(_f: float, message: str) -> None:
            if word in message:
                raise Stop(message)

        return progress

    with pytest.raises(Stop):
        c.push_project(p, progress=stop_at("saving the revision"))
    pid = json.loads((p / SYNC_STATE_FILE).read_text())["project_id"]
    assert c.get_project(pid)["head_revision"] == 0  # no revision was posted
    assert c.sync_project(p).revision == 1
    clone = tmp_path / "clone" / "Stop.amcproj"
    with pytest.raises(Stop):
        c.clone_project(pid, clone, progress=stop_at("downloading media 2/2"))
    assert not clone.exists()


def test_a_project_deleted_on_the_server(server: Server, memory_keyring: MemoryKeyring, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]):  # fmt: skip
    """Deleting frees the server's copy only: a second machine's folder is left as it is, its
    next sync says so, and keep-mine uploads it again as a new server project."""
    u = server.register()
    amc = amc_cli(server.base)

    a, b = machine(server.base, u["email"]), machine(server.base, u["email"])
    kick, snare = os.urandom(40_000), os.urandom(20_000)
    pa = song(tmp_path / "a" / "Song.amcproj", media={"kick.wav": kick, "snare.wav": snare}, doc={"n": 1})
    with a.active() as ca:
        old_id = ca.push_project(pa).project_id
    pb = tmp_path / "b" / "Song.amcproj"
    with b.active() as cb:
        cb.clone_project(old_id, pb)
        assert cb.usage()["storage_bytes"] == 60_000

    with a.active():
        assert amc("projects", "--delete", "Song.amcproj") == 2  # no terminal to ask: needs --yes
        assert "needs --yes" in capsys.readouterr().err
        assert amc("projects", "--delete", "Song.amcproj", "--yes") == 0
        out = capsys.readouterr().out
        assert "deleted 'Song.amcproj' (1 revisions)" in out and "2 media no other project uses freed (0.1 MB)" in out
        assert amc("projects", "--delete", "Song.amcproj", "--yes") == 1
        assert "no project 'Song.amcproj'" in capsys.readouterr().err

    edit(pb, n=2)
    before = _snapshot(pb)
    with b.active() as cb:
        assert cb.usage()["storage_bytes"] == 0 and cb.list_projects() == []
        with pytest.raises(AccountError, match="has been deleted") as e:
            cb.sync_project(pb)
        assert e.value.code == "project_deleted"
        assert _snapshot(pb) == before  # the folder is left as it is
        r = cb.sync_project(pb, keep="mine")
        assert (r.action, r.revision, r.uploaded_blobs) == ("pushed", 1, 2) and r.project_id != old_id
        assert [(p["id"], p["name"]) for p in cb.list_projects()] == [(r.project_id, "Song.amcproj")]
    with a.active() as ca:  # A's folder still names the deleted project
        with pytest.raises(AccountError, match="has been deleted"):
            ca.sync_project(pa)
        again = ca.clone_project(r.project_id, tmp_path / "a2" / "Song.amcproj")
        assert tree(again.folder) == tree(pb) and json.loads((again.folder / "project.json").read_text())["n"] == 2


def test_a_push_uploads_media_freed_since_it_looked(server: Server, memory_keyring: MemoryKeyring, tmp_path: Path):
    """HEAD said the server has a blob; before the push landed, the only project naming it was
    deleted (another machine) and the blob freed: the push uploads it and goes through."""
    u = server.register()
    c = AccountClient(server.base)
    c.login(u["email"], PASSWORD)
    kick = os.urandom(30_000)
    first = c.push_project(song(tmp_path / "One.amcproj", media={"kick.wav": kick}, doc={"n": 1}))
    two = song(tmp_path / "Two.amcproj", media={"kick.wav": kick}, doc={"n": 2})

    def elsewhere(_fraction: float, message: str) -> None:
        if message == "saving the revision":  # after the HEADs, before the revision
            assert c.delete_project(first.project_id)["blobs_freed"] == 1

    r = c.push_project(two, progress=elsewhere)
    assert (r.action, r.revision, r.uploaded_blobs, r.skipped_blobs) == ("pushed", 1, 1, 0)
    copy = c.clone_project(r.project_id, tmp_path / "copy" / "Two.amcproj")
    assert (copy.folder / "media" / "kick.wav").read_bytes() == kick
