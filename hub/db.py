"""Database engines: building one from a URL, binding the tables to it, migrations, transactions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from piccolo.engine.base import Engine
from piccolo.engine.postgres import PostgresEngine
from piccolo.engine.sqlite import SQLiteEngine, TransactionType

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database could not be reached; callers answer 503 so clients retry."""


def is_data_error(exc: BaseException) -> bool:
    """The database refused the data itself (a NUL character on PostgreSQL, a constraint): the
    same statement fails again, so retrying cannot help. Connection errors and timeouts are not."""
    import sqlite3

    import asyncpg

    return isinstance(
        exc,
        (
            asyncpg.DataError,
            asyncpg.IntegrityConstraintViolationError,
            sqlite3.DataError,
            sqlite3.IntegrityError,
            ValueError,
        ),
    )


# Settings of every hub connection to PostgreSQL. No parallel plans: the hub's statements read a
# page or a few rows by an index, and a parallel worker's start (5-15 ms on a busy small machine)
# costs more than the page. The planner otherwise picks one for a list whose filters it judges
# rarer than they are, e.g. an owner with a tag (the tag's rows walked in two processes: 14-22 ms
# for a page that takes 0.3-2 ms in one, at 1,000,000 conversations).
PG_SERVER_SETTINGS = {"max_parallel_workers_per_gather": "0"}


def engine_from_url(url: str) -> Engine:
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        return PostgresEngine(config={"dsn": dsn, "server_settings": dict(PG_SERVER_SETTINGS)})
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Concurrent writers wait for the lock instead of failing at once.
        return SQLiteEngine(path=path, timeout=30)
    raise ValueError(f"unsupported database URL scheme {parsed.scheme!r}: use postgresql:// or sqlite:///")


async def open_engine(url: str) -> Engine:
    """engine_from_url off the event loop: Piccolo's engines query the server version in their
    constructor, synchronously."""
    return await asyncio.to_thread(engine_from_url, url)


def use_engine(engine: Engine) -> None:
    """Bind every hub table (and Piccolo's migration table) to `engine`."""
    from piccolo.apps.migrations.tables import Migration

    from hub import piccolo_conf
    from hub.tables import TABLES

    piccolo_conf.DB = engine
    for table in [*TABLES, Migration]:
        table._meta.db = engine


async def start(engine: Engine, pool_size: int = 10) -> None:
    use_engine(engine)
    if isinstance(engine, PostgresEngine):
        await engine.start_connection_pool(min_size=1, max_size=pool_size, reset=_reset_if_needed)
    else:
        # WAL lets readers proceed while one writer holds the lock.
        await engine.run_ddl("PRAGMA journal_mode=WAL")


async def _reset_if_needed(connection) -> None:
    """What a connection needs before the pool hands it out again. The hub takes no advisory
    locks, LISTENs nor SETs on pool connections, so asyncpg's default reset (a round trip on
    every release, a twentieth of an inbound webhook) only matters for an unfinished transaction."""
    if connection.is_in_transaction():
        await connection.reset()


# How long stop() lets the connections in use finish before it closes them regardless.
POOL_CLOSE_TIMEOUT_S = 10.0


async def stop(engine: Engine) -> None:
    """Closes the pool: waits for the connections in use to come back, at most
    POOL_CLOSE_TIMEOUT_S, then terminates the rest (a transaction left waiting on something that
    never ends must not keep a shutdown waiting forever; PostgreSQL rolls it back)."""
    if not (isinstance(engine, PostgresEngine) and engine.pool):
        return
    try:
        # Cancelled by the timeout, asyncpg's close() terminates every connection.
        await asyncio.wait_for(engine.pool.close(), POOL_CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("database connections still in use after %s s: closed regardless", POOL_CLOSE_TIMEOUT_S)
    engine.pool = None


async def pg_fetch(engine: PostgresEngine, sql: str, args: list[Any]) -> list[Any]:
    """A plain SQL statement's rows (asyncpg Records), for hot paths that skip Piccolo's query
    building: on the transaction's connection when one is open, else on a pool connection (a new
    one when the engine has no pool). asyncpg prepares each distinct text once per connection."""
    transaction = engine.current_transaction.get()
    if transaction is not None:
        return await transaction.connection.fetch(sql, *args)
    if engine.pool is None:
        connection = await engine.get_new_connection()
        try:
            return await connection.fetch(sql, *args)
        finally:
            await connection.close()
    async with engine.pool.acquire() as connection:
        return await connection.fetch(sql, *args)


async def migrate(engine: Engine, quiet: bool = True) -> None:
    """Apply all pending migrations of the hub app to `engine`."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    use_engine(engine)
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        result = await run_forwards(app_name="hub")
    if not result.success:
        raise RuntimeError(f"migrations failed: {result.message}\n{out.getvalue()}")


@contextlib.asynccontextmanager
async def transaction(engine: Engine) -> AsyncIterator[object]:
    """A write transaction (yields Piccolo's transaction); SQLite takes the write lock up front to
    avoid upgrade deadlocks."""
    if isinstance(engine, SQLiteEngine):
        ctx = engine.transaction(transaction_type=TransactionType.immediate)
    else:
        ctx = engine.transaction()
    async with ctx as txn:
        yield txn


def current_engine() -> Engine:
    from hub.tables import Conversation

    return Conversation._meta.db


def raw_sql_migration(migration_id: str, description: str, statements: list[str]):
    """A Piccolo migration that runs SQL statements in order (indexes Piccolo cannot express).

    Piccolo runs raw steps before table changes of the same migration, so such statements get a
    migration of their own after the one that creates their tables."""
    from piccolo.apps.migrations.auto.migration_manager import MigrationManager
    from piccolo.engine import engine_finder

    manager = MigrationManager(migration_id=migration_id, app_name="hub", description=description)

    async def run_statements() -> None:
        engine = engine_finder()
        for statement in statements:
            await engine.run_ddl(statement)

    manager.add_raw(run_statements)
    return manager
