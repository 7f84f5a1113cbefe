"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import ColumnElement, func
from sqlalchemy.sql.dml import Insert


def insert_ignoring_conflicts(
    session: AsyncSession, table: Any, *index_elements: Any, index_where: Any = None
) -> Insert:
    """``INSERT … ON CONFLICT DO NOTHING``: concurrent duplicates become no-ops, not errors.

    Unlike check-then-insert this is race-free, and unlike catching ``IntegrityError`` it leaves
    the transaction usable on PostgreSQL. ``index_where`` names a partial unique index by its predicate.
    """
    elements = list(index_elements) or None
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(
            index_elements=elements, index_where=index_where
        )
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=elements, index_where=index_where)


def json_array_agg(session: AsyncSession, column: QueryableAttribute[Any]) -> ColumnElement[Any]:
    """Aggregate ``column`` into a list (a JSON array the driver decodes); ``None`` or ``[]`` if no rows."""
    if session.get_bind().dialect.name == "postgresql":
        return func.json_agg(column, type_=JSON)
    return func.json_group_array(column, type_=JSON)
