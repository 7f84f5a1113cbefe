from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, false, func, text, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class Role(StrEnum):
    USER = "user"
    MODERATOR = "moderator"  # may delete anyone's articles and comments
    ADMIN = "admin"  # moderator rights, plus the /admin endpoints


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # "Alice" and "alice" would be indistinguishable to readers: one of them only.
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    password_hash: Mapped[str] = mapped_column(String(128))
    bio: Mapped[str] = mapped_column(Text, default="", server_default="")
    image: Mapped[str] = mapped_column(String(2048), default="", server_default="")
    # Denormalised, moved in the same transaction as the article rows: the feed's total is a sum over
    # the people followed instead of a count over their articles.
    articles_count: Mapped[int] = mapped_column(default=0, server_default="0")
    # Values are Role members; checked by the schemas, not by a CHECK constraint, which would make
    # every later SQLite batch migration of this table fail to copy it.
    role: Mapped[str] = mapped_column(String(16), default=Role.USER, server_default=Role.USER.value)
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    email_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Access tokens issued before this instant are refused (password change, logout-all, deactivation).
    sessions_valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Notification preferences (GET/PUT /user/settings).
    email_on_follow: Mapped[bool] = mapped_column(default=True, server_default=true())
    email_on_comment: Mapped[bool] = mapped_column(default=True, server_default=true())
    weekly_digest: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The ISO week ("2026-W48") of the last weekly digest claimed for this user: one digest per week.
    digest_week: Mapped[str | None] = mapped_column(String(8))
    # The uploaded avatar's storage key (app/services/media.py); when set, it is the profile's image.
    avatar_key: Mapped[str | None] = mapped_column(String(64))
    # Denormalised from uploads, moved in the upload's transaction: the quota check is one UPDATE.
    upload_count: Mapped[int] = mapped_column(default=0, server_default="0")
    upload_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Follow(Base):
    __tablename__ = "follows"
    __table_args__ = (
        CheckConstraint("follower_id <> followee_id", name="not_self"),
        Index("ix_follows_followee_id", "followee_id"),
    )

    # The primary key (follower_id, followee_id) also serves "whom do I follow".
    follower_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    followee_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
