"""uploads: avatars and article images, per-user upload counters

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.base import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AVATAR = "article_id IS NULL"


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy, which would drop the lower(username) index on SQLite.
    op.add_column("users", sa.Column("avatar_key", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("upload_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("users", sa.Column("upload_bytes", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("variants_ready", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_uploads_owner_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["article_id"], ["articles.id"], name=op.f("fk_uploads_article_id_articles"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
        sa.UniqueConstraint("key", name=op.f("uq_uploads_key")),
    )
    op.create_index("ix_uploads_article_id_id", "uploads", ["article_id", "id"])
    op.create_index("ix_uploads_owner_id", "uploads", ["owner_id"])
    op.create_index(
        "uq_uploads_owner_id_avatar",
        "uploads",
        ["owner_id"],
        unique=True,
        sqlite_where=sa.text(AVATAR),
        postgresql_where=sa.text(AVATAR),
    )


def downgrade() -> None:
    op.drop_index("uq_uploads_owner_id_avatar", table_name="uploads")
    op.drop_index("ix_uploads_owner_id", table_name="uploads")
    op.drop_index("ix_uploads_article_id_id", table_name="uploads")
    op.drop_table("uploads")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("upload_bytes")
        batch_op.drop_column("upload_count")
        batch_op.drop_column("avatar_key")
    if op.get_bind().dialect.name == "sqlite":  # the batch copy above loses the expression index
        op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
