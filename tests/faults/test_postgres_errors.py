"""Which PostgreSQL errors mean "not now" (a 503, retried by jobs) and which do not, each raised for
real by the throwaway server (``RAISE ... USING ERRCODE``) and received through the app's engine.

asyncpg hands SQLAlchemy its server errors as one generic class, so without ``app/db/session.py``'s
translation every one of these would be a plain ``DBAPIError``: a 500.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from app.db.session import create_engine
from tests.conftest import make_settings
from tests.faults.pg_server import PostgresServer


@pytest.mark.parametrize(
    ("sqlstate", "transient", "server_gone"),
    [
        ("57014", True, False),  # query_canceled: statement_timeout
        ("55P03", True, False),  # lock_not_available: lock_timeout
        ("40001", True, False),  # serialization_failure
        ("40P01", True, False),  # deadlock_detected
        ("53300", True, False),  # too_many_connections
        ("53100", True, False),  # disk_full
        ("57P01", True, True),  # admin_shutdown
        ("57P03", True, True),  # cannot_connect_now: starting up
        ("08006", True, True),  # connection_failure
        ("22012", False, False),  # division_by_zero: a bug, not an outage
        ("XX000", False, False),  # internal_error
    ],
)
async def test_transient_errors_are_operational_errors(
    pg: PostgresServer, tmp_path: Path, sqlstate: str, transient: bool, server_gone: bool
) -> None:
    engine = create_engine(make_settings(pg.url(), tmp_path))  # no schema needed
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(
                    text(f"DO $$ BEGIN RAISE EXCEPTION 'failed' USING ERRCODE = '{sqlstate}'; END $$")
                )
        error = raised.value
        assert isinstance(error, OperationalError) is transient
        assert error.connection_invalidated is server_gone  # its connection is dropped, not reused
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
