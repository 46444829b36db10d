"""/notifications: stored notifications per user, pushed live to every socket of the
user, and listed on the next connect by users who were offline."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from handlers.roles import SERVICE, ACCOUNTS, ACCOUNTS_AND_SERVICES
from handlers.context import Context
from handlers.errors import NotFound
from handlers.registry import namespace, operation, server_event
from handlers import sync
from handlers.schema import Empty, Id, Input, JsonObject, Output, Page, Paging, Text, exactly_one
from storage import notifications as store
from storage import users as users_store
from storage.base import aware

NOTIFICATIONS = "/notifications"



def service_room(name: str) -> str:
    """Every /notifications socket of a service joins it: what is asked of its
    resources reaches it there (handlers/resources.py)."""
    return f"service:{name}"


namespace(
    NOTIFICATIONS,
    "Each user's stored notifications, live pushes and service-published status events.",
    roles=ACCOUNTS_AND_SERVICES,
    publish_rooms=(r"user:\d+",),
    connect_rooms=lambda actor: [service_room(actor.name)] if actor.role == SERVICE and actor.name else [],
)

MAX_RECIPIENTS = 1000


# --- models ------------------------------------------------------------------

class NotificationOut(Output):
    id: int
    type: str
    title: str
    message: str
    action_url: str | None
    data: dict[str, Any] | None
    is_read: bool
    created_at: datetime


class SyncedNotification(NotificationOut):
    deleted_at: None = None  # a deleted notification comes as a NotificationTombstone


class NotificationTombstone(sync.Tombstone):
    id: int


class ListNotifications(Paging):
    unread_only: bool = False


class NotificationRef(Input):
    notification_id: Id


class Updated(Output):
    updated: int


class Deleted(Output):
    notification_id: int


class UnreadCount(Output):
    unread_count: int


def _safe_url(url: str | None) -> str | None:
    # Clients put it in links: no javascript: or data: URLs.
    if url is not None and not url.startswith(("https://", "http://", "/")):
        raise ValueError("action_url must be an http(s) URL or an absolute path")
    return url


class CreateNotification(Input):
    user_id: Id | None = None
    user_ids: list[Id] | None = Field(None, min_length=1, max_length=MAX_RECIPIENTS)
    type: Text(50, min_length=1)
    title: Text(200, min_length=1)
    message: Text(4000, min_length=1)
    action_url: Text(2000) | None = None
    data: JsonObject | None = None

    _url = field_validator("action_url")(_safe_url)
    _one_of = exactly_one("user_id", "user_ids")

    @model_validator(mode="after")
    def _recipients(self):
        if self.user_ids is not None and any(u < 1 for u in self.user_ids):
            raise ValueError("user_ids must be positive")
        return self

    def recipients(self) -> list[int]:
        return [self.user_id] if self.user_id is not None else list(dict.fromkeys(self.user_ids))


class CreatedOne(Output):
    notification_id: int
    user_id: int


class Created(Output):
    created: int
    items: list[CreatedOne]


# --- server events -------------------------------------------------------------

@server_event(NOTIFICATIONS, "push:received")
class PushReceived(Output):
    """A new notification for the user (stored: also in notifications:list)."""

    notification_id: int
    type: str
    title: str
    body: str
    action_url: str | None
    data: dict[str, Any] | None
    created_at: datetime


@server_event(NOTIFICATIONS, "status:updated", publishable=True)
class StatusUpdated(Output):
    """Something of the user's changed status in a backend system."""

    resource_type: str = Field(max_length=100)
    resource_id: int | str
    status: str = Field(max_length=100)


@server_event(NOTIFICATIONS, "alert:triggered", publishable=True)
class AlertTriggered(Output):
    """A monitoring alert for the user."""

    alert_id: int | str
    severity: Literal["info", "warning", "critical"]
    message: str = Field(max_length=4000)


@server_event(NOTIFICATIONS, "email:sent", publishable=True)
class EmailSent(Output):
    """An email was sent to the user."""

    email_id: int | str
    recipient: str = Field(max_length=320)
    subject: str = Field(max_length=500)
    sent_at: datetime


@server_event(NOTIFICATIONS, "notifications:updated")
class NotificationsUpdated(Output):
    """The user read or deleted notifications on another device (keeps badges in step)."""

    action: Literal["read", "read-all", "deleted"]
    notification_id: int | None  # None for read-all
    unread_count: int


# --- helpers ---------------------------------------------------------------------

def _out(row: store.Notification) -> NotificationOut:
    return NotificationOut(id=row.id, type=row.type, title=row.title, message=row.message,
                           action_url=row.action_url, data=row.data, is_read=row.is_read,
                           created_at=aware(row.created_at))


async def _tell_other_devices(tx, ctx: Context, action: str, notification_id: int | None) -> None:
    count = await store.unread_count(tx, ctx.actor.id)
    ctx.emit(NotificationsUpdated(action=action, notification_id=notification_id, unread_count=count),
             users=[ctx.actor.id], skip_origin=True)


async def _own(tx, ctx: Context, notification_id: int) -> store.Notification:
    row = await store.get_own(tx, ctx.actor.id, notification_id)
    if row is None:
        raise NotFound("no such notification")
    return row


# --- operations -----------------------------------------------------------------

@operation(NOTIFICATIONS, "notifications:list", roles=ACCOUNTS,
           http=("GET", "/api/notifications"))
async def list_notifications(ctx: Context, req: ListNotifications) -> Page[NotificationOut]:
    """The user's notifications, newest first (optionally only the unread ones)."""
    async with ctx.transaction() as tx:
        rows, total = await store.page(tx, ctx.actor.id, unread_only=req.unread_only,
                                       limit=req.limit, offset=req.offset)
    return Page[NotificationOut](total=total, limit=req.limit, offset=req.offset, items=[_out(r) for r in rows])


@operation(NOTIFICATIONS, "notification:read", roles=ACCOUNTS,
           http=("PATCH", "/api/notifications/{notification_id}/read"))
async def read_notification(ctx: Context, req: NotificationRef) -> NotificationOut:
    """Mark one of the user's notifications read."""
    async with ctx.transaction() as tx:
        row = await _own(tx, ctx, req.notification_id)
        if await store.mark_read(tx, row):
            await _tell_other_devices(tx, ctx, "read", row.id)
        return _out(row)


@operation(NOTIFICATIONS, "notifications:read-all", roles=ACCOUNTS,
           http=("PATCH", "/api/notifications/mark-all-read"))
async def read_all(ctx: Context, req: Empty) -> Updated:
    """Mark every unread notification of the user read."""
    async with ctx.transaction() as tx:
        updated = await store.mark_all_read(tx, ctx.actor.id)
        if updated:
            await _tell_other_devices(tx, ctx, "read-all", None)
    return Updated(updated=updated)


@operation(NOTIFICATIONS, "notification:delete", roles=ACCOUNTS,
           http=("DELETE", "/api/notifications/{notification_id}"))
async def delete_notification(ctx: Context, req: NotificationRef) -> Deleted:
    """Delete one of the user's notifications."""
    async with ctx.transaction() as tx:
        row = await _own(tx, ctx, req.notification_id)
        await store.delete(tx, row)
        await _tell_other_devices(tx, ctx, "deleted", row.id)
    return Deleted(notification_id=req.notification_id)


@operation(NOTIFICATIONS, "notifications:unread-count", roles=ACCOUNTS)
async def unread_count(ctx: Context, req: Empty) -> UnreadCount:
    """How many of the user's notifications are unread."""
    async with ctx.transaction() as tx:
        return UnreadCount(unread_count=await store.unread_count(tx, ctx.actor.id))


@operation(NOTIFICATIONS, "notification:create", roles={SERVICE}, http=("POST", "/api/notifications"))
async def create_notifications(ctx: Context, req: CreateNotification) -> Created:
    """Services: store one notification per user and push `push:received` to every
    socket of each user; users who are offline find it in `notifications:list`."""
    recipients = req.recipients()
    async with ctx.transaction() as tx:
        found = await users_store.by_ids(tx, recipients)
        missing = [u for u in recipients if u not in found]
        if missing:
            raise NotFound("no such users", details={"user_ids": missing})
        rows = await store.create_many(tx, recipients, type=req.type, title=req.title, message=req.message,
                                       action_url=req.action_url, data=req.data)
        for row in rows:
            ctx.emit(PushReceived(notification_id=row.id, type=row.type, title=row.title, body=row.message,
                                  action_url=row.action_url, data=row.data, created_at=aware(row.created_at)),
                     users=[row.user_id])
    return Created(created=len(rows), items=[CreatedOne(notification_id=r.id, user_id=r.user_id) for r in rows])


@operation(NOTIFICATIONS, "sync", roles=ACCOUNTS)
async def sync_notifications(ctx: Context, req: sync.SyncRequest
                             ) -> sync.PublishedSyncPage[SyncedNotification | NotificationTombstone]:
    """The user's notifications created, read or deleted since a cursor: how a client
    that was away longer than the recovery window catches up. Deleted ones come as
    tombstones ({id, deleted_at}): remove them. `events`: what services published to
    the user meanwhile."""
    since = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.changed_since(tx, ctx.actor.id, *since, req.limit + 1)
        published = await sync.published_since(tx, ctx, NOTIFICATIONS, req.since, req.limit)
    items = [SyncedNotification(**_out(r).model_dump()) if r.deleted_at is None
             else NotificationTombstone(id=r.id, deleted_at=aware(r.deleted_at)) for r in rows]
    return sync.PublishedSyncPage[SyncedNotification | NotificationTombstone](
        **sync.page(rows, items, req.limit, req.since, published))
