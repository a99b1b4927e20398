"""/api/v1/usage and the admin tier endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from sqlalchemy import func, select

from app.service import quota
from app.service.deps import AdminUser, CommittingRoute, CurrentUser, SessionDep, SettingsDep
from app.service.errors import not_found
from app.service.models import Blob, User
from app.service.routers.auth import user_public
from app.service.schemas import TierChange, UsagePublic, UserPublic

router = APIRouter(tags=["usage"], route_class=CommittingRoute)


def storage_used(session: SessionDep, user_id: str) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.user_id == user_id)) or 0)


@router.get("/usage", response_model=UsagePublic)
def usage(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> UsagePublic:
    """Today's requests against the tier's quota (reading this does not count)."""
    now = datetime.now(UTC)
    used = quota.used_today(session, user.id, now)
    limit = settings.tier_daily_requests.get(user.tier, 0)
    reset = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return UsagePublic(tier=user.tier, day=now.strftime("%Y-%m-%d"), requests_today=used,
                       daily_limit=limit, remaining=max(0, limit - used), reset_at=reset,
                       burst_per_minute=settings.burst_per_minute,
                       storage_bytes=storage_used(session, user.id),
                       storage_limit_bytes=settings.tier_storage_bytes.get(user.tier, 0))  # fmt: skip


@router.put("/admin/users/{user_id}/tier", response_model=UserPublic, tags=["admin"])
def set_tier(user_id: str, body: TierChange, _admin: AdminUser, session: SessionDep) -> UserPublic:
    user = session.get(User, user_id)
    if user is None:
        raise not_found("user")
    user.tier = body.tier
    session.flush()
    return user_public(user)
