"""Declarative base and column helpers shared by every storage module."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, Integer, MetaData
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class PgTransaction:
    """A transaction on a pooled asyncpg connection, without an ORM session
    (`Database.write_transaction`): what the group commits write in on PostgreSQL.
    The storage functions that take it run their statements on `conn` directly."""

    __slots__ = ("conn",)

    def __init__(self, conn) -> None:
        self.conn = conn


def is_postgresql(tx) -> bool:
    """Hot paths take PostgreSQL-only statements (arrays) where SQLite has none."""
    return type(tx) is PgTransaction or tx.bind.dialect.name == "postgresql"


async def pg_driver(tx):
    """The asyncpg connection under a PostgreSQL session (or a `PgTransaction`'s),
    inside the transaction: the group commit's statements run on it directly, without
    SQLAlchemy's statement, cursor and row machinery (~5% of the hub's CPU per chat
    message, docs/performance.md). What goes wrong there raises asyncpg's own
    exceptions; a connection that died under a statement is discarded by the
    session's rollback (by `Database.write_transaction` for a `PgTransaction`).

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with a statement of its own, so
    the transaction is started here. That reaches into the adapter, here only; its
    `_transaction`/`_start_transaction` are checked by tests/storage/test_storage.py and
    tests/storage/test_db_pool.py."""
    if type(tx) is PgTransaction:
        return tx.conn
    conn = await tx.connection()
    raw = await conn.get_raw_connection()
    adapter = raw.dbapi_connection
    if adapter._transaction is None:
        try:
            await adapter._start_transaction()
        except Exception:
            # SQLAlchemy did not see this fail, so it would pool the connection
            # again (a backend killed while idle): it must not.
            await conn.invalidate()
            raise
    return raw.driver_connection


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every timestamp the hub stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


async def insert_once(tx: AsyncSession, *rows) -> bool:
    """Insert the rows in a savepoint; False, with nothing inserted and the
    transaction still usable, if a unique key is already taken (an idempotent
    retry, or a race that another writer won)."""
    try:
        async with tx.begin_nested():
            for row in rows:
                tx.add(row)
                await tx.flush()
    except IntegrityError:
        return False
    return True
