"""Client of the account service (requests): sign in, who am I, sign out, project sync.

Tokens: the refresh token lives in the OS keyring (``keyring``), the short-lived access token
only in memory; a 401 triggers one refresh (rotation) and one retry. Network failures raise
:class:`OfflineError` with a message a musician can act on; everything offline keeps working.
Thread: call from a worker thread, never the UI thread (requests blocks).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring
import requests

DEFAULT_SERVER = "http://127.0.0.1:8000"
TIMEOUT_S = 30.0
_SYNC_STATE = ".amcsync.json"
_CHUNK = 1 << 20


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
    """The project changed on the server since this copy's base revision."""


@dataclass
class SyncResult:
    project_id: str
    revision: int
    uploaded_blobs: int
    skipped_blobs: int


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
    def push_project(self, folder: Path) -> SyncResult:
        """Push ``Name.amcproj/``: upload the media blobs the server lacks, then project.json
        as a new revision on top of the last one this folder pulled or pushed.
        Raises SyncConflictError when someone pushed in between (nothing is overwritten)."""
        folder = Path(folder)
        doc = json.loads((folder / "project.json").read_text())
        state_path = folder / _SYNC_STATE
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if state.get("server") not in (None, self.server):
            state = {}
        project_id = state.get("project_id")
        if not project_id:
            r = self._call("POST", "/api/v1/sync/projects", ok=(201,), json={"name": folder.name})
            project_id, state = r.json()["id"], {"server": self.server, "project_id": r.json()["id"], "revision": 0}
        media: dict[str, str] = {}
        uploaded = skipped = 0
        media_dir = folder / "media"
        for f in sorted(media_dir.rglob("*")) if media_dir.is_dir() else []:
            if not f.is_file():
                continue
            sha = _sha256(f)
            media[f.relative_to(folder).as_posix()] = sha
            if self._send("HEAD", f"/api/v1/sync/blobs/{sha}", auth=True).status_code == 200:
                skipped += 1
                continue
            with f.open("rb") as body:
                self._call("PUT", f"/api/v1/sync/blobs/{sha}", ok=(200, 201), data=body)
            uploaded += 1
        r = self._call("POST", f"/api/v1/sync/projects/{project_id}/revisions", ok=(201,),
                       json={"base_revision": int(state.get("revision", 0)), "project": doc, "media": media})  # fmt: skip
        state["revision"] = int(r.json()["number"])
        state_path.write_text(json.dumps(state))
        return SyncResult(project_id, state["revision"], uploaded, skipped)
