"""Storage and operations against real databases: the same tests on SQLite and PostgreSQL.

Operations are called directly with a Context (no transport), as DESIGN.md asks."""
import asyncio
import weakref
from datetime import timedelta

import pytest
from sqlalchemy import event, inspect

from handlers import chat, chat_messages, chat_send, chat_threads
from handlers.context import Actor, Context, Outgoing
from handlers.local import InstanceLocal
from handlers.errors import Forbidden, ValidationFailed
from handlers.schema import Empty
from hub.settings import Settings
from storage import chat as store
from storage import users
from storage.base import utcnow
from storage.db import Database
from storage.migrate import upgrade


async def _user(db, email):
    async with db.transaction() as tx:
        return await users.create_user(tx, email=email, password_hash="x")


def _ctx(db, user) -> Context:
    settings = Settings.from_env({"HUB_DATA_DIR": "/tmp/unused"})
    # One instance per database: its sends share the group commit and the facts cache.
    local = _LOCALS.setdefault(db, InstanceLocal())
    return Context(actor=Actor(role="user", id=user.id), db=db, settings=settings, local=local)


_LOCALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def test_migrations_are_idempotent_and_create_the_schema(db):
    await upgrade(db.engine)  # a second run is a no-op
    async with db.engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"users", "refresh_tokens", "chat_threads", "chat_members", "chat_messages",
            "chat_receipts", "chat_attachments", "alembic_version"} <= names


async def test_concurrent_migrations_do_not_race(db):
    await asyncio.gather(*(upgrade(db.engine) for _ in range(3)))


async def test_email_is_unique_case_insensitively(db):
    await _user(db, "Same@Example.com")
    with pytest.raises(users.EmailTaken):
        await _user(db, "same@example.com")


async def test_one_direct_thread_per_pair_even_under_races(db):
    a, b = await _user(db, "a@x.io"), await _user(db, "b@x.io")
    ctx_a, ctx_b = _ctx(db, a), _ctx(db, b)
    sends = [chat_send.send_message(ctx_a, chat.SendMessage(recipient_id=b.id, message=f"a{i}")) for i in range(4)]
    sends += [chat_send.send_message(ctx_b, chat.SendMessage(recipient_id=a.id, message=f"b{i}")) for i in range(4)]
    results = await asyncio.gather(*sends)
    assert len({m.thread_id for m in results}) == 1
    async with db.transaction() as tx:
        thread = await store.get_thread(tx, results[0].thread_id)
        assert thread.message_count == 8 and await store.member_ids(tx, thread.id) == sorted([a.id, b.id])


async def test_send_is_idempotent_by_client_msg_id_under_races(db):
    a, b = await _user(db, "a@x.io"), await _user(db, "b@x.io")
    ctx = _ctx(db, a)
    req = chat.SendMessage(recipient_id=b.id, message="once", client_msg_id="k1")
    results = await asyncio.gather(*(chat_send.send_message(_ctx(db, a), req) for _ in range(5)))
    assert len({m.id for m in results}) == 1
    # The same key from another sender is another message.
    other = await chat_send.send_message(_ctx(db, b), chat.SendMessage(recipient_id=a.id, message="x", client_msg_id="k1"))
    assert other.id != results[0].id
    history = await chat_threads.thread_history(ctx, chat.ThreadHistory(thread_id=results[0].thread_id))
    assert history.total == 2


async def test_events_are_buffered_and_only_for_successful_writes(db):
    a, b = await _user(db, "a@x.io"), await _user(db, "b@x.io")
    ctx = _ctx(db, a)
    msg = await chat_send.send_message(ctx, chat.SendMessage(recipient_id=b.id, message="hello"))
    names = [(e.event, e.rooms, e.event_id is not None) for e in ctx.events]
    assert names == [
        ("thread:created", [f"user:{a.id}", f"user:{b.id}"], True),
        ("message:new", [f"user:{b.id}"], True),
        ("message:sent", [f"user:{a.id}"], True),
        ("thread:updated", [f"user:{a.id}", f"user:{b.id}"], True),
    ]
    failed = _ctx(db, a)
    with pytest.raises(ValidationFailed):
        await chat_send.send_message(failed, chat.SendMessage(recipient_id=b.id, message="x", attachment_ids=[12345]))
    assert failed.events == []
    assert (await chat_threads.thread_history(ctx, chat.ThreadHistory(thread_id=msg.thread_id))).total == 1


async def test_concurrent_sends_share_transactions_and_only_the_bad_one_fails(db):
    """message:send goes through a group commit: sends that arrive together are written
    in one transaction, and a send that cannot be written fails alone."""
    a, b, c = await _user(db, "a@x.io"), await _user(db, "b@x.io"), await _user(db, "c@x.io")
    sent_first = await chat_send.send_message(_ctx(db, a), chat.SendMessage(recipient_id=b.id, message="first"))
    async with db.transaction() as tx:
        upload = await store.add_attachment(tx, uploader_id=a.id, filename="f.txt", content_type="text/plain",
                                            content=b"hi")
    commits = []
    event.listen(db.engine.sync_engine, "commit", lambda conn: commits.append(1))
    together = [(_ctx(db, a), chat.SendMessage(recipient_id=b.id, message=f"m{i}", client_msg_id=f"k{i}"))
                for i in range(8)]
    await asyncio.gather(*(chat_send.send_message(ctx, req) for ctx, req in together))
    assert len(commits) < len(together)  # they shared transactions

    # Sends of one moment to one thread are in one batch: with a bad one among them,
    # the good ones get through only because a failed batch is retried send by send.
    good = [(_ctx(db, a), chat.SendMessage(recipient_id=b.id, message=f"m{i}")) for i in (8, 9)]
    good.append((_ctx(db, a), chat.SendMessage(recipient_id=c.id, message="new thread")))
    good.append((_ctx(db, a), chat.SendMessage(recipient_id=b.id, message="with file", attachment_ids=[upload.id])))
    good.append((_ctx(db, b), chat.SendMessage(recipient_id=a.id, message="b's own", client_msg_id="k0")))
    bad = [(_ctx(db, a), chat.SendMessage(recipient_id=b.id, message="x", attachment_ids=[upload.id + 100])),
           (_ctx(db, a), chat.SendMessage(recipient_id=987654, message="nobody"))]
    results = await asyncio.gather(*(chat_send.send_message(ctx, req) for ctx, req in good + bad),
                                   return_exceptions=True)

    assert [type(r).__name__ for r in results[len(good):]] == ["ValidationFailed", "NotFound"]
    sent = results[:len(good)]
    assert all(isinstance(m, chat.MessageOut) for m in sent)
    assert sent[3].attachments[0].id == upload.id and sent[2].thread_id != sent[0].thread_id
    assert sent[4].client_msg_id == "k0" and sent[4].thread_id == sent[0].thread_id  # b's key, not a's
    for ctx, _ in bad:
        assert ctx.events == []
    # Every thread:updated of the a-b thread carries its own count: 2..13 after "first".
    counts = sorted(e.data["message_count"] for ctx, _ in together + good for e in ctx.events
                    if e.event == "thread:updated" and e.data["thread_id"] == sent[0].thread_id)
    assert counts == list(range(2, 14))
    created = [e for ctx, _ in good for e in ctx.events if e.event == "thread:created"]
    assert [e.data["first_message_id"] for e in created] == [sent[2].id]
    async with db.transaction() as tx:
        assert (await store.get_thread(tx, sent[0].thread_id)).message_count == 13


async def test_message_text_and_event_data_are_stored_exactly(db):
    """The group commit passes rows as JSON on PostgreSQL: text and event data come
    back as they went in."""
    from storage import outbox

    a, b = await _user(db, "a@x.io"), await _user(db, "b@x.io")
    body = 'é "quoted" \\ back\\slash\n\ttab 😀 \u2028 <b>&amp;</b> ' + "x" * 500
    ctx = _ctx(db, a)
    sent = await chat_send.send_message(ctx, chat.SendMessage(recipient_id=b.id, message=body, client_msg_id="ü-1 \"k\""))
    assert sent.message == body and sent.client_msg_id == 'ü-1 "k"'
    history = await chat_threads.thread_history(_ctx(db, b), chat.ThreadHistory(thread_id=sent.thread_id))
    assert history.messages[0].message == body
    async with db.transaction() as tx:
        stored = {row.id: row for row in await outbox.claim_stale(tx, timedelta(seconds=-60), 100)}
    for event in ctx.events:
        row = stored[event.event_id]
        assert (row.namespace, row.event, row.data, row.rooms, row.skip_sid) == (
            event.namespace, event.event, event.data, event.rooms, event.skip_sid)


async def test_published_events_leave_the_outbox_and_the_relay_sees_only_the_rest(db):
    """Published events are deleted (one statement for any number), so the relay's
    claim finds only those never published, oldest first. A row that a version
    before migration 0007 marked published is neither claimed nor kept. No id is
    reused."""
    from sqlalchemy import func, select, update

    from storage import outbox

    events = [Outgoing("/chat", "e", {"n": i}, ["user:1"]) for i in range(5)]
    async with db.transaction() as tx:
        ids = await outbox.add(tx, events)
    async with db.transaction() as tx:
        await outbox.remove_published(tx, [ids[0], ids[2], ids[4]])
        await outbox.remove_published(tx, [])
        await tx.execute(update(outbox.OutboxEvent).where(outbox.OutboxEvent.id == ids[3])
                         .values(published_at=utcnow() - timedelta(hours=2)))
    async with db.transaction() as tx:
        assert [row.id for row in await outbox.claim_stale(tx, timedelta(seconds=-60), 100)] == [ids[1]]
        assert await outbox.prune(tx, timedelta(hours=1)) == 1
        assert (await tx.execute(select(func.count()).select_from(outbox.OutboxEvent))).scalar() == 1
    # An id is never handed out twice (instances drop the ids they have seen), even
    # once the newest rows are gone.
    async with db.transaction() as tx:
        assert (await outbox.add(tx, events[:1]))[0] > max(ids)


async def test_driver_statements_are_part_of_the_session_transaction(pg_url):
    """storage.base.pg_driver reaches into SQLAlchemy's asyncpg adapter to start the
    session's transaction: what runs on the driver commits and rolls back with it,
    first statement or not."""
    from storage.base import pg_driver

    db = Database(pg_url)
    await upgrade(db.engine)
    try:
        count = "SELECT count(*) FROM users WHERE email LIKE 'driver-%'"
        add = "INSERT INTO users (email, password_hash, role, first_name, last_name, created_at) " \
              "VALUES ($1, 'x', 'user', '', '', now())"
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await (await pg_driver(tx)).execute(add, "driver-1@x.io")  # the first statement
                await users.create_user(tx, email="driver-2@x.io", password_hash="x")  # through SQLAlchemy
                await (await pg_driver(tx)).execute(add, "driver-3@x.io")
                raise RuntimeError("roll back")
        async with db.transaction() as tx:
            assert await (await pg_driver(tx)).fetchval(count) == 0
            await (await pg_driver(tx)).execute(add, "driver-4@x.io")
        async with db.transaction() as tx:
            assert await (await pg_driver(tx)).fetchval(count) == 1
            await users.create_user(tx, email="driver-5@x.io", password_hash="x")
            await (await pg_driver(tx)).execute(add, "driver-6@x.io")
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql(count)).scalar() == 3
            await conn.exec_driver_sql("DELETE FROM users WHERE email LIKE 'driver-%'")
            await conn.commit()
    finally:
        await db.close()


async def test_unread_counts_and_receipts(db):
    a, b, c = await _user(db, "a@x.io"), await _user(db, "b@x.io"), await _user(db, "c@x.io")
    ca, cb, cc = _ctx(db, a), _ctx(db, b), _ctx(db, c)
    group = await chat_threads.create_thread(ca, chat.CreateThread(member_ids=[b.id, c.id]))
    m1 = await chat_send.send_message(ca, chat.SendMessage(thread_id=group.thread_id, message="1"))
    await chat_send.send_message(ca, chat.SendMessage(thread_id=group.thread_id, message="2"))
    await chat_send.send_message(cb, chat.SendMessage(recipient_id=a.id, message="direct"))
    assert (await chat_messages.unread_count(cb, Empty())).unread_count == 2
    assert (await chat_messages.unread_count(ca, Empty())).unread_count == 1
    await chat_messages.read_message(cb, chat.MessageRef(message_id=m1.id))
    await chat_messages.read_message(cb, chat.MessageRef(message_id=m1.id))  # reading twice counts once
    assert (await chat_messages.unread_count(cb, Empty())).unread_count == 1
    assert (await chat_messages.unread_count(cc, Empty())).unread_count == 2
    # The sender sees "read" once anyone read it.
    history = await chat_threads.thread_history(ca, chat.ThreadHistory(thread_id=group.thread_id))
    assert [m.is_read for m in history.messages] == [True, False]
    summaries = {t.thread_id: t.unread_count for t in await chat_threads.list_threads(cc, chat.ListThreads())}
    assert summaries == {group.thread_id: 2}
    with pytest.raises(Forbidden):
        await chat_threads.read_all(_ctx(db, await _user(db, "d@x.io")), chat.ThreadRef(thread_id=group.thread_id))
