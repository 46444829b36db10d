"""Live resources: the current state of each (type, id) a service declared, with a
version that grows by one per update. Only the latest state is kept; the changes
themselves travel as events (outbox + log)."""
from __future__ import annotations

import functools
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint, and_, bindparam, delete,
                        or_, select, tuple_, update)
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


class Progress(NamedTuple):
    """A progress update: the resource, the status and service it must still have,
    and the fields it sets."""

    resource_type: str
    resource_id: str
    status: str
    service: str | None
    fields: dict


async def progress(tx: AsyncSession, updates: list[Progress]) -> list[Resource | None]:
    """Move each resource that is in the update's status and the service's on by
    one version with the given fields; None for one that is not (a status change,
    someone else's, unknown: the caller's full path finds out which).

    In two statements whatever their number: one UPDATE run for all (per set of
    fields), then one read of the rows. A resource updated twice here reads as its
    last state for both (progress is coalesced on the way out anyway)."""
    now = utcnow()
    by_fields: dict[tuple[str, ...], list[dict]] = {}
    for u in updates:
        by_fields.setdefault(tuple(sorted(u.fields)), []).append(
            {"t": u.resource_type, "rid": u.resource_id, "st": u.status, "svc": u.service, "now": now, **u.fields})
    for fields, params in by_fields.items():
        await tx.execute(_progress_statement(fields), params)
    keys = list({(u.resource_type, u.resource_id) for u in updates})
    rows = {(r.resource_type, r.resource_id): r for r in (await tx.execute(
        select(Resource).where(tuple_(Resource.resource_type, Resource.resource_id).in_(keys)))).scalars()}
    # Still in the update's status after it (nothing else here changes a status): it matched.
    return [row if (row := rows.get((u.resource_type, u.resource_id))) is not None
            and row.status == u.status and row.service == u.service else None for u in updates]


@functools.cache
def _progress_statement(fields: tuple[str, ...]):
    """The UPDATE of `progress` for a set of fields, built once: progress updates come
    by the thousand a second, and building the statement cost more than running it."""
    table = Resource.__table__
    return (update(table)
            .where(table.c.resource_type == bindparam("t"), table.c.resource_id == bindparam("rid"),
                   table.c.status == bindparam("st"), table.c.service.is_not_distinct_from(bindparam("svc")))
            .values(version=table.c.version + 1, updated_at=bindparam("now"),
                    **{name: bindparam(name, type_=table.c[name].type) for name in fields}))


async def changed_since(tx: AsyncSession, user_id: int | None, moment: datetime, ident: int,
                        limit: int) -> list[Resource]:
    """A user's resources (None: everyone's) changed after (moment, ident), in
    (updated_at, id) order; at most `limit`."""
    after = or_(Resource.updated_at > moment, and_(Resource.updated_at == moment, Resource.id > ident))
    query = _owned_by(select(Resource).where(after), user_id)
    query = query.order_by(Resource.updated_at, Resource.id).limit(limit)
    return list((await tx.execute(query)).scalars())
