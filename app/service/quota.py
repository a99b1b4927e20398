"""Daily quota and per-minute burst limit, counted exactly under concurrency.

Each request is one ``INSERT ... ON CONFLICT (user_id, period) DO UPDATE SET count = count + 1
WHERE count < limit RETURNING count``: the database serialises the increments on the row, and
no row comes back once the limit is reached, so N concurrent requests admit exactly ``limit``.
Works on SQLite (>= 3.35) and PostgreSQL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Insert, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.service.models import UsageCounter


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_epoch_s: int
    retry_after_s: int
    scope: str  # "daily" | "burst"

    def headers(self) -> dict[str, str]:
        h = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch_s),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after_s)
        return h


def day_period(now: datetime) -> str:
    return "d:" + now.strftime("%Y-%m-%d")


def minute_period(now: datetime) -> str:
    return "m:" + now.strftime("%Y-%m-%dT%H:%M")


def _next_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


@functools.cache
def _upsert(dialect: str) -> Insert:
    """``INSERT ... ON CONFLICT DO UPDATE ... WHERE count < :limit RETURNING count``, built once
    per dialect with bound parameters (building and caching it per request cost more than
    running it)."""
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(UsageCounter)
    return (
        ins.values(user_id=bindparam("user_id"), period=bindparam("period"), count=1)
        .on_conflict_do_update(
            index_elements=[UsageCounter.user_id, UsageCounter.period],
            set_={"count": UsageCounter.count + 1},
            where=UsageCounter.count < bindparam("limit"),
        )
        .returning(UsageCounter.count)
    )


def _increment(session: Session, user_id: str, period: str, limit: int) -> int | None:
    """Count one request; the new count, or None when the limit was already reached."""
    if limit <= 0:
        return None
    # On the session's connection (Core): the ORM's bulk-insert machinery adds nothing here.
    conn = session.connection()
    row = conn.execute(_upsert(conn.dialect.name), {"user_id": user_id, "period": period, "limit": limit}).first()
    return None if row is None else int(row[0])


def consume(session: Session, user_id: str, *, daily_limit: int, burst_limit: int,
            now: datetime | None = None) -> QuotaDecision:  # fmt: skip
    """Count one request against the burst window then the day; commits nothing itself."""
    now = now or datetime.now(UTC)
    midnight = _next_midnight(now)
    reset = int(midnight.timestamp())
    minute_end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    burst = _increment(session, user_id, minute_period(now), burst_limit)
    if burst is None:
        used = used_today(session, user_id, now)
        return QuotaDecision(False, daily_limit, max(0, daily_limit - used), reset,
                             max(1, int((minute_end - now).total_seconds() + 0.999)), "burst")  # fmt: skip
    count = _increment(session, user_id, day_period(now), daily_limit)
    if count is None:
        return QuotaDecision(False, daily_limit, 0, reset,
                             max(1, int((midnight - now).total_seconds() + 0.999)), "daily")  # fmt: skip
    return QuotaDecision(True, daily_limit, daily_limit - count, reset, 0, "daily")


def used_today(session: Session, user_id: str, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    q = select(UsageCounter.count).where(
        UsageCounter.user_id == user_id, UsageCounter.period == day_period(now)
    )
    return int(session.scalar(q) or 0)
