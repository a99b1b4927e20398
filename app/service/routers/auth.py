"""/api/v1/auth: register, login, refresh (rotating), logout, me, API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Response
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.service import security
from app.service.deps import CommittingRoute, CurrentUser, SessionDep, SettingsDep
from app.service.errors import ApiError, not_found
from app.service.models import ApiKey, LoginThrottle, RefreshToken, User, new_id
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


@router.post("/register", status_code=201, response_model=UserPublic)
def register(body: UserCreate, session: SessionDep) -> UserPublic:
    try:
        security.check_password_policy(body.password, email=body.email, username=body.username)
    except security.PasswordPolicyError as e:
        raise ApiError(422, "weak_password", str(e)) from None
    taken = session.scalar(select(User.id).where(
        (User.email == body.email) | (User.username == body.username)))  # fmt: skip
    if taken:
        raise ApiError(409, "already_registered", "that email or username is already registered")
    user = User(email=body.email, username=body.username, full_name=body.full_name,
                password_hash=security.hash_password(body.password))  # fmt: skip
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # a concurrent registration won the race
        raise ApiError(409, "already_registered", "that email or username is already registered") from None
    return user_public(user)


def issue_tokens(session: SessionDep, settings: Settings, user: User, family_id: str | None = None) -> TokenPair:
    access, ttl = security.make_access_token(user.id, settings.secret_key, settings.access_token_ttl_s)
    refresh = security.new_refresh_token()
    session.add(RefreshToken(user_id=user.id, family_id=family_id or new_id(),
                             token_hash=security.token_hash(refresh),
                             expires_at=datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)))  # fmt: skip
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl, user=user_public(user))


def _locked_for_s(row: LoginThrottle | None, now: datetime) -> int:
    until = _aware(row.locked_until) if row else None
    return int((until - now).total_seconds()) + 1 if until and until > now else 0


@router.post("/login", response_model=TokenPair)
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    email = body.email.strip().lower()
    now = datetime.now(UTC)
    # Row lock (PostgreSQL) / write lock (SQLite BEGIN IMMEDIATE): concurrent guesses count exactly.
    row = session.scalar(select(LoginThrottle).where(LoginThrottle.email == email).with_for_update())
    wait = _locked_for_s(row, now)
    if wait:
        raise ApiError(429, "account_locked",
                       f"too many failed sign-ins; try again in {wait} s", headers={"Retry-After": str(wait)})  # fmt: skip
    user = session.scalar(select(User).where(User.email == email))
    ok = security.verify_password(user.password_hash if user else None, body.password)
    if not ok or user is None or not user.is_active:
        if row is None:
            row = LoginThrottle(email=email, failures=0, window_start=now)
            session.add(row)
        if now - (_aware(row.window_start) or now) > timedelta(seconds=settings.login_lockout_s):
            row.failures, row.window_start = 0, now
        row.failures += 1
        if row.failures >= settings.login_max_failures:
            row.locked_until, row.failures, row.window_start = now + timedelta(seconds=settings.login_lockout_s), 0, now
        session.commit()  # the failure counts even though we answer with an error
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    if row is not None:
        session.delete(row)
    return issue_tokens(session, settings, user)


@router.post("/refresh", response_model=TokenPair)
def refresh(body: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
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
    """Revoke the sign-in (the refresh token's whole family). Unknown tokens are ignored."""
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
    return cls(id=k.id, name=k.name, prefix=k.prefix, created_at=k.created_at,
               last_used_at=k.last_used_at, revoked=k.revoked_at is not None, **extra)  # fmt: skip


@router.post("/api-keys", status_code=201, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, user: CurrentUser, session: SessionDep) -> ApiKeyPublic:
    secret = security.new_api_key()
    k = ApiKey(user_id=user.id, name=body.name, prefix=secret[:12], key_hash=security.token_hash(secret))
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
