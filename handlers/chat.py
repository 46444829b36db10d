"""/chat: direct and group threads, messages, receipts, typing."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import Field, model_validator

from common.facts import Facts
from common.group_commit import GroupCommit
from handlers.roles import ACCOUNTS
from handlers.context import Context, shared_transaction
from handlers.errors import Forbidden, NotFound, ValidationFailed
from handlers.registry import namespace, operation, periodic, server_event
from handlers import sync
from handlers.schema import Empty, Id, Input, Limit, Offset, Output, PageNumber, Text
from storage import chat as store
from storage import users as users_store
from storage.base import aware, utcnow

CHAT = "/chat"
namespace(CHAT, "Direct and group messaging between users.", roles=ACCOUNTS)


# --- models ------------------------------------------------------------------

class AttachmentOut(Output):
    id: int
    filename: str
    content_type: str
    size: int
    url: str


class MessageOut(Output):
    id: int
    thread_id: int
    sender_id: int
    recipient_id: int | None
    message: str
    booking_id: int | None
    attachments: list[AttachmentOut]
    is_read: bool
    created_at: datetime
    edited_at: datetime | None
    client_msg_id: str | None


class SyncedMessage(MessageOut):
    deleted_at: None = None  # a deleted message comes as a MessageTombstone


class MessageTombstone(sync.Tombstone):
    id: int
    thread_id: int


class ThreadOut(Output):
    thread_id: int
    kind: str
    title: str | None
    member_ids: list[int]
    created_at: datetime


class ThreadSummary(Output):
    thread_id: int
    kind: str
    other_user_id: int | None
    other_user_name: str | None
    title: str | None
    last_message: str | None
    last_message_at: datetime | None
    unread_count: int


class History(Output):
    messages: list[MessageOut]
    total: int
    page: int


class Updated(Output):
    updated: int


class UnreadCount(Output):
    unread_count: int


class Deleted(Output):
    message_id: int
    deleted_at: datetime


class Nothing(Output):
    pass


class ThreadRef(Input):
    """Either a thread id or the other user of a direct thread."""

    thread_id: Id | None = None
    other_user_id: Id | None = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.thread_id is None) == (self.other_user_id is None):
            raise ValueError("give exactly one of thread_id and other_user_id")
        return self


class SendMessage(Input):
    recipient_id: Id | None = None
    thread_id: Id | None = None
    message: Text() = ""
    booking_id: Id | None = None
    attachment_ids: list[Id] = Field(default_factory=list, max_length=10)
    client_msg_id: Text(100, min_length=1) | None = None

    @model_validator(mode="after")
    def _check(self):
        if (self.thread_id is None) == (self.recipient_id is None):
            raise ValueError("give exactly one of recipient_id and thread_id")
        if not self.message.strip() and not self.attachment_ids:
            raise ValueError("message is empty")
        return self


class CreateThread(Input):
    member_ids: list[Id] = Field(min_length=1, max_length=100)
    title: Text(200) | None = None


class ListThreads(Input):
    limit: Limit = 50
    offset: Offset = 0


class ThreadHistory(ThreadRef):
    page: PageNumber = 1
    page_size: Limit = 50


class SearchMessages(Input):
    query: Text(200, min_length=1)
    user_id: Id | None = None


class MessageRef(Input):
    message_id: Id


class EditMessage(MessageRef):
    message: Text(min_length=1)


class SetTyping(ThreadRef):
    is_typing: bool


# --- server events -------------------------------------------------------------

@server_event(CHAT, "message:new")
class MessageNew(Output):
    """A message arrived in one of the user's threads."""

    message_id: int
    thread_id: int
    sender_id: int
    content: str
    timestamp: datetime
    message: MessageOut


@server_event(CHAT, "message:sent")
class MessageSent(MessageNew):
    """A message the user sent from another of their devices."""


@server_event(CHAT, "message:edited")
class MessageEdited(Output):
    """A message was edited by its sender."""

    message_id: int
    thread_id: int
    new_content: str
    edited_at: datetime


@server_event(CHAT, "message:deleted")
class MessageDeleted(Output):
    """A message was deleted by its sender."""

    message_id: int
    thread_id: int
    deleted_at: datetime


@server_event(CHAT, "message:read")
class MessageRead(Output):
    """A member read a message."""

    message_id: int
    thread_id: int
    reader_id: int
    read_at: datetime


@server_event(CHAT, "typing:indicator")
class TypingIndicator(Output):
    """A member started or stopped typing. Not stored."""

    thread_id: int
    user_id: int
    is_typing: bool


@server_event(CHAT, "thread:created")
class ThreadCreated(Output):
    """The user became a member of a new thread."""

    thread_id: int
    first_message_id: int | None
    kind: str
    title: str | None
    member_ids: list[int]


@server_event(CHAT, "thread:updated")
class ThreadUpdated(Output):
    """A thread of the user got a new message."""

    thread_id: int
    message_count: int


# --- helpers ---------------------------------------------------------------------

class _Kept:
    """What /chat keeps on an instance (ctx.local): the group commit of message:send
    and the facts of the threads it has seen."""

    def __init__(self) -> None:
        self.facts = Facts()
        self.sends: GroupCommit[_Send, MessageOut] = GroupCommit(_write_messages)


def _kept(ctx: Context) -> _Kept:
    return ctx.local.get(_Kept)


def _check_length(ctx: Context, text: str) -> None:
    limit = ctx.settings.max_message_chars
    if len(text) > limit:
        raise ValidationFailed(
            f"message is longer than {limit} characters",
            details=[{"loc": ["message"], "msg": f"at most {limit} characters", "type": "string_too_long"}],
        )


async def _messages_out(tx, messages: list[store.Message], viewer: int) -> list[MessageOut]:
    ids = [m.id for m in messages]
    atts = await store.attachments_of(tx, ids)
    read_by = await store.readers(tx, ids)
    out = []
    for m in messages:
        readers = read_by[m.id]
        is_read = bool(readers - {viewer}) if m.sender_id == viewer else viewer in readers
        out.append(MessageOut(
            id=m.id, thread_id=m.thread_id, sender_id=m.sender_id, recipient_id=m.recipient_id,
            message=m.body, booking_id=m.booking_id, is_read=is_read,
            created_at=aware(m.created_at), edited_at=aware(m.edited_at), client_msg_id=m.client_msg_id,
            attachments=[_attachment_out(a) for a in atts[m.id]],
        ))
    return out


def _attachment_out(a: store.Attachment) -> AttachmentOut:
    return AttachmentOut(id=a.id, filename=a.filename, content_type=a.content_type, size=a.size,
                         url=f"/api/attachments/{a.id}")


async def _message_out(tx, message: store.Message, viewer: int) -> MessageOut:
    return (await _messages_out(tx, [message], viewer))[0]


async def _member_thread(ctx: Context, ref: ThreadRef, tx=None) -> store.ThreadFacts:
    """The referenced thread, which the actor must be a member of. A thread's facts
    never change, so each instance reads them once (common/facts.py); `tx`, if
    given, is the transaction to read them in on a miss."""
    me = ctx.actor.id
    if ref.thread_id is not None:
        key = ("chat:thread", ref.thread_id)
    else:
        key = ("chat:direct", store.direct_key(me, ref.other_user_id))
    facts = _kept(ctx).facts.get(key)
    if facts is None:
        if tx is not None:
            facts = await _read_thread(ctx, ref, tx)
        else:
            # Concurrent misses of one thread share one read: after a restart, every
            # sender of a busy thread would otherwise take a connection for it.
            facts = await _kept(ctx).facts.load(key, lambda: _read_thread(ctx, ref))
    if me not in facts.members:
        raise Forbidden("you are not a member of this thread")
    return facts


async def _read_thread(ctx: Context, ref: ThreadRef, tx=None) -> store.ThreadFacts:
    """Read the referenced thread's facts (in `tx`, or a transaction of their own) and
    cache them."""
    if tx is None:
        async with ctx.db.transaction() as tx:
            return await _read_thread(ctx, ref, tx)
    if ref.thread_id is not None:
        thread = await store.get_thread(tx, ref.thread_id)
        if thread is None:
            raise NotFound("no such thread")
    else:
        thread = await store.find_direct(tx, ctx.actor.id, ref.other_user_id)
        if thread is None:
            raise NotFound("no conversation with this user")
    facts = await store.thread_facts(tx, thread)
    _remember(ctx, facts)
    return facts


def _remember(ctx: Context, facts: store.ThreadFacts) -> None:
    """Cache a committed thread's facts."""
    cache = _kept(ctx).facts
    cache.put(("chat:thread", facts.id), facts)
    if facts.kind == "direct":
        cache.put(("chat:direct", store.direct_key(*facts.members)), facts)


async def _visible_message(tx, ctx: Context, message_id: int) -> store.Message:
    """A live message of one of the actor's threads; anything else is not found."""
    msg = await store.get_message(tx, message_id)
    if msg is None or msg.deleted_at is not None or not await store.is_member(tx, msg.thread_id, ctx.actor.id):
        raise NotFound("no such message")
    return msg


def _thread_out(thread: store.Thread, members: list[int]) -> ThreadOut:
    return ThreadOut(thread_id=thread.id, kind=thread.kind, title=thread.title, member_ids=members,
                     created_at=aware(thread.created_at))


# --- operations -----------------------------------------------------------------

@operation(CHAT, "message:send", http=("POST", "/api/messages"))
async def send_message(ctx: Context, req: SendMessage) -> MessageOut:
    """Send a message to a user (direct thread, created on first message) or a thread."""
    _check_length(ctx, req.message)
    if req.recipient_id is None:
        thread = await _member_thread(ctx, ThreadRef(thread_id=req.thread_id))
    elif req.recipient_id == ctx.actor.id:
        raise ValidationFailed("you cannot message yourself",
                               details=[{"loc": ["recipient_id"], "msg": "is yourself", "type": "value_error"}])
    else:
        try:
            thread = await _member_thread(ctx, ThreadRef(other_user_id=req.recipient_id))
        except NotFound:
            thread = None  # the first message of the pair: its write creates the thread
    # One group for all sends: a batch waits for the one before it. Several groups
    # side by side made smaller batches and cost ~15% more CPU per message at
    # 1,500/s, with no better latency (docs/performance.md).
    return await _kept(ctx).sends.submit(_Send(ctx, req, thread))


@dataclass
class _Send:
    ctx: Context
    req: SendMessage
    thread: store.ThreadFacts | None


async def _write_messages(sends: list[_Send]) -> list[MessageOut]:
    """The write of message:send for sends that arrived together: one transaction and
    a few statements for all of them (common/group_commit.py)."""
    ctx0 = sends[0].ctx
    now = utcnow()
    # Sends to known threads without attachments (nearly all) need only the
    # driver's statements: no ORM session (Database.write_transaction).
    lean = all(s.thread is not None and not s.req.attachment_ids for s in sends)
    retried: list[int] = []
    async with shared_transaction(ctx0.db, [s.ctx for s in sends], lean=lean) as tx:
        threads, created = [], set()
        for s in sends:
            thread = s.thread
            if thread is None:
                me, other = s.ctx.actor.id, s.req.recipient_id
                if await users_store.get(tx, other) is None:
                    raise NotFound("no such user")
                row, new = await store.get_or_create_direct(tx, me, other)
                thread = store.ThreadFacts(row.id, row.kind, row.title, tuple(sorted((me, other))))
                if new:
                    created.add(id(s))
            threads.append(thread)
        rows = [dict(thread_id=t.id, sender_id=s.ctx.actor.id, body=s.req.message, booking_id=s.req.booking_id,
                     recipient_id=next((u for u in t.members if u != s.ctx.actor.id), None) if t.kind == "direct"
                     else None, client_msg_id=s.req.client_msg_id)
                for s, t in zip(sends, threads)]
        ids = await store.add_messages(tx, rows, now)
        added = Counter(row["thread_id"] for row, mid in zip(rows, ids) if mid is not None)
        counts = await store.count_messages(tx, added, now) if added else {}
        outs: list[MessageOut | None] = []
        for s, thread, row, mid in zip(sends, threads, rows, ids):
            me = s.ctx.actor.id
            if mid is None:  # a retry: answered below with the message its key already names
                retried.append(len(outs))
                outs.append(None)
                continue
            wanted = set(s.req.attachment_ids)
            if wanted and await store.claim_attachments(tx, list(wanted), me, mid) != len(wanted):
                raise ValidationFailed("attachment_ids must be your own uploads, not yet attached to a message",
                                       details=[{"loc": ["attachment_ids"], "msg": "unknown or already used",
                                                 "type": "value_error"}])
            atts = (await store.attachments_of(tx, [mid]))[mid] if wanted else []
            # A message just written has no read receipts.
            out = MessageOut(
                id=mid, thread_id=thread.id, sender_id=me, recipient_id=row["recipient_id"], message=row["body"],
                booking_id=row["booking_id"], is_read=False, created_at=now, edited_at=None,
                client_msg_id=row["client_msg_id"], attachments=[_attachment_out(a) for a in atts])
            outs.append(out)
            members = thread.members
            if id(s) in created:
                s.ctx.emit(ThreadCreated(thread_id=thread.id, first_message_id=mid, kind=thread.kind,
                                         title=thread.title, member_ids=list(members)), users=members)
            # message:new and message:sent carry one payload: dumped once, sent as both.
            message = out.model_dump(mode="json")
            new = {"message_id": mid, "thread_id": thread.id, "sender_id": me, "content": out.message,
                   "timestamp": message["created_at"], "message": message}
            s.ctx.emit_dumped(MessageNew, new, users=[u for u in members if u != me])
            s.ctx.emit_dumped(MessageSent, new, users=(me,), skip_origin=True)
            # Counts of one thread's messages in this batch go up one by one, in batch order.
            added[thread.id] -= 1
            s.ctx.emit_dumped(ThreadUpdated, {"thread_id": thread.id,
                                              "message_count": counts[thread.id] - added[thread.id]},
                              users=members)
    for thread in threads:
        _remember(ctx0, thread)  # committed now
    if retried:  # rare: read once the write committed (a key twice in this batch included)
        async with ctx0.db.transaction() as tx:
            for i in retried:
                me = sends[i].ctx.actor.id
                outs[i] = await _message_out(tx, await store.by_client_msg_id(tx, me, rows[i]["client_msg_id"]), me)
    return outs


@operation(CHAT, "thread:create")
async def create_thread(ctx: Context, req: CreateThread) -> ThreadOut:
    """Create a group thread with the given members (the creator is always one)."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        found = await users_store.by_ids(tx, req.member_ids)
        missing = sorted(set(req.member_ids) - set(found))
        if missing:
            raise NotFound("no such users", details={"member_ids": missing})
        thread = await store.create_group(tx, me, req.member_ids, req.title)
        members = await store.member_ids(tx, thread.id)
        ctx.emit(ThreadCreated(thread_id=thread.id, first_message_id=None, kind="group", title=thread.title,
                               member_ids=members), users=members)
    return _thread_out(thread, members)


@operation(CHAT, "threads:list", http=("GET", "/api/messages/threads"))
async def list_threads(ctx: Context, req: ListThreads) -> list[ThreadSummary]:
    """The user's threads, most recently active first, with unread counts."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        threads = await store.threads_of(tx, me, req.limit, req.offset)
        ids = [t.id for t in threads]
        last = await store.last_messages(tx, ids)
        unread = await store.unread_by_thread(tx, me, ids)
        members = await store.members_of(tx, ids)
        others = {t.id: next((u for u in members[t.id] if u != me), None) for t in threads if t.kind == "direct"}
        names = await users_store.by_ids(tx, [u for u in others.values() if u])
    out = []
    for t in threads:
        other = others.get(t.id)
        msg = last.get(t.id)
        out.append(ThreadSummary(
            thread_id=t.id, kind=t.kind, other_user_id=other,
            other_user_name=names[other].display_name if other in names else None,
            title=t.title, last_message=msg.body if msg else None,
            last_message_at=aware(t.last_message_at), unread_count=unread.get(t.id, 0),
        ))
    return out


@operation(CHAT, "thread:history", http=("GET", "/api/messages/threads/{other_user_id}"))
async def thread_history(ctx: Context, req: ThreadHistory) -> History:
    """A page of a thread's messages: page 1 is the newest, each page oldest first."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        if req.other_user_id is not None:
            if await users_store.get(tx, req.other_user_id) is None:
                raise NotFound("no such user")
            thread = await store.find_direct(tx, me, req.other_user_id)
            if thread is None:
                return History(messages=[], total=0, page=req.page)
        else:
            thread = await _member_thread(ctx, req, tx)
        rows, total = await store.history(tx, thread.id, req.page, req.page_size)
        return History(messages=await _messages_out(tx, rows, me), total=total, page=req.page)


@operation(CHAT, "messages:search", http=("GET", "/api/messages/search"))
async def search_messages(ctx: Context, req: SearchMessages) -> list[MessageOut]:
    """Search the user's messages (newest first, at most 50), optionally with one user."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        rows = await store.search(tx, me, req.query, req.user_id, 50)
        return await _messages_out(tx, rows, me)


@operation(CHAT, "message:read", http=("PATCH", "/api/messages/{message_id}/read"))
async def read_message(ctx: Context, req: MessageRef) -> MessageOut:
    """Mark a message someone else sent as read by the user."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        msg = await _visible_message(tx, ctx, req.message_id)
        read_at = await store.mark_read(tx, msg, me) if msg.sender_id != me else None
        out = await _message_out(tx, msg, me)
        if read_at is not None:
            members = await store.member_ids(tx, msg.thread_id)
            ctx.emit(MessageRead(message_id=msg.id, thread_id=msg.thread_id, reader_id=me, read_at=read_at),
                     users=members)
    return out


@operation(CHAT, "thread:read-all", http=("PATCH", "/api/messages/threads/{other_user_id}/read-all"))
async def read_all(ctx: Context, req: ThreadRef) -> Updated:
    """Mark every unread message of a thread as read."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        thread = await _member_thread(ctx, req, tx)
        ids, read_at = await store.read_all(tx, thread.id, me)
        for mid in ids:
            ctx.emit(MessageRead(message_id=mid, thread_id=thread.id, reader_id=me, read_at=read_at),
                     users=thread.members)
    return Updated(updated=len(ids))


@operation(CHAT, "unread:count", http=("GET", "/api/messages/unread/count"))
async def unread_count(ctx: Context, req: Empty) -> UnreadCount:
    """How many messages others sent the user that the user has not read."""
    async with ctx.transaction() as tx:
        return UnreadCount(unread_count=await store.unread_count(tx, ctx.actor.id))


@operation(CHAT, "message:edit", http=("PATCH", "/api/messages/{message_id}"))
async def edit_message(ctx: Context, req: EditMessage) -> MessageOut:
    """Change the text of a message; only its sender may."""
    me = ctx.actor.id
    _check_length(ctx, req.message)
    async with ctx.transaction() as tx:
        msg = await _visible_message(tx, ctx, req.message_id)
        if msg.sender_id != me:
            raise Forbidden("only the sender can edit a message")
        await store.edit_message(tx, msg, req.message)
        out = await _message_out(tx, msg, me)
        members = await store.member_ids(tx, msg.thread_id)
        ctx.emit(MessageEdited(message_id=msg.id, thread_id=msg.thread_id, new_content=msg.body,
                               edited_at=out.edited_at), users=members)
    return out


@operation(CHAT, "message:delete", http=("DELETE", "/api/messages/{message_id}"))
async def delete_message(ctx: Context, req: MessageRef) -> Deleted:
    """Delete a message; only its sender may. It disappears from history and search."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        msg = await _visible_message(tx, ctx, req.message_id)
        if msg.sender_id != me:
            raise Forbidden("only the sender can delete a message")
        await store.delete_message(tx, msg)
        members = await store.member_ids(tx, msg.thread_id)
        deleted_at = aware(msg.deleted_at)
        ctx.emit(MessageDeleted(message_id=msg.id, thread_id=msg.thread_id, deleted_at=deleted_at),
                 users=members)
    return Deleted(message_id=msg.id, deleted_at=deleted_at)


@operation(CHAT, "typing:set")
async def set_typing(ctx: Context, req: SetTyping) -> Nothing:
    """Tell the other members that the user is (or stopped) typing."""
    me = ctx.actor.id
    thread = await _member_thread(ctx, req)  # no query once this instance knows the thread
    ctx.emit(TypingIndicator(thread_id=thread.id, user_id=me, is_typing=req.is_typing),
             users=[u for u in thread.members if u != me])
    return Nothing()


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
        live = iter(await _messages_out(tx, [m for m in rows if m.deleted_at is None], me))
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
