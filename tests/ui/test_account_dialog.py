"""AccountDialog against the real embedded service (a child process on a free port, SQLite
under a temp AMC_HOME), driven through its widgets; tokens in an in-memory keyring."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import keyring
import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtWidgets import QApplication, QFileDialog

from app.engine import project as projects
from app.service import embedded
from app.ui import theme
from app.ui.account_dialog import AccountDialog, AccountStatusWidget, check_remote_url, status_text
from tests.service.conftest import PASSWORD, free_port
from tests.service.test_account_client import MemoryKeyring, machine

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded service, started the way the dialog starts it, in a throw-away AMC_HOME."""
    previous = os.environ.get("AMC_HOME")
    os.environ["AMC_HOME"] = str(tmp_path_factory.mktemp("account-home"))
    try:
        yield embedded.start_embedded(port=free_port())
    finally:
        embedded.stop_embedded()
        if previous is None:
            os.environ.pop("AMC_HOME", None)
        else:
            os.environ["AMC_HOME"] = previous


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    kr = MemoryKeyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(previous)


@pytest.fixture
def embedded_choice() -> None:
    s = QSettings()
    s.setValue("account/kind", "embedded")
    s.sync()


def make_project(folder: Path) -> Path:
    """A saved Name.amcproj with one short imported WAV."""
    wav = folder.parent / "tone.wav"
    t = np.arange(4800) / 48000
    sf.write(str(wav), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 48000)
    p = projects.Project.new(folder.stem)
    projects.save(p, folder)
    sha = projects.import_media(folder, wav)
    p.add_track(projects.Track(name="tone", media_sha=sha, original_filename="tone.wav"))
    projects.save(p, folder)
    projects.close_project(p)
    return folder


def open_dialog(qtbot, folder: Path | None) -> AccountDialog:  # type: ignore[no-untyped-def]
    dlg = AccountDialog(None, project_folder=folder)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitUntil(lambda: not dlg.busy.isVisible(), timeout=TIMEOUT_MS)
    return dlg


def left(widget) -> QPoint:  # type: ignore[no-untyped-def]
    """A point on a check/radio button's indicator (the centre of a wide one is not clickable)."""
    return QPoint(8, widget.height() // 2)


def type_into(qtbot, widget, text: str) -> None:  # type: ignore[no-untyped-def]
    widget.clear()
    qtbot.keyClicks(widget, text)


def server_token(base: str, email: str) -> dict[str, str]:
    r = httpx.post(base + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def register(base: str, prefix: str) -> str:
    """A new account on ``base`` (registered from elsewhere, as another computer would); its email."""
    email = f"{prefix}{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(base + "/api/v1/auth/register", timeout=30,
                   json={"email": email, "username": email.split("@")[0], "password": PASSWORD, "full_name": ""})  # fmt: skip
    assert r.status_code == 201, r.text
    return email


def shot(dlg: AccountDialog, name: str) -> None:
    theme.apply(QApplication.instance())  # type: ignore[arg-type]
    dlg.adjustSize()
    QApplication.processEvents()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(SCREENSHOTS / name))


def test_register_sign_in_sync_and_resolve_conflicts(qtbot, service: str, memory_keyring: MemoryKeyring,
                                                      embedded_choice: None, tmp_path: Path):  # fmt: skip
    folder = make_project(tmp_path / "Song.amcproj")
    dlg = open_dialog(qtbot, folder)
    assert dlg.this_computer.isChecked() and "Connected to " + service in dlg.message.text()
    assert dlg.pages.currentIndex() == 0  # nobody signed in yet

    # Register (first time) through the widgets.
    email = f"m{uuid.uuid4().hex[:8]}@example.com"
    qtbot.mouseClick(dlg.create_toggle, Qt.MouseButton.LeftButton, pos=left(dlg.create_toggle))
    assert dlg.create_toggle.isChecked() and dlg.sign_in_button.text() == "Create account"
    type_into(qtbot, dlg.email_edit, email)
    type_into(qtbot, dlg.password_edit, PASSWORD)
    type_into(qtbot, dlg.username_edit, email.split("@")[0] + "x")
    with qtbot.waitSignal(dlg.signed_in, timeout=TIMEOUT_MS) as signed:
        qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    info = signed.args[0]
    assert info["server"] == service and info["user"]["email"] == email
    assert dlg.pages.currentIndex() == 1 and dlg.email_label.text() == email
    assert dlg.tier_label.text() == "FREE"
    assert dlg.usage_label.text() == "0 / 100 requests"
    assert dlg.storage_label.text() == "0 B / 1.0 GB"
    assert memory_keyring.store  # the refresh token went to the keyring

    status = AccountStatusWidget()
    qtbot.addWidget(status)
    status.set_account(info)
    assert status.text() == f"Signed in: {email} · FREE · 0/100 today"
    with qtbot.waitSignal(status.clicked, timeout=1000):
        qtbot.mouseClick(status, Qt.MouseButton.LeftButton)

    # Sync now: the project and its one media file reach the server.
    assert dlg.sync_button.isEnabled()
    steps: list[tuple[float, str]] = []
    dlg.tasks.progress.connect(lambda _tid, f, m: steps.append((f, m)))
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
        assert dlg.sync_progress.isVisible() and not dlg.sync_button.isEnabled()
    r1 = synced.args[0]
    messages = [m for _f, m in steps]
    assert {"checking media 1/1", "uploading media 1/1", "saving the revision", "done"} <= set(messages), messages
    assert [f for f, _m in steps] == sorted(f for f, _m in steps) and steps[-1][0] == 1.0
    assert not dlg.sync_progress.isVisible() and dlg.sync_button.isEnabled()
    assert (r1["action"], r1["revision"], r1["uploaded_blobs"], r1["skipped_blobs"]) == ("pushed", 1, 1, 0)
    auth = server_token(service, email)
    head = httpx.get(f"{service}/api/v1/sync/projects/{r1['project_id']}", headers=auth, timeout=30).json()
    assert head["name"] == "Song.amcproj" and head["head_revision"] == 1
    rev = httpx.get(f"{service}/api/v1/sync/projects/{r1['project_id']}/revisions/1", headers=auth, timeout=30).json()
    assert rev["project"] == json.loads((folder / "project.json").read_text())
    assert int(dlg.storage_bar.value()) >= 0 and "0 B /" not in dlg.storage_label.text()  # the blob counts
    status.update_usage(r1["usage"])
    assert status.text().startswith(f"Signed in: {email} · FREE")
    shot(dlg, "account_dialog.png")

    # Sync again: nothing changed anywhere, nothing travels.
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
    assert (synced.args[0]["action"], synced.args[0]["revision"], synced.args[0]["uploaded_blobs"]) == (
        "up_to_date", 1, 0)  # fmt: skip
    assert "Up to date" in dlg.sync_result.text()

    state_path = folder / ".amcsync.json"
    pid = r1["project_id"]

    def go_stale(mine: str, theirs: str) -> int:
        """Another device pushes ``theirs`` while this copy edits ``mine``: Sync now conflicts.
        Returns the server's head revision."""
        url = f"{service}/api/v1/sync/projects/{pid}"
        head = httpx.get(url, headers=auth, timeout=30).json()["head_revision"]
        last = httpx.get(f"{url}/revisions/{head}", headers=auth, timeout=30).json()
        pushed = httpx.post(f"{url}/revisions", headers=auth, timeout=30,
                            json={"base_revision": head, "project": {**last["project"], "name": theirs},
                                  "media": last["media"]})  # fmt: skip
        assert pushed.status_code == 201, pushed.text
        doc = json.loads((folder / "project.json").read_text())
        (folder / "project.json").write_text(json.dumps({**doc, "name": mine}))
        base = json.loads(state_path.read_text())["revision"]
        with qtbot.assertNotEmitted(dlg.synced, wait=200):
            qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: dlg.conflict_box.isVisible(), timeout=TIMEOUT_MS)
        assert f"revision {base}, the server has revision {head + 1}" in dlg.conflict_label.text()
        assert "Nothing was overwritten" in dlg.conflict_label.text()
        for b in (dlg.keep_mine_button, dlg.keep_theirs_button, dlg.keep_both_button):
            assert b.isVisible() and b.isEnabled()
        assert json.loads(state_path.read_text())["revision"] == base  # nothing moved
        assert json.loads((folder / "project.json").read_text())["name"] == mine
        return head + 1

    assert go_stale("Mine", "Theirs") == 2
    shot(dlg, "account_dialog_conflict.png")

    # Keep theirs: the server's head comes down; this copy's project.json is kept beside it.
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.keep_theirs_button, Qt.MouseButton.LeftButton)
    r = synced.args[0]
    assert (r["action"], r["revision"], r["reload"]) == ("kept_theirs", 2, True)
    assert json.loads((folder / "project.json").read_text())["name"] == "Theirs"
    backups = list(folder.glob("project.local-*.json"))
    assert len(backups) == 1 and json.loads(backups[0].read_text())["name"] == "Mine"
    assert r["backup"] == str(backups[0]) and backups[0].name in dlg.sync_result.text()
    assert json.loads(state_path.read_text())["revision"] == 2 and not dlg.conflict_box.isVisible()
    assert projects.open_project(folder, lock=False).tracks[0].name == "tone"  # still a valid project

    # Keep mine: pushed on top of the head; the head before it stays in the history.
    assert go_stale("Mine again", "Theirs again") == 3
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.keep_mine_button, Qt.MouseButton.LeftButton)
    assert (synced.args[0]["action"], synced.args[0]["revision"]) == ("kept_mine", 4)
    old = httpx.get(f"{service}/api/v1/sync/projects/{pid}/revisions/3", headers=auth, timeout=30)
    assert old.status_code == 200 and old.json()["project"]["name"] == "Theirs again"

    # Keep both: this copy becomes a separate server project; the original keeps its head.
    assert go_stale("Mine, both", "Theirs, both") == 5
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.keep_both_button, Qt.MouseButton.LeftButton)
    rb = synced.args[0]
    assert rb["action"] == "kept_both" and rb["revision"] == 1 and rb["project_id"] != pid
    assert rb["uploaded_blobs"] == 0  # the media were already there
    listed = httpx.get(f"{service}/api/v1/sync/projects", headers=auth, timeout=30).json()
    names = {p["name"]: p["head_revision"] for p in listed}
    assert names["Song.amcproj"] == 5 and any("conflict copy" in n for n in names)
    assert json.loads(state_path.read_text())["project_id"] == rb["project_id"]
    assert dlg.projects_list.topLevelItemCount() == 2  # the list follows

    # Sign out.
    with qtbot.waitSignal(dlg.signed_out, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.sign_out_button, Qt.MouseButton.LeftButton)
    assert dlg.pages.currentIndex() == 0 and not memory_keyring.store
    status.set_account(None)
    assert status.text() == "Not signed in"

    # A new dialog signs in (no registration) and finds the account.
    dlg2 = open_dialog(qtbot, None)
    assert status.text() == "Not signed in"
    type_into(qtbot, dlg2.email_edit, email)
    type_into(qtbot, dlg2.password_edit, PASSWORD)
    with qtbot.waitSignal(dlg2.signed_in, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg2.sign_in_button, Qt.MouseButton.LeftButton)
    assert not dlg2.sync_button.isEnabled() and "Open or save a project" in dlg2.project_label.text()
    # ... and a third one opens straight on the account (sign-in kept in the keyring).
    dlg3 = open_dialog(qtbot, None)
    assert dlg3.pages.currentIndex() == 1 and dlg3.email_label.text() == email
    # The status bar finds it too, at Studio start.
    fresh = AccountStatusWidget()
    qtbot.addWidget(fresh)
    fresh.refresh()
    qtbot.waitUntil(lambda: fresh.text().startswith(f"Signed in: {email} · FREE ·"), timeout=TIMEOUT_MS)

    # before_sync: the main window saves first; None cancels, a folder is what gets pushed.
    asked: list[int] = []
    answer: list[Path | None] = [None]
    dlg4 = AccountDialog(None, project_folder=folder, before_sync=lambda: (asked.append(1), answer[0])[1])
    qtbot.addWidget(dlg4)
    dlg4.show()
    qtbot.waitUntil(lambda: dlg4.pages.currentIndex() == 1 and not dlg4.busy.isVisible(), timeout=TIMEOUT_MS)
    with qtbot.assertNotEmitted(dlg4.synced, wait=300):
        qtbot.mouseClick(dlg4.sync_button, Qt.MouseButton.LeftButton)
    assert asked == [1] and not dlg4.busy.isVisible()
    answer[0] = folder
    with qtbot.waitSignal(dlg4.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg4.sync_button, Qt.MouseButton.LeftButton)
    assert asked == [1, 1] and synced.args[0]["action"] == "up_to_date" and synced.args[0]["revision"] == 1


def test_wrong_password_is_a_message(qtbot, service: str, memory_keyring: MemoryKeyring, embedded_choice: None):
    email = f"w{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(service + "/api/v1/auth/register", timeout=30,
                   json={"email": email, "username": email.split("@")[0], "password": PASSWORD, "full_name": ""})  # fmt: skip
    assert r.status_code == 201, r.text
    dlg = open_dialog(qtbot, None)
    type_into(qtbot, dlg.email_edit, email)
    type_into(qtbot, dlg.password_edit, "NotThePassword9!")
    with qtbot.assertNotEmitted(dlg.signed_in, wait=200):
        qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "Wrong email or password" in dlg.message.text(), timeout=TIMEOUT_MS)
    assert dlg.pages.currentIndex() == 0 and dlg.sign_in_button.isEnabled() and not memory_keyring.store
    shot(dlg, "account_dialog_sign_in.png")
    # A password the service refuses at registration: its reason, no crash.
    qtbot.mouseClick(dlg.create_toggle, Qt.MouseButton.LeftButton, pos=left(dlg.create_toggle))
    type_into(qtbot, dlg.email_edit, "n" + email)
    type_into(qtbot, dlg.password_edit, "short")
    qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "password" in dlg.message.text() and not dlg.busy.isVisible(), timeout=TIMEOUT_MS)
    assert dlg.pages.currentIndex() == 0


def test_unreachable_remote_is_an_offline_message(qtbot, service: str, memory_keyring: MemoryKeyring):
    s = QSettings()
    s.setValue("account/kind", "remote")
    s.setValue("account/remote_url", "")  # nothing to connect to on open
    s.sync()
    dlg = AccountDialog(None, project_folder=None)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.mouseClick(dlg.this_computer, Qt.MouseButton.LeftButton, pos=left(dlg.this_computer))
    assert dlg.this_computer.isChecked() and not dlg.url_edit.isVisible()
    qtbot.waitUntil(lambda: f"Connected to {service}" in dlg.message.text(), timeout=TIMEOUT_MS)
    qtbot.mouseClick(dlg.remote, Qt.MouseButton.LeftButton, pos=left(dlg.remote))
    assert dlg.remote.isChecked() and dlg.url_edit.isEnabled()
    qtbot.waitUntil(lambda: not dlg.busy.isVisible(), timeout=TIMEOUT_MS)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    type_into(qtbot, dlg.url_edit, url)
    type_into(qtbot, dlg.email_edit, "a@example.com")
    type_into(qtbot, dlg.password_edit, PASSWORD)
    qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Cannot reach" in dlg.message.text(), timeout=TIMEOUT_MS)
    assert f"Cannot reach {url} — check the address or your connection" in dlg.message.text()
    assert dlg.pages.currentIndex() == 0 and dlg.isVisible()
    # A malformed address says what to type.
    type_into(qtbot, dlg.url_edit, "amc example com")
    qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "https://host" in dlg.message.text(), timeout=TIMEOUT_MS)
    # Leaving the address field checks the service at once.
    type_into(qtbot, dlg.url_edit, url)
    dlg.message.clear()
    qtbot.keyClick(dlg.url_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: f"Cannot reach {url}" in dlg.message.text(), timeout=TIMEOUT_MS)
    type_into(qtbot, dlg.url_edit, service)
    qtbot.keyClick(dlg.url_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: f"Connected to {service}" in dlg.message.text(), timeout=TIMEOUT_MS)
    assert dlg.isVisible() and dlg.pages.currentIndex() == 0  # Return did not sign in or close
    # Return in the password field signs in (here: to an account that does not exist).
    qtbot.keyClick(dlg.password_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "Wrong email or password" in dlg.message.text(), timeout=TIMEOUT_MS)
    assert QSettings().value("account/kind") == "remote"


def test_status_text_and_url_check():
    assert status_text(None) == "Not signed in"
    info = {"user": {"email": "a@b.c", "tier": "free"}, "usage": {"tier": "premium", "requests_today": 12,
                                                                   "daily_limit": 1000}}  # fmt: skip
    assert status_text(info) == "Signed in: a@b.c · PREMIUM · 12/1000 today"
    assert check_remote_url(" https://amc.example.com/ ") == "https://amc.example.com"
    for bad in ("amc.example.com", "ftp://x", "https://"):
        with pytest.raises(ValueError, match="https://host"):
            check_remote_url(bad)


def test_embedded_service_gone_is_a_message_and_reopening_restarts_it(qtbot, service: str, embedded_choice: None,
                                                                      memory_keyring: MemoryKeyring, tmp_path: Path):  # fmt: skip
    folder = make_project(tmp_path / "Gone.amcproj")
    email = f"g{uuid.uuid4().hex[:8]}@example.com"
    dlg = open_dialog(qtbot, folder)
    qtbot.mouseClick(dlg.create_toggle, Qt.MouseButton.LeftButton, pos=left(dlg.create_toggle))
    type_into(qtbot, dlg.email_edit, email)
    type_into(qtbot, dlg.password_edit, PASSWORD)
    with qtbot.waitSignal(dlg.signed_in, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    embedded.stop_embedded()  # the service process goes away under the open dialog
    with qtbot.assertNotEmitted(dlg.synced, wait=200):
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "stopped answering" in dlg.message.text(), timeout=TIMEOUT_MS)
    assert dlg.isVisible() and not dlg.sync_progress.isVisible() and dlg.sync_button.isEnabled()
    dlg.close()
    # Reopened: the service is started again (same port, same database) and the sign-in is still there.
    assert embedded.start_embedded(port=int(service.rsplit(":", 1)[1])) == service
    dlg2 = open_dialog(qtbot, folder)
    assert dlg2.pages.currentIndex() == 1 and dlg2.email_label.text() == email


def test_projects_list_download_open_and_sync_pulls_another_machines_edit(
        qtbot, service: str, memory_keyring: MemoryKeyring, embedded_choice: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    # Another computer registers and uploads a project with a media file.
    email = register(service, "p")
    other = machine(service, email)
    (tmp_path / "other").mkdir()
    theirs = make_project(tmp_path / "other" / "Remote Song.amcproj")
    with other.active() as c:
        pid = c.push_project(theirs).project_id

    # This computer signs in: the project is listed.
    dlg = open_dialog(qtbot, None)
    type_into(qtbot, dlg.email_edit, email)
    type_into(qtbot, dlg.password_edit, PASSWORD)
    with qtbot.waitSignal(dlg.signed_in, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    assert dlg.projects_list.topLevelItemCount() == 1 and not dlg.download_button.isEnabled()
    item = dlg.projects_list.topLevelItem(0)
    assert (item.text(0), item.text(1)) == ("Remote Song.amcproj", "1") and item.text(2)[:2] == "20"

    # Download…: asks for a parent folder, clones into a new folder there, offers to open it.
    here = tmp_path / "here"
    here.mkdir()
    (here / "Remote Song.amcproj").mkdir()  # taken: the download goes beside it
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda _parent, caption, _dir: (asked.append(caption), str(here))[1]))  # fmt: skip
    item.setSelected(True)
    assert dlg.download_button.isEnabled()
    steps: list[tuple[float, str]] = []
    dlg.tasks.progress.connect(lambda _tid, f, m: steps.append((f, m)))
    with qtbot.waitSignal(dlg.downloaded, timeout=TIMEOUT_MS) as got:
        qtbot.mouseClick(dlg.download_button, Qt.MouseButton.LeftButton)
        assert dlg.download_progress.isVisible()
    folder = here / "Remote Song (2).amcproj"
    assert asked and "Remote Song.amcproj" in asked[0]
    assert got.args[0]["folder"] == str(folder) and got.args[0]["action"] == "cloned"
    assert {"downloading media 1/1", "done"} <= {m for _f, m in steps}
    assert not dlg.download_progress.isVisible()
    doc = json.loads((folder / "project.json").read_text())
    assert doc == json.loads((theirs / "project.json").read_text())
    [media] = (theirs / "media").iterdir()
    assert (folder / "media" / media.name).read_bytes() == media.read_bytes()
    assert projects.open_project(folder, lock=False).tracks[0].name == "tone"
    assert dlg.open_download_button.isVisible() and str(folder) in dlg.download_result.text()
    with qtbot.waitSignal(dlg.open_requested, timeout=1000) as opened:
        qtbot.mouseClick(dlg.open_download_button, Qt.MouseButton.LeftButton)
    assert opened.args == [str(folder)]
    dlg.set_project_folder(folder)  # what the main window does once it has opened it
    assert dlg.sync_button.isEnabled() and folder.name in dlg.project_label.text()
    shot(dlg, "account_dialog_projects.png")

    # The other computer adds a take and syncs; Refresh shows revision 2; Sync now pulls it.
    wav = tmp_path / "take2.wav"
    sf.write(str(wav), np.zeros((2400, 2), np.float32) + 0.1, 48000)
    p = projects.open_project(theirs)
    sha = projects.import_media(theirs, wav)
    p.add_track(projects.Track(name="take 2", media_sha=sha, original_filename="t.wav"))
    projects.save(p, theirs)
    projects.close_project(p)
    with other.active() as c:
        assert c.sync_project(theirs).action == "pushed"
    qtbot.mouseClick(dlg.refresh_projects_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dlg.projects_list.topLevelItem(0).text(1) == "2", timeout=TIMEOUT_MS)
    steps.clear()
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
        assert dlg.sync_progress.isVisible() and not dlg.sync_button.isEnabled()
    res = synced.args[0]
    assert (res["action"], res["revision"], res["downloaded_blobs"], res["reload"], res["backup"]) == (
        "pulled", 2, 1, True, None)  # fmt: skip
    fractions = [f for f, _m in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "downloading media 1/1" in {m for _f, m in steps}
    assert [t.name for t in projects.open_project(folder, lock=False).tracks] == ["tone", "take 2"]
    for f in (theirs / "media").iterdir():
        assert (folder / "media" / f.name).read_bytes() == f.read_bytes()
    assert "Updated to revision 2" in dlg.sync_result.text() and not dlg.sync_progress.isVisible()
    assert res["project_id"] == pid


def test_delete_a_server_project_then_upload_the_folder_again(
        qtbot, service: str, memory_keyring: MemoryKeyring, embedded_choice: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    from PySide6.QtWidgets import QMessageBox

    email = register(service, "d")
    folder = make_project(tmp_path / "Gone.amcproj")
    dlg = open_dialog(qtbot, folder)
    type_into(qtbot, dlg.email_edit, email)
    type_into(qtbot, dlg.password_edit, PASSWORD)
    with qtbot.waitSignal(dlg.signed_in, timeout=TIMEOUT_MS):
        qtbot.mouseClick(dlg.sign_in_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
    first = synced.args[0]
    assert first["action"] == "pushed" and dlg.projects_list.topLevelItemCount() == 1
    assert "0 B /" not in dlg.storage_label.text()
    before = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    # Delete…: asks first; Cancel deletes nothing.
    assert not dlg.delete_button.isEnabled()
    dlg.projects_list.topLevelItem(0).setSelected(True)
    assert dlg.delete_button.isEnabled()
    asked: list[str] = []
    answer = QMessageBox.StandardButton.Cancel
    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda _p, _t, text, *_a: (asked.append(text), answer)[1]))  # fmt: skip
    qtbot.mouseClick(dlg.delete_button, Qt.MouseButton.LeftButton)
    assert asked and "“Gone.amcproj” and its 1 revision" in asked[0] and "not touched" in asked[0]
    assert not dlg.tasks.active() and dlg.projects_list.topLevelItemCount() == 1
    answer = QMessageBox.StandardButton.Yes
    with qtbot.waitSignal(dlg.deleted_remote, timeout=TIMEOUT_MS) as deleted:
        qtbot.mouseClick(dlg.delete_button, Qt.MouseButton.LeftButton)
    gone = deleted.args[0]
    assert (gone["id"], gone["revisions_deleted"], gone["blobs_freed"]) == (first["project_id"], 1, 1)
    assert dlg.projects_list.topLevelItemCount() == 0 and "Deleted “Gone.amcproj”" in dlg.message.text()
    assert dlg.storage_label.text().startswith("0 B /")  # the media was freed

    # Sync now: the folder is told its server copy is gone; only "Upload again" is offered.
    with qtbot.assertNotEmitted(dlg.synced, wait=200):
        qtbot.mouseClick(dlg.sync_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dlg.conflict_box.isVisible(), timeout=TIMEOUT_MS)
    assert "has been deleted" in dlg.conflict_label.text()
    assert dlg.keep_mine_button.text() == "Upload again" and dlg.keep_mine_button.isVisible()
    assert not dlg.keep_theirs_button.isVisible() and not dlg.keep_both_button.isVisible()
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    shot(dlg, "account_dialog_deleted.png")
    with qtbot.waitSignal(dlg.synced, timeout=TIMEOUT_MS) as synced:
        qtbot.mouseClick(dlg.keep_mine_button, Qt.MouseButton.LeftButton)
    again = synced.args[0]
    assert (again["action"], again["revision"], again["uploaded_blobs"]) == ("pushed", 1, 1)
    assert again["project_id"] != first["project_id"] and not dlg.conflict_box.isVisible()
    assert dlg.projects_list.topLevelItemCount() == 1
