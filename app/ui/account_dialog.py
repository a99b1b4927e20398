"""Account: sign in to the account service (on this computer or remote), see tier and quota,
sync the open project; and the status-bar label that opens it.

Every network call runs on a :class:`TaskRunner` thread (``requests`` blocks); the UI thread
only builds widgets and reacts to results. Failures come back as :class:`_Failure` values
(never exceptions across threads) and are shown in the dialog in words a musician can act on.

Sync pushes with :meth:`app.account.AccountClient.push_project` (only missing blobs travel).
A stale base revision is a 409: the dialog never overwrites, it offers

* **Keep mine**: push this copy on top of the server's head (their revision stays in the
  server's history);
* **Keep theirs**: download the head revision into the folder (this copy's ``project.json``
  is kept beside it as ``project.local-<time>.json``) — the main window must reload;
* **Keep both**: push this copy as a new server project "<name> (conflict copy …)" and link
  the folder to it; theirs stays the head of the original project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.account import (
    AccountClient,
    AccountError,
    NotSignedInError,
    OfflineError,
    SyncConflictError,
)
from app.ui import theme
from app.ui.tasks import TaskRunner

__all__ = ["AccountDialog", "AccountStatusWidget", "status_text"]

KIND_EMBEDDED = "embedded"
KIND_REMOTE = "remote"
_SYNC_STATE = ".amcsync.json"  # written by app.account.push_project
_EMBEDDED_NAME = "the account service on this computer"
_ERROR = theme.METER_RED
_OK = theme.METER_GREEN


# ---------------------------------------------------------------------------- helpers (any thread)
@dataclass(frozen=True)
class _Failure:
    """A job's error, as one line for the musician; ``kind`` steers the dialog
    (``offline``, ``signed_out``, ``service``, ``input``, ``internal``)."""

    message: str
    kind: str


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def status_text(info: dict[str, Any] | None) -> str:
    """The status-bar line: ``Signed in: a@b.c · FREE · 12/100 today`` or ``Not signed in``."""
    if not info or not info.get("user"):
        return "Not signed in"
    user, usage = info["user"], info.get("usage") or {}
    parts = [f"Signed in: {user.get('email', '?')}", str(usage.get("tier") or user.get("tier", "?")).upper()]
    if "requests_today" in usage:
        parts.append(f"{usage['requests_today']}/{usage['daily_limit']} today")
    return " · ".join(parts)


def check_remote_url(text: str) -> str:
    """Normalise a typed service address; raise ValueError with what to type instead."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("enter the service address as https://host (or http://host:port)")
    return url


class _ReportingSession(requests.Session):
    """A requests session that tells ``report(method, url)`` before every request: how the
    dialog shows push progress without a progress hook in app.account. ``report`` may raise
    (``Cancelled``) to stop a push between requests; nothing half-written reaches the server
    because the revision is posted last."""

    def __init__(self) -> None:
        super().__init__()
        self.report: Any = None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.report is not None:
            self.report(str(method), str(url))
        return super().request(method, url, *args, **kwargs)


def _guard(fn: Any) -> Any:
    """Run a job body; turn the errors a musician can act on into a :class:`_Failure` result."""
    from app.engine.mastering.chain import Cancelled

    def run(*args: Any, **kwargs: Any) -> Any:
        server = kwargs.get("server") or ""
        try:
            return fn(*args, **kwargs)
        except Cancelled:
            raise
        except OfflineError:
            if server == _EMBEDDED_NAME:  # our own child process stopped: reopening restarts it
                return _Failure("The account service on this computer stopped answering: close and reopen "
                                "this dialog to restart it. Everything offline keeps working.", "offline")  # fmt: skip
            return _Failure(f"Cannot reach {server} — check the address or your connection. "
                            "Everything offline keeps working.", "offline")  # fmt: skip
        except NotSignedInError:
            return _Failure("Your sign-in has expired or was revoked: please sign in again.", "signed_out")
        except AccountError as e:
            return _Failure(_service_message(e), "service")
        except requests.RequestException as e:  # bad URL, TLS failure...: still "cannot reach"
            return _Failure(f"Cannot reach {server} — check the address or your connection "
                            f"({type(e).__name__}).", "offline")  # fmt: skip
        except ValueError as e:
            return _Failure(str(e)[:1].upper() + str(e)[1:], "input")
        except Exception as e:  # the embedded service failing to start, disk errors
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            return _Failure(first, "internal")

    return run


def _service_message(e: AccountError) -> str:
    if e.code == "invalid_credentials":
        return "Wrong email or password."
    if e.code == "already_registered":
        return "That email or username is already registered: sign in instead."
    if e.code == "weak_password":
        return f"Choose a stronger password: {e.body.get('detail', e)}."
    if e.status == 422 and e.body.get("errors"):
        fields = ", ".join(str(err.get("loc", ["?"])[-1]) for err in e.body["errors"] if isinstance(err, dict))
        return f"Check {fields}: {e.body.get('detail', e)}"
    if e.status == 429:
        return f"Too many attempts: {e.body.get('detail', e)}"
    return str(e)


def _server_url(kind: str, remote_url: str) -> str:
    if kind == KIND_EMBEDDED:
        from app.service.embedded import start_embedded  # the one entry point the UI may use

        return start_embedded()
    return check_remote_url(remote_url)


def _account_info(client: AccountClient, kind: str) -> dict[str, Any]:
    return {"server": client.server, "kind": kind, "user": client.whoami(), "usage": client.usage()}


# ---------------------------------------------------------------------------- pull (keep theirs)
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pull_revision(client: AccountClient, folder: Path, project_id: str, number: int, progress: Any) -> int:
    """Make ``folder`` revision ``number`` of ``project_id``: download the media it lacks,
    keep this copy's project.json beside it, write theirs. Returns how many blobs came down.

    GAP: app.account has no pull yet; this uses AccountClient._call (auth + one refresh) and
    belongs in app.account as ``pull_project``."""
    rev = client._call("GET", f"/api/v1/sync/projects/{project_id}/revisions/{number}").json()
    root = folder.resolve()
    media: dict[str, str] = dict(rev.get("media") or {})
    downloaded = 0
    for i, (name, sha) in enumerate(sorted(media.items())):
        progress(0.1 + 0.8 * i / max(1, len(media)), f"media {i + 1}/{len(media)}")
        dest = (folder / name).resolve()
        if root not in dest.parents:
            raise ValueError(f"the server's revision names media outside the project: {name!r}")
        if dest.is_file() and _sha256(dest) == sha:
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.download")
        r = client._call("GET", f"/api/v1/sync/blobs/{sha}", stream=True)
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            for chunk in r.iter_content(1 << 20):
                h.update(chunk)
                f.write(chunk)
        if h.hexdigest() != sha:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"the download of {name} does not match its SHA-256; nothing was changed")
        os.replace(tmp, dest)
        downloaded += 1
    mine = folder / "project.json"
    if mine.exists():
        shutil.copy2(mine, folder / f"project.local-{time.strftime('%Y%m%d-%H%M%S')}.json")
    _atomic_write(mine, (json.dumps(rev["project"], indent=2) + "\n").encode())
    state_path = folder / _SYNC_STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    state.update({"server": client.server, "project_id": project_id, "revision": int(rev["number"])})
    _atomic_write(state_path, json.dumps(state).encode())
    return downloaded


# ---------------------------------------------------------------------------- status-bar widget
class AccountStatusWidget(QLabel):
    """Status-bar label: ``Signed in: a@b.c · FREE · 12/100 today`` or ``Not signed in``.

    Emits ``clicked`` on a left click (the main window opens :class:`AccountDialog`).
    UI thread only.
    """

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Account and project sync")
        self.info: dict[str, Any] | None = None
        self._tasks: TaskRunner | None = None
        self.set_account(None)

    def refresh(self) -> None:
        """Look up the remembered sign-in in the background (at Studio start): with a sign-in
        in the keyring for the service chosen last time, show its account; else "Not signed in".
        Nothing is started or asked when no service was ever chosen. Offline: "Not signed in"."""
        settings = QSettings()
        kind = settings.value("account/kind")
        if kind not in (KIND_EMBEDDED, KIND_REMOTE):
            return
        url = str(settings.value("account/remote_url", ""))

        def job(*, server: str, progress: Any) -> dict[str, Any] | None:
            base = _server_url(str(kind), url)
            client = AccountClient(base)
            return _account_info(client, str(kind)) if client.refresh_token else None

        if self._tasks is None:
            self._tasks = TaskRunner(self)
            self._tasks.finished.connect(self._on_refreshed)
        self._tasks.submit("account: status", _guard(job), server=url)

    def _on_refreshed(self, _task_id: str, result: Any) -> None:
        if isinstance(result, _Failure):
            self.setToolTip(f"Account and project sync: {result.message}")
            return
        self.set_account(result)

    def set_account(self, info: dict[str, Any] | None) -> None:
        """Show ``info`` (the dict of ``AccountDialog.signed_in``), or "Not signed in" for None."""
        self.info = info if info and info.get("user") else None
        self.setText(status_text(self.info))

    def update_usage(self, usage: dict[str, Any] | None) -> None:
        """New usage figures (``AccountDialog.synced``'s ``result["usage"]``) for the signed-in account."""
        if self.info is not None and usage:
            self.set_account({**self.info, "usage": usage})

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mousePressEvent(event)


# ---------------------------------------------------------------------------- the dialog
class AccountDialog(QDialog):
    """Sign in (or create an account) on this computer's service or a remote one; show
    tier, today's usage and storage; sign out; sync ``project_folder``.

    Signals: ``signed_in(info)`` with ``{"server", "kind", "user", "usage"}``;
    ``signed_out()``; ``synced(result)`` with ``{"action": "pushed"|"kept_mine"|"kept_theirs"|
    "kept_both", "folder", "project_id", "revision", "uploaded_blobs", "skipped_blobs",
    "reload" (True when project.json on disk changed: reopen it), "usage"}``.
    ``before_sync`` (optional) is called on the UI thread when *Sync now* is pressed, before
    anything is read: the main window saves the open project there and returns its folder
    (sync pushes what is on disk), or None to cancel the sync.
    UI thread only; the network work runs on the dialog's :class:`TaskRunner`.
    """

    signed_in = Signal(dict)
    signed_out = Signal()
    synced = Signal(dict)

    def __init__(self, parent: QWidget | None = None, *, project_folder: Path | None = None,
                 before_sync: Callable[[], Path | None] | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setWindowTitle("Account")
        self.setMinimumWidth(500)
        self.project_folder = Path(project_folder) if project_folder else None
        self.before_sync = before_sync
        self.tasks = TaskRunner(self)
        self.tasks.finished.connect(self._on_finished)
        self.tasks.failed.connect(self._on_failed)
        self.tasks.cancelled.connect(self._on_cancelled)
        self.tasks.progress.connect(self._on_progress)
        self._pending: dict[str, Any] = {}  # task id -> UI-thread continuation
        self._client: AccountClient | None = None
        self._session = _ReportingSession()
        self.info: dict[str, Any] | None = None
        self._conflict: dict[str, Any] | None = None
        self._settings = QSettings()
        self._build()
        kind = str(self._settings.value("account/kind", KIND_EMBEDDED))
        self.url_edit.setText(str(self._settings.value("account/remote_url", "")))
        (self.remote if kind == KIND_REMOTE else self.this_computer).setChecked(True)
        self._on_kind_changed()
        self._check_session()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(16, 14, 16, 12)
        root.setSpacing(10)

        self.server_box = QGroupBox("Account service")
        g = QGridLayout(self.server_box)
        g.setContentsMargins(10, 8, 10, 10)
        self.this_computer = QRadioButton("This computer")
        self.this_computer.setToolTip("Run the account service on this machine (no internet needed)")
        self.remote = QRadioButton("Remote service")
        group = QButtonGroup(self)
        group.addButton(self.this_computer)
        group.addButton(self.remote)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("https://amc.example.com")
        self.url_edit.setClearButtonEnabled(True)
        g.addWidget(self.this_computer, 0, 0)
        g.addWidget(self.remote, 0, 1)
        g.addWidget(self.url_edit, 1, 0, 1, 2)
        self.server_label = QLabel()
        self.server_label.setStyleSheet(f"color: {theme.TEXT_DIM};")
        g.addWidget(self.server_label, 2, 0, 1, 2)
        self.this_computer.toggled.connect(self._on_kind_changed)
        self.this_computer.clicked.connect(self._check_session)  # user clicks only, not setChecked
        self.url_edit.editingFinished.connect(self._on_url_edited)
        root.addWidget(self.server_box)

        self.pages = QStackedWidget()
        self.pages.addWidget(self._build_sign_in())
        self.pages.addWidget(self._build_account())
        root.addWidget(self.pages)
        self._show_page(0)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setTextVisible(False)
        self.busy.setFixedHeight(6)
        self.busy.hide()
        root.addWidget(self.busy)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.message)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        root.addWidget(buttons)
        # Return acts where it is typed (password: sign in; address: check the service), never
        # on a default button: Return in the address field must not sign in or close the dialog.
        for b in self.findChildren(QPushButton):
            b.setAutoDefault(False)
            b.setDefault(False)

    def _build_sign_in(self) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        form.setContentsMargins(0, 0, 0, 0)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.email_edit = QLineEdit()
        self.email_edit.setPlaceholderText("you@example.com")
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.create_toggle = QCheckBox("I'm new here: create an account")
        self.username_label = QLabel("Username")
        self.username_edit = QLineEdit()
        self.username_edit.setPlaceholderText("shown to you only; letters and digits")
        self.sign_in_button = QPushButton("Sign in")
        self.sign_in_button.setProperty("primary", True)
        self.sign_in_button.setMinimumWidth(140)
        form.addRow("Email", self.email_edit)
        form.addRow("Password", self.password_edit)
        form.addRow(self.username_label, self.username_edit)
        form.addRow("", self.create_toggle)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.sign_in_button)
        form.addRow(row)
        self.create_toggle.toggled.connect(self._on_create_toggled)
        self.sign_in_button.clicked.connect(self._sign_in)
        self.password_edit.returnPressed.connect(self._sign_in)
        self._on_create_toggled(False)
        return page

    def _build_account(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(10)
        head = QHBoxLayout()
        who = QVBoxLayout()
        who.setSpacing(2)
        self.email_label = QLabel()
        self.email_label.setStyleSheet("font-size: 12pt; font-weight: 600;")
        self.username_value = QLabel()
        self.username_value.setStyleSheet(f"color: {theme.TEXT_DIM};")
        who.addWidget(self.email_label)
        who.addWidget(self.username_value)
        head.addLayout(who, 1)
        self.tier_label = QLabel()
        self.tier_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.tier_label.setStyleSheet(f"background: {theme.ACCENT_DIM}; border: 1px solid {theme.ACCENT}; "
                                      "border-radius: 9px; padding: 2px 12px; font-weight: 700;")  # fmt: skip
        head.addWidget(self.tier_label, 0, Qt.AlignmentFlag.AlignTop)
        self.sign_out_button = QPushButton("Sign out")
        head.addWidget(self.sign_out_button, 0, Qt.AlignmentFlag.AlignTop)
        v.addLayout(head)

        quota = QGridLayout()
        quota.setHorizontalSpacing(10)
        self.usage_label = QLabel()
        self.usage_bar = QProgressBar()
        self.usage_bar.setTextVisible(False)
        self.storage_label = QLabel()
        self.storage_bar = QProgressBar()
        self.storage_bar.setTextVisible(False)
        for r, (name, label, bar) in enumerate((("Today", self.usage_label, self.usage_bar),
                                                ("Storage", self.storage_label, self.storage_bar))):  # fmt: skip
            caption = QLabel(name)
            caption.setStyleSheet(f"color: {theme.TEXT_DIM};")
            quota.addWidget(caption, r, 0)
            quota.addWidget(bar, r, 1)
            quota.addWidget(label, r, 2)
        quota.setColumnStretch(1, 1)
        v.addLayout(quota)

        sync = QGroupBox("Project sync")
        s = QVBoxLayout(sync)
        s.setContentsMargins(10, 8, 10, 10)
        top = QHBoxLayout()
        self.project_label = QLabel()
        self.project_label.setWordWrap(True)
        top.addWidget(self.project_label, 1)
        self.sync_button = QPushButton("Sync now")
        self.sync_button.setProperty("primary", True)
        top.addWidget(self.sync_button)
        s.addLayout(top)
        self.sync_progress = QProgressBar()
        self.sync_progress.setRange(0, 1000)
        self.sync_progress.setFormat("%p%")
        self.sync_progress.hide()
        s.addWidget(self.sync_progress)
        self.sync_result = QLabel()
        self.sync_result.setWordWrap(True)
        self.sync_result.setStyleSheet(f"color: {theme.TEXT_DIM};")
        s.addWidget(self.sync_result)

        self.conflict_box = QFrame()
        self.conflict_box.setObjectName("conflict")
        self.conflict_box.setStyleSheet(f"QFrame#conflict {{ border: 1px solid {theme.METER_YELLOW}; "
                                        f"border-radius: 4px; background: {theme.SURFACE}; }}")  # fmt: skip
        c = QVBoxLayout(self.conflict_box)
        self.conflict_label = QLabel()
        self.conflict_label.setWordWrap(True)
        c.addWidget(self.conflict_label)
        choices = QHBoxLayout()
        self.keep_mine_button = QPushButton("Keep mine")
        self.keep_mine_button.setToolTip("Push this copy as the newest revision; theirs stays in the server's history")
        self.keep_theirs_button = QPushButton("Keep theirs")
        self.keep_theirs_button.setToolTip("Download the server's revision into this folder; "
                                           "this copy's project.json is kept beside it")  # fmt: skip
        self.keep_both_button = QPushButton("Keep both")
        self.keep_both_button.setToolTip("Push this copy as a separate server project (a conflict copy) "
                                         "and sync this folder with it")  # fmt: skip
        choices.addStretch(1)
        for b in (self.keep_mine_button, self.keep_theirs_button, self.keep_both_button):
            choices.addWidget(b)
        c.addLayout(choices)
        self.conflict_box.hide()
        s.addWidget(self.conflict_box)
        v.addWidget(sync)

        self.sign_out_button.clicked.connect(self._sign_out)
        self.sync_button.clicked.connect(self._sync)
        self.keep_mine_button.clicked.connect(lambda: self._resolve("mine"))
        self.keep_theirs_button.clicked.connect(lambda: self._resolve("theirs"))
        self.keep_both_button.clicked.connect(lambda: self._resolve("both"))
        return page

    # ------------------------------------------------------------------ small UI helpers
    @property
    def kind(self) -> str:
        return KIND_REMOTE if self.remote.isChecked() else KIND_EMBEDDED

    def _say(self, text: str, *, error: bool = False, ok: bool = False) -> None:
        colour = _ERROR if error else _OK if ok else theme.TEXT_DIM
        self.message.setStyleSheet(f"color: {colour};")
        self.message.setText(text)

    def _show_page(self, index: int) -> None:
        """Switch page; the dialog takes the size of the page shown (not of the largest)."""
        for i in range(self.pages.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.pages.widget(i).setSizePolicy(policy, policy)
        self.pages.setCurrentIndex(index)
        self.pages.adjustSize()
        self.adjustSize()

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        for w in (self.sign_in_button, self.sign_out_button, self.sync_button, self.keep_mine_button,
                  self.keep_theirs_button, self.keep_both_button, self.server_box):  # fmt: skip
            w.setEnabled(not busy)
        if not busy:
            self._update_sync_enabled()

    def _update_sync_enabled(self) -> None:
        ok = self.project_folder is not None and (self.project_folder / "project.json").is_file()
        self.sync_button.setEnabled(ok)
        if self.project_folder is None:
            self.project_label.setText("Open or save a project to sync it.")
        elif not ok:
            self.project_label.setText(f"{self.project_folder.name}: save the project first.")
        else:
            self.project_label.setText(f"<b>{self.project_folder.name}</b>")
            self.project_label.setToolTip(str(self.project_folder))

    def _on_kind_changed(self, *_: Any) -> None:
        remote = self.kind == KIND_REMOTE
        self.url_edit.setEnabled(remote)
        self.url_edit.setVisible(remote)
        self.server_label.setText("" if remote else "Runs on this computer; your data stays here.")
        self.server_label.setVisible(not remote)

    def _on_create_toggled(self, create: bool) -> None:
        self.username_label.setVisible(create)
        self.username_edit.setVisible(create)
        self.sign_in_button.setText("Create account" if create else "Sign in")

    def _submit(self, name: str, fn: Any, then: Any, **kwargs: Any) -> None:
        """Run ``fn(**kwargs, progress=...)`` in the background; ``then(result)`` on the UI thread."""
        self._set_busy(True)
        handle = self.tasks.submit(name, _guard(fn), **kwargs)
        self._pending[handle.task_id] = then

    def _on_finished(self, task_id: str, result: Any) -> None:
        then = self._pending.pop(task_id, None)
        self._set_busy(False)
        if isinstance(result, _Failure):
            self._show_failure(result)
        elif then is not None:
            then(result)

    def _on_failed(self, task_id: str, message: str, _details: str) -> None:
        self._pending.pop(task_id, None)
        self._set_busy(False)
        self.sync_progress.hide()
        self._say(f"Something went wrong: {message}", error=True)

    def _on_cancelled(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        self._set_busy(False)

    def _on_progress(self, _task_id: str, fraction: float, message: str) -> None:
        if self.sync_progress.isVisible():
            self.sync_progress.setValue(int(fraction * 1000))
            self.sync_progress.setFormat(f"{message}  %p%" if message else "%p%")

    def _show_failure(self, f: _Failure) -> None:
        self.sync_progress.hide()
        self._say(f.message, error=True)
        if f.kind == "signed_out" and self.info is not None:
            self.info = None
            self._show_page(0)
            self.server_box.setEnabled(True)
            self.signed_out.emit()

    # ------------------------------------------------------------------ session
    def _check_session(self) -> None:
        """On open: start/find the service and, when the keyring holds a sign-in, show the account."""
        if self.kind == KIND_REMOTE and not self.url_edit.text().strip():
            self._say("Enter the address of the account service, then sign in.")
            return
        session = self._session

        def job(*, kind: str, url: str, server: str, progress: Any) -> dict[str, Any]:
            server = _server_url(kind, url)
            client = AccountClient(server, session=session)
            if not client.refresh_token:
                # Nothing to sign in with: still say whether the service answers.
                session.get(server + "/health", timeout=10).raise_for_status()
                return {"server": server, "kind": kind, "user": None, "_client": client}
            return {**_account_info(client, kind), "_client": client}

        self._say("Connecting…")
        self._submit("account: connect", job, self._on_session, kind=self.kind, url=self.url_edit.text(),
                     server=self._display_server())  # fmt: skip

    def _on_url_edited(self) -> None:
        if self.kind == KIND_REMOTE and self.url_edit.isModified() and not self.tasks.active():
            self.url_edit.setModified(False)
            try:
                check_remote_url(self.url_edit.text())
            except ValueError:
                return  # said when signing in; no nagging while typing
            self._check_session()

    def _server_name(self, client: AccountClient) -> str:
        """How failures name the signed-in service."""
        return _EMBEDDED_NAME if self.info and self.info.get("kind") == KIND_EMBEDDED else client.server

    def _display_server(self) -> str:
        if self.kind == KIND_EMBEDDED:
            return _EMBEDDED_NAME
        return self.url_edit.text().strip() or "the account service"

    def _on_session(self, info: dict[str, Any]) -> None:
        self._client = info.pop("_client")
        if info.get("user"):
            self._show_account(info)
            self.signed_in.emit(info)
        else:
            self._say(f"Connected to {info['server']}. Sign in, or create an account.")
            self._show_page(0)
            self.email_edit.setFocus()

    def _sign_in(self) -> None:
        email, password = self.email_edit.text().strip(), self.password_edit.text()
        create = self.create_toggle.isChecked()
        username = self.username_edit.text().strip() or email.split("@")[0]
        if not email or "@" not in email or not password:
            self._say("Enter your email and password.", error=True)
            return
        kind, url = self.kind, self.url_edit.text()
        self._settings.setValue("account/kind", kind)
        if kind == KIND_REMOTE:
            self._settings.setValue("account/remote_url", url.strip())
        session = self._session

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            base = _server_url(kind, url)
            client = AccountClient(base, session=session)
            if create:
                client.register(email, username, password, "")
            client.login(email, password)
            return {**_account_info(client, kind), "_client": client}

        self._say("Creating your account…" if create else "Signing in…")
        self._submit("account: sign in", job, self._on_signed_in, server=self._display_server())

    def _on_signed_in(self, info: dict[str, Any]) -> None:
        self._client = info.pop("_client")  # keeps the access token: no refresh per request
        self.password_edit.clear()
        self.create_toggle.setChecked(False)
        self._show_account(info)
        self._say(f"Signed in to {info['server']}.", ok=True)
        self.signed_in.emit(info)

    def _show_account(self, info: dict[str, Any]) -> None:
        self.info = info
        user, usage = info["user"], info.get("usage") or {}
        self.email_label.setText(user.get("email", ""))
        where = "this computer" if info.get("kind") == KIND_EMBEDDED else info["server"]
        self.username_value.setText(f"{user.get('username', '')} · on {where}")
        self.tier_label.setText(str(usage.get("tier") or user.get("tier", "")).upper())
        self._show_usage(usage)
        self._show_page(1)
        self.server_box.setEnabled(False)  # sign out to change the service
        self._update_sync_enabled()

    def _show_usage(self, usage: dict[str, Any]) -> None:
        if "requests_today" in usage:
            limit = max(1, int(usage["daily_limit"]))
            self.usage_label.setText(f"{usage['requests_today']} / {usage['daily_limit']} requests")
            self.usage_bar.setRange(0, limit)
            self.usage_bar.setValue(min(limit, int(usage["requests_today"])))
        if "storage_limit_bytes" in usage:
            limit_b = max(1, int(usage["storage_limit_bytes"]))
            self.storage_label.setText(f"{_human_bytes(int(usage['storage_bytes']))} / {_human_bytes(limit_b)}")
            self.storage_bar.setRange(0, 1000)
            self.storage_bar.setValue(min(1000, round(1000 * int(usage["storage_bytes"]) / limit_b)))
        for w in (self.storage_label, self.storage_bar):
            w.setVisible("storage_limit_bytes" in usage)

    def _sign_out(self) -> None:
        client = self._client
        if client is None:
            return

        def job(*, server: str, progress: Any) -> bool:
            try:
                client.logout()  # forgets the token here even when the server is unreachable
            except OfflineError:
                return False
            return True

        self._say("Signing out…")
        self._submit("account: sign out", job, self._on_signed_out, server=self._server_name(client))

    def _on_signed_out(self, revoked: bool) -> None:
        self.info = None
        self.conflict_box.hide()
        self.sync_result.clear()
        self._show_page(0)
        self.server_box.setEnabled(True)
        self._say("Signed out." if revoked else "Signed out on this computer (the service could not be "
                  "reached to revoke the sign-in).", ok=revoked)  # fmt: skip
        self.signed_out.emit()

    # ------------------------------------------------------------------ sync
    def _sync_job_setup(self) -> tuple[AccountClient, Path] | None:
        if self._client is None or self.project_folder is None:
            return None
        self.conflict_box.hide()
        self.sync_result.clear()
        self.sync_progress.setValue(0)
        self.sync_progress.setFormat("%p%")
        self.sync_progress.show()
        return self._client, self.project_folder

    def _sync(self) -> None:
        if self.before_sync is not None:
            folder = self.before_sync()
            if folder is None:
                return
            self.project_folder = Path(folder)
            self._update_sync_enabled()
        setup = self._sync_job_setup()
        if setup is None:
            return
        client, folder = setup
        session = self._session
        kind = self.kind

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            with _reporting(session, folder, progress):
                try:
                    r = client.push_project(folder)
                except SyncConflictError as e:
                    return {"conflict": True, "base": int(e.body.get("base_revision", 0)),
                            "head": int(e.body.get("head_revision", 0))}  # fmt: skip
            progress(1.0, "done")
            return {"action": "pushed", "folder": str(folder), "project_id": r.project_id, "revision": r.revision,
                    "uploaded_blobs": r.uploaded_blobs, "skipped_blobs": r.skipped_blobs, "reload": False,
                    "usage": client.usage(), "kind": kind}  # fmt: skip

        self._say(f"Syncing {folder.name}…")
        self._submit("account: sync", job, self._on_synced, server=self._server_name(client))

    def _on_synced(self, result: dict[str, Any]) -> None:
        self.sync_progress.hide()
        if result.get("conflict"):
            self._conflict = result
            self.conflict_label.setText(
                f"<b>This project changed on the server</b> since this copy last synced (this copy is based on "
                f"revision {result['base']}, the server has revision {result['head']}). Nothing was overwritten. "
                "Which version do you want to keep?")  # fmt: skip
            self.conflict_box.show()
            self._say("Sync conflict: choose a version below.", error=True)
            return
        self._conflict = None
        self.conflict_box.hide()
        action = result["action"]
        text = {
            "pushed": f"Revision {result['revision']} is on the server ({result['uploaded_blobs']} media uploaded, "
                      f"{result['skipped_blobs']} already there).",
            "kept_mine": f"Your version is revision {result['revision']}; theirs stays in the server's history.",
            "kept_theirs": f"This folder now holds revision {result['revision']} from the server "
                           f"({result.get('downloaded_blobs', 0)} media downloaded; your project.json was kept "
                           "beside it). Reopen the project to see it.",
            "kept_both": f"Your version is now the server project “{result.get('name', '')}”; theirs stays as "
                         f"the original. This folder syncs with the copy from now on.",
        }[action]  # fmt: skip
        self.sync_result.setText(text)
        self._say(f"Synced {Path(result['folder']).name}.", ok=True)
        if result.get("usage") and self.info is not None:
            self.info = {**self.info, "usage": result["usage"]}
            self._show_usage(result["usage"])
        self.synced.emit(result)

    def _resolve(self, choice: str) -> None:
        conflict = self._conflict
        setup = self._sync_job_setup()
        if setup is None or conflict is None:
            return
        client, folder = setup
        session = self._session
        kind = self.kind

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            head = int(conflict["head"])
            state_path = folder / _SYNC_STATE
            state = json.loads(state_path.read_text())
            extra: dict[str, Any] = {"reload": False}
            if choice == "theirs":
                extra["downloaded_blobs"] = _pull_revision(client, folder, state["project_id"], head, progress)
                extra.update(reload=True, project_id=state["project_id"], revision=head, action="kept_theirs",
                             uploaded_blobs=0, skipped_blobs=0)  # fmt: skip
            else:
                with _reporting(session, folder, progress):
                    try:
                        if choice == "mine":
                            # Explicitly chosen by the musician: build on the server's head. Any
                            # failure puts the old base back, so a later plain sync still conflicts.
                            _atomic_write(state_path, json.dumps({**state, "revision": head}).encode())
                            try:
                                r = client.push_project(folder)
                            except BaseException:
                                _atomic_write(state_path, json.dumps(state).encode())
                                raise
                            extra["action"] = "kept_mine"
                        else:
                            r, name = _push_conflict_copy(client, folder)
                            extra.update(action="kept_both", name=name)
                    except SyncConflictError as e:  # someone pushed again meanwhile
                        return {"conflict": True, "base": int(e.body.get("base_revision", 0)),
                                "head": int(e.body.get("head_revision", 0))}  # fmt: skip
                extra.update(project_id=r.project_id, revision=r.revision, uploaded_blobs=r.uploaded_blobs,
                             skipped_blobs=r.skipped_blobs)  # fmt: skip
            progress(1.0, "done")
            return {"folder": str(folder), "usage": client.usage(), "kind": kind, **extra}

        self._say({"mine": "Keeping your version…", "theirs": "Downloading the server's version…",
                   "both": "Keeping both versions…"}[choice])  # fmt: skip
        self._submit(f"account: keep {choice}", job, self._on_synced, server=self._server_name(client))

    # ------------------------------------------------------------------ lifetime
    def done(self, result: int) -> None:
        """Closing the dialog cancels what runs (a push stops between requests)."""
        for h in self.tasks.active():
            h.cancel()
        super().done(result)


@contextlib.contextmanager
def _reporting(session: _ReportingSession, folder: Path, progress: Any) -> Any:
    """Turn the requests of one push into progress: HEAD/PUT per media file, then the revision."""
    media = folder / "media"
    total = sum(1 for f in media.rglob("*") if f.is_file()) if media.is_dir() else 0
    seen: set[str] = set()

    def report(method: str, url: str) -> None:
        if "/sync/blobs/" in url:
            sha = url.rsplit("/", 1)[-1]
            seen.add(sha)
            verb = "uploading" if method.upper() == "PUT" else "checking"
            progress(0.05 + 0.85 * (len(seen) - (0 if verb == "uploading" else 1)) / max(1, total),
                     f"{verb} media {len(seen)}/{total}")  # fmt: skip
        elif url.endswith("/revisions"):
            progress(0.92, "saving the revision")
        else:
            progress(0.02, "connecting")

    session.report = report
    try:
        yield
    finally:
        session.report = None


def _push_conflict_copy(client: AccountClient, folder: Path) -> tuple[Any, str]:
    """Push ``folder`` as a new server project named "<name> (conflict copy <host> <time>)",
    then link ``folder`` to it. Media are linked, not copied, into a temporary folder."""
    stamp = time.strftime("%Y-%m-%d %H.%M")
    name = f"{folder.stem} (conflict copy {socket.gethostname()} {stamp}){folder.suffix}"
    with tempfile.TemporaryDirectory(prefix="amc-conflict-") as tmp:
        copy = Path(tmp) / name
        (copy / "media").mkdir(parents=True)
        shutil.copy2(folder / "project.json", copy / "project.json")
        media = folder / "media"
        for f in media.rglob("*") if media.is_dir() else []:
            if f.is_file():
                dest = copy / f.relative_to(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.symlink(f.resolve(), dest)
                except OSError:  # no symlinks (Windows without the privilege): copy
                    shutil.copy2(f, dest)
        r = client.push_project(copy)
        _atomic_write(folder / _SYNC_STATE, (copy / _SYNC_STATE).read_bytes())
    return r, name

