"""The transactional outbox: every durable server event is stored in the same
transaction as the write that caused it, and stays marked unpublished until the
bus has taken it. A relay on any live instance publishes what is left behind."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import JSON, Index, String, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, utcnow


class OutboxEvent(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_published_at_id", "published_at", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # the event's id, for de-duplication
    namespace: Mapped[str] = mapped_column(String(50))
    event: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict] = mapped_column(JSON)
    rooms: Mapped[list] = mapped_column(JSON)
    skip_sid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]


# Every durable event goes through here: built once, and on the table (a Core
# insert), because the ORM's bulk path and building the statement cost more than
# running it.
_ADD = insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.id, sort_by_parameter_order=True)


async def add(tx: AsyncSession, events: list) -> list[int]:
    """Store `handlers.context.Outgoing` events in one statement; returns their ids
    in order."""
    now = utcnow()
    result = await tx.execute(
        _ADD,
        [{"namespace": e.namespace, "event": e.event, "data": e.data, "rooms": e.rooms,
          "skip_sid": e.skip_sid, "created_at": now} for e in events],
    )
    return list(result.scalars())


async def mark_published(tx: AsyncSession, ids: list[int]) -> None:
    if ids:
        await tx.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(published_at=utcnow()))


async def claim_stale(tx: AsyncSession, older_than: timedelta, limit: int) -> list[OutboxEvent]:
    """Unpublished events older than `older_than`, oldest first, locked against
    other instances' relays (SKIP LOCKED on PostgreSQL)."""
    query = (
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None), OutboxEvent.created_at < utcnow() - older_than)
        .order_by(OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await tx.execute(query)).scalars())


async def prune(tx: AsyncSession, older_than: timedelta) -> int:
    result = await tx.execute(
        delete(OutboxEvent).where(OutboxEvent.published_at.is_not(None),
                                  OutboxEvent.published_at < utcnow() - older_than))
    return result.rowcount
