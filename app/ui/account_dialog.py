"""Account: sign in to the account service (on this computer or remote), see tier and quota,
sync the open project both ways, download the account's projects; and the status-bar label
that opens it.

Every network call runs on a :class:`TaskRunner` thread (``requests`` blocks); the UI thread
only builds widgets and reacts to results. Failures come back as :class:`_Failure` values
(never exceptions across threads) and are shown in the dialog in words a musician can act on.

*Sync now* runs :meth:`app.account.AccountClient.sync_project` with a progress bar: changes
made here are pushed (only missing blobs travel), changes made on another machine come down
(fast-forward; the main window reopens the project). When both changed, nothing is
overwritten: the dialog offers (:meth:`~app.account.AccountClient.resolve_conflict`)

* **Keep mine**: push this copy on top of the server's head (their revision stays in the
  server's history);
* **Keep theirs**: download the head revision into the folder (this copy's ``project.json``
  is kept beside it as ``project.local-<time>.json``) — the main window must reload;
* **Keep both**: push this copy as a new server project "<name> (conflict copy …)" and link
  the folder to it; theirs stays the head of the original project.

*Projects on this account* lists the server projects; *Download…* clones one into a new
folder (:meth:`~app.account.AccountClient.clone_project`) and offers to open it
(``open_requested``); *Delete…* (after asking) deletes one from the server, freeing the
media no other project uses. A folder whose server project was deleted is told so at its
next sync, with *Upload again* (a new server project) as the only choice; nothing local
changes until then.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QStackedWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.account import (
    AccountClient,
    AccountError,
    NotSignedInError,
    OfflineError,
    SyncConflictError,
    SyncResult,
)
from app.ui import theme
from app.ui.tasks import TaskRunner

__all__ = ["AccountDialog", "AccountStatusWidget", "status_text"]

KIND_EMBEDDED = "embedded"
KIND_REMOTE = "remote"
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
    if e.code in ("already_registered", "registration_not_signed_in"):
        return "That email or username is already registered: sign in instead, or choose another."
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


def _account_info(client: AccountClient, kind: str, *, projects: bool = False) -> dict[str, Any]:
    info = {"server": client.server, "kind": kind, "user": client.whoami(), "usage": client.usage()}
    if projects:
        info["projects"] = client.list_projects()
    return info


def _result_dict(r: SyncResult, client: AccountClient, kind: str) -> dict[str, Any]:
    """A sync outcome as the ``synced`` signal carries it (see :class:`AccountDialog`)."""
    return {"action": r.action, "folder": str(r.folder), "project_id": r.project_id, "revision": r.revision,
            "uploaded_blobs": r.uploaded_blobs, "skipped_blobs": r.skipped_blobs,
            "downloaded_blobs": r.downloaded_blobs, "reload": r.project_changed, "name": r.name,
            "backup": str(r.backup) if r.backup else None, "not_synced": list(r.not_synced),
            "usage": client.usage(), "projects": client.list_projects(), "kind": kind}  # fmt: skip


def download_folder(parent: Path, name: str) -> Path:
    """A new folder under ``parent`` for the server project ``name``: characters a file system
    refuses replaced, ``.amcproj`` added, `` (2)``, `` (3)``... when the name is taken."""
    safe = re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", name).strip(" .") or "Project"
    stem = safe[: -len(".amcproj")] if safe.endswith(".amcproj") else safe
    candidate, k = parent / f"{stem}.amcproj", 2
    while candidate.exists():
        candidate, k = parent / f"{stem} ({k}).amcproj", k + 1
    return candidate


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

    Signals: ``signed_in(info)`` with ``{"server", "kind", "user", "usage", "projects"}``;
    ``signed_out()``; ``synced(result)`` with ``{"action": "pushed"|"pulled"|"up_to_date"|
    "kept_mine"|"kept_theirs"|"kept_both", "folder", "project_id", "revision", "uploaded_blobs",
    "skipped_blobs", "downloaded_blobs", "reload" (True when project.json on disk changed: reopen
    it), "backup" (where unsynced local edits were kept, or None), "name", "usage", "projects"}``;
    ``downloaded(result)`` (same keys, ``action="cloned"``) when *Download…* made a new folder;
    ``deleted_remote(result)`` (``{"id", "name", "revisions_deleted", "blobs_freed",
    "bytes_freed", "usage", "projects"}``) when *Delete…* removed a server project;
    ``open_requested(folder)`` when the musician asks to open a downloaded project.
    ``before_sync`` (optional) is called on the UI thread when *Sync now* is pressed, before
    anything is read: the main window saves the open project there and returns its folder
    (sync pushes what is on disk), or None to cancel the sync.
    UI thread only; the network work runs on the dialog's :class:`TaskRunner`.
    """

    signed_in = Signal(dict)
    signed_out = Signal()
    synced = Signal(dict)
    downloaded = Signal(dict)
    deleted_remote = Signal(dict)
    open_requested = Signal(str)

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
        self._bars: dict[str, QProgressBar] = {}  # task id -> the progress bar it drives
        self._client: AccountClient | None = None
        self._session = requests.Session()  # one connection pool for the dialog's jobs
        self._downloaded_folder: Path | None = None
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
        v.addWidget(self._build_projects())

        self.sign_out_button.clicked.connect(self._sign_out)
        self.sync_button.clicked.connect(self._sync)
        self.keep_mine_button.clicked.connect(lambda: self._resolve("mine"))
        self.keep_theirs_button.clicked.connect(lambda: self._resolve("theirs"))
        self.keep_both_button.clicked.connect(lambda: self._resolve("both"))
        return page

    def _build_projects(self) -> QWidget:
        box = QGroupBox("Projects on this account")
        v = QVBoxLayout(box)
        v.setContentsMargins(10, 8, 10, 10)
        self.projects_list = QTreeWidget()
        self.projects_list.setHeaderLabels(["Project", "Revision", "Updated"])
        self.projects_list.setRootIsDecorated(False)
        self.projects_list.setUniformRowHeights(True)
        self.projects_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self.projects_list.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, header.ResizeMode.Stretch)
        for col in (1, 2):
            header.setSectionResizeMode(col, header.ResizeMode.ResizeToContents)
        self.projects_list.setFixedHeight(118)  # about five rows; it scrolls beyond
        self.projects_list.setToolTip("Your projects on the account service, e.g. from elsewhere")
        v.addWidget(self.projects_list)
        row = QHBoxLayout()
        self.projects_label = QLabel()
        self.projects_label.setStyleSheet(f"color: {theme.TEXT_DIM};")
        self.projects_label.setWordWrap(True)
        row.addWidget(self.projects_label, 1)
        self.refresh_projects_button = QPushButton("Refresh")
        self.download_button = QPushButton("Download…")
        self.download_button.setToolTip("Download the selected project into a new folder here")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Delete the selected project from the server (its revisions, and the "
                                      "media no other project uses); folders on your computers stay")  # fmt: skip
        row.addWidget(self.refresh_projects_button)
        row.addWidget(self.download_button)
        row.addWidget(self.delete_button)
        v.addLayout(row)
        self.download_progress = QProgressBar()
        self.download_progress.setRange(0, 1000)
        self.download_progress.hide()
        v.addWidget(self.download_progress)
        done = QHBoxLayout()
        self.download_result = QLabel()
        self.download_result.setWordWrap(True)
        self.download_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_result.hide()
        done.addWidget(self.download_result, 1)
        self.open_download_button = QPushButton("Open it")
        self.open_download_button.setProperty("primary", True)
        self.open_download_button.hide()
        done.addWidget(self.open_download_button, 0, Qt.AlignmentFlag.AlignTop)
        v.addLayout(done)
        self.refresh_projects_button.clicked.connect(self._refresh_projects)
        self.download_button.clicked.connect(self._download)
        self.delete_button.clicked.connect(self._delete_remote)
        self.projects_list.itemDoubleClicked.connect(lambda *_: self._download())
        self.projects_list.itemSelectionChanged.connect(self._update_download_enabled)
        self.open_download_button.clicked.connect(self._open_downloaded)
        self._show_projects([])
        return box

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
        self._fit()

    def _fit(self) -> None:
        """Grow to fit the page shown. QStackedWidget ignores height-for-width, so wrapped labels
        (the conflict question, a download's path) would be clipped: ask the page's layout."""
        page = self.pages.currentWidget()
        layout = page.layout() if page is not None else None
        width = max(self.pages.width(), self.minimumWidth() - 32)
        height = -1
        if layout is not None and layout.hasHeightForWidth():
            height = layout.totalHeightForWidth(width)
        self.pages.setMinimumHeight(max(0, height))
        self.pages.adjustSize()
        self.adjustSize()

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        for w in (self.sign_in_button, self.sign_out_button, self.sync_button, self.keep_mine_button,
                  self.keep_theirs_button, self.keep_both_button, self.server_box,
                  self.refresh_projects_button, self.download_button, self.delete_button):  # fmt: skip
            w.setEnabled(not busy)
        if not busy:
            self._update_sync_enabled()
            self._update_download_enabled()

    def _update_download_enabled(self) -> None:
        chosen = bool(self.projects_list.selectedItems())
        self.download_button.setEnabled(chosen and not self.tasks.active())
        self.delete_button.setEnabled(chosen and not self.tasks.active())

    def set_project_folder(self, folder: Path | None) -> None:
        """The project *Sync now* syncs (the main window calls this after opening another one)."""
        self.project_folder = Path(folder) if folder else None
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

    def _submit(
        self, name: str, fn: Any, then: Any, *, bar: QProgressBar | None = None, **kwargs: Any
    ) -> None:
        """Run ``fn(**kwargs, progress=...)`` in the background; ``then(result)`` on the UI thread;
        ``bar`` (shown from 0) follows the job's progress."""
        self._set_busy(True)
        handle = self.tasks.submit(name, _guard(fn), **kwargs)
        self._pending[handle.task_id] = then
        if bar is not None:
            bar.setValue(0)
            bar.setFormat("%p%")
            bar.show()
            self._bars[handle.task_id] = bar

    def _end(self, task_id: str) -> None:
        bar = self._bars.pop(task_id, None)
        if bar is not None:
            bar.hide()
        self._set_busy(False)

    def _on_finished(self, task_id: str, result: Any) -> None:
        then = self._pending.pop(task_id, None)
        self._end(task_id)
        if isinstance(result, _Failure):
            self._show_failure(result)
        elif then is not None:
            then(result)

    def _on_failed(self, task_id: str, message: str, _details: str) -> None:
        self._pending.pop(task_id, None)
        self._end(task_id)
        self._say(f"Something went wrong: {message}", error=True)

    def _on_cancelled(self, task_id: str) -> None:
        self._pending.pop(task_id, None)
        self._end(task_id)

    def _on_progress(self, task_id: str, fraction: float, message: str) -> None:
        bar = self._bars.get(task_id)
        if bar is not None:
            bar.setValue(int(fraction * 1000))
            bar.setFormat(f"{message}  %p%" if message else "%p%")

    def _show_failure(self, f: _Failure) -> None:
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
            return {**_account_info(client, kind, projects=True), "_client": client}

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
                # The service answers a registration the same way whether or not the email is
                # taken (it reveals no accounts): a taken one shows as the sign-in failing.
                client.register(email, username, password, "")
                try:
                    client.login(email, password)
                except AccountError as e:
                    if e.code != "invalid_credentials":
                        raise
                    raise AccountError(str(e), status=e.status, code="registration_not_signed_in") from None
            else:
                client.login(email, password)
            return {**_account_info(client, kind, projects=True), "_client": client}

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
        if "projects" in info:
            self._show_projects(info["projects"])
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
        self._show_projects([])
        self.download_result.hide()
        self.open_download_button.hide()
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
        kind = self.kind

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            try:
                r = client.sync_project(folder, progress=progress)
            except SyncConflictError as e:
                return {"conflict": True, "base": e.base_revision, "head": e.head_revision}
            except AccountError as e:
                if e.code != "project_deleted":
                    raise
                return {"conflict": True, "deleted": True}
            return _result_dict(r, client, kind)

        self._say(f"Syncing {folder.name}…")
        self._submit("account: sync", job, self._on_synced, bar=self.sync_progress,
                     server=self._server_name(client))  # fmt: skip

    def _on_synced(self, result: dict[str, Any]) -> None:
        if result.get("conflict"):
            self._conflict = result
            deleted = bool(result.get("deleted"))
            if deleted:
                self.conflict_label.setText(
                    "<b>The server project this folder synced with has been deleted</b> (from another "
                    "computer, or Delete… below). Nothing here changed. Upload this folder again as a new "
                    "server project?")  # fmt: skip
            else:
                self.conflict_label.setText(
                    f"<b>This project changed here and on the server</b> since this copy last synced (this copy "
                    f"is based on revision {result['base']}, the server has revision {result['head']}). Nothing "
                    "was overwritten. Which version do you want to keep?")  # fmt: skip
            self.keep_mine_button.setText("Upload again" if deleted else "Keep mine")
            self.keep_theirs_button.setVisible(not deleted)
            self.keep_both_button.setVisible(not deleted)
            self.conflict_box.show()
            self._fit()
            self._say("The server copy is gone: see above." if deleted
                      else "Sync conflict: choose which version to keep, above.", error=True)  # fmt: skip
            return
        self._conflict = None
        self.conflict_box.hide()
        action = result["action"]
        up, there = result["uploaded_blobs"], result["skipped_blobs"]
        media = f"{up} media uploaded, {there} already there"
        text = {
            "pushed": f"Revision {result['revision']} is on the server ({media}).",
            "pulled": f"Updated to revision {result['revision']} from the server "
                      f"({result['downloaded_blobs']} media downloaded).",
            "up_to_date": f"Up to date: this copy is revision {result['revision']} on the server.",
            "kept_mine": f"Your version is revision {result['revision']}; theirs stays in the server's history.",
            "kept_theirs": f"This folder now holds revision {result['revision']} from the server "
                           f"({result['downloaded_blobs']} media downloaded).",
            "kept_both": f"Your version is now the server project “{result.get('name', '')}”; theirs stays as "
                         f"the original. This folder syncs with the copy from now on.",
        }[action]  # fmt: skip
        if result.get("backup"):
            text += f" Your unsynced project.json was kept as {Path(result['backup']).name}."
        if result.get("not_synced"):
            text += f" Not synced (rename them): {', '.join(result['not_synced'])}."
        self.sync_result.setText(text)
        self._fit()
        self._say(f"Synced {Path(result['folder']).name}.", ok=True)
        if result.get("usage") and self.info is not None:
            self.info = {**self.info, "usage": result["usage"]}
            self._show_usage(result["usage"])
        if "projects" in result:
            self._show_projects(result["projects"])
        self.synced.emit(result)

    def _resolve(self, choice: str) -> None:
        setup = self._sync_job_setup()
        if setup is None or self._conflict is None:
            return
        client, folder = setup
        kind = self.kind
        deleted = bool(self._conflict.get("deleted"))

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            try:
                if deleted:  # upload again, as a new server project
                    r = client.sync_project(folder, keep="mine", progress=progress)
                else:
                    r = client.resolve_conflict(folder, choice, progress=progress)  # type: ignore[arg-type]
            except SyncConflictError as e:  # someone pushed again meanwhile
                return {"conflict": True, "base": e.base_revision, "head": e.head_revision}
            return _result_dict(r, client, kind)

        self._say("Uploading this folder again…" if deleted else
                  {"mine": "Keeping your version…", "theirs": "Downloading the server's version…",
                   "both": "Keeping both versions…"}[choice])  # fmt: skip
        self._submit(f"account: keep {choice}", job, self._on_synced, bar=self.sync_progress,
                     server=self._server_name(client))  # fmt: skip

    # ------------------------------------------------------------------ projects on the account
    def _show_projects(self, projects: list[dict[str, Any]]) -> None:
        items = self.projects_list.selectedItems()
        selected = [i.data(0, Qt.ItemDataRole.UserRole)["id"] for i in items]
        self.projects_list.clear()
        for p in projects:
            updated = str(p.get("updated_at", "")).replace("T", " ")[:16]
            item = QTreeWidgetItem([str(p["name"]), str(p["head_revision"]), updated])
            item.setData(0, Qt.ItemDataRole.UserRole, p)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.projects_list.addTopLevelItem(item)
            item.setSelected(p["id"] in selected)
        self.projects_label.setText(f"{len(projects)} project{'s' if len(projects) != 1 else ''}" if projects
                                    else "No projects on this account yet: Sync now uploads the open one.")  # fmt: skip
        self._update_download_enabled()

    def _refresh_projects(self) -> None:
        client = self._client
        if client is None:
            return

        def job(*, server: str, progress: Any) -> list[dict[str, Any]]:
            return client.list_projects()

        self._say("Looking up your projects…")
        self._submit("account: projects", job, self._on_projects, server=self._server_name(client))

    def _on_projects(self, projects: list[dict[str, Any]]) -> None:
        self._show_projects(projects)
        n = len(projects)
        self._say(f"{n} project{'s' if n != 1 else ''} on this account.", ok=True)

    def _download(self) -> None:
        client, items = self._client, self.projects_list.selectedItems()
        if client is None or not items or self.tasks.active():
            return
        project = dict(items[0].data(0, Qt.ItemDataRole.UserRole))
        from app import config

        parent = QFileDialog.getExistingDirectory(self, f"Download “{project['name']}” into which folder?",
                                                  str(config.projects_dir()))  # fmt: skip
        if not parent:
            return
        dest = download_folder(Path(parent), str(project["name"]))
        kind = self.kind

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            r = client.clone_project(str(project["id"]), dest, progress=progress)
            return {**_result_dict(r, client, kind), "name": str(project["name"])}

        self.download_result.hide()
        self.open_download_button.hide()
        self._say(f"Downloading {project['name']}…")
        self._submit("account: download", job, self._on_downloaded, bar=self.download_progress,
                     server=self._server_name(client))  # fmt: skip

    def _delete_remote(self) -> None:
        client, items = self._client, self.projects_list.selectedItems()
        if client is None or not items or self.tasks.active():
            return
        project = dict(items[0].data(0, Qt.ItemDataRole.UserRole))
        name, revisions = str(project["name"]), int(project["head_revision"])
        answer = QMessageBox.question(
            self, "Delete from the server",
            f"Delete “{name}” and its {revisions} revision{'s' if revisions != 1 else ''} from "
            f"{self._display_server()}?\n\nFolders on your computers are not touched; a copy that syncs "
            "with it will offer to upload itself again. Media no other project uses is freed.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)  # fmt: skip
        if answer != QMessageBox.StandardButton.Yes:
            return

        def job(*, server: str, progress: Any) -> dict[str, Any]:
            gone = client.delete_project(str(project["id"]))
            return {**gone, "usage": client.usage(), "projects": client.list_projects()}

        self._say(f"Deleting {name} from the server…")
        self._submit("account: delete", job, self._on_deleted_remote, server=self._server_name(client))

    def _on_deleted_remote(self, result: dict[str, Any]) -> None:
        self._show_projects(result["projects"])
        if self.info is not None:
            self.info = {**self.info, "usage": result["usage"]}
            self._show_usage(result["usage"])
        freed = f"; {_human_bytes(int(result['bytes_freed']))} of media freed" if result["blobs_freed"] else ""
        self._say(f"Deleted “{result['name']}” from the server{freed}.", ok=True)
        self.deleted_remote.emit(result)

    def _on_downloaded(self, result: dict[str, Any]) -> None:
        self._downloaded_folder = Path(result["folder"])
        self.download_result.setText(f"“{result['name']}” (revision {result['revision']}, "
                                     f"{result['downloaded_blobs']} media) is in {result['folder']}.")  # fmt: skip
        self.download_result.show()
        self.open_download_button.show()
        self._fit()
        self._say(f"Downloaded {result['name']}.", ok=True)
        if result.get("usage") and self.info is not None:
            self.info = {**self.info, "usage": result["usage"]}
            self._show_usage(result["usage"])
        self.downloaded.emit(result)

    def _open_downloaded(self) -> None:
        if self._downloaded_folder is not None:
            self.open_requested.emit(str(self._downloaded_folder))

    # ------------------------------------------------------------------ lifetime
    def done(self, result: int) -> None:
        """Closing the dialog cancels what runs (a push stops between requests)."""
        for h in self.tasks.active():
            h.cancel()
        super().done(result)
