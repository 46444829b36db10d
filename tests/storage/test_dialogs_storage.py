"""The handoff core and dialog storage called directly (no transport) on SQLite and
PostgreSQL: compare-and-set accepts, queue order, requeue, listing filters."""
import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from handlers import handoff
from handlers import dialogs, operators
from handlers.context import Actor, Context
from handlers.errors import Conflict, Forbidden
from hub.backends.presence.memory import MemoryPresence
from hub.settings import Settings
from storage import dialogs as store
from storage import users

SETTINGS = Settings.from_env({"HUB_DATA_DIR": "/tmp/unused"})


def ctx(db, actor: Actor, presence=None) -> Context:  # noqa: F811
    return Context(actor=actor, db=db, settings=SETTINGS, presence=presence or MemoryPresence(timeout=60, grace=30))


async def _people(db, *roles):  # noqa: F811
    out = []
    async with db.transaction() as tx:
        for i, role in enumerate(roles):
            u = await users.create_user(tx, email=f"{role}{i}-{id(out)}@example.com", password_hash="x", role=role)
            out.append(Actor(role=role, id=u.id))
    return out


async def _dialogs(db, owner: Actor, n: int):  # noqa: F811
    async with db.transaction() as tx:
        a = await store.create_assistant(tx, owner_id=owner.id, name="A", allowed_origins=["https://a.example"],
                                         system_prompt=None)
        ds = [await store.create_dialog(tx, assistant_id=a.id, visitor_id=f"v{i}") for i in range(n)]
    return a, ds


async def _request(db, d, who: Actor):  # noqa: F811
    c = ctx(db, who)
    async with c.transaction() as tx:
        fresh = await store.get_dialog(tx, d.id)
        return await handoff.request_handoff(c, tx, fresh, "help", None), c


async def test_concurrent_accepts_have_exactly_one_winner(db):  # noqa: F811
    owner, *ops = await _people(db, "user", *["operator"] * 10)
    a, (d,) = await _dialogs(db, owner, 1)
    bot = Actor(role="service", name="bot", assistant_id=a.id)
    requested, _ = await _request(db, d, bot)
    assert requested.queue_position == 1 and requested.version == 2

    async def accept(op):
        try:
            return await operators.handoff_accept(ctx(db, op), dialogs.DialogRef(dialog_id=d.id))
        except Conflict as exc:
            return exc

    results = await asyncio.gather(*(accept(op) for op in ops))
    winners = [r for r in results if not isinstance(r, Conflict)]
    assert len(winners) == 1 and winners[0].version == 3 and winners[0].handoff_status == "active"
    async with db.transaction() as tx:
        row = await store.get_dialog(tx, d.id)
        assert (row.handoff_status, row.operator_id, row.version) == ("active", winners[0].operator_id, 3)


async def test_queue_order_requeue_keeps_place_and_events_carry_versions(db):  # noqa: F811
    owner, op = await _people(db, "user", "operator")
    a, ds = await _dialogs(db, owner, 3)
    visitors = [Actor(role="visitor", dialog_id=d.id, assistant_id=a.id, visitor_id=f"v{i}") for i, d in enumerate(ds)]
    places = [(await _request(db, d, v))[0].queue_position for d, v in zip(ds, visitors)]
    assert places == [1, 2, 3]
    taken = await operators.handoff_accept(ctx(db, op), dialogs.DialogRef(dialog_id=ds[0].id))
    async with db.transaction() as tx:
        assert [w.id for w in await store.queue(tx)] == [ds[1].id, ds[2].id]
    system = ctx(db, Actor(role="system", name="test"))
    assert await handoff.requeue_operator(system, op.id) == [ds[0].id]
    assert await handoff.requeue_operator(system, op.id) == []  # nothing left to claim
    async with db.transaction() as tx:
        assert [w.id for w in await store.queue(tx)] == [ds[0].id, ds[1].id, ds[2].id]  # first again
    by_event = {}
    for ev in system.events:
        by_event.setdefault(ev.event, []).append(ev)
    (released,) = by_event["handoff:released"]
    assert released.data == {"dialog_id": ds[0].id, "operator_id": op.id, "version": taken.version + 1,
                             "reason": "operator_offline"}
    (status,) = by_event["handoff:status"]
    assert status.rooms == [f"dialog:{ds[0].id}", f"bots:{a.id}"] and status.data["status"] == "requested"
    assert status.event_id is not None  # emitted inside the transaction that requeued it
    positions = {tuple(e.rooms): e.data["position"] for e in by_event["queue:position"]}
    assert positions == {(f"dialog:{ds[0].id}",): 1, (f"dialog:{ds[1].id}",): 2, (f"dialog:{ds[2].id}",): 3}


async def test_release_only_by_holder_and_bot_quiet_while_held(db):  # noqa: F811
    owner, op, other = await _people(db, "user", "operator", "operator")
    a, (d,) = await _dialogs(db, owner, 1)
    bot = Actor(role="service", name="bot", assistant_id=a.id)
    await _request(db, d, bot)
    await operators.handoff_accept(ctx(db, op), dialogs.DialogRef(dialog_id=d.id))
    with pytest.raises(Forbidden):
        await operators.handoff_release(ctx(db, other), dialogs.DialogRef(dialog_id=d.id))
    with pytest.raises(Conflict):
        await dialogs.send(ctx(db, bot), dialogs.SendDialogMessage(dialog_id=d.id, text="me too"))
    visitor = Actor(role="visitor", dialog_id=d.id, assistant_id=a.id, visitor_id="v0")
    c = ctx(db, visitor)
    await dialogs.send(c, dialogs.SendDialogMessage(dialog_id=d.id, text="hello?"))
    (added,) = [e for e in c.events if e.namespace == "/dialogs"]
    assert added.rooms == [f"dialog:{d.id}"]  # not the bots' room
    (console,) = [e for e in c.events if e.namespace == "/operators"]
    assert console.rooms == [f"user:{op.id}"]
    released = await operators.handoff_release(ctx(db, op), dialogs.DialogRef(dialog_id=d.id))
    assert released.handoff_status == "resolved" and released.operator_id is None
    c = ctx(db, visitor)
    await dialogs.send(c, dialogs.SendDialogMessage(dialog_id=d.id, text="back to the bot"))
    assert [e.rooms for e in c.events] == [[f"dialog:{d.id}", f"bots:{a.id}"]]


async def test_listing_filters(db):  # noqa: F811
    owner, stranger, op = await _people(db, "user", "user", "operator")
    a, ds = await _dialogs(db, owner, 3)
    visitor = Actor(role="visitor", dialog_id=ds[1].id, assistant_id=a.id, visitor_id="v1")
    await dialogs.send(ctx(db, visitor), dialogs.SendDialogMessage(dialog_id=ds[1].id, text="100% Tea_Pot refund"))
    list_ = dialogs.list_dialogs
    page = await list_(ctx(db, owner), dialogs.ListDialogs(search="tea_pot"))
    assert [d.dialog_id for d in page.items] == [ds[1].id]
    assert (await list_(ctx(db, owner), dialogs.ListDialogs(search="tea%pot"))).total == 0  # % is literal
    assert (await list_(ctx(db, owner), dialogs.ListDialogs(search="100%"))).total == 1
    assert (await list_(ctx(db, stranger), dialogs.ListDialogs())).total == 0
    assert (await list_(ctx(db, op), dialogs.ListDialogs(assistant_id=a.id))).total == 3
    page = await list_(ctx(db, op), dialogs.ListDialogs(assistant_id=a.id, limit=2))
    assert page.items[0].dialog_id == ds[1].id and len(page.items) == 2  # latest activity first
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    assert (await list_(ctx(db, op), dialogs.ListDialogs(assistant_id=a.id, date_from=future))).total == 0
    assert (await list_(ctx(db, visitor), dialogs.ListDialogs())).total == 1
    await _request(db, ds[2], owner)
    await operators.handoff_accept(ctx(db, op), dialogs.DialogRef(dialog_id=ds[2].id))
    held = await list_(ctx(db, op), dialogs.ListDialogs(user_id=op.id))
    assert [d.dialog_id for d in held.items] == [ds[2].id]
