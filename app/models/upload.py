"""Uploaded images: avatars and article images. The files are in the storage (``app/core/storage.py``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (
        Index("ix_uploads_article_id_id", "article_id", "id"),
        Index("ix_uploads_owner_id", "owner_id"),
        # One avatar per user, enforced by the database (concurrent uploads too).
        Index(
            "uq_uploads_owner_id_avatar",
            "owner_id",
            unique=True,
            sqlite_where=text("article_id IS NULL"),
            postgresql_where=text("article_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The article it illustrates; NULL for the owner's avatar.
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64), unique=True)  # generated, never the client's name
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int]
    height: Mapped[int]
    size: Mapped[int] = mapped_column(BigInteger)  # bytes of the stored file, counted in the quota
    sha256: Mapped[str] = mapped_column(String(64))
    # Thumbnails are made by a job after the commit (app/workers/media.py).
    variants_ready: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
