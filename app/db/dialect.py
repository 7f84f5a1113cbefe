"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql import ColumnElement, func, literal_column, text
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


def json_objects_agg(session: AsyncSession, fields: Mapping[str, Any]) -> ColumnElement[Any]:
    """Aggregate one JSON object per row (``{name: column}``) into a list; ``None`` or ``[]`` if no rows.

    The names are constants of ours, written into the SQL as string literals.
    """
    assert all(name.isidentifier() for name in fields)
    pairs: list[Any] = []
    for name, column in fields.items():
        pairs += [literal_column(f"'{name}'"), column]
    if session.get_bind().dialect.name == "postgresql":
        return func.json_agg(func.json_build_object(*pairs), type_=JSON)
    return func.json_group_array(func.json_object(*pairs), type_=JSON)


async def commit_unflushed(session: AsyncSession) -> None:
    """Commit without waiting for the WAL to reach the disk (PostgreSQL: ``synchronous_commit`` off
    for this transaction; SQLite in WAL mode with ``synchronous=NORMAL`` never waits at commit).

    Others see the changes at once all the same. Only for bookkeeping whose loss in a database crash
    is harmless, and which a later synchronous commit makes durable anyway (the WAL is flushed in
    order): an idempotency claim, lost with the work it guarded, saves a disk flush per request.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    await session.commit()
