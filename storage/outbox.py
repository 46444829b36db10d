"""The transactional outbox: every durable server event is stored in the same
transaction as the write that caused it, and stays there until the bus has taken it.
A relay on any live instance publishes what is left behind.

Published events are deleted, not marked. Marking them (`published_at`) was an
UPDATE that could not be HOT, as the column was indexed: a new version of every
event's row and two index entries, ~13 µs of PostgreSQL per event against ~3.4 µs
for a DELETE. Without marks the index has no use, and each insert maintains one
index fewer. PostgreSQL's CPU in the chat benchmark fell by a sixth
(docs/performance.md)."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Callable

import asyncpg

from sqlalchemy import JSON, String, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage import jsoncodec
from storage.base import Base, BigId, is_postgresql, pg_driver, utcnow

log = logging.getLogger("hub.outbox")


class OutboxEvent(Base):
    __tablename__ = "outbox"
    # Ids are never handed out again, on SQLite too (migration 0007): deleting the
    # newest rows must not free their ids for the next events.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # the event's id, for de-duplication
    namespace: Mapped[str] = mapped_column(String(50))
    event: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict] = mapped_column(JSON)
    rooms: Mapped[list] = mapped_column(JSON)
    skip_sid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set only by versions before migration 0007, which marked events instead of
    # deleting them: such rows are neither relayed nor kept (`prune`).
    published_at: Mapped[datetime | None]
    # Set by the relay on an event the bus refused (migration 0009): kept for a
    # person to look at, never relayed again, so that it cannot hold back the rest.
    failed_at: Mapped[datetime | None]


# Every durable event goes through here. On PostgreSQL the events go in as one JSON
# array of objects, parsed once, in order, so their ids sorted are in the order given
# (see storage/chat.py's group commit statements); elsewhere, a Core insert built once
# (the ORM's bulk path and building the statement cost more than running it).
_PG_ADD = """
INSERT INTO outbox (namespace, event, data, rooms, skip_sid, created_at)
SELECT e.namespace, e.event, e.data, e.rooms, e.skip_sid, $2
FROM ROWS FROM (json_to_recordset($1::json) AS (namespace text, event text, data json, rooms json,
                                                 skip_sid text))
     WITH ORDINALITY AS e(namespace, event, data, rooms, skip_sid, n)
ORDER BY e.n
RETURNING id"""
_ADD = insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.id, sort_by_parameter_order=True)


async def add(tx: AsyncSession, events: list) -> list[int]:
    """Store `handlers.context.Outgoing` events in one statement; returns their ids
    in order."""
    now = utcnow()
    if is_postgresql(tx):
        pg = await pg_driver(tx)
        batch = jsoncodec.dumps([{"namespace": e.namespace, "event": e.event, "data": e.data, "rooms": e.rooms,
                                  "skip_sid": e.skip_sid} for e in events])
        return sorted(row[0] for row in await pg.fetch(_PG_ADD, batch, now))
    result = await tx.execute(
        _ADD,
        [{"namespace": e.namespace, "event": e.event, "data": e.data, "rooms": e.rooms,
          "skip_sid": e.skip_sid, "created_at": now} for e in events],
    )
    return list(result.scalars())


_PG_REMOVE = text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))")
_table = OutboxEvent.__table__


async def remove_published(tx: AsyncSession, ids: list[int]) -> None:
    """Delete events the bus has taken. One statement for the whole list (on
    PostgreSQL one text whatever its length: an IN list is rendered anew for every
    length)."""
    if not ids:
        return
    if is_postgresql(tx):
        await tx.execute(_PG_REMOVE, {"ids": ids})
    else:
        await tx.execute(delete(_table).where(_table.c.id.in_(ids)))


# Any constant: the relays of all instances take turns on it.
_RELAY_LOCK = 72_4243


async def lock_relay(tx: AsyncSession) -> bool:
    """One relay at a time (for this transaction): two relays appending batches side
    by side could put newer events in the log before older ones. False if another
    instance's relay holds it."""
    if not is_postgresql(tx):
        return True  # SQLite: one writer at a time anyway
    return bool((await tx.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _RELAY_LOCK})).scalar())


# PostgreSQL channel on which an instance says it left events in the outbox (it
# could not append them): the others' relays take them before anything newer.
LEFT_BEHIND = "hub_outbox_left_behind"


async def signal_left_behind(tx: AsyncSession, origin: str) -> None:
    """Tell every instance's `watch_left_behind` (PostgreSQL; SQLite has one instance)."""
    if is_postgresql(tx):
        await tx.execute(text("SELECT pg_notify(:channel, :origin)"), {"channel": LEFT_BEHIND, "origin": origin})


async def watch_left_behind(url: str, on_signal: Callable[[str], None]) -> None:
    """Call `on_signal(origin)` for each `signal_left_behind`, forever, on a
    connection of its own (reconnected after a failure)."""
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    failing = False
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                await conn.add_listener(LEFT_BEHIND, lambda _c, _pid, _ch, origin: on_signal(origin))
                failing = False
                while True:  # a dead connection would say nothing: ask now and then
                    await asyncio.sleep(2.0)
                    await conn.fetchval("SELECT 1", timeout=5)
            finally:
                await conn.close(timeout=1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("not listening for events left behind by other instances: %s", exc)
            failing = True
            await asyncio.sleep(2.0)


async def claim_stale(tx: AsyncSession, older_than: timedelta, limit: int) -> list[OutboxEvent]:
    """Unpublished events older than `older_than`, oldest first, locked against
    other instances' relays (SKIP LOCKED on PostgreSQL)."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None), OutboxEvent.failed_at.is_(None),
               OutboxEvent.created_at < utcnow() - older_than)
        .order_by(OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await tx.execute(query)).scalars())


async def set_aside(tx: AsyncSession, event_id: int) -> None:
    """Mark an event the bus refused: the relay passes over it from now on."""
    await tx.execute(update(_table).where(_table.c.id == event_id).values(failed_at=utcnow()))


async def prune(tx: AsyncSession, older_than: timedelta) -> int:
    """Delete what versions before migration 0007 marked published (an instance of
    such a version may run beside this one during a rolling upgrade)."""
    result = await tx.execute(
        delete(OutboxEvent).where(OutboxEvent.published_at.is_not(None),
                                  OutboxEvent.published_at < utcnow() - older_than))
    return result.rowcount
