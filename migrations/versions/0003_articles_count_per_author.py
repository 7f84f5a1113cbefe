"""articles count per author

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:26:21.081386
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy, which would drop the lower(username) index on SQLite.
    op.add_column("users", sa.Column("articles_count", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE users SET articles_count = (SELECT count(*) FROM articles WHERE articles.author_id = users.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("articles_count")
    if op.get_bind().dialect.name == "sqlite":  # the batch copy above loses the expression index
        op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
