"""Daily quota and per-minute burst limit, counted exactly under concurrency.

Each request is one ``INSERT ... ON CONFLICT (user_id, period) DO UPDATE SET count = count + 1
WHERE count < limit RETURNING count``: the database serialises the increments on the row, and
no row comes back once the limit is reached, so N concurrent requests admit exactly ``limit``.
Works on SQLite (>= 3.35) and PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    CTE,
    Connection,
    Insert,
    Select,
    Table,
    bindparam,
    exists,
    insert,
    literal,
    select,
)
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
    burst = _increment(session, user_id, minute_period(now), burst_limit)
    count = _increment(session, user_id, day_period(now), daily_limit) if burst is not None else None
    return _decision(now, daily_limit, burst, count, lambda: used_today(session, user_id, now))


def _decision(now: datetime, daily_limit: int, burst: int | None, count: int | None,
              used: Callable[[], int]) -> QuotaDecision:  # fmt: skip
    """The decision for a request whose burst count came back ``burst`` and daily count
    ``count`` (None: that limit refused it; ``used`` reads the day's count for a burst refusal)."""
    midnight = _next_midnight(now)
    reset = int(midnight.timestamp())
    if burst is None:
        minute_end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return QuotaDecision(False, daily_limit, max(0, daily_limit - used()), reset,
                             max(1, int((minute_end - now).total_seconds() + 0.999)), "burst")  # fmt: skip
    if count is None:
        return QuotaDecision(False, daily_limit, 0, reset,
                             max(1, int((midnight - now).total_seconds() + 0.999)), "daily")  # fmt: skip
    return QuotaDecision(True, daily_limit, daily_limit - count, reset, 0, "daily")


def used_today(session: Session | Connection, user_id: str, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    q = select(UsageCounter.count).where(
        UsageCounter.user_id == user_id, UsageCounter.period == day_period(now)
    )
    return int(session.scalar(q) or 0)


@functools.cache
def _count_then_insert_pg(table: Table) -> Select:
    """PostgreSQL: the burst count, then the daily count, then the INSERT into ``table``, each
    only if the one before it went through: one statement (data-modifying CTEs), so in
    autocommit it is one round trip and atomic. The same row-locking UPSERTs as
    :func:`_upsert`, so the counts stay exact under concurrency."""
    uc = UsageCounter.__table__
    uid = uc.c.user_id

    def counted(period: str, limit: str, after: CTE | None) -> CTE:
        rows = select(bindparam("user_id", type_=uid.type), bindparam(period, type_=uc.c.period.type), literal(1))
        if after is not None:
            rows = rows.where(exists(select(after.c.count)))
        return (
            postgresql.insert(uc)
            .from_select(["user_id", "period", "count"], rows)
            .on_conflict_do_update(
                index_elements=[uid, uc.c.period], set_={"count": uc.c.count + 1}, where=uc.c.count < bindparam(limit)
            )
            .returning(uc.c.count)
            .cte(f"counted_{period}")
        )

    burst = counted("minute", "burst_limit", None)
    daily = counted("day", "daily_limit", burst)
    values = select(*[bindparam(f"row_{c.key}", type_=c.type) for c in table.c]).where(exists(select(daily.c.count)))
    inserted = insert(table).from_select([c.key for c in table.c], values).returning(table.c[0]).cte("inserted")
    return select(select(burst.c.count).scalar_subquery(), select(daily.c.count).scalar_subquery(),
                  select(inserted.c[0]).scalar_subquery())  # fmt: skip


def consume_and_insert(conn: Connection, user_id: str, table: Table, row: dict[str, object], *,
                       daily_limit: int, burst_limit: int, now: datetime | None = None) -> QuotaDecision:  # fmt: skip
    """Count one request and, if it is allowed, insert ``row`` into ``table``: on PostgreSQL
    one statement on ``conn``, which must be in autocommit (see :func:`_count_then_insert_pg`).
    A refused request's counts stand, as with :func:`consume`."""
    assert conn.dialect.name == "postgresql" and daily_limit > 0 and burst_limit > 0
    now = now or datetime.now(UTC)
    params: dict[str, object] = {"user_id": user_id, "minute": minute_period(now), "day": day_period(now),
                                 "burst_limit": burst_limit, "daily_limit": daily_limit}  # fmt: skip
    params.update({f"row_{k}": v for k, v in row.items()})
    burst, count, _ = conn.execute(_count_then_insert_pg(table), params).one()
    return _decision(now, daily_limit, burst, count, lambda: used_today(conn, user_id, now))
