"""/chat threads: the facts of the threads an instance has seen (who is a member),
creating and listing threads, a thread's history, reading all of it, and typing."""
from __future__ import annotations

from common.facts import Facts
from handlers.context import Context
from handlers.errors import Forbidden, NotFound
from handlers.registry import operation
from handlers.chat import (CHAT, CreateThread, History, ListThreads, Nothing, SetTyping, ThreadCreated,
                           ThreadHistory, ThreadOut, ThreadRef, ThreadSummary, TypingIndicator, Updated,
                           MessageRead, messages_out, thread_out)
from storage import chat as store
from storage import users as users_store
from storage.base import aware


class _Seen:
    """What /chat keeps on an instance (ctx.local) about threads: the facts of the
    ones it has seen."""

    def __init__(self) -> None:
        self.facts = Facts()


def _facts(ctx: Context) -> Facts:
    return ctx.local.get(_Seen).facts


async def member_thread(ctx: Context, ref: ThreadRef, tx=None) -> store.ThreadFacts:
    """The referenced thread, which the actor must be a member of. A thread's facts
    never change, so each instance reads them once (common/facts.py); `tx`, if
    given, is the transaction to read them in on a miss."""
    me = ctx.actor.id
    if ref.thread_id is not None:
        key = ("chat:thread", ref.thread_id)
    else:
        key = ("chat:direct", store.direct_key(me, ref.other_user_id))
    facts = _facts(ctx).get(key)
    if facts is None:
        if tx is not None:
            facts = await _read_thread(ctx, ref, tx)
        else:
            # Concurrent misses of one thread share one read: after a restart, every
            # sender of a busy thread would otherwise take a connection for it.
            facts = await _facts(ctx).load(key, lambda: _read_thread(ctx, ref))
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
    remember(ctx, facts)
    return facts


def remember(ctx: Context, facts: store.ThreadFacts) -> None:
    """Cache a committed thread's facts."""
    cache = _facts(ctx)
    cache.put(("chat:thread", facts.id), facts)
    if facts.kind == "direct":
        cache.put(("chat:direct", store.direct_key(*facts.members)), facts)


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
    return thread_out(thread, members)


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
            thread = await member_thread(ctx, req, tx)
        rows, total = await store.history(tx, thread.id, req.page, req.page_size)
        return History(messages=await messages_out(tx, rows, me), total=total, page=req.page)


@operation(CHAT, "thread:read-all", http=("PATCH", "/api/messages/threads/{other_user_id}/read-all"))
async def read_all(ctx: Context, req: ThreadRef) -> Updated:
    """Mark every unread message of a thread as read."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        thread = await member_thread(ctx, req, tx)
        ids, read_at = await store.read_all(tx, thread.id, me)
        for mid in ids:
            ctx.emit(MessageRead(message_id=mid, thread_id=thread.id, reader_id=me, read_at=read_at),
                     users=thread.members)
    return Updated(updated=len(ids))


@operation(CHAT, "typing:set")
async def set_typing(ctx: Context, req: SetTyping) -> Nothing:
    """Tell the other members that the user is (or stopped) typing."""
    me = ctx.actor.id
    thread = await member_thread(ctx, req)  # no query once this instance knows the thread
    ctx.emit(TypingIndicator(thread_id=thread.id, user_id=me, is_typing=req.is_typing),
             users=[u for u in thread.members if u != me])
    return Nothing()
