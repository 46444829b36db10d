"""Chat threads (direct and group), messages, read receipts and attachments."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from sqlalchemy import (ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, and_,
                        case, delete, exists, func, insert, or_, select, update)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, aliased, mapped_column

from storage import jsoncodec
from storage.base import Base, BigId, insert_once, is_postgresql, pg_driver, utcnow


class Thread(Base):
    __tablename__ = "chat_threads"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # direct | group
    title: Mapped[str | None] = mapped_column(String(200))
    # "low:high" user ids for direct threads: one direct thread per pair, even under races.
    direct_key: Mapped[str | None] = mapped_column(String(50), unique=True)
    created_by: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_message_at: Mapped[datetime | None]
    message_count: Mapped[int] = mapped_column(default=0)


class Member(Base):
    __tablename__ = "chat_members"
    thread_id: Mapped[int] = mapped_column(BigId, ForeignKey("chat_threads.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("sender_id", "client_msg_id", name="uq_chat_messages_sender_client_msg"),
        Index("ix_chat_messages_thread_id_id", "thread_id", "id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    thread_id: Mapped[int] = mapped_column(BigId, ForeignKey("chat_threads.id", ondelete="CASCADE"))
    sender_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    recipient_id: Mapped[int | None] = mapped_column(BigId)  # the other user of a direct thread
    body: Mapped[str] = mapped_column(Text)
    booking_id: Mapped[int | None] = mapped_column(BigId)
    client_msg_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Receipt(Base):
    __tablename__ = "chat_receipts"
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("chat_messages.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    read_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """Kept in the database so that every instance can serve every attachment."""

    __tablename__ = "chat_attachments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    uploader_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("chat_messages.id", ondelete="SET NULL"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int]
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def direct_key(a: int, b: int) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


async def get_thread(tx: AsyncSession, thread_id: int) -> Thread | None:
    return await tx.get(Thread, thread_id)


async def find_direct(tx: AsyncSession, a: int, b: int) -> Thread | None:
    query = select(Thread).where(Thread.direct_key == direct_key(a, b))
    return (await tx.execute(query)).scalar_one_or_none()


async def get_or_create_direct(tx: AsyncSession, a: int, b: int) -> tuple[Thread, bool]:
    """The direct thread of two users; created (True) if it did not exist."""
    thread = await find_direct(tx, a, b)
    if thread:
        return thread, False
    thread = Thread(kind="direct", direct_key=direct_key(a, b), created_by=a)
    if not await insert_once(tx, thread):
        return await find_direct(tx, a, b), False  # another request created it first
    tx.add_all([Member(thread_id=thread.id, user_id=u) for u in {a, b}])
    await tx.flush()
    return thread, True


async def create_group(tx: AsyncSession, creator: int, member_ids: Iterable[int], title: str | None) -> Thread:
    thread = Thread(kind="group", title=title, created_by=creator)
    tx.add(thread)
    await tx.flush()
    tx.add_all([Member(thread_id=thread.id, user_id=u) for u in {creator, *member_ids}])
    await tx.flush()
    return thread


async def member_ids(tx: AsyncSession, thread_id: int) -> list[int]:
    query = select(Member.user_id).where(Member.thread_id == thread_id).order_by(Member.user_id)
    return list((await tx.execute(query)).scalars())


async def is_member(tx: AsyncSession, thread_id: int, user_id: int) -> bool:
    query = select(exists().where(Member.thread_id == thread_id, Member.user_id == user_id))
    return bool((await tx.execute(query)).scalar())


@dataclass(frozen=True)
class ThreadFacts:
    """What never changes once a thread exists (no operation edits a thread or its
    members): cached on each instance by handlers/chat_threads.py (common/facts.py)."""

    id: int
    kind: str
    title: str | None
    members: tuple[int, ...]  # sorted


async def thread_facts(tx: AsyncSession, thread: Thread) -> ThreadFacts:
    return ThreadFacts(thread.id, thread.kind, thread.title, tuple(await member_ids(tx, thread.id)))


# The group commit's statements (handlers/chat_send.py). On PostgreSQL they run on the
# driver's connection (storage.base.pg_driver), one statement text whatever the batch
# size (prepared once per connection). The rows go in as one JSON array of objects:
# one string parameter, encoded in C, where arrays of text cost the driver a
# Python-level type check per element. json_to_recordset parses it once; taking the
# fields out of each element with ->> parsed the element again for every field, which
# made PostgreSQL's side of a batch ~40% slower. Rows go in in order (ORDER BY n), so
# their ids, sorted, are in the order of the input, as SQLAlchemy's insertmanyvalues
# also relies on. SQLite gets the same from Core statements built once, on the tables:
# the ORM's bulk machinery costs more than the statements themselves.
_PG_ADD_MESSAGES = """
INSERT INTO chat_messages (thread_id, sender_id, recipient_id, body, booking_id, client_msg_id,
                           created_at, updated_at)
SELECT m.thread_id, m.sender_id, m.recipient_id, m.body, m.booking_id, m.client_msg_id, $2, $2
FROM ROWS FROM (json_to_recordset($1::json) AS (thread_id bigint, sender_id bigint, recipient_id bigint,
                                                 body text, booking_id bigint, client_msg_id text))
     WITH ORDINALITY AS m(thread_id, sender_id, recipient_id, body, booking_id, client_msg_id, n)
ORDER BY m.n
ON CONFLICT (sender_id, client_msg_id) DO NOTHING
RETURNING id, sender_id, client_msg_id"""
_PG_COUNT = """
UPDATE chat_threads AS t SET message_count = t.message_count + v.n, last_message_at = $3
FROM unnest($1::bigint[], $2::integer[]) AS v(id, n)
WHERE t.id = v.id
RETURNING t.id, t.message_count"""
_messages, _threads = Message.__table__, Thread.__table__
_ADD_KEYED = (sqlite_insert(_messages)
              .on_conflict_do_nothing(index_elements=[_messages.c.sender_id, _messages.c.client_msg_id])
              .returning(_messages.c.id, _messages.c.sender_id, _messages.c.client_msg_id))
_ADD_PLAIN = insert(_messages).returning(_messages.c.id, sort_by_parameter_order=True)


async def add_messages(tx: AsyncSession, rows: list[dict], at: datetime) -> list[int | None]:
    """Insert messages (dicts of thread_id, sender_id, recipient_id, body, booking_id,
    client_msg_id), created at `at`; returns each one's id, or None where the
    sender's client_msg_id was already taken (an idempotent retry, or a race another
    request won). A key twice in one batch: the first row gets it."""
    if is_postgresql(tx):
        pg = await pg_driver(tx)
        inserted = sorted(map(tuple, await pg.fetch(_PG_ADD_MESSAGES, jsoncodec.dumps(rows), at)))
    else:
        keyed = [{**r, "created_at": at, "updated_at": at} for r in rows if r["client_msg_id"] is not None]
        plain = [{**r, "created_at": at, "updated_at": at} for r in rows if r["client_msg_id"] is None]
        inserted = list((await tx.execute(_ADD_KEYED, keyed)).all()) if keyed else []
        if plain:
            inserted += [(mid, None, None) for mid in (await tx.execute(_ADD_PLAIN, plain)).scalars()]
    by_key = {(sender, key): mid for mid, sender, key in inserted if key is not None}
    unkeyed = iter([mid for mid, _, key in inserted if key is None])  # in input order
    return [next(unkeyed) if r["client_msg_id"] is None else by_key.pop((r["sender_id"], r["client_msg_id"]), None)
            for r in rows]


async def count_messages(tx: AsyncSession, added: dict[int, int], at: datetime) -> dict[int, int]:
    """Add `added[thread_id]` new messages to each thread (one statement); returns
    the threads' new message counts."""
    if is_postgresql(tx):
        pg = await pg_driver(tx)
        return dict(map(tuple, await pg.fetch(_PG_COUNT, list(added), list(added.values()), at)))
    query = (update(_threads).where(_threads.c.id.in_(list(added)))
             .values(last_message_at=at, message_count=_threads.c.message_count + case(added, value=_threads.c.id))
             .returning(_threads.c.id, _threads.c.message_count))
    return dict((await tx.execute(query)).all())


async def by_client_msg_id(tx: AsyncSession, sender_id: int, client_msg_id: str) -> Message | None:
    query = select(Message).where(Message.sender_id == sender_id, Message.client_msg_id == client_msg_id)
    return (await tx.execute(query)).scalar_one_or_none()


async def get_message(tx: AsyncSession, message_id: int) -> Message | None:
    return await tx.get(Message, message_id)


async def edit_message(tx: AsyncSession, msg: Message, body: str) -> None:
    msg.body = body
    msg.edited_at = msg.updated_at = utcnow()
    await tx.flush()


async def delete_message(tx: AsyncSession, msg: Message) -> None:
    msg.deleted_at = msg.updated_at = utcnow()
    msg.body = ""
    await tx.flush()


# --- attachments -----------------------------------------------------------

async def add_attachment(tx: AsyncSession, *, uploader_id: int, filename: str, content_type: str,
                         content: bytes) -> Attachment:
    att = Attachment(uploader_id=uploader_id, filename=filename, content_type=content_type,
                     size=len(content), content=content)
    tx.add(att)
    await tx.flush()
    return att


async def uploads_since(tx: AsyncSession, uploader_id: int, since: datetime) -> tuple[int, int, datetime | None]:
    """How many files and bytes a user uploaded since `since`, and when the oldest of them."""
    row = (await tx.execute(
        select(func.count(), func.coalesce(func.sum(Attachment.size), 0), func.min(Attachment.created_at))
        .where(Attachment.uploader_id == uploader_id, Attachment.created_at >= since))).one()
    return int(row[0]), int(row[1]), row[2]


async def remove_orphans(tx: AsyncSession, before: datetime, limit: int = 1000) -> int:
    """Delete up to `limit` uploads made before `before` and never attached to a message."""
    ids = select(Attachment.id).where(Attachment.message_id.is_(None), Attachment.created_at < before).limit(limit)
    result = await tx.execute(delete(Attachment).where(Attachment.id.in_(ids.scalar_subquery())))
    return result.rowcount


async def claim_attachments(tx: AsyncSession, ids: list[int], uploader_id: int, message_id: int) -> int:
    """Attach the sender's own, not yet attached uploads to a message; returns how many."""
    result = await tx.execute(
        update(Attachment)
        .where(Attachment.id.in_(ids), Attachment.uploader_id == uploader_id, Attachment.message_id.is_(None))
        .values(message_id=message_id)
    )
    return result.rowcount


async def attachments_of(tx: AsyncSession, message_ids: Iterable[int]) -> dict[int, list[Attachment]]:
    ids = list(message_ids)
    out: dict[int, list[Attachment]] = {i: [] for i in ids}
    if ids:
        query = select(Attachment).where(Attachment.message_id.in_(ids)).order_by(Attachment.id)
        for att in (await tx.execute(query)).scalars():
            out[att.message_id].append(att)
    return out


async def get_attachment(tx: AsyncSession, attachment_id: int, *, with_content: bool = False) -> Attachment | None:
    query = select(Attachment).where(Attachment.id == attachment_id)
    if with_content:
        from sqlalchemy.orm import undefer
        query = query.options(undefer(Attachment.content))
    return (await tx.execute(query)).scalar_one_or_none()


# --- reading ---------------------------------------------------------------

def _visible() -> object:
    return Message.deleted_at.is_(None)


def _unread_for(user_id: int):
    """Messages others sent in the user's threads that the user has not read."""
    return and_(
        Message.thread_id.in_(select(Member.thread_id).where(Member.user_id == user_id)),
        Message.sender_id != user_id,
        _visible(),
        ~exists().where(Receipt.message_id == Message.id, Receipt.user_id == user_id),
    )


async def mark_read(tx: AsyncSession, msg: Message, user_id: int) -> datetime | None:
    """Record that the user read the message; returns when, or None if already read."""
    existing = await tx.get(Receipt, (msg.id, user_id))
    if existing:
        return None
    now = utcnow()
    return now if await insert_once(tx, Receipt(message_id=msg.id, user_id=user_id, read_at=now)) else None


async def read_all(tx: AsyncSession, thread_id: int, user_id: int) -> tuple[list[int], datetime]:
    """Mark every unread message of the thread read; returns their ids and when."""
    query = select(Message.id).where(Message.thread_id == thread_id, _unread_for(user_id))
    ids = list((await tx.execute(query)).scalars())
    now = utcnow()
    if ids:
        await tx.execute(insert(Receipt), [{"message_id": i, "user_id": user_id, "read_at": now} for i in ids])
    return ids, now


async def readers(tx: AsyncSession, message_ids: Iterable[int]) -> dict[int, set[int]]:
    ids = list(message_ids)
    out: dict[int, set[int]] = {i: set() for i in ids}
    if ids:
        query = select(Receipt.message_id, Receipt.user_id).where(Receipt.message_id.in_(ids))
        for mid, uid in (await tx.execute(query)).all():
            out[mid].add(uid)
    return out


async def unread_count(tx: AsyncSession, user_id: int) -> int:
    query = select(func.count()).select_from(Message).where(_unread_for(user_id))
    return int((await tx.execute(query)).scalar_one())


async def threads_of(tx: AsyncSession, user_id: int, limit: int, offset: int) -> list[Thread]:
    """The user's threads, most recently active first."""
    query = (
        select(Thread)
        .join(Member, Member.thread_id == Thread.id)
        .where(Member.user_id == user_id)
        .order_by(func.coalesce(Thread.last_message_at, Thread.created_at).desc(), Thread.id.desc())
        .limit(limit).offset(offset)
    )
    return list((await tx.execute(query)).scalars())


async def last_messages(tx: AsyncSession, thread_ids: list[int]) -> dict[int, Message]:
    if not thread_ids:
        return {}
    latest = (
        select(func.max(Message.id))
        .where(Message.thread_id.in_(thread_ids), _visible())
        .group_by(Message.thread_id)
    )
    rows = (await tx.execute(select(Message).where(Message.id.in_(latest)))).scalars()
    return {m.thread_id: m for m in rows}


async def unread_by_thread(tx: AsyncSession, user_id: int, thread_ids: list[int]) -> dict[int, int]:
    if not thread_ids:
        return {}
    query = (
        select(Message.thread_id, func.count())
        .where(Message.thread_id.in_(thread_ids), _unread_for(user_id))
        .group_by(Message.thread_id)
    )
    return {tid: int(n) for tid, n in (await tx.execute(query)).all()}


async def members_of(tx: AsyncSession, thread_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {t: [] for t in thread_ids}
    if thread_ids:
        query = select(Member.thread_id, Member.user_id).where(Member.thread_id.in_(thread_ids)).order_by(Member.user_id)
        for tid, uid in (await tx.execute(query)).all():
            out[tid].append(uid)
    return out


async def history(tx: AsyncSession, thread_id: int, page: int, page_size: int) -> tuple[list[Message], int]:
    """Page 1 is the newest `page_size` messages; each page is in chronological order."""
    cond = and_(Message.thread_id == thread_id, _visible())
    total = int((await tx.execute(select(func.count()).select_from(Message).where(cond))).scalar_one())
    query = (select(Message).where(cond).order_by(Message.id.desc())
             .limit(page_size).offset((page - 1) * page_size))
    rows = list((await tx.execute(query)).scalars())
    rows.reverse()
    return rows, total


async def search(tx: AsyncSession, user_id: int, text: str, other_user_id: int | None, limit: int) -> list[Message]:
    """Case-insensitive substring search over the user's visible messages."""
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    cond = and_(
        Message.thread_id.in_(select(Member.thread_id).where(Member.user_id == user_id)),
        _visible(),
        func.lower(Message.body).like(pattern, escape="\\"),
    )
    if other_user_id is not None:
        cond &= Message.thread_id.in_(select(Thread.id).where(Thread.direct_key == direct_key(user_id, other_user_id)))
    query = select(Message).where(cond).order_by(Message.id.desc()).limit(limit)
    return list((await tx.execute(query)).scalars())


async def changed_since(tx: AsyncSession, user_id: int, moment: datetime, ident: int, limit: int) -> list[Message]:
    """Messages of the user's threads created, edited or deleted after (moment, ident),
    in (updated_at, id) order; at most `limit`."""
    cond = and_(
        Message.thread_id.in_(select(Member.thread_id).where(Member.user_id == user_id)),
        or_(Message.updated_at > moment, and_(Message.updated_at == moment, Message.id > ident)),
    )
    query = select(Message).where(cond).order_by(Message.updated_at, Message.id).limit(limit)
    return list((await tx.execute(query)).scalars())


async def partners(tx: AsyncSession, user_ids: list[int], among: list[int] | None = None) -> dict[int, set[int]]:
    """For each user, the other users who share a thread with them (only those in
    `among`, when given): who sees their presence."""
    mine, theirs = aliased(Member), aliased(Member)
    query = (select(mine.user_id, theirs.user_id).distinct()
             .join(theirs, theirs.thread_id == mine.thread_id)
             .where(mine.user_id.in_(user_ids), theirs.user_id != mine.user_id))
    if among is not None:
        query = query.where(theirs.user_id.in_(among))
    out: dict[int, set[int]] = {u: set() for u in user_ids}
    for user, partner in (await tx.execute(query)).all():
        out[user].add(partner)
    return out
