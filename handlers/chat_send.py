"""/chat message:send: sends that arrive together are written as one group commit
(common/group_commit.py), in one transaction and a few statements."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from common.group_commit import GroupCommit
from handlers.context import Context, shared_transaction
from handlers.errors import NotFound, ValidationFailed
from handlers.registry import operation
from handlers.chat import (CHAT, MessageNew, MessageOut, MessageSent, SendMessage, ThreadCreated, ThreadRef,
                           ThreadUpdated, attachment_out, check_length, message_out)
from handlers.chat_threads import member_thread, remember
from storage import chat as store
from storage import users as users_store
from storage.base import utcnow


class _Sends:
    """What /chat keeps on an instance (ctx.local) for message:send: its group commit."""

    def __init__(self) -> None:
        self.commit: GroupCommit[_Send, MessageOut] = GroupCommit(_write_messages)


@operation(CHAT, "message:send", http=("POST", "/api/messages"))
async def send_message(ctx: Context, req: SendMessage) -> MessageOut:
    """Send a message to a user (direct thread, created on first message) or a thread."""
    check_length(ctx, req.message)
    if req.recipient_id is None:
        thread = await member_thread(ctx, ThreadRef(thread_id=req.thread_id))
    elif req.recipient_id == ctx.actor.id:
        raise ValidationFailed("you cannot message yourself",
                               details=[{"loc": ["recipient_id"], "msg": "is yourself", "type": "value_error"}])
    else:
        try:
            thread = await member_thread(ctx, ThreadRef(other_user_id=req.recipient_id))
        except NotFound:
            thread = None  # the first message of the pair: its write creates the thread
    # One group for all sends: a batch waits for the one before it. Several groups
    # side by side made smaller batches and cost ~15% more CPU per message at
    # 1,500/s, with no better latency (docs/performance.md).
    return await ctx.local.get(_Sends).commit.submit(_Send(ctx, req, thread))


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
    # Sends to known threads without attachments (nearly all) write with the
    # driver's statements only (add_messages, count_messages): the database may
    # then skip the ORM session (Database.can_write_lean).
    driver_only = all(s.thread is not None and not s.req.attachment_ids for s in sends)
    retried: list[int] = []
    async with shared_transaction(ctx0.db, [s.ctx for s in sends], driver_only=driver_only) as tx:
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
                client_msg_id=row["client_msg_id"], attachments=[attachment_out(a) for a in atts])
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
        remember(ctx0, thread)  # committed now
    if retried:  # rare: read once the write committed (a key twice in this batch included)
        async with ctx0.db.transaction() as tx:
            for i in retried:
                me = sends[i].ctx.actor.id
                outs[i] = await message_out(tx, await store.by_client_msg_id(tx, me, rows[i]["client_msg_id"]), me)
    return outs
