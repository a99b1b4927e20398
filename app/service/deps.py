"""Dependencies shared by the routers: ``SessionDep``, ``CurrentUser``, ``AdminUser``, ``QuotaUser``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRoute
from sqlalchemy import Connection, bindparam, exists, select, update
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from app.service import quota, security
from app.service.errors import ApiError
from app.service.models import ApiKey, RefreshToken, User
from app.service.settings import Settings
from app.service.storage import Storage


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in the
# thread pool, a round trip that costs the event loop more than the work itself.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request, committed when the endpoint returns.

    An *async* generator on purpose: its teardown (commit/close, sub-millisecond) runs on the
    event loop. A sync generator's teardown needs a thread-pool slot, and with every slot
    taken by requests queued on SQLite's write lock, the lock holder could never commit.

    GET and HEAD, which write nothing, get a session on the read-only engine (db.py): on
    SQLite their reads never queue behind writers, and a write there fails loudly."""
    safe = request.method in ("GET", "HEAD")
    session = (request.app.state.read_sessionmaker if safe else request.app.state.sessionmaker)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def stored_file(storage: Storage, key: str, media_type: str, filename: str | None = None) -> Response:
    """A stored object as a response: the file itself when the storage is a local folder, else
    streamed in 1 MB chunks, the object's stream closed when the response ends or the client
    goes away (an S3 body left open holds its pooled connection)."""
    local = storage.local_path(key)
    if local is not None:
        return FileResponse(local, media_type=media_type, filename=filename)
    body = storage.open(key)

    def chunks() -> Iterator[bytes]:
        try:
            yield from iter(lambda: body.read(1 << 20), b"")
        finally:
            body.close()

    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else None
    return StreamingResponse(chunks(), media_type=media_type, headers=headers, background=BackgroundTask(body.close))


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[Session, Depends(get_session)]

T = TypeVar("T")
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def credential_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


_USERS = User.__table__
_KEYS = ApiKey.__table__
#: The user of a token, and the user of an API key with the key's state: Core statements built
#: once (an ORM ``Session.get`` cost 0.3 ms of the token check's 0.4).
_USER_BY_ID = select(_USERS).where(_USERS.c.id == bindparam("user_id"))
#: The user of an access token issued to a sign-in, and whether that sign-in still stands
#: (a sign-out or a detected refresh-token theft revokes every token of its family).
_USER_BY_SESSION = select(
    _USERS,
    exists().where(RefreshToken.family_id == bindparam("session_id"), RefreshToken.revoked_at.is_(None))
    .label("_session_alive"),
).where(_USERS.c.id == bindparam("user_id"))
_USER_BY_KEY = (
    select(_USERS, _KEYS.c.id.label("_key_id"), _KEYS.c.key_hash.label("_key_hash"),
           _KEYS.c.revoked_at.label("_revoked_at"), _KEYS.c.expires_at.label("_expires_at"),
           _KEYS.c.last_used_at.label("_last_used_at"))
    .join(_KEYS, _KEYS.c.user_id == _USERS.c.id)
    .where(_KEYS.c.key_hash == bindparam("key_hash"))
)  # fmt: skip
#: An API key's last_used_at is written at most this often (a write on every request would
#: queue every keyed request on SQLite's write lock).
KEY_USE_RESOLUTION = timedelta(minutes=1)


def _aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def user_for_credential(conn: Connection, settings: Settings, credential: str) -> User | None:
    """The active user an access token or API key belongs to, as a detached ``User`` (read on
    ``conn``; nothing is written). An API key past its ``expires_at`` is refused; an access
    token whose sign-in was revoked is refused. A key due a ``last_used_at`` update is noted
    for :func:`flush_key_use`."""
    if credential.startswith(security.API_KEY_PREFIX):
        digest = security.token_hash(credential)
        row = conn.execute(_USER_BY_KEY, {"key_hash": digest}).mappings().first()
        if row is None or row["_revoked_at"] is not None or not security.same(row["_key_hash"], digest):
            return None
        now = datetime.now(UTC)
        expires = _aware(row["_expires_at"])
        if expires is not None and expires <= now:
            return None
        last = _aware(row["_last_used_at"])
        if last is None or now - last >= KEY_USE_RESOLUTION:
            _KEYS_USED.add(row["_key_id"])
    else:
        claims = security.access_claims(credential, settings.secret_key)
        if claims is None:
            return None
        user_id, session_id = claims
        if session_id is None:
            row = conn.execute(_USER_BY_ID, {"user_id": user_id}).mappings().first()
        else:
            row = conn.execute(_USER_BY_SESSION, {"user_id": user_id, "session_id": session_id}).mappings().first()
            if row is not None and not row["_session_alive"]:
                return None
        if row is None:
            return None
    user = User(**{c.key: row[c.key] for c in _USERS.c})
    return user if user.is_active else None


#: API keys used since their last_used_at was last written (ids); drained by :func:`flush_key_use`.
_KEYS_USED: set[str] = set()


def flush_key_use(factory: Any) -> None:
    """Write ``last_used_at = now`` for the API keys used since the last flush (one short
    transaction; called after a keyed request's check, on the database threads)."""
    if not _KEYS_USED:
        return
    ids = list(_KEYS_USED)
    _KEYS_USED.difference_update(ids)
    with factory() as s, s.begin():
        s.execute(update(ApiKey).where(ApiKey.id.in_(ids)).values(last_used_at=datetime.now(UTC)))


def lookup_user(request: Request, settings: Settings, credential: str) -> User | None:
    """The user of ``credential``; the one :class:`~app.service.limits.BodyLimit` found for
    this request when it checked the credential before the body was read."""
    found = request.scope.get("state", {}).get("amc_user")
    if found is not None:
        return found  # type: ignore[no-any-return]
    # A short read of its own: on SQLite a read-only connection that takes no lock, so the
    # request's SessionDep transaction (the write lock) starts only when the endpoint writes.
    with request.app.state.read_engine.connect() as conn:
        user = user_for_credential(conn, settings, credential)
    if _KEYS_USED:
        try:
            flush_key_use(request.app.state.sessionmaker)
        except Exception:  # a busy database: the next keyed request writes it
            pass
    return user


async def in_db_thread(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on one of the few threads kept for the per-request database work (the
    token check, the quota count: ``DB_THREADS``). Apart from the thread pool that sync
    endpoints share: a slow upload there never delays a token check, and 4 threads serve
    more requests than 40, which mostly fight over the GIL."""
    limiter = getattr(request.app.state, "db_limiter", None)
    if limiter is None:  # an app used without its lifespan (tests)
        limiter = request.app.state.db_limiter = anyio.CapacityLimiter(request.app.state.settings.db_threads)
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


def _credential_or_401(request: Request) -> str:
    credential = credential_of(request)
    if not credential:
        raise ApiError(401, "not_authenticated", "sign in: send 'Authorization: Bearer <token>'",
                       headers=_UNAUTHORIZED)  # fmt: skip
    return credential


def _user_or_401(user: User | None) -> User:
    if user is None:
        raise ApiError(401, "invalid_token", "the token or API key is invalid, expired or revoked",
                       headers=_UNAUTHORIZED)  # fmt: skip
    return user


async def get_current_user(request: Request, settings: SettingsDep) -> User:
    credential = _credential_or_401(request)
    return _user_or_401(await in_db_thread(request, lookup_user, request, settings, credential))


async def get_optional_user(request: Request, settings: SettingsDep) -> User | None:
    credential = credential_of(request)
    return await in_db_thread(request, lookup_user, request, settings, credential) if credential else None


CurrentUser = Annotated[User, Depends(get_current_user)]
OptionalUser = Annotated[User | None, Depends(get_optional_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != "admin":
        raise ApiError(403, "forbidden", "this needs the admin role")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


def authenticate_and_count(session: Session, request: Request, settings: Settings) -> tuple[User, quota.QuotaDecision]:
    """The request's user (401 without a valid credential), with the request counted against
    their tier and that count committed; 429 with Retry-After when the quota or the burst
    limit is used up. Runs in a worker thread. The token is checked on the read-only engine,
    so the write transaction on ``session`` (SQLite's write lock) holds the counting
    statements only; ``session`` is left committed, and the caller may go on in it (a new
    transaction)."""
    user = authenticated(request, settings)
    decision = quota.consume(
        session, user.id,
        daily_limit=settings.tier_daily_requests.get(user.tier, 0),
        burst_limit=settings.burst_per_minute,
        now=datetime.now(UTC),
    )  # fmt: skip
    session.commit()  # short: SQLite's write lock is held for the counting statements only
    refuse_if_limited(user, decision)
    return user, decision


def authenticated(request: Request, settings: Settings) -> User:
    """The request's user, looked up in this (worker) thread; 401 without a valid credential."""
    return _user_or_401(lookup_user(request, settings, _credential_or_401(request)))


def refuse_if_limited(user: User, decision: quota.QuotaDecision) -> None:
    """429 with Retry-After and the rate-limit headers when ``decision`` refused the request."""
    if not decision.allowed:
        what = ("the per-minute burst limit" if decision.scope == "burst"
                else f"the {user.tier} tier's {decision.limit} requests per day")  # fmt: skip
        raise ApiError(429, "rate_limited", f"{what} is used up; retry in {decision.retry_after_s} s",
                       headers=decision.headers(), scope=decision.scope)  # fmt: skip


def rate_limit_headers(decision: quota.QuotaDecision, response: Response) -> None:
    for k, v in decision.headers().items():
        response.headers[k] = v


async def quota_user(request: Request, response: Response, settings: SettingsDep) -> User:
    """The signed-in user, with this request counted against their tier: the token check and
    the count in one trip to the thread pool and one short session."""

    def work() -> tuple[User, quota.QuotaDecision]:
        with request.app.state.sessionmaker() as s:
            return authenticate_and_count(s, request, settings)

    user, decision = await in_db_thread(request, work)
    rate_limit_headers(decision, response)
    return user


#: For endpoints that count against the quota, instead of ``CurrentUser``.
QuotaUser = Annotated[User, Depends(quota_user)]


class CommittingRoute(APIRoute):
    """Commits the request's session as soon as a sync endpoint returns, in its own thread.

    FastAPI serialises a sync endpoint's response in another thread-pool hop; a transaction
    still open then keeps SQLite's write lock while waiting for a free thread, and under load
    every thread can be queued on that lock (a deadlock until the busy timeout)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            original = endpoint

            @functools.wraps(original)
            def endpoint(*args: Any, **kw: Any) -> Any:
                result = original(*args, **kw)
                for value in kw.values():
                    if isinstance(value, Session):
                        value.commit()
                return result

        super().__init__(path, endpoint, **kwargs)
