"""The database handle: one code path for SQLite (embedded default) and PostgreSQL."""
from __future__ import annotations

import asyncio
import functools
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import AsyncIterator

from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from storage import jsoncodec
from storage.base import PgTransaction


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, idle_ping_after: float = 5.0):
        """`idle_ping_after`: seconds a pooled PostgreSQL connection may sit unused
        before it is checked on its next checkout (see _ping_if_idle)."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = create_async_engine(url, connect_args={"timeout": 30},
                                              json_serializer=jsoncodec.dumps)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        else:
            self.engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size,
                json_serializer=jsoncodec.dumps,
                # Reuse the most recent connections, whose statements are prepared
                # already, instead of going round the whole pool.
                pool_use_lifo=True,
            )
            event.listen(self.engine.sync_engine, "checkin", _stamp)
            event.listen(self.engine.sync_engine, "checkout",
                         functools.partial(_ping_if_idle, self.engine.dialect, idle_ping_after))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite takes one writer at a time and answers a second with "database is
        # locked" instead of waiting inside a transaction: serialize in-process.
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back on error."""
        async with self._sqlite_lock or nullcontext():
            async with self.sessions() as session:
                async with session.begin():
                    yield session

    def can_write_lean(self, driver_only: bool) -> bool:
        """Whether a write runs on the bare driver, without an ORM session: the one
        place this is decided. Only if every statement of the write runs on the
        driver (`driver_only`: storage functions that use `pg_driver`), and only on
        PostgreSQL (SQLite's writes go through the session and its lock)."""
        return driver_only and not self.is_sqlite

    def write_transaction(self, *, driver_only: bool = True
                          ) -> AbstractAsyncContextManager[AsyncSession | PgTransaction]:
        """The transaction of a write (a group commit's). If `can_write_lean`, a
        `PgTransaction` on a pooled connection, without an ORM session: the
        session's begin, commit and close (each a trip through SQLAlchemy's greenlet
        bridge) cost ~0.2 ms more CPU per transaction, ~20% of the hub's CPU per
        chat message at 300 sends/s, where batches hold one or two
        (docs/performance.md). Else the usual session (`transaction`)."""
        if self.can_write_lean(driver_only):
            return self._driver_transaction()
        return self.transaction()

    @asynccontextmanager
    async def _driver_transaction(self) -> AsyncIterator[PgTransaction]:
        async with self.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            try:
                async with raw.transaction():
                    yield PgTransaction(raw)
            except BaseException:
                if raw.is_closed():
                    # SQLAlchemy did not see it die under the driver: it must not
                    # pool it again.
                    await conn.invalidate()
                raise

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # The sqlite3 driver's own transaction handling breaks SAVEPOINTs (a savepoint
    # opened outside its implicit BEGIN commits on release): turn it off and let
    # SQLAlchemy's "begin" event issue the BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:
    # IMMEDIATE takes the write lock up front, so another process's writer makes
    # us wait (busy_timeout) instead of failing on a read-to-write upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


# A connection that sat idle in the pool is checked before use, so a database that
# restarted meanwhile costs nobody an error. A busy one is not: the check is three
# round trips (SQLAlchemy's pool_pre_ping on asyncpg), which under load cost more
# than the writes. If the database restarts under load, the first failing operation
# invalidates the pool (group commits then retry their requests one by one).
def _stamp(_dbapi_conn, record) -> None:
    record.info["used"] = time.monotonic()


def _ping_if_idle(dialect, idle_after: float, dbapi_conn, record, _proxy) -> None:
    if time.monotonic() - record.info.get("used", 0.0) < idle_after:
        return
    try:
        dialect.do_ping(dbapi_conn)
    except Exception as exc:
        raise DisconnectionError("stale pooled connection") from exc  # the pool takes another

