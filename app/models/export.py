"""Exports of a user's own content, built by background jobs (``app/workers/exports.py``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class ExportState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


# The predicate of the partial unique index below, as literal SQL: an ON CONFLICT naming it must not
# use bound parameters, or PostgreSQL's generic plan of the prepared statement (used from its sixth
# execution on a connection) cannot infer the index and the INSERT fails.
UNFINISHED_PREDICATE = "state IN ('pending', 'running')"


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (
        Index("ix_exports_user_id", "user_id"),
        # At most one unfinished export per user, enforced by the database (concurrent requests too).
        Index(
            "uq_exports_user_id_unfinished",
            "user_id",
            unique=True,
            sqlite_where=text(UNFINISHED_PREDICATE),
            postgresql_where=text(UNFINISHED_PREDICATE),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=ExportState.PENDING)
    progress: Mapped[int] = mapped_column(default=0)  # 0-100
    # The archive, relative to the export directory (settings.export_dir); set when done.
    file_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
