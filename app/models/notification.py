"""Notifications: what happened that a user should hear about, written in the transaction of the event."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class NotificationKind(StrEnum):
    COMMENT = "comment"  # someone commented on the recipient's article
    FOLLOW = "follow"  # someone followed the recipient
    FAVORITE = "favorite"  # someone favorited the recipient's article
    ARTICLE = "article"  # someone the recipient follows published an article
    EXPORT = "export"  # the recipient's export is ready (or failed)


# The predicate of the partial unique index below, as literal SQL (see UNFINISHED_PREDICATE in
# app/models/export.py for why an ON CONFLICT naming it must not use a bound parameter).
ARTICLE_PREDICATE = "kind = 'article'"


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        # Newest first per recipient, and the cursor (id) is the order: one index serves both.
        Index("ix_notifications_recipient_id_id", "recipient_id", "id"),
        # One "new article" notification per follower and article, whatever runs the fan-out job how
        # many times at once (app/services/notifications.py: notify_followers_of_article).
        Index(
            "uq_notifications_article_recipient",
            "article_id",
            "recipient_id",
            unique=True,
            sqlite_where=text(ARTICLE_PREDICATE),
            postgresql_where=text(ARTICLE_PREDICATE),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    comment_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"))
    export_id: Mapped[int | None] = mapped_column(ForeignKey("exports.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
