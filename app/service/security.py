"""Password hashing (argon2id), password policy, access JWTs, refresh tokens and API keys.

Refresh tokens and API keys are random secrets; only their SHA-256 is stored (they carry
~256 bits of entropy, so a fast hash is enough and lets us look them up by hash).
"""

from __future__ import annotations

import functools
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
#: ASVS V2.1: at least 12 characters, at least 64 allowed, any characters, no composition rules.
PASSWORD_MIN_CHARS = 12
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


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of the breach corpora zxcvbn ships (lower case)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


_EDGE = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_REPEATED = re.compile(r"(.{1,4})\1+")  # "aaaaaaaaaaaa", "abcabcabcabc"


def is_common_password(password: str) -> bool:
    """In the common-password list, lower-cased or once the digits and symbols around it are
    taken off (``Password2026!`` is ``password``), or a unit of 1-4 characters repeated."""
    low = password.lower()
    words = common_passwords()
    core = _EDGE.sub("", low)
    return low in words or core in words or _REPEATED.fullmatch(low) is not None


def check_password_policy(password: str, *, email: str = "", username: str = "") -> None:
    """ASVS L2 (V2.1): 12 to 128 characters of any kind, no composition rules; refused when it
    is a common or breached password (:func:`is_common_password`) or contains the username
    or the email's local part."""
    if len(password) < PASSWORD_MIN_CHARS:
        raise PasswordPolicyError(f"password must be at least {PASSWORD_MIN_CHARS} characters")
    if len(password) > PASSWORD_MAX_CHARS:
        raise PasswordPolicyError(f"password must be at most {PASSWORD_MAX_CHARS} characters")
    if is_common_password(password):
        raise PasswordPolicyError("that password is too common (it appears in lists of breached passwords)")
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


def make_access_token(user_id: str, secret_key: str, ttl_s: int, session_id: str | None = None) -> tuple[str, int]:
    """A signed access token; ``session_id`` (the sign-in's refresh-token family) lets a
    sign-out or a detected refresh-token theft end it before it expires."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": user_id,
        "type": "access",
        "iat": now,
        "exp": now + timedelta(seconds=ttl_s),
        "jti": uuid.uuid4().hex,
    }
    if session_id:
        claims["sid"] = session_id
    return jwt.encode(claims, secret_key, algorithm=JWT_ALGORITHM), ttl_s


def read_access_token(token: str, secret_key: str) -> str | None:
    """The user id of a valid, unexpired access token, else None."""
    claims = access_claims(token, secret_key)
    return claims[0] if claims else None


def access_claims(token: str, secret_key: str) -> tuple[str, str | None] | None:
    """(user id, session id or None) of a valid, unexpired access token, else None."""
    try:
        claims = jwt.decode(token, secret_key, algorithms=[JWT_ALGORITHM],
                            options={"require": ["exp", "sub", "type"]})  # fmt: skip
    except jwt.PyJWTError:
        return None
    if claims.get("type") != "access":
        return None
    sub, sid = claims.get("sub"), claims.get("sid")
    if not isinstance(sub, str):
        return None
    return sub, sid if isinstance(sid, str) else None
