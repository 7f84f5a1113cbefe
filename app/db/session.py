"""Engine and session factory.

One ``AsyncSession`` per request; the request's unit of work is committed or rolled back in exactly
one place (``app.api.v1.dependencies.get_session``). Services only ``flush``.

Every wait on the database is bounded (docs/reliability.md): connecting (``db_connect_timeout``), a
statement (``db_statement_timeout``, on the server, and a little later by the client) and a lock
(``db_lock_timeout``; SQLite's busy timeout). Failures that say the database cannot serve *now* are
raised as ``OperationalError``, which requests answer with a 503 and jobs retry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncpg.exceptions import InternalClientError
from sqlalchemy import event
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core.config import Settings
from app.core.metrics import instrument_pool
from app.core.profiling import instrument_engine

# The client's own bound on a statement, this long past the server's statement_timeout: reached only
# when the server's answer (or its cancellation) never arrives, as in a network partition.
CLIENT_TIMEOUT_MARGIN = 5.0

# SQLSTATEs (or their prefixes) of errors that say the database cannot serve now, not that the request
# is wrong: they become OperationalError, which requests answer with a 503 (app/core/errors.py) and
# jobs retry (app/workers/queue.py). asyncpg's own errors otherwise reach SQLAlchemy as a plain DBAPIError.
TRANSIENT_SQLSTATES = (
    "08",  # connection exception
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "53",  # insufficient resources: too many connections, disk full, out of memory
    "55P03",  # lock not available: lock_timeout
    "57014",  # query canceled: statement_timeout
    "57P",  # operator intervention: shutdown, crash, starting up, database dropped
)
# Of those, the ones that say the server went away: every pooled connection is gone with it.
SERVER_GONE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _sqlite_on_connect(busy_timeout_ms: int) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across app crashes in WAL mode
        # A writer waits this long for another's lock, then fails ("database is locked": a 503).
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    return on_connect


def _connect(dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any) -> DBAPIConnection:
    """Connect; a network failure (refused, unreachable, unknown host, connect timeout), which asyncpg
    raises as a bare ``OSError``, becomes the driver's ``OperationalError``, so that SQLAlchemy handles
    it as a database error instead of letting it through as an unexpected one (a 500)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        raise dialect.loaded_dbapi.OperationalError(f"cannot connect: {type(exc).__name__}") from exc


def _transient_as_operational(context: ExceptionContext) -> BaseException | None:
    """``handle_error``: a transient failure (``TRANSIENT_SQLSTATES``, the client's own timeout) is
    raised as ``OperationalError``; a connection it leaves unusable is dropped."""
    error = context.original_exception
    if isinstance(context.sqlalchemy_exception, OperationalError | InterfaceError):
        return None  # already what the error handlers and job retries treat as transient
    if isinstance(error, TimeoutError) or isinstance(error.__cause__, InternalClientError):
        # The client gave up on a statement (command_timeout: its fate on the server is unknown), or
        # the driver's protocol is out of step (the server ended the session between two statements):
        # drop this connection, keep the pool's others (they are checked at checkout).
        if context.connection is not None:
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False
    else:
        sqlstate = getattr(error, "sqlstate", None)
        if not (isinstance(sqlstate, str) and sqlstate.startswith(TRANSIENT_SQLSTATES)):
            return None
        if sqlstate.startswith(SERVER_GONE_SQLSTATES):
            context.is_disconnect = True
    return OperationalError(
        context.statement,
        context.parameters,
        error,
        hide_parameters=True,
        connection_invalidated=context.is_disconnect,
    )


def _discard_closed(
    _dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """On checkout, a connection the server has closed (a restart, an idle-session timeout) is replaced,
    with every pooled connection older than it, before a request gets it. ``is_closed`` is asyncpg's
    own state, updated when the socket closes: unlike ``pool_pre_ping``, no round trip."""
    connection = record.driver_connection
    if connection is not None and connection.is_closed():
        raise InvalidatePoolError("the server closed the connection")


def create_engine(settings: Settings, *, bounded: bool = True) -> AsyncEngine:
    """The application's engine. ``bounded=False`` (migrations) leaves out the statement and lock
    timeouts: a migration may rewrite a large table, or wait for the locks of requests in flight."""
    # hide_parameters: bound values (password hashes, token digests) never reach logs or errors.
    # No pool_pre_ping: it costs a round trip on every checkout (0.5 ms per request, measured with
    # bench/). A connection the server closed is replaced at checkout for free (_discard_closed); one
    # found dead only when used fails its request with a 503, SQLAlchemy invalidates the pool, and the
    # next requests get fresh connections; pool_recycle retires idle ones before servers or proxies
    # drop them.
    options: dict[str, Any] = {"echo": settings.db_echo, "hide_parameters": True}
    lock_timeout_ms = round(settings.db_lock_timeout * 1000)
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    else:
        connect_args: dict[str, Any] = {"timeout": settings.db_connect_timeout}
        if bounded:
            connect_args["command_timeout"] = settings.db_statement_timeout + CLIENT_TIMEOUT_MARGIN
            connect_args["server_settings"] = {
                "statement_timeout": str(round(settings.db_statement_timeout * 1000)),
                "lock_timeout": str(lock_timeout_ms),
            }
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": settings.db_pool_recycle,
            "connect_args": connect_args,
        }
    engine = create_async_engine(settings.database_url, **options)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(lock_timeout_ms))
    else:
        event.listen(engine.sync_engine, "do_connect", _connect)
        event.listen(engine.sync_engine, "checkout", _discard_closed)
    event.listen(engine.sync_engine, "handle_error", _transient_as_operational)
    instrument_engine(engine)
    if settings.metrics_enabled:
        instrument_pool(engine)
    return engine


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: objects stay readable after the commit that ends the request.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
