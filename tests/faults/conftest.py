"""Fault tests: the throwaway PostgreSQL cluster (tests/faults/pg_server.py) that the PostgreSQL fault
and timeout tests stop, restart and block, whatever database the rest of the run uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio.to_thread
import pytest

from tests.faults.pg_server import PostgresServer, migrated_template, pg_available, postgres_server


@pytest.fixture(scope="session")
async def pg_cluster() -> AsyncIterator[PostgresServer]:
    """One throwaway cluster for the run, with a migrated template database."""
    if not pg_available():
        pytest.skip("no PostgreSQL server binaries (set CONDUIT_TEST_PG_BIN) or no postgres OS user")
    with postgres_server() as server:
        await anyio.to_thread.run_sync(migrated_template, server)
        yield server


@pytest.fixture
async def pg(pg_cluster: PostgresServer) -> AsyncIterator[PostgresServer]:
    """The cluster, running; running again after the test, whatever the test did to it."""
    yield pg_cluster
    if not pg_cluster.running:
        await anyio.to_thread.run_sync(pg_cluster.start)
