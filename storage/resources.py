"""Live resources: the current state of each (type, id) a service declared, with a
version that grows by one per update. Only the latest state is kept; the changes
themselves travel as events (outbox + log)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint, and_, delete, or_,
                        select, update)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, BigId, utcnow


class Resource(Base):
    __tablename__ = "resources"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", name="uq_resources_resource_type_resource_id"),
        # resources:list of staff: the newest of a type.
        Index("ix_resources_resource_type_updated_at", "resource_type", "updated_at"),
        # resources:sync: changes in (updated_at, id) order.
        Index("ix_resources_updated_at_id", "updated_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)  # a sync position's tie-breaker
    resource_type: Mapped[str] = mapped_column(String(50))
    resource_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(50))
    progress: Mapped[float | None]
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    owner_ids: Mapped[list] = mapped_column(JSON)  # user ids
    room: Mapped[str | None] = mapped_column(String(200))
    service: Mapped[str | None] = mapped_column(String(100))  # who declared it: hears cancels
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Owner(Base):
    """Who may see a resource: `resources:list` of a user reads by user_id."""

    __tablename__ = "resource_owners"
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(50), primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(100), primary_key=True)


async def get(tx: AsyncSession, resource_type: str, resource_id: str, *, lock: bool = False) -> Resource | None:
    query = select(Resource).where(Resource.resource_type == resource_type, Resource.resource_id == resource_id)
    if lock:
        query = query.with_for_update()
    return (await tx.execute(query)).scalar_one_or_none()


def new(**fields) -> Resource:
    """A resource at version 1, to be inserted (with `set_owners`) by the caller."""
    now = utcnow()
    return Resource(version=1, created_at=now, updated_at=now, **fields)


async def set_owners(tx: AsyncSession, row: Resource, user_ids: list[int]) -> None:
    await tx.execute(delete(Owner).where(Owner.resource_type == row.resource_type,
                                         Owner.resource_id == row.resource_id))
    tx.add_all([Owner(user_id=u, resource_type=row.resource_type, resource_id=row.resource_id)
                for u in user_ids])
    row.owner_ids = list(user_ids)
    await tx.flush()


def _owned_by(query, user_id: int | None):
    if user_id is None:
        return query
    return query.join(Owner, (Owner.resource_type == Resource.resource_type)
                      & (Owner.resource_id == Resource.resource_id)).where(Owner.user_id == user_id)


async def listed(tx: AsyncSession, user_id: int | None, resource_type: str | None,
                 limit: int) -> list[Resource]:
    """The newest resources of a user (None: of everyone), optionally of one type."""
    query = _owned_by(select(Resource), user_id)
    if resource_type is not None:
        query = query.where(Resource.resource_type == resource_type)
    query = query.order_by(Resource.updated_at.desc()).limit(limit)
    return list((await tx.execute(query)).scalars())


async def progress(tx: AsyncSession, resource_type: str, resource_id: str, *, status: str, service: str | None,
                   fields: dict) -> Resource | None:
    """Move a resource that is in `status` and `service`'s on by one version with the
    given fields, in one statement; None if it is not (a status change, someone
    else's, unknown: the caller's full path finds out which)."""
    query = (update(Resource)
             .where(Resource.resource_type == resource_type, Resource.resource_id == resource_id,
                    Resource.status == status, Resource.service == service)
             .values(version=Resource.version + 1, updated_at=utcnow(), **fields)
             .returning(*Resource.__table__.columns)
             .execution_options(synchronize_session=False))
    found = (await tx.execute(query)).mappings().first()
    return None if found is None else Resource(**found)


async def changed_since(tx: AsyncSession, user_id: int | None, moment: datetime, ident: int,
                        limit: int) -> list[Resource]:
    """A user's resources (None: everyone's) changed after (moment, ident), in
    (updated_at, id) order; at most `limit`."""
    after = or_(Resource.updated_at > moment, and_(Resource.updated_at == moment, Resource.id > ident))
    query = _owned_by(select(Resource).where(after), user_id)
    query = query.order_by(Resource.updated_at, Resource.id).limit(limit)
    return list((await tx.execute(query)).scalars())
