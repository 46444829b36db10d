"""/chat messages: reading, editing, deleting, searching and syncing them, the
unread count, and removing uploads never attached to a message."""
from __future__ import annotations

from datetime import timedelta

from handlers.context import Context
from handlers.errors import Forbidden, NotFound
from handlers.registry import operation, periodic
from handlers import sync
from handlers.chat import (CHAT, Deleted, EditMessage, MessageDeleted, MessageEdited, MessageOut, MessageRead,
                           MessageRef, MessageTombstone, SearchMessages, SyncedMessage, UnreadCount,
                           check_length, message_out, messages_out)
from handlers.schema import Empty
from storage import chat as store
from storage.base import aware, utcnow


async def visible_message(tx, ctx: Context, message_id: int) -> store.Message:
    """A live message of one of the actor's threads; anything else is not found."""
    msg = await store.get_message(tx, message_id)
    if msg is None or msg.deleted_at is not None or not await store.is_member(tx, msg.thread_id, ctx.actor.id):
        raise NotFound("no such message")
    return msg


@operation(CHAT, "messages:search", http=("GET", "/api/messages/search"))
async def search_messages(ctx: Context, req: SearchMessages) -> list[MessageOut]:
    """Search the user's messages (newest first, at most 50), optionally with one user."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        rows = await store.search(tx, me, req.query, req.user_id, 50)
        return await messages_out(tx, rows, me)


@operation(CHAT, "message:read", http=("PATCH", "/api/messages/{message_id}/read"))
async def read_message(ctx: Context, req: MessageRef) -> MessageOut:
    """Mark a message someone else sent as read by the user."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        msg = await visible_message(tx, ctx, req.message_id)
        read_at = await store.mark_read(tx, msg, me) if msg.sender_id != me else None
        out = await message_out(tx, msg, me)
        if read_at is not None:
            members = await store.member_ids(tx, msg.thread_id)
            ctx.emit(MessageRead(message_id=msg.id, thread_id=msg.thread_id, reader_id=me, read_at=read_at),
                     users=members)
    return out


@operation(CHAT, "unread:count", http=("GET", "/api/messages/unread/count"))
async def unread_count(ctx: Context, req: Empty) -> UnreadCount:
    """How many messages others sent the user that the user has not read."""
    async with ctx.transaction() as tx:
        return UnreadCount(unread_count=await store.unread_count(tx, ctx.actor.id))


@operation(CHAT, "message:edit", http=("PATCH", "/api/messages/{message_id}"))
async def edit_message(ctx: Context, req: EditMessage) -> MessageOut:
    """Change the text of a message; only its sender may."""
    me = ctx.actor.id
    check_length(ctx, req.message)
    async with ctx.transaction() as tx:
        msg = await visible_message(tx, ctx, req.message_id)
        if msg.sender_id != me:
            raise Forbidden("only the sender can edit a message")
        await store.edit_message(tx, msg, req.message)
        out = await message_out(tx, msg, me)
        members = await store.member_ids(tx, msg.thread_id)
        ctx.emit(MessageEdited(message_id=msg.id, thread_id=msg.thread_id, new_content=msg.body,
                               edited_at=out.edited_at), users=members)
    return out


@operation(CHAT, "message:delete", http=("DELETE", "/api/messages/{message_id}"))
async def delete_message(ctx: Context, req: MessageRef) -> Deleted:
    """Delete a message; only its sender may. It disappears from history and search."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        msg = await visible_message(tx, ctx, req.message_id)
        if msg.sender_id != me:
            raise Forbidden("only the sender can delete a message")
        await store.delete_message(tx, msg)
        members = await store.member_ids(tx, msg.thread_id)
        deleted_at = aware(msg.deleted_at)
        ctx.emit(MessageDeleted(message_id=msg.id, thread_id=msg.thread_id, deleted_at=deleted_at),
                 users=members)
    return Deleted(message_id=msg.id, deleted_at=deleted_at)


@operation(CHAT, "sync")
async def sync_messages(ctx: Context,
                        req: sync.SyncRequest) -> sync.SyncPage[SyncedMessage | MessageTombstone]:
    """Messages created, edited or deleted in the user's threads since a cursor: how
    a client that was away longer than the recovery window catches up. A deleted
    message is a tombstone ({id, thread_id, deleted_at}): remove it."""
    me = ctx.actor.id
    since = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.changed_since(tx, me, *since, req.limit + 1)
        live = iter(await messages_out(tx, [m for m in rows if m.deleted_at is None], me))
    items = [SyncedMessage(**next(live).model_dump()) if m.deleted_at is None
             else MessageTombstone(id=m.id, thread_id=m.thread_id, deleted_at=aware(m.deleted_at)) for m in rows]
    return sync.SyncPage[SyncedMessage | MessageTombstone](**sync.page(rows, items, req.limit, req.since))


@periodic("chat.orphan-attachments", every=lambda s: max(1.0, min(s.orphan_attachment_age / 4, 600.0)))
async def remove_orphan_attachments(ctx: Context) -> None:
    """Uploads never attached to a message are removed once orphan_attachment_age old
    (every instance runs this; a DELETE twice is harmless)."""
    before = utcnow() - timedelta(seconds=ctx.settings.orphan_attachment_age)
    async with ctx.db.transaction() as tx:
        await store.remove_orphans(tx, before)
