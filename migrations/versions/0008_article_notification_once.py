"""one "new article" notification per follower and article, enforced by a partial unique index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 18:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARTICLE = "kind = 'article'"
INDEX = "uq_notifications_article_recipient"


def upgrade() -> None:
    # Duplicates two concurrent runs of the fan-out job could have left: keep the first of each.
    op.execute(
        "DELETE FROM notifications WHERE kind = 'article' AND id NOT IN ("
        "SELECT min(id) FROM notifications WHERE kind = 'article' GROUP BY article_id, recipient_id)"
    )
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(
            INDEX, "notifications", ["article_id", "recipient_id"], unique=True, sqlite_where=sa.text(ARTICLE)
        )
        return
    # Without blocking writes to what may be a large table (docs/deployment.md). A build that failed
    # half-way leaves an invalid index behind, dropped first so that the migration can run again.
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.create_index(
            INDEX,
            "notifications",
            ["article_id", "recipient_id"],
            unique=True,
            postgresql_where=sa.text(ARTICLE),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="notifications")
