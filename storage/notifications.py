"""Stored notifications, one row per recipient. Deletion is soft (a tombstone
with `deleted_at`), so a client catching up by `updated_at` hears about it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, utcnow


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_id_id", "user_id", "id"),
        # A user's `sync`: their notifications in (updated_at, id) order (migration 0006).
        Index("ix_notifications_user_id_updated_at_id", "user_id", "updated_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(50))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    action_url: Mapped[str | None] = mapped_column(String(2000))
    data: Mapped[dict | None] = mapped_column(JSON)
    is_read: Mapped[bool] = mapped_column(default=False)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def _live(user_id: int):
    return (Notification.user_id == user_id) & Notification.deleted_at.is_(None)


async def create_many(tx: AsyncSession, user_ids: list[int], *, type: str, title: str, message: str,
                      action_url: str | None, data: dict | None) -> list[Notification]:
    """One notification per user, in the order of `user_ids`."""
    now = utcnow()
    rows = [Notification(user_id=u, type=type, title=title, message=message, action_url=action_url,
                         data=data, is_read=False, created_at=now, updated_at=now) for u in user_ids]
    tx.add_all(rows)
    await tx.flush()
    return rows


async def get_own(tx: AsyncSession, user_id: int, notification_id: int) -> Notification | None:
    """The user's live notification with this id, or None (someone else's counts as none)."""
    query = select(Notification).where(Notification.id == notification_id, _live(user_id))
    return (await tx.execute(query)).scalar_one_or_none()


async def page(tx: AsyncSession, user_id: int, *, unread_only: bool, limit: int,
               offset: int) -> tuple[list[Notification], int]:
    """The user's notifications, newest first."""
    cond = _live(user_id)
    if unread_only:
        cond &= Notification.is_read.is_(False)
    total = int((await tx.execute(select(func.count()).select_from(Notification).where(cond))).scalar_one())
    query = select(Notification).where(cond).order_by(Notification.id.desc()).limit(limit).offset(offset)
    return list((await tx.execute(query)).scalars()), total


async def mark_read(tx: AsyncSession, row: Notification) -> bool:
    """True if it was unread."""
    if row.is_read:
        return False
    row.is_read = True
    row.read_at = row.updated_at = utcnow()
    await tx.flush()
    return True


async def mark_all_read(tx: AsyncSession, user_id: int) -> int:
    now = utcnow()
    result = await tx.execute(
        update(Notification).where(_live(user_id), Notification.is_read.is_(False))
        .values(is_read=True, read_at=now, updated_at=now)
    )
    return result.rowcount


async def delete(tx: AsyncSession, row: Notification) -> None:
    row.deleted_at = row.updated_at = utcnow()
    await tx.flush()


async def unread_count(tx: AsyncSession, user_id: int) -> int:
    query = select(func.count()).select_from(Notification).where(_live(user_id), Notification.is_read.is_(False))
    return int((await tx.execute(query)).scalar_one())


async def changed_since(tx: AsyncSession, user_id: int, moment: datetime, ident: int,
                        limit: int) -> list[Notification]:
    """The user's notifications created, read or deleted (tombstones included) after
    (moment, ident), in (updated_at, id) order; at most `limit`."""
    cond = and_(
        Notification.user_id == user_id,
        or_(Notification.updated_at > moment, and_(Notification.updated_at == moment, Notification.id > ident)),
    )
    query = select(Notification).where(cond).order_by(Notification.updated_at, Notification.id).limit(limit)
    return list((await tx.execute(query)).scalars())
