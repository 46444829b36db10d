"""Events that services published (`POST /api/publish`), kept for `sync`: a client
that could not recover still gets what was published to it while it was away.

One row per target room (a user's room, or an allowed room such as /orders' staff
room), so a caller's sync reads its rooms' rows in (published_at, id) order from one
index. Kept for `HUB_PUBLISHED_RETENTION` seconds (pruned by the outbox relay)."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import JSON, Index, String, and_, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, utcnow


class Published(Base):
    __tablename__ = "published_events"
    __table_args__ = (
        Index("ix_published_events_room", "namespace", "room", "published_at", "id"),
        Index("ix_published_events_published_at", "published_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(50))
    room: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict] = mapped_column(JSON)
    published_at: Mapped[datetime] = mapped_column(default=utcnow)


async def add(tx: AsyncSession, namespace: str, event: str, data: dict, rooms: list[str]) -> None:
    now = utcnow()
    await tx.execute(insert(Published), [{"namespace": namespace, "room": room, "event": event, "data": data,
                                          "published_at": now} for room in rooms])


async def since(tx: AsyncSession, namespace: str, rooms: list[str], moment: datetime, ident: int,
                limit: int) -> list[Published]:
    """The rooms' events published after (moment, ident), in (published_at, id) order."""
    cond = and_(Published.namespace == namespace, Published.room.in_(rooms),
                or_(Published.published_at > moment, and_(Published.published_at == moment, Published.id > ident)))
    query = select(Published).where(cond).order_by(Published.published_at, Published.id).limit(limit)
    return list((await tx.execute(query)).scalars())


async def prune(tx: AsyncSession, older_than: timedelta) -> int:
    result = await tx.execute(delete(Published).where(Published.published_at < utcnow() - older_than))
    return result.rowcount
