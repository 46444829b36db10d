"""Handoff across real `hub serve` processes sharing PostgreSQL and Redis: the accept
race (exactly one winner every time), presence across instances, the grace period,
and requeue when an operator is lost (disconnected, or their instance killed)."""
import asyncio
import signal

import pytest

from storage.db import Database
from tests.support.clients import Api
from tests.support.dialogs import account, assistant, next_where, visitor

TIMEOUT, GRACE = 3.0, 3.0


@pytest.fixture
async def cluster(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_PRESENCE_TIMEOUT": str(TIMEOUT), "HUB_PRESENCE_GRACE": str(GRACE), "HUB_REQUEUE_DELAY": "0",
           "HUB_WIDGET_SESSIONS_PER_MINUTE": "1000", "HUB_EVENT_RATE": "200", "HUB_EVENT_BURST": "400",
           "HUB_USER_OP_LIMIT": "100000"}
    hubs = await spawn_hubs(2, env)
    db = Database(pg_url)
    yield hubs, db, [Api(h.url, http) for h in hubs]
    await db.close()


async def waiting_dialog(api, connect, hub_url, assistant_id):
    v = await visitor(api, assistant_id)
    vis = await connect(hub_url, "/dialogs", v["visitor_token"])
    await vis.ok("dialog:handoff", {"dialog_id": v["dialog_id"], "reason": "human please"})
    return v["dialog_id"], vis


async def test_accept_race_has_exactly_one_winner_every_time(cluster, connect):
    hubs, db, apis = cluster
    _, owner = await account(db)
    a = await assistant(apis[0], owner)
    operators = [await account(db, "operator") for _ in range(10)]
    consoles = [await connect(hubs[i % 2].url, "/operators", tok) for i, (_, tok) in enumerate(operators)]
    for round_ in range(10):
        did, vis = await waiting_dialog(apis[round_ % 2], connect, hubs[(round_ + 1) % 2].url, a["id"])
        replies = await asyncio.gather(*(c.call("handoff:accept", {"dialog_id": did}) for c in consoles))
        winners = [(i, r["data"]) for i, r in enumerate(replies) if r["ok"]]
        assert len(winners) == 1, replies
        assert all(r["error"]["code"] == "conflict" for r in replies if not r["ok"]), replies
        index, dialog = winners[0]
        assert dialog["operator_id"] == operators[index][0] and dialog["handoff_status"] == "active"
        # every console, on either instance, hears of the one winner, with the same version
        for c in consoles:
            ev = await next_where(c, "handoff:accepted", lambda e: e["dialog_id"] == did)
            assert ev == {"dialog_id": did, "operator_id": dialog["operator_id"], "version": dialog["version"]}
        status = await next_where(vis, "handoff:status", lambda e: e["status"] == "active")
        assert status["operator_id"] == dialog["operator_id"] and status["version"] == dialog["version"]
        for c in (consoles[0], consoles[1]):  # one console per instance
            st = await c.ok("handoff:status", {"dialog_id": did})
            assert (st["status"], st["operator_id"], st["version"]) == ("active", dialog["operator_id"], dialog["version"])
        await consoles[index].ok("handoff:release", {"dialog_id": did})
    # No duplicate announcements: the next handoff:accepted every console hears is of a
    # later dialog, accepted once on each instance (each instance's announcements reach
    # a console in the order they were made).
    for index in (0, 1):
        did, _ = await waiting_dialog(apis[0], connect, hubs[1].url, a["id"])
        await consoles[index].ok("handoff:accept", {"dialog_id": did})
        for c in consoles:
            await c.absent("handoff:accepted", until="handoff:accepted", where=lambda e: e["dialog_id"] == did)


async def test_presence_across_instances_grace_and_requeue(cluster, connect, keep_alive):
    hubs, db, apis = cluster
    _, owner = await account(db)
    a = await assistant(apis[0], owner)
    _, watcher_token = await account(db, "operator")
    op_id, op_token = await account(db, "operator")
    watcher = keep_alive(await connect(hubs[1].url, "/operators", watcher_token))
    mine = lambda e: e["operator_id"] == op_id  # noqa: E731

    # online on instance A is seen on instance B, as an event and in the shared status
    first = await connect(hubs[0].url, "/operators", op_token)
    assert (await next_where(watcher, "presence:changed", mine))["status"] == "online"
    assert (await watcher.ok("presence:status", {"operator_id": op_id}))["status"] == "online"

    # a reload (disconnect, reconnect on the other instance within the grace period) does not flap
    await first.close()
    console = await connect(hubs[1].url, "/operators", op_token)
    await console.ok("presence:heartbeat")
    assert await none_where(watcher, "presence:changed", mine, GRACE + 1.5)
    assert (await watcher.ok("presence:status", {"operator_id": op_id}))["status"] == "online"

    # the operator holds a dialog, then goes away for good: after the grace period they are
    # offline and the dialog is back in the queue, announced once
    did, vis = await waiting_dialog(apis[0], connect, hubs[0].url, a["id"])
    await next_where(watcher, "handoff:requested", lambda e: e["dialog_id"] == did)
    held = await console.ok("handoff:accept", {"dialog_id": did})
    await next_where(vis, "handoff:status", lambda e: e["status"] == "active")
    drain(vis, "queue:position")  # the place it had before being accepted
    await console.close()
    st = await watcher.ok("handoff:status", {"dialog_id": did})
    assert st["status"] == "active"  # within the grace period nothing moves
    assert (await next_where(watcher, "presence:changed", mine, timeout=GRACE + 10))["status"] == "offline"
    released = await next_where(watcher, "handoff:released", lambda e: e["dialog_id"] == did, timeout=10)
    assert released["operator_id"] == op_id and released["reason"] == "operator_offline"
    requeued = await next_where(watcher, "handoff:requested", lambda e: e["dialog_id"] == did, timeout=10)
    assert requeued["reason"] == "operator_offline" and requeued["queue_position"] == 1
    assert requeued["version"] > held["version"]
    status = await next_where(vis, "handoff:status", lambda e: e["status"] == "requested"
                              and e["reason"] == "operator_offline", timeout=10)
    assert status["operator_id"] is None and status["version"] == requeued["version"]
    place = requeued["queue_position"]
    assert (await next_where(vis, "queue:position", lambda e: True))["position"] == place
    # both instances sweep, yet each change was announced exactly once: a second operator
    # who holds a dialog and goes away is swept a grace period later (by then both
    # instances have swept many times since the first requeue); until that requeue is
    # announced, none of the first dialog's changes is announced again.
    _, op2_token = await account(db, "operator")
    console2 = await connect(hubs[0].url, "/operators", op2_token)
    did2, _ = await waiting_dialog(apis[0], connect, hubs[0].url, a["id"])
    await console2.ok("handoff:accept", {"dialog_id": did2})
    await console2.close()
    while True:
        ev = await watcher.next("handoff:requested", GRACE + 15)
        assert ev["dialog_id"] != did, ev
        if ev["dialog_id"] == did2 and ev["reason"] == "operator_offline":
            break
    assert all(e["dialog_id"] != did for e in drain(watcher, "handoff:released"))
    theirs = [e for e in drain(watcher, "presence:changed") if e["operator_id"] == op_id]
    assert not theirs, theirs
    st = await watcher.ok("handoff:status", {"dialog_id": did})
    assert (st["status"], st["operator_id"], st["queue_position"]) == ("requested", None, place)


async def test_requeue_when_the_operators_instance_dies(cluster, connect, keep_alive):
    hubs, db, apis = cluster
    _, owner = await account(db)
    a = await assistant(apis[1], owner)
    _, watcher_token = await account(db, "operator")
    op_id, op_token = await account(db, "operator")
    watcher = keep_alive(await connect(hubs[1].url, "/operators", watcher_token))
    console = await connect(hubs[0].url, "/operators", op_token)
    did, vis = await waiting_dialog(apis[1], connect, hubs[1].url, a["id"])
    await console.ok("handoff:accept", {"dialog_id": did})
    hubs[0].stop(signal.SIGKILL)  # no disconnect reaches anyone: only the heartbeats stop
    ev = await next_where(watcher, "handoff:requested", lambda e: e["dialog_id"] == did
                          and e["reason"] == "operator_offline", timeout=TIMEOUT + GRACE + 15)
    st = await watcher.ok("handoff:status", {"dialog_id": did})
    assert (st["status"], st["operator_id"], st["queue_position"]) == ("requested", None, ev["queue_position"])
    presence = await watcher.ok("presence:status", {"operator_id": op_id})
    assert presence["status"] == "offline" and presence["active_chats"] == 0
    # the dialog can be accepted again by someone who is there
    assert (await watcher.ok("handoff:accept", {"dialog_id": did}))["handoff_status"] == "active"


@pytest.fixture
async def keep_alive():
    """keep_alive(client): heartbeat that console every second until the test ends
    (with these short timeouts, a silent console would go offline mid-test)."""
    tasks = []

    async def beat(client):
        while True:
            await client.call("presence:heartbeat")
            await asyncio.sleep(1)

    def start(client):
        tasks.append(asyncio.create_task(beat(client)))
        return client

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def none_where(client, event: str, pred, wait: float) -> bool:
    """True if, within `wait` seconds, no `event` satisfying `pred` arrives (others are kept)."""
    await asyncio.sleep(wait)
    return not any(pred(e) for e in list(client.queue(event)._queue))


def drain(client, event: str) -> list:
    q = client.queue(event)
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out
