"""Operator actions outside the HTTP API."""

from __future__ import annotations

from sqlalchemy import select

from app.service import db
from app.service.models import User
from app.service.settings import Settings


def promote(settings: Settings, email: str) -> bool:
    """Give an existing user the admin role; False when no user has that email."""
    engine = db.make_engine(settings.database_url)
    try:
        with db.make_sessionmaker(engine)() as s, s.begin():
            user = s.scalar(select(User).where(User.email == email.strip().lower()))
            if user is None:
                return False
            user.role = "admin"
            return True
    finally:
        engine.dispose()
