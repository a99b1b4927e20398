"""/api/v1/auth: register, login, refresh (rotating), logout, me, API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.service import security
from app.service.deps import CommittingRoute, CurrentUser, SessionDep, SettingsDep
from app.service.errors import ApiError, not_found
from app.service.models import ApiKey, LoginFailures, RefreshToken, User, new_id
from app.service.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    LoginRequest,
    RefreshRequest,
    TokenPair,
    UserCreate,
    UserPublic,
)
from app.service.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"], route_class=CommittingRoute)


def user_public(u: User) -> UserPublic:
    return UserPublic(id=u.id, email=u.email, username=u.username, full_name=u.full_name,
                      tier=u.tier, role=u.role, is_active=u.is_active, created_at=u.created_at)  # fmt: skip


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


@router.post("/register", status_code=201, response_model=UserPublic,
             responses={422: {"description": "invalid fields, or a password under the policy"},
                        429: {"description": "too many registrations from this client address"}})  # fmt: skip
def register(body: UserCreate, request: Request, settings: SettingsDep) -> UserPublic:
    """Create an account. The same answer and the same work (one argon2 hash, one insert
    attempt) whether or not the email or username is taken: a taken one gets a 201 that
    looks the same and creates nothing, so the endpoint cannot be used to find who has an
    account. The password is hashed before any transaction starts (SQLite's write lock is
    held for the insert only)."""
    try:
        security.check_password_policy(body.password, email=body.email, username=body.username)
    except security.PasswordPolicyError as e:
        raise ApiError(422, "weak_password", str(e)) from None
    _count_registration(request, settings)
    user = User(id=new_id(), email=body.email, username=body.username, full_name=body.full_name,
                password_hash=security.hash_password(body.password), tier="free", role="user",
                is_active=True, created_at=datetime.now(UTC))  # fmt: skip
    with request.app.state.sessionmaker() as session:
        taken = session.scalar(select(User.id).where((User.email == body.email) | (User.username == body.username)))
        if taken is None:
            session.add(user)
            try:
                session.commit()
            except IntegrityError:  # a concurrent registration won the race: the same answer
                session.rollback()
    return user_public(user)


def _count_registration(request: Request, settings: Settings) -> None:
    """Each registration costs an argon2 hash (64 MiB, ~0.1 s of CPU): a remote service takes
    REGISTER_PER_CLIENT_PER_HOUR from one client address, then locks that address out for a
    minute, doubling (the embedded service's only client is its own user)."""
    limit = settings.register_per_client_per_hour
    if settings.mode != "remote" or limit <= 0:
        return
    key, now = security.token_hash(f"register|{_client(request)}"), datetime.now(UTC)
    with request.app.state.read_sessionmaker() as s:
        wait = _locked_for_s(s.get(LoginFailures, key), now)
    if wait:
        raise ApiError(429, "rate_limited", f"too many registrations from this address; try again in {wait} s",
                       headers={"Retry-After": str(wait)})  # fmt: skip
    with request.app.state.sessionmaker() as session:
        for attempt in range(3):
            try:
                _count_failure(session, key, now, limit, 3600, 3600)
                session.commit()
                return
            except IntegrityError:  # a concurrent registration created the row first
                session.rollback()
                if attempt == 2:
                    raise


def issue_tokens(session: Session, settings: Settings, user: User, family_id: str | None = None) -> TokenPair:
    family_id = family_id or new_id()
    access, ttl = security.make_access_token(user.id, settings.secret_key, settings.access_token_ttl_s,
                                             session_id=family_id)  # fmt: skip
    refresh = security.new_refresh_token()
    session.add(RefreshToken(user_id=user.id, family_id=family_id,
                             token_hash=security.token_hash(refresh),
                             expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)))  # fmt: skip
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl, user=user_public(user))


#: Failures from one client address over all emails before that address is locked out.
CLIENT_MAX_FAILURES = 50
#: The first lockout of a (email, client) pair lasts this long; each next one twice as long,
#: up to LOGIN_LOCKOUT_S.
FIRST_LOCKOUT_S = 60


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttle_keys(email: str, client: str) -> tuple[str, str]:
    return security.token_hash(f"{email}|{client}"), security.token_hash(f"*|{client}")


def _locked_for_s(row: LoginFailures | None, now: datetime) -> int:
    until = _aware(row.locked_until) if row else None
    return int((until - now).total_seconds()) + 1 if until and until > now else 0


def _count_failure(session: Session, key: str, now: datetime, max_failures: int, window_s: int, max_lock_s: int) -> None:
    row = session.get(LoginFailures, key, with_for_update=True)
    if row is None:
        row = LoginFailures(key=key, failures=0, lockouts=0, window_start=now)
        session.add(row)
    if now - (_aware(row.window_start) or now) > timedelta(seconds=window_s):
        row.failures, row.window_start = 0, now
    row.failures += 1
    if row.failures >= max_failures:
        lock_s = min(max_lock_s, FIRST_LOCKOUT_S * 2 ** min(row.lockouts, 16))
        row.locked_until, row.failures, row.window_start = now + timedelta(seconds=lock_s), 0, now
        row.lockouts += 1


@router.post("/login", response_model=TokenPair,
             responses={401: {"description": "wrong email or password"},
                        429: {"description": "too many failed sign-ins from this client"}})  # fmt: skip
def login(body: LoginRequest, request: Request, response: Response, settings: SettingsDep) -> TokenPair:
    """Sign in. Failed attempts are counted per (email, client address) and per client
    address: after LOGIN_MAX_FAILURES that client is locked out of that account for a
    minute, doubling with each lockout (the owner signing in from elsewhere is not), and a
    client failing on many accounts is locked out of all. The password is verified outside
    any transaction; the counters are written in a short one afterwards."""
    response.headers["Cache-Control"] = "no-store"
    email = body.email.strip().lower()
    now = datetime.now(UTC)
    pair_key, client_key = _throttle_keys(email, _client(request))
    with request.app.state.read_sessionmaker() as s:
        rows = {r.key: r for r in s.scalars(select(LoginFailures).where(LoginFailures.key.in_([pair_key, client_key])))}
        user = s.scalar(select(User).where(User.email == email))
    wait = max(_locked_for_s(rows.get(pair_key), now), _locked_for_s(rows.get(client_key), now))
    if wait:
        raise ApiError(429, "account_locked",
                       f"too many failed sign-ins; try again in {wait} s", headers={"Retry-After": str(wait)})  # fmt: skip
    ok = security.verify_password(user.password_hash if user else None, body.password)  # ~0.1 s, no lock held
    with request.app.state.sessionmaker() as session:
        if not ok or user is None or not user.is_active:
            for attempt in range(3):
                try:
                    _count_failure(session, pair_key, now, settings.login_max_failures, settings.login_lockout_s,
                                   settings.login_lockout_s)  # fmt: skip
                    _count_failure(session, client_key, now, CLIENT_MAX_FAILURES, settings.login_lockout_s,
                                   settings.login_lockout_s)  # fmt: skip
                    session.commit()
                    break
                except IntegrityError:  # a concurrent failure created the row first: count on it
                    session.rollback()
                    if attempt == 2:
                        raise
            raise ApiError(401, "invalid_credentials", "wrong email or password")
        if pair_key in rows:
            session.execute(delete(LoginFailures).where(LoginFailures.key == pair_key))
        tokens = issue_tokens(session, settings, user)
        session.commit()
    return tokens


@router.post("/refresh", response_model=TokenPair, responses={401: {"description": "invalid, expired, revoked or reused"}})
def refresh(body: RefreshRequest, response: Response, session: SessionDep, settings: SettingsDep) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    digest = security.token_hash(body.refresh_token)
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest).with_for_update())
    now = datetime.now(UTC)
    invalid = ApiError(401, "invalid_refresh_token", "the refresh token is invalid, expired or revoked; sign in again")
    if row is None or not security.same(row.token_hash, digest):
        raise invalid
    if row.rotated_at is not None and row.revoked_at is None:
        # A rotated token came back: someone holds a copy. End every session of this login.
        session.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id,
                                                   RefreshToken.revoked_at.is_(None)).values(revoked_at=now))  # fmt: skip
        session.commit()
        raise ApiError(401, "refresh_token_reused",
                       "this refresh token was already used; every session of this sign-in is now revoked")  # fmt: skip
    if row.revoked_at is not None or (_aware(row.expires_at) or now) <= now:
        raise invalid
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise invalid
    row.rotated_at = now
    return issue_tokens(session, settings, user, family_id=row.family_id)


@router.post("/logout", status_code=204)
def logout(body: RefreshRequest, session: SessionDep) -> Response:
    """Revoke the sign-in: the refresh token's whole family, and with it every access token
    issued to this sign-in (they carry its id; the token check finds it revoked). Unknown
    tokens are ignored."""
    digest = security.token_hash(body.refresh_token)
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest))
    if row is not None:
        session.execute(update(RefreshToken).where(RefreshToken.family_id == row.family_id,
                                                   RefreshToken.revoked_at.is_(None))
                        .values(revoked_at=datetime.now(UTC)))  # fmt: skip
    return Response(status_code=204)


@router.get("/me", response_model=UserPublic)
async def me(user: CurrentUser) -> UserPublic:  # no I/O of its own: no second thread hop
    return user_public(user)


def _key_public(k: ApiKey, cls: type[ApiKeyPublic] = ApiKeyPublic, **extra: str) -> ApiKeyPublic:
    return cls(id=k.id, name=k.name, prefix=k.prefix, created_at=k.created_at, last_used_at=k.last_used_at,
               revoked=k.revoked_at is not None, expires_at=k.expires_at, **extra)  # fmt: skip


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyPublic:
    secret = security.new_api_key()
    expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    k = ApiKey(user_id=user.id, name=body.name, prefix=secret[:12], key_hash=security.token_hash(secret),
               expires_at=expires)  # fmt: skip
    session.add(k)
    session.flush()
    return _key_public(k, ApiKeyCreated, key=secret)


@router.get("/api-keys", response_model=list[ApiKeyPublic])
def list_api_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyPublic]:
    rows = session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at))
    return [_key_public(k) for k in rows]


@router.delete("/api-keys/{key_id}", status_code=204)
def revoke_api_key(key_id: str, user: CurrentUser, session: SessionDep) -> Response:
    k = session.get(ApiKey, key_id)
    if k is None or k.user_id != user.id:
        raise not_found("API key")
    if k.revoked_at is None:
        k.revoked_at = datetime.now(UTC)
    return Response(status_code=204)
