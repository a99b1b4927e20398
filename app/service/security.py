"""Password hashing (argon2id), password policy, access JWTs, refresh tokens and API keys.

Refresh tokens and API keys are random secrets; only their SHA-256 is stored (they carry
~256 bits of entropy, so a fast hash is enough and lets us look them up by hash).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

JWT_ALGORITHM = "HS256"
API_KEY_PREFIX = "amc_"
PASSWORD_MIN_CHARS = 10
PASSWORD_MAX_CHARS = 128

# argon2id with the library's RFC 9106 low-memory profile (64 MiB, t=3): the default.
_hasher = PasswordHasher()
# Verified against when the email is unknown, so both paths cost the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class PasswordPolicyError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password_policy(password: str, *, email: str = "", username: str = "") -> None:
    """At least 10 characters, three of: lower case, upper case, digit, symbol; not the
    username or the email's local part."""
    if len(password) < PASSWORD_MIN_CHARS:
        raise PasswordPolicyError(f"password must be at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise PasswordPolicyError(f"password must be at most {PASSWORD_MAX_CHARS} characters")
    classes = sum(
        bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]")
    )
    if classes < 3:
        raise PasswordPolicyError(
            "password must mix at least three of: lower case, upper case, digits, symbols"
        )
    low = password.lower()
    for part in (username.lower(), email.split("@")[0].lower()):
        if len(part) >= 4 and part in low:
            raise PasswordPolicyError("password must not contain your username or email")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def make_access_token(user_id: str, secret_key: str, ttl_s: int) -> tuple[str, int]:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "type": "access",
        "iat": now,
        "exp": now + timedelta(seconds=ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret_key, algorithm=JWT_ALGORITHM), ttl_s


def read_access_token(token: str, secret_key: str) -> str | None:
    """The user id of a valid, unexpired access token, else None."""
    try:
        claims = jwt.decode(token, secret_key, algorithms=[JWT_ALGORITHM],
                            options={"require": ["exp", "sub", "type"]})  # fmt: skip
    except jwt.PyJWTError:
        return None
    if claims.get("type") != "access":
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None
