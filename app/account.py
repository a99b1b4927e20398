"""Client of the account service (requests): sign in, who am I, sign out, two-way project sync.

Tokens: the refresh token lives in the OS keyring (``keyring``), the short-lived access token
only in memory; a 401 triggers one refresh (rotation) and one retry. Network failures raise
:class:`OfflineError` with a message a musician can act on; everything offline keeps working.
Thread: call from a worker thread, never the UI thread (requests blocks).

Sync: a project folder ``Name.amcproj/`` travels as revisions of ``project.json`` plus the files
of ``media/`` and ``renders/`` as content-addressed blobs (SHA-256; only missing blobs are
uploaded, HEAD first). :meth:`AccountClient.sync_project` pushes, fast-forwards or reports a
conflict (:class:`SyncConflictError` with both revisions); :meth:`AccountClient.resolve_conflict`
keeps mine, theirs or both; nothing is ever overwritten on the server or lost locally.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keyring
import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
#: The sync state of a linked project folder (see AccountClient's sync section).
SYNC_STATE_FILE = ".amcsync.json"
#: The folders of a project whose files travel as blobs (names: ``media/<file>``).
SYNCED_DIRS = ("media", "renders")
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# One path component the service accepts in a media name (app/service/routers/sync.py).
_NAME_PART = re.compile(r"^[A-Za-z0-9 _.()+,-]+$")

#: ``progress(fraction 0..1, message)``; raising from it cancels (see the sync section).
Progress = Callable[[float, str], None]
Keep = Literal["mine", "theirs", "both"]


class AccountError(RuntimeError):
    """The service answered with an error (``code`` is the API's error code)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "", body: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.body = status, code, body or {}


class OfflineError(AccountError):
    """The service could not be reached."""


class NotSignedInError(AccountError):
    pass


class SyncConflictError(AccountError):
    """The project changed on the server since this copy's base revision (and, for a sync,
    here too). Nothing was overwritten; resolve with keep mine / theirs / both."""

    @property
    def base_revision(self) -> int:
        """The server revision this copy is based on."""
        return int(self.body.get("base_revision", 0))

    @property
    def head_revision(self) -> int:
        """The server's newest revision."""
        return int(self.body.get("head_revision", 0))


class SyncIntegrityError(AccountError):
    """The server sent something this client refuses to write (a media name outside the
    project's media/ or renders/, a blob that does not match its SHA-256); nothing changed."""


@dataclass
class SyncResult:
    """What a push, pull, sync, clone or conflict resolution did.

    ``action``: "pushed", "pulled" (fast-forward), "up_to_date", "cloned", "kept_mine",
    "kept_theirs" or "kept_both". ``revision``: the server revision the folder now matches.
    ``project_changed``: project.json on disk was rewritten (reopen an open project).
    ``backup``: where the local project.json was kept when a pull replaced unsynced edits.
    ``not_synced``: local files left out because the service refuses their names.
    """

    project_id: str
    revision: int
    uploaded_blobs: int
    skipped_blobs: int
    action: str = "pushed"
    downloaded_blobs: int = 0
    project_changed: bool = False
    backup: Path | None = None
    not_synced: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""
    folder: Path | None = None


class _Monotonic:
    """Wraps a progress callback: fractions clamped to 0..1 and never decreasing."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._last = 0.0

    def __call__(self, fraction: float, message: str) -> None:
        self._last = max(self._last, min(1.0, float(fraction)))
        if self._progress is not None:
            self._progress(self._last, message)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class AccountClient:
    def __init__(self, server: str = DEFAULT_SERVER, *, session: requests.Session | None = None) -> None:
        self.server = server.rstrip("/")
        self.http = session or requests.Session()
        self._access: str | None = None
        self._keyring_service = f"amc-account:{self.server}"

    # ------------------------------------------------------------------ tokens
    @property
    def refresh_token(self) -> str | None:
        return keyring.get_password(self._keyring_service, "refresh_token")

    def _store(self, pair: dict[str, Any]) -> None:
        self._access = str(pair["access_token"])
        keyring.set_password(self._keyring_service, "refresh_token", str(pair["refresh_token"]))

    def _forget(self) -> None:
        self._access = None
        try:
            keyring.delete_password(self._keyring_service, "refresh_token")
        except keyring.errors.PasswordDeleteError:
            pass

    # ------------------------------------------------------------------ transport
    def _send(self, method: str, path: str, *, auth: bool, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if auth:
            if self._access is None:
                self._refresh()
            headers["Authorization"] = f"Bearer {self._access}"
        try:
            return self.http.request(method, self.server + path, headers=headers, timeout=TIMEOUT_S, **kw)
        except requests.ConnectionError as e:
            raise OfflineError(f"cannot reach the account service at {self.server}: check the network "
                               "or the server address; everything offline keeps working") from e  # fmt: skip
        except requests.Timeout as e:
            raise OfflineError(f"the account service at {self.server} did not answer in {TIMEOUT_S:.0f} s") from e

    def _call(self, method: str, path: str, *, auth: bool = True, ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        r = self._send(method, path, auth=auth, **kw)
        if r.status_code == 401 and auth:
            self._access = None  # expired: rotate the refresh token once and retry
            r = self._send(method, path, auth=auth, **kw)
        if r.status_code not in ok:
            raise self._error(r)
        return r

    @staticmethod
    def _error(r: requests.Response) -> AccountError:
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text[:200]}
        detail = str(body.get("detail") or r.reason)
        cls = SyncConflictError if body.get("code") == "stale_revision" else AccountError
        return cls(f"{detail} (HTTP {r.status_code})", status=r.status_code, code=str(body.get("code", "")), body=body)

    def _refresh(self) -> None:
        token = self.refresh_token
        if not token:
            raise NotSignedInError("not signed in: run `amc login`", code="not_signed_in")
        r = self._send("POST", "/api/v1/auth/refresh", auth=False, json={"refresh_token": token})
        if r.status_code == 401:
            self._forget()
            raise NotSignedInError("the sign-in has expired or was revoked: run `amc login` again",
                                   status=401, code="not_signed_in")  # fmt: skip
        if r.status_code != 200:
            raise self._error(r)
        self._store(r.json())

    # ------------------------------------------------------------------ account
    def login(self, email: str, password: str) -> dict[str, Any]:
        r = self._call("POST", "/api/v1/auth/login", auth=False, json={"email": email, "password": password})
        pair = r.json()
        self._store(pair)
        return dict(pair["user"])

    def register(self, email: str, username: str, password: str, full_name: str = "") -> dict[str, Any]:
        body = {"email": email, "username": username, "password": password, "full_name": full_name}
        return dict(self._call("POST", "/api/v1/auth/register", auth=False, ok=(201,), json=body).json())

    def whoami(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/auth/me").json())

    def usage(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/usage").json())

    def logout(self) -> None:
        """Revoke the sign-in on the server (when reachable) and forget it here in any case."""
        token = self.refresh_token
        try:
            if token:
                self._send("POST", "/api/v1/auth/logout", auth=False, json={"refresh_token": token})
        finally:
            self._forget()

    # ------------------------------------------------------------------ sync
    # A linked folder keeps ``.amcsync.json``: {"server", "project_id", "revision" (the base:
    # the server revision this copy was last pulled from or pushed as), "project_sha256" (of
    # project.json as last synced), "files" ({name: [sha256, size, mtime_ns]} of media/ and
    # renders/ after the last sync: lets a sync see local changes without re-hashing)}.
    #
    # progress(fraction, message): fraction never decreases and ends at 1.0. An exception raised
    # from it cancels: a push stops before its revision is posted (uploaded blobs stay, unused);
    # a pull stops before anything in the folder is replaced.

    def list_projects(self) -> list[dict[str, Any]]:
        """The account's server projects, by name: ``[{"id", "name", "head_revision",
        "created_at", "updated_at"}]`` (times as ISO 8601 strings)."""
        return [dict(p) for p in self._call("GET", "/api/v1/sync/projects").json()]

    def get_project(self, project_id: str) -> dict[str, Any]:
        """One server project (as in :meth:`list_projects`); AccountError 404 when it is gone."""
        return dict(self._call("GET", f"/api/v1/sync/projects/{project_id}").json())

    def delete_project(self, project_id: str) -> dict[str, Any]:
        """Delete a server project and its revisions; the media only it named are freed.
        Local folders are not touched (one linked to it is told so at its next sync).
        Returns ``{"id", "name", "revisions_deleted", "blobs_freed", "bytes_freed"}``."""
        return dict(self._call("DELETE", f"/api/v1/sync/projects/{project_id}").json())

    def push_project(self, folder: Path, *, progress: Progress | None = None) -> SyncResult:
        """Push ``Name.amcproj/``: upload the media blobs the server lacks (HEAD first), then
        project.json as a new revision on top of the last one this folder pulled or pushed.
        A folder never synced to this server becomes a new server project named after it.
        Raises SyncConflictError when someone pushed in between (nothing is overwritten)."""
        folder = Path(folder)
        report = _Monotonic(progress)
        doc = _read_project(folder)
        state = self._state(folder)
        if not state.get("project_id"):
            report(0.0, "creating the server project")
            project_id = self._create_project(folder.name)
            # Linked at once: a push that fails later must not create a second project next time.
            state = {"server": self.server, "project_id": project_id, "revision": 0}
            _write_state(folder, state)
        return self._push(folder, state, int(state.get("revision", 0)), doc, report, "pushed")

    def pull_project(self, folder: Path, *, project_id: str | None = None, revision: int | None = None,
                     progress: Progress | None = None) -> SyncResult:  # fmt: skip
        """Make ``folder`` hold ``revision`` (default: the newest) of ``project_id`` (default: the
        project the folder is linked to) and link the folder to it.

        Media the folder lacks are downloaded and checked against their SHA-256 before anything
        is replaced; a name outside ``media/`` or ``renders/`` refuses the whole revision
        (:class:`SyncIntegrityError`, nothing changed). Local work is never lost: local files are
        not deleted, a local file in the way is renamed ``<name>.local-<time><ext>``, and a
        project.json holding unsynced edits is kept as ``project.local-<time>.json``.
        ``result.project_changed`` says project.json was rewritten (an open project must reload).
        """
        folder = Path(folder)
        report = _Monotonic(progress)
        state = self._state(folder)
        if project_id is None:
            project_id = state.get("project_id")
            if not project_id:
                raise AccountError(f"{folder.name} is not synced with {self.server} yet: push it, or clone "
                                   "a server project into a new folder", code="not_linked")  # fmt: skip
        elif state.get("project_id") not in (None, project_id):
            raise AccountError(f"{folder.name} syncs with another server project: clone {project_id} into "
                               "a new folder instead", code="linked_elsewhere")  # fmt: skip
        report(0.0, "connecting")
        if revision is None:
            revision = int(self.get_project(project_id)["head_revision"])
            if revision == 0:
                raise AccountError("the server project has no revision yet: nothing to download",
                                   code="no_revision")  # fmt: skip
        path = f"/api/v1/sync/projects/{project_id}/revisions/{int(revision)}"
        rev = self._call("GET", path).json()
        report(0.05, "revision received")
        return self._apply_revision(folder, state, project_id, rev, report)

    def clone_project(self, project_id: str, dest: Path, *, revision: int | None = None,
                      progress: Progress | None = None) -> SyncResult:  # fmt: skip
        """Download a server project into ``dest`` (a new or empty folder; anything else is
        refused) and link it, as a second machine does. On failure ``dest`` is left as it was."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise AccountError(f"{dest} already exists and is not empty: choose a new folder",
                               code="folder_not_empty")  # fmt: skip
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        try:
            r = self.pull_project(dest, project_id=project_id, revision=revision, progress=progress)
        except BaseException:
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            else:
                for child in dest.iterdir():  # it was empty: take back what the clone made
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            raise
        r.action = "cloned"
        return r

    def sync_project(self, folder: Path, *, keep: Keep | None = None,
                     progress: Progress | None = None) -> SyncResult:  # fmt: skip
        """Two-way sync of a project folder with its server project.

        * changed here only (or never synced): push (``action="pushed"``);
        * changed on the server only: fast-forward pull (``"pulled"``, ``project_changed``);
        * changed on both: raise :class:`SyncConflictError` carrying both revisions, or, when
          ``keep`` is given, resolve as :meth:`resolve_conflict` does (``"kept_mine"`` ...);
        * neither: nothing travels (``"up_to_date"``);
        * the server project was deleted: AccountError ``project_deleted`` (the folder is left
          as it is), or with ``keep="mine"`` a push as a new server project (``"pushed"``).

        "Changed here" means project.json or a file of media/ or renders/ differs from what
        the last sync recorded; "on the server" means its head is not this copy's base revision.
        """
        folder = Path(folder)
        report = _Monotonic(progress)
        doc = _read_project(folder)
        state = self._state(folder)
        project_id = state.get("project_id")
        if not project_id:
            return self.push_project(folder, progress=report)
        report(0.0, "connecting")
        try:
            info = self.get_project(project_id)
        except AccountError as e:
            if e.status != 404:
                raise
            if keep != "mine":
                raise AccountError(f"the server project {folder.name} was synced with has been deleted; this "
                                   "folder is unchanged. To upload it again as a new server project, sync "
                                   "with keep mine (`amc sync FOLDER --keep mine`)", status=404,
                                   code="project_deleted") from e  # fmt: skip
            _write_state(folder, {k: v for k, v in state.items() if k not in ("project_id", "revision")})
            return self.push_project(folder, progress=report)
        head, base = int(info["head_revision"]), int(state.get("revision", 0))
        local_changed = self._local_changed(folder, state, doc)
        if head == base:
            if not local_changed:
                report(1.0, "up to date")
                return SyncResult(project_id, base, 0, 0, action="up_to_date", name=str(info["name"]),
                                  folder=folder)  # fmt: skip
            return self._push(folder, state, base, doc, report, "pushed")
        if not local_changed and head > base:
            r = self.pull_project(folder, project_id=project_id, revision=head, progress=report)
            return r
        if keep is None:
            raise _conflict(base, head)
        return self.resolve_conflict(folder, keep, progress=report)

    def resolve_conflict(
        self, folder: Path, keep: Keep, *, progress: Progress | None = None
    ) -> SyncResult:
        """Settle a conflict the musician's way; nothing is lost in any of them:

        * ``"mine"``: push this copy as the newest revision on top of the server's head
          (theirs stays in the server's history) -> ``action="kept_mine"``;
        * ``"theirs"``: pull the server's head into the folder; this copy's project.json is
          kept beside it as ``project.local-<time>.json`` -> ``"kept_theirs"``;
        * ``"both"``: push this copy as a new server project "<name> (conflict copy <host>
          <time>)" and link the folder to it; theirs stays the original -> ``"kept_both"``.

        Raises SyncConflictError if someone pushes again meanwhile."""
        if keep not in ("mine", "theirs", "both"):
            raise ValueError(f"keep must be 'mine', 'theirs' or 'both', not {keep!r}")
        folder = Path(folder)
        report = _Monotonic(progress)
        state = self._state(folder)
        project_id = state.get("project_id")
        if not project_id:
            raise AccountError(f"{folder.name} is not synced with {self.server} yet: nothing to resolve",
                               code="not_linked")  # fmt: skip
        report(0.0, "connecting")
        if keep == "theirs":
            r = self.pull_project(folder, project_id=project_id, progress=report)
            r.action = "kept_theirs"
            return r
        doc = _read_project(folder)
        if keep == "mine":
            head = int(self.get_project(project_id)["head_revision"])
            return self._push(folder, state, head, doc, report, "kept_mine")
        stamp = time.strftime("%Y-%m-%d %H.%M")
        name = f"{folder.stem} (conflict copy {socket.gethostname()} {stamp}){folder.suffix}"
        new_id = self._create_project(name)
        state = {**state, "project_id": new_id, "revision": 0}
        r = self._push(folder, state, 0, doc, report, "kept_both")
        r.name = name
        return r

    # ------------------------------------------------------------------ sync internals
    def _state(self, folder: Path) -> dict[str, Any]:
        """The folder's sync state for this server ({} when never synced with it)."""
        path = folder / SYNC_STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(state, dict) or state.get("server") not in (None, self.server):
            return {}
        return state

    def _create_project(self, name: str) -> str:
        try:
            r = self._call("POST", "/api/v1/sync/projects", ok=(201,), json={"name": name})
        except AccountError as e:
            if e.code == "project_exists":  # another machine's copy: never merge by name
                raise AccountError(f"the account already has a project named {name!r} that this folder "
                                   "is not linked to: download it (`amc clone`, or Download… in the "
                                   "Studio), or rename this folder", status=e.status, code=e.code,
                                   body=e.body) from e  # fmt: skip
            raise
        return str(r.json()["id"])

    def _local_changed(self, folder: Path, state: dict[str, Any], doc: bytes) -> bool:
        if state.get("project_sha256") != hashlib.sha256(doc).hexdigest():
            return True
        recorded = dict(state.get("files") or {})
        synced = {n: v[0] for n, v in recorded.items() if isinstance(v, list) and v}
        files, _refused = _scan(folder, recorded, None)
        return {n: v[0] for n, v in files.items()} != synced

    def _push(self, folder: Path, state: dict[str, Any], base: int, doc: bytes, report: _Monotonic,
              action: str) -> SyncResult:  # fmt: skip
        project_id = str(state["project_id"])
        files, not_synced = _scan(folder, state.get("files") or {}, report)
        uploaded = skipped = 0
        n = len(files)
        for i, (name, (sha, _size, _mtime)) in enumerate(sorted(files.items())):
            report(0.05 + 0.85 * i / max(1, n), f"checking media {i + 1}/{n}")
            if self._send("HEAD", f"/api/v1/sync/blobs/{sha}", auth=True).status_code == 200:
                skipped += 1
                continue
            report(0.05 + 0.85 * (i + 0.5) / max(1, n), f"uploading media {i + 1}/{n}")
            with (folder / name).open("rb") as body:
                self._call("PUT", f"/api/v1/sync/blobs/{sha}", ok=(200, 201), data=body)
            uploaded += 1
        report(0.92, "saving the revision")
        media = {name: v[0] for name, v in files.items()}
        path, body = f"/api/v1/sync/projects/{project_id}/revisions", {"base_revision": base,
                                                                       "project": json.loads(doc), "media": media}  # fmt: skip
        try:
            r = self._call("POST", path, ok=(201,), json=body)
        except AccountError as e:
            # A blob the server had when we asked was freed since (its last project deleted
            # elsewhere): upload what it now lacks, once, and push again.
            if e.code != "missing_blobs":
                raise
            by_sha = {sha: name for name, sha in media.items()}
            for sha in e.body.get("missing") or []:
                if sha not in by_sha:
                    raise
                with (folder / by_sha[sha]).open("rb") as f:
                    self._call("PUT", f"/api/v1/sync/blobs/{sha}", ok=(200, 201), data=f)
                uploaded, skipped = uploaded + 1, max(0, skipped - 1)
            r = self._call("POST", path, ok=(201,), json=body)
        number = int(r.json()["number"])
        _write_state(folder, {**state, "server": self.server, "revision": number,
                              "project_sha256": hashlib.sha256(doc).hexdigest(), "files": files})  # fmt: skip
        report(1.0, "done")
        return SyncResult(project_id, number, uploaded, skipped, action=action, not_synced=tuple(not_synced),
                          folder=folder)  # fmt: skip

    def _apply_revision(self, folder: Path, state: dict[str, Any], project_id: str, rev: dict[str, Any],
                        report: _Monotonic) -> SyncResult:  # fmt: skip
        media = _checked_media(folder, rev.get("media") or {})
        cache = dict(state.get("files") or {})
        wanted: list[tuple[str, str, Path]] = []
        for name, sha in sorted(media.items()):
            dest = folder / name
            if dest.is_file() and _cached_sha(dest, name, cache) == sha:
                continue
            wanted.append((name, sha, dest))
        staged: list[tuple[Path, Path, str]] = []  # (temp, dest, sha)
        try:
            for i, (name, sha, dest) in enumerate(wanted):
                report(0.05 + 0.85 * i / len(wanted), f"downloading media {i + 1}/{len(wanted)}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.download")
                staged.append((tmp, dest, sha))
                self._download(sha, tmp, name)
            report(0.92, "writing project.json")
            # Everything is here and verified: from now on no progress call (no cancel) until
            # the folder is consistent again.
            doc = (json.dumps(rev["project"], indent=2) + "\n").encode()
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for tmp, dest, _sha in staged:
                if dest.exists():  # a different local file under that name: keep it beside
                    aside = dest.with_name(f"{dest.stem}.local-{stamp}{dest.suffix}")
                    os.replace(dest, _free_name(aside))
                os.replace(tmp, dest)
            mine = folder / "project.json"
            backup: Path | None = None
            old = mine.read_bytes() if mine.is_file() else None
            if old is not None and old != doc and _holds_local_work(old, state, rev["project"]):
                backup = _free_name(folder / f"project.local-{stamp}.json")
                shutil.copy2(mine, backup)
            if old != doc:
                _atomic_write(mine, doc)
        finally:
            for tmp, _dest, _sha in staged:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        for _tmp, dest, sha in staged:
            st = dest.stat()
            cache[dest.relative_to(folder).as_posix()] = [sha, st.st_size, st.st_mtime_ns]
        files, _skipped = _scan(folder, cache, None)
        number = int(rev["number"])
        _write_state(folder, {"server": self.server, "project_id": project_id, "revision": number,
                              "project_sha256": hashlib.sha256(doc).hexdigest(), "files": files})  # fmt: skip
        report(1.0, "done")
        return SyncResult(project_id, number, 0, len(media) - len(staged), action="pulled",
                          downloaded_blobs=len(staged), project_changed=old != doc, backup=backup,
                          folder=folder)  # fmt: skip

    def _download(self, sha: str, dest: Path, name: str) -> None:
        r = self._call("GET", f"/api/v1/sync/blobs/{sha}", stream=True)
        h = hashlib.sha256()
        with r, open(dest, "wb") as f:
            for chunk in r.iter_content(_CHUNK):
                h.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if h.hexdigest() != sha:
            raise SyncIntegrityError(f"the download of {name} does not match its SHA-256 (the server's copy "
                                     "is damaged); nothing was changed", code="hash_mismatch")  # fmt: skip


def _conflict(base: int, head: int) -> SyncConflictError:
    detail = (f"the project changed here and on the server: this copy is based on revision {base}, the "
              f"server has revision {head}; nothing was overwritten")  # fmt: skip
    return SyncConflictError(f"{detail} (HTTP 409)", status=409, code="stale_revision",
                             body={"code": "stale_revision", "detail": detail, "base_revision": base,
                                   "head_revision": head})  # fmt: skip


def _read_project(folder: Path) -> bytes:
    try:
        doc = (folder / "project.json").read_bytes()
        json.loads(doc)
    except OSError as e:
        raise AccountError(f"{folder} is not a saved project (no readable project.json)",
                           code="not_a_project") from e  # fmt: skip
    except ValueError as e:
        message = f"{folder / 'project.json'} is not valid JSON"
        raise AccountError(message, code="not_a_project") from e
    return doc


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    _atomic_write(folder / SYNC_STATE_FILE, json.dumps(state, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename: a failure leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _free_name(path: Path) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``... whichever does not exist yet."""
    k, candidate = 2, path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def _holds_local_work(old: bytes, state: dict[str, Any], theirs: Any) -> bool:
    """True when the local project.json has edits the server may not have: it is not what the
    last sync recorded (or nothing was recorded) and not the revision being pulled."""
    if state.get("project_sha256") == hashlib.sha256(old).hexdigest():
        return False
    try:
        return bool(json.loads(old) != theirs)
    except ValueError:
        return True


def _name_ok(name: str) -> bool:
    parts = name.split("/")
    return (len(name) <= 255 and len(parts) >= 2 and parts[0] in SYNCED_DIRS
            and all(_NAME_PART.match(p) and not p.startswith(".") for p in parts[1:]))  # fmt: skip


def _checked_media(folder: Path, media: dict[str, Any]) -> dict[str, str]:
    """A revision's media map, refused whole if any name could land outside media/ or renders/
    of ``folder`` (``..``, absolute paths, backslashes, project.json, ...) or a SHA is malformed."""
    root = folder.resolve()
    for name, sha in media.items():
        if not isinstance(name, str) or not _name_ok(name):
            raise SyncIntegrityError(f"the server's revision names a file outside media/ and renders/: {name!r}; "
                                     "nothing was changed", code="unsafe_media_name")  # fmt: skip
        if not (folder / name).resolve().is_relative_to(root / name.split("/")[0]):
            raise SyncIntegrityError(f"{name!r} would be written outside {folder}; nothing was changed",
                                     code="unsafe_media_name")  # fmt: skip
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise SyncIntegrityError(f"the server's revision gives {name!r} a malformed SHA-256",
                                     code="invalid_blob_name")  # fmt: skip
    return {str(k): str(v) for k, v in media.items()}


def _cached_sha(path: Path, name: str, cache: dict[str, Any]) -> str:
    """SHA-256 of ``path``, from ``cache[name] = [sha, size, mtime_ns]`` while size and mtime match."""
    st = path.stat()
    hit = cache.get(name)
    if isinstance(hit, list) and len(hit) == 3 and hit[1:] == [st.st_size, st.st_mtime_ns]:
        return str(hit[0])
    sha = _sha256(path)
    cache[name] = [sha, st.st_size, st.st_mtime_ns]
    return sha


def _scan(
    folder: Path, cache: dict[str, Any], report: _Monotonic | None
) -> tuple[dict[str, list[Any]], list[str]]:
    """The files sync carries (media/ and renders/, temp files aside): ``({name: [sha256, size,
    mtime_ns]}, names the service would refuse)``. Unchanged files are not hashed again."""
    files: dict[str, list[Any]] = {}
    refused: list[str] = []
    paths = [p for d in SYNCED_DIRS if (folder / d).is_dir() for p in sorted((folder / d).rglob("*"))
             if p.is_file() and not p.name.startswith(".")]  # fmt: skip
    for i, p in enumerate(paths):
        name = p.relative_to(folder).as_posix()
        if not _name_ok(name):
            refused.append(name)
            continue
        if report is not None:
            report(0.05 * i / len(paths), f"reading media {i + 1}/{len(paths)}")
        sha = _cached_sha(p, name, cache)
        files[name] = [sha, *cache[name][1:]]
    return files, refused
