"""Request bodies: who may send one, and how much of it is ever read.

:class:`BodyLimit` is plain ASGI middleware in front of every route:

* A request with a body to a route that needs a sign-in (everything under the API prefix
  but the four anonymous auth routes) has its credential checked **before a byte of the
  body is read**: FastAPI parses a route's body (a multipart upload is spooled to disk, a
  JSON document is built in memory) before it runs the route's dependencies, so an
  anonymous client could otherwise make the service take in a gigabyte only to be told 401.
  Without a valid credential the answer is 401 at once, and the connection is closed with
  the body unread.
* Every body is counted **while it streams**, chunked or not: a declared ``Content-Length``
  over the route's limit is refused before reading, and a body that grows past it is
  refused (413) the moment it does; the route sees the client as gone and reads no more.

uvicorn stops reading a socket whose body the app is not consuming (64 KiB of flow-control
buffer), so a refused body costs the service that buffer, not the body.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.service import API_PREFIX
from app.service.settings import Settings

#: Routes whose body may be a whole file (the upload limit applies).
UPLOAD_PATHS = (f"{API_PREFIX}/music/process-file", f"{API_PREFIX}/sync/blobs/")
#: A pushed revision carries project.json (up to 8 MB) and its media list.
REVISION_BODY_BYTES = 9 << 20
#: Every other body (sign-in, a generate request, a project name) is a small JSON document.
SMALL_BODY_BYTES = 256 << 10
#: Multipart framing and form fields around the uploaded file.
MULTIPART_SLACK_BYTES = 64 << 10
#: The only routes that take a body from a caller who is not signed in.
ANONYMOUS_BODY_PATHS = frozenset(
    f"{API_PREFIX}/auth/{name}" for name in ("register", "login", "refresh", "logout")
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_limit_bytes(path: str, settings: Settings) -> int:
    """The most bytes of request body read for ``path``."""
    if path.startswith(UPLOAD_PATHS):
        return settings.max_upload_bytes + MULTIPART_SLACK_BYTES
    if path.startswith(f"{API_PREFIX}/sync/projects/") and path.endswith("/revisions"):
        return REVISION_BODY_BYTES
    return SMALL_BODY_BYTES


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # Connection: close — the body that was not read must not be taken for the next request.
    return JSONResponse({"detail": detail, "code": code}, status_code=status,
                        headers={"Connection": "close", **(headers or {})})  # fmt: skip


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "payload_too_large", f"the request body is larger than {limit} bytes")


class BodyLimit:
    """See the module docstring. ``scope["app"]`` (set by Starlette before any middleware)
    gives the app's state: its settings and its read-only database engine."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = body_limit_bytes(path, self.settings)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        if path.startswith(API_PREFIX + "/") and path not in ANONYMOUS_BODY_PATHS:
            refusal = await self._refuse_anonymous(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._counted(scope, receive, send, limit)

    async def _refuse_anonymous(self, scope: Scope) -> JSONResponse | None:
        """401 unless the request carries a valid credential; looked up as the routes do
        (the same query on the read-only engine, on the database threads)."""
        from app.service.deps import credential_of, in_db_thread, lookup_user

        request = Request(scope)
        credential = credential_of(request)
        if not credential:
            return _error(401, "not_authenticated", "sign in: send 'Authorization: Bearer <token>'",
                          {"WWW-Authenticate": "Bearer"})  # fmt: skip
        user = await in_db_thread(request, lookup_user, request, self.settings, credential)
        if user is None:
            return _error(401, "invalid_token", "the token or API key is invalid, expired or revoked",
                          {"WWW-Authenticate": "Bearer"})  # fmt: skip
        # The route's own dependency finds it here instead of asking the database again.
        scope.setdefault("state", {})["amc_user"] = user
        return None

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        refused = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _too_large(limit)(scope, _no_body, send)
                    # The route sees a client that went away, and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # our 413 went out (or the response had started): the rest is dropped
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The route failed on the disconnect we made up; the client has its 413.


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}
