"""the week of each user's last weekly digest

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy, which would drop the lower(username) index on SQLite.
    op.add_column("users", sa.Column("digest_week", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("digest_week")
    if op.get_bind().dialect.name == "sqlite":  # the batch copy above loses the expression index
        op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
