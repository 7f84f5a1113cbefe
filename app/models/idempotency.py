"""Idempotency keys: a user's ``Idempotency-Key``, the request it was first used for, and its answer.

A row is a claim while ``status_code`` is NULL (its holder, named by ``token``, is doing the work until
``locked_until``) and a stored answer afterwards. See ``app/services/idempotency.py``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # Keys are the user's own: two users may use the same one. Claiming is an INSERT against this.
        UniqueConstraint("user_id", "key"),
        Index("ix_idempotency_keys_created_at", "created_at"),  # the purge of expired keys
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    # SHA-256 (hex) of the request the key was first used for: method, path and body.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Random, per claim: only its holder may record the answer or release the key.
    token: Mapped[str] = mapped_column(String(32))
    # While the work runs: when the claim lapses (a crashed holder's key is then taken over).
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None]
    content_type: Mapped[str | None] = mapped_column(String(255))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
