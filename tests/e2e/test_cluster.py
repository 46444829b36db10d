"""Two real `hub serve` processes on a Redis Cluster (redis+cluster://, 3 masters and
3 replicas started by the test, tests/support/redis_cluster.py): chat across
instances, recovery on the other instance, the handoff accept race, and a master
failover (SIGKILL) with no acknowledged message lost."""
import asyncio
import json
import secrets

import pytest

from storage.db import Database
from tests.support.clients import Api
from tests.support.dialogs import account, assistant, next_where, visitor
from tests.support.node import run_node

ALL = [f"m{i}" for i in range(20)]


def _env(pg_url: str, cluster_url: str, prefix: str) -> dict[str, str]:
    return {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": cluster_url, "HUB_REDIS_PREFIX": prefix,
            "HUB_REQUEUE_DELAY": "0", "HUB_WIDGET_SESSIONS_PER_MINUTE": "1000", "HUB_EVENT_RATE": "200",
            "HUB_EVENT_BURST": "400", "HUB_USER_OP_LIMIT": "100000"}


@pytest.fixture
async def hubs_on_cluster(spawn_hubs, pg_url, cluster_url, redis_prefix):
    return await spawn_hubs(2, _env(pg_url, cluster_url, redis_prefix))


async def test_chat_crosses_instances_on_a_cluster(hubs_on_cluster, connect, http):
    one, two = hubs_on_cluster
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    sender = await connect(one.url, "/chat", a["access_token"])
    phone = await connect(one.url, "/chat", b["access_token"])
    laptop = await connect(two.url, "/chat", b["access_token"])
    msg = await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": "over the cluster"})
    for device in (phone, laptop):
        new = await device.next("message:new")
        assert new["message_id"] == msg["id"] and new["content"] == "over the cluster"
    later = await sender.ok("message:send", {"thread_id": msg["thread_id"], "message": "later"})
    for device in (phone, laptop):  # each got the first exactly once
        await device.absent("message:new", until="message:new", where=lambda e: e["message_id"] == later["id"])
    # Volatile events (never logged) cross instances on the sharded channel too.
    await laptop.ok("typing:set", {"thread_id": msg["thread_id"], "is_typing": True})
    assert (await sender.next("typing:indicator"))["user_id"] == b["user"]["id"]
    # Revocations and sessions are shared: a logout on one instance holds on the other.
    status, _ = await Api(one.url, http).request("POST", "/auth/logout", token=a["access_token"])
    assert status == 200
    status, body = await Api(two.url, http).request("GET", "/auth/me", token=a["access_token"])
    assert status == 401 and body["error"]["message"] == "token revoked"


async def test_recovers_the_missed_events_on_the_other_instance(hubs_on_cluster, node, http):
    one, two = hubs_on_cluster
    api = Api(one.url, http)
    sender, receiver = await api.user(), await api.user()
    args = ["other", one.url, two.url, one.url, sender["access_token"], receiver["access_token"],
            str(receiver["user"]["id"])]
    out = json.loads(await run_node("recovery.mjs", *args, timeout=60))
    assert out["connects"] == [{"recovered": True}]
    assert out["seen"] == ALL and len(set(out["offsets"])) == 20


async def test_accept_race_has_exactly_one_winner_on_a_cluster(hubs_on_cluster, pg_url, connect, http):
    hubs = hubs_on_cluster
    apis = [Api(h.url, http) for h in hubs]
    db = Database(pg_url)
    try:
        _, owner = await account(db)
        a = await assistant(apis[0], owner)
        operators = [await account(db, "operator") for _ in range(6)]
        consoles = [await connect(hubs[i % 2].url, "/operators", tok) for i, (_, tok) in enumerate(operators)]
        for round_ in range(5):
            v = await visitor(apis[round_ % 2], a["id"])
            vis = await connect(hubs[(round_ + 1) % 2].url, "/dialogs", v["visitor_token"])
            did = v["dialog_id"]
            await vis.ok("dialog:handoff", {"dialog_id": did, "reason": "human please"})
            replies = await asyncio.gather(*(c.call("handoff:accept", {"dialog_id": did}) for c in consoles))
            winners = [(i, r["data"]) for i, r in enumerate(replies) if r["ok"]]
            assert len(winners) == 1, replies
            assert all(r["error"]["code"] == "conflict" for r in replies if not r["ok"]), replies
            index, dialog = winners[0]
            for c in consoles:  # every console, on either instance, hears of the one winner
                ev = await next_where(c, "handoff:accepted", lambda e: e["dialog_id"] == did)
                assert ev == {"dialog_id": did, "operator_id": dialog["operator_id"], "version": dialog["version"]}
            status = await next_where(vis, "handoff:status", lambda e: e["status"] == "active")
            assert status["operator_id"] == dialog["operator_id"]
            await consoles[index].ok("handoff:release", {"dialog_id": did})
    finally:
        await db.close()


@pytest.fixture
def own_cluster(redis_cluster, tmp_path):
    """A cluster of this test's own: it kills one of its masters."""
    from tests.support.redis_cluster import RedisClusterProcs

    cluster = RedisClusterProcs(tmp_path / "redis-cluster").start()
    yield cluster
    cluster.stop()


async def test_a_master_failover_loses_no_acknowledged_message(own_cluster, spawn_hubs, pg_url, connect, http):
    """SIGKILL the master of the bus's slot while messages flow: its replica takes
    over, and every message the sender was acknowledged reaches the receiver on the
    other instance (live, or caught up from the log / relayed from the outbox)."""
    prefix = f"hubtest:{secrets.token_hex(4)}"
    one, two = await spawn_hubs(2, _env(pg_url, own_cluster.url, prefix))
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    sender = await connect(one.url, "/chat", a["access_token"])
    receiver = await connect(two.url, "/chat", b["access_token"])
    first = await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": "before"})
    thread = first["thread_id"]
    acked = [first["id"]]
    victim = own_cluster.master_of("{" + f"{prefix}:bus" + "}")
    for i in range(60):
        if i == 20:
            own_cluster.kill(victim)
        reply = await sender.call("message:send", {"thread_id": thread, "message": f"m{i}"}, timeout=15)
        if reply["ok"]:
            acked.append(reply["data"]["id"])
        await asyncio.sleep(0.05)  # messages flowing across the failover, not a burst before it
    own_cluster.wait_ok()  # the replica was promoted: the cluster serves every slot again
    last = await sender.ok("message:send", {"thread_id": thread, "message": "after"})
    acked.append(last["id"])
    assert len(acked) > 40  # most sends were acknowledged
    got: list[int] = []
    while True:
        event = await receiver.next("message:new", timeout=30)
        got.append(event["message_id"])
        if event["message_id"] == last["id"]:
            break
    missing = set(acked) - set(got)
    assert not missing, f"acknowledged but never delivered: {sorted(missing)}"
    assert len(got) == len(set(got)), "a message was delivered twice"
    for hub in (one, two):  # both ready again: Redis (every node the client knows) and the bus
        async with http.get(hub.url + "/ready") as resp:
            assert resp.status == 200, await resp.text()
