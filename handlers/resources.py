"""Live resources in /notifications: services declare and update typed resources
(bookings, tasks) whose status follows the type's machine (handlers/resource_types.py);
owners and staff watch them, get the current state at once and then every change.

Status changes are durable (outbox + log: recovery and `resources:list` return them);
progress-only updates are volatile, and each instance coalesces them per socket
(hub/delivery/coalescing.py), so a slow client gets the latest, never a backlog."""
from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from common.group_commit import GroupCommit
from handlers.roles import SERVICE, ACCOUNTS
from handlers.context import Actor, Context, user_room
from handlers import sync
from handlers.errors import Conflict, Forbidden, NotFound, ValidationFailed
from handlers.notifications import NOTIFICATIONS, service_room
from handlers.registry import REGISTRY, operation, rejoin_check, server_event
from handlers.resource_types import RESOURCE_TYPES, ResourceType
from handlers.schema import Id, Input, JsonObject, Limit, Output, Text
from storage import resources as store
from storage.base import aware, insert_once

MAX_OWNERS = 100
TypeName = Text(50, min_length=1, pattern=r"^[a-z_]+$")
# Services name their resources: a booking id, a task's UUID. Integers are taken as text.
ResourceKey = Annotated[Text(100, min_length=1, pattern=r"^[A-Za-z0-9._:-]+$"),
                        BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]


def watch_room(resource_type: str, resource_id: str) -> str:
    return f"resource:{resource_type}:{resource_id}"


def type_room(resource_type: str, user_id: int | None) -> str:
    """Everything of a type a user owns (None: all of it, for staff)."""
    return f"resources:{resource_type}" if user_id is None else f"resources:{resource_type}:user:{user_id}"


# --- models ------------------------------------------------------------------------

class Owners(Input):
    user_ids: list[Id] | None = Field(None, min_length=1, max_length=MAX_OWNERS)
    room: Text(200) | None = None  # a room of the namespace services may publish to, e.g. user:7

    @model_validator(mode="after")
    def _one(self):
        if self.user_ids is None and self.room is None:
            raise ValueError("give user_ids and/or room")
        if self.room is not None and not REGISTRY.namespaces[NOTIFICATIONS].room_allowed(self.room):
            raise ValueError("room is not one services may publish to")
        return self

    def user_list(self) -> list[int]:
        ids = list(self.user_ids or [])
        match = re.fullmatch(r"user:(\d+)", self.room or "")
        if match:
            ids.append(int(match.group(1)))
        return list(dict.fromkeys(ids))


class ResourceRef(Input):
    resource_type: TypeName
    resource_id: ResourceKey


class UpdateResource(ResourceRef):
    status: Text(50, min_length=1)
    progress: float | None = Field(None, ge=0, le=100)
    result: JsonObject | None = None
    error: Text(2000) | None = None
    owners: Owners | None = None  # required when the resource is new; replaces them when given


class WatchResource(Input):
    resource_type: TypeName
    resource_id: ResourceKey | None = None  # none: every resource of the type one owns (staff: all)


class ListResources(Input):
    resource_type: TypeName | None = None
    limit: Limit = 100


class ResourceState(Output):
    resource_type: str
    resource_id: str
    status: str
    progress: float | None
    result: dict[str, Any] | None
    error: str | None
    version: int


class ResourceOut(ResourceState):
    updated_at: datetime


class ResourceList(Output):
    items: list[ResourceOut]


class Unwatched(Output):
    resource_type: str
    resource_id: str | None


class CancelRequested(Output):
    resource_type: str
    resource_id: str
    status: str  # the state the cancel was asked in (the service answers with an update)


# --- server events -------------------------------------------------------------

@server_event(NOTIFICATIONS, "resource:updated", coalesce_by=("resource_type", "resource_id"))
class ResourceUpdated(ResourceState):
    """A watched resource changed: its whole state at `version` (status changes
    durable, with offsets; progress-only updates coalesced per socket)."""


@server_event(NOTIFICATIONS, "resource:cancel-requested")
class ResourceCancelRequested(Output):
    """To the service that declared the resource: an owner or staff asked to cancel it."""

    resource_type: str
    resource_id: str
    status: str
    requested_by: int


# --- helpers ---------------------------------------------------------------------

def _kind(name: str) -> ResourceType:
    kind = RESOURCE_TYPES.get(name)
    if kind is None:
        raise ValidationFailed(f"unknown resource type {name!r}",
                               details={"resource_types": sorted(RESOURCE_TYPES)})
    return kind


def _out(row: store.Resource) -> ResourceOut:
    return ResourceOut(resource_type=row.resource_type, resource_id=row.resource_id, status=row.status,
                       progress=row.progress, result=row.result, error=row.error, version=row.version,
                       updated_at=aware(row.updated_at))


def may_see(actor: Actor, row: store.Resource) -> bool:
    return actor.is_staff or (actor.id is not None and actor.id in row.owner_ids)


async def _visible(ctx: Context, tx, resource_type: str, resource_id: str) -> store.Resource:
    row = await store.get(tx, resource_type, resource_id)
    if row is None or not may_see(ctx.actor, row):
        raise NotFound("no such resource")  # someone else's counts as none
    return row


def _rooms(kind: ResourceType, row: store.Resource) -> list[str]:
    rooms = [watch_room(row.resource_type, row.resource_id), type_room(row.resource_type, None)]
    rooms += [type_room(row.resource_type, u) for u in row.owner_ids]
    if kind.push_to_owners:
        rooms += [user_room(u) for u in row.owner_ids]
    if row.room:
        rooms.append(row.room)
    return list(dict.fromkeys(rooms))


def _given(req: UpdateResource) -> dict:
    """The fields an update sets (the others keep their value)."""
    return {k: v for k in ("progress", "result", "error") if (v := getattr(req, k)) is not None}


async def _write_progress(items: list[tuple[Context, UpdateResource]]) -> list[store.Resource | None]:
    """Progress updates in one transaction (volatile: nothing in the outbox)."""
    async with items[0][0].db.transaction() as tx:
        return await store.progress(tx, [store.Progress(req.resource_type, req.resource_id, req.status,
                                                        ctx.actor.name, _given(req)) for ctx, req in items])


class _ProgressWrites(GroupCommit[tuple[Context, UpdateResource], "store.Resource | None"]):
    """The group commit of progress updates, kept on the instance (ctx.local)."""

    def __init__(self) -> None:
        super().__init__(_write_progress)


# --- operations -----------------------------------------------------------------

@operation(NOTIFICATIONS, "resource:update", roles={SERVICE}, http=("POST", "/api/resources"))
async def update_resource(ctx: Context, req: UpdateResource) -> ResourceOut:
    """Services: declare a resource (with its owners) or move it on: a new status
    must be a transition of its type's machine (else `conflict`); the same status
    again updates progress, result or error until the resource ends."""
    kind = _kind(req.resource_type)
    if req.status not in kind.transitions:
        raise ValidationFailed(f"{req.status!r} is not a status of {kind.name}",
                               details={"statuses": list(kind.statuses)})
    if req.owners is None and req.status not in kind.terminal:
        # Most likely progress: written together with the other requests meanwhile
        # (common/group_commit.py), one statement each.
        row = await ctx.local.get(_ProgressWrites).submit((ctx, req))
        if row is not None:
            out = _out(row)
            ctx.emit(ResourceUpdated(**out.model_dump(exclude={"updated_at"})), rooms=_rooms(kind, row))
            return out
    async with ctx.transaction() as tx:
        row = await store.get(tx, kind.name, req.resource_id, lock=True)
        if row is None:
            if req.owners is None:
                raise ValidationFailed("a new resource needs its owners")
            if req.status not in kind.initial:
                raise Conflict(f"a {kind.name} starts as one of {', '.join(kind.initial)}")
            row = store.new(resource_type=kind.name, resource_id=req.resource_id, status=req.status,
                            progress=req.progress, result=req.result, error=req.error, owner_ids=[],
                            room=req.owners.room, service=ctx.actor.name)
            if not await insert_once(tx, row):
                raise Conflict("declared at the same moment by another request: retry")
            await store.set_owners(tx, row, req.owners.user_list())
            changed = True
        else:
            if row.service != ctx.actor.name:
                raise Forbidden("another service declared this resource")
            if not kind.allows(row.status, req.status):
                raise Conflict(f"{kind.name} {row.resource_id} cannot go from {row.status} to {req.status}",
                               details={"status": row.status, "version": row.version})
            changed = req.status != row.status
            row.status, row.version, row.updated_at = req.status, row.version + 1, store.utcnow()
            for name, value in _given(req).items():
                setattr(row, name, value)
            if req.owners is not None:
                row.room = req.owners.room
                await store.set_owners(tx, row, req.owners.user_list())
        out = _out(row)
        event = ResourceUpdated(**out.model_dump(exclude={"updated_at"}))
        if changed:  # durable: in the outbox with the write
            ctx.emit(event, rooms=_rooms(kind, row))
    if not changed:  # progress only: volatile, coalesced per socket on the way out
        ctx.emit(event, rooms=_rooms(kind, row))
    return out


@operation(NOTIFICATIONS, "resource:watch", roles=ACCOUNTS)
async def watch(ctx: Context, req: WatchResource) -> ResourceOut | ResourceList:
    """Watch a resource one owns (staff: any) and get its current state at once, then
    `resource:updated` on every change; without resource_id, every resource of the
    type one owns (staff: all of the type) and their current states."""
    kind = _kind(req.resource_type)
    if req.resource_id is None:
        mine = None if ctx.actor.is_staff else ctx.actor.id
        await _enter(ctx, type_room(kind.name, mine))
        async with ctx.transaction() as tx:
            return ResourceList(items=[_out(r) for r in await store.listed(tx, mine, kind.name, 200)])
    async with ctx.transaction() as tx:
        await _visible(ctx, tx, kind.name, req.resource_id)
    await _enter(ctx, watch_room(kind.name, req.resource_id))
    async with ctx.transaction() as tx:  # read after joining: no change falls in between
        return _out(await _visible(ctx, tx, kind.name, req.resource_id))


async def _enter(ctx: Context, room: str) -> None:
    """Join at once (so that the state read next is never older than what the room
    gets), and for recovery."""
    if ctx.enter is not None:
        await ctx.enter(room)
    ctx.join(room)


@operation(NOTIFICATIONS, "resource:unwatch", roles=ACCOUNTS)
async def unwatch(ctx: Context, req: WatchResource) -> Unwatched:
    """Stop watching a resource (or, without resource_id, a type)."""
    if req.resource_id is None:
        ctx.leave(type_room(req.resource_type, None if ctx.actor.is_staff else ctx.actor.id))
    else:
        ctx.leave(watch_room(req.resource_type, req.resource_id))
    return Unwatched(resource_type=req.resource_type, resource_id=req.resource_id)


@operation(NOTIFICATIONS, "resources:list", roles=ACCOUNTS, http=("GET", "/api/resources"))
async def list_resources(ctx: Context, req: ListResources) -> ResourceList:
    """The current state of one's resources (staff: everyone's), newest change first:
    what a client that was away catches up with."""
    if req.resource_type is not None:
        _kind(req.resource_type)
    async with ctx.transaction() as tx:
        rows = await store.listed(tx, None if ctx.actor.is_staff else ctx.actor.id, req.resource_type, req.limit)
    return ResourceList(items=[_out(r) for r in rows])


@operation(NOTIFICATIONS, "resources:sync", roles=ACCOUNTS)
async def sync_resources(ctx: Context, req: sync.SyncRequest) -> sync.SyncPage[ResourceOut]:
    """One's resources (staff: everyone's) changed since a cursor, oldest change first:
    how a client away longer than the recovery window learns how they ended. The
    last changes may come again: apply a state when its version is higher."""
    moment, ident = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.changed_since(tx, None if ctx.actor.is_staff else ctx.actor.id, moment, ident,
                                         req.limit + 1)
    items = [_out(r) for r in rows]
    return sync.SyncPage[ResourceOut](**sync.page(rows, items, req.limit, req.since))


@operation(NOTIFICATIONS, "resource:cancel", roles=ACCOUNTS)
async def cancel(ctx: Context, req: ResourceRef) -> CancelRequested:
    """Ask the service that declared a resource to cancel it: it gets
    `resource:cancel-requested` (durable) and answers with an update to `cancelled`
    (or whatever its machine allows); an ended resource is `conflict`."""
    kind = _kind(req.resource_type)
    async with ctx.transaction() as tx:
        row = await _visible(ctx, tx, kind.name, req.resource_id)
        if row.status in kind.terminal:
            raise Conflict(f"{kind.name} {row.resource_id} has ended ({row.status})")
        if row.service is None:
            raise Conflict("no service to ask")
        ctx.emit(ResourceCancelRequested(resource_type=row.resource_type, resource_id=row.resource_id,
                                         status=row.status, requested_by=ctx.actor.id),
                 rooms=[service_room(row.service)])
    return CancelRequested(resource_type=row.resource_type, resource_id=row.resource_id, status=row.status)


@rejoin_check(NOTIFICATIONS)
async def may_rejoin(ctx: Context, room: str) -> bool:
    """A recovering socket gets back the resources and types it watched, if it still may."""
    kind, _, rest = room.partition(":")
    if kind == "resources":
        resource_type, _, owner = rest.partition(":user:")
        return ctx.actor.is_staff if not owner else owner == str(ctx.actor.id)
    if kind == "resource":
        resource_type, _, resource_id = rest.partition(":")
        async with ctx.transaction() as tx:
            row = await store.get(tx, resource_type, resource_id)
        return row is not None and may_see(ctx.actor, row)
    return False
