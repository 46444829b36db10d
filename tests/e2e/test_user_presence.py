"""Users' presence in /chat (issue 22, part 2) across two `hub serve` processes on
PostgreSQL and Redis: two devices on two instances, one instance SIGKILLed, the grace
period, who may ask, and invisibility."""
import signal

import pytest

from storage.db import Database
from tests.support.dialogs import account, next_where

GRACE = 1.0


@pytest.fixture
async def cluster(spawn_hubs, pg_url, redis_url, redis_prefix):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_PRESENCE_GRACE": str(GRACE), "HUB_USER_PRESENCE_BATCH": "0.2"}
    hubs = await spawn_hubs(2, env)
    db = Database(pg_url)
    yield hubs, db
    await db.close()


async def thread(client, *others: int) -> None:
    await client.ok("thread:create", {"member_ids": list(others)})


def about(user_id: int):
    return lambda e: e["user_id"] == user_id


async def test_two_devices_one_instance_killed_and_the_grace_period(cluster, connect):
    hubs, db = cluster
    (watcher_id, watcher_token), (bob_id, bob_token) = await account(db), await account(db)
    (dora_id, dora_token), (carl_id, carl_token) = await account(db), await account(db)
    watcher = await connect(hubs[0].url, "/chat", watcher_token)
    await thread(watcher, bob_id, dora_id, carl_id)

    # Bob on two devices, one per instance: one announcement
    bob_phone = await connect(hubs[0].url, "/chat", bob_token)
    await connect(hubs[1].url, "/chat", bob_token)
    online = await next_where(watcher, "presence:changed", about(bob_id))
    assert online["status"] == "online" and online["last_seen"]
    # Dora only on the instance about to die
    await connect(hubs[1].url, "/chat", dora_token)
    assert (await next_where(watcher, "presence:changed", about(dora_id)))["status"] == "online"

    hubs[1].stop(signal.SIGKILL)
    # Dora's only device died with its instance: offline once the instance counts as
    # dead and her grace period ended
    gone = await next_where(watcher, "presence:changed", about(dora_id), timeout=20)
    assert gone["status"] == "offline"
    # Bob's other device stays: no change for him (the next change is Carl's)
    await connect(hubs[0].url, "/chat", carl_token)
    nxt = await watcher.next("presence:changed")
    assert (nxt["user_id"], nxt["status"]) == (carl_id, "online")
    bob = (await watcher.ok("presence:query", {"user_ids": [bob_id]}))[0]
    assert bob["status"] == "online"

    # his last device goes: offline after the grace period, with when he was last seen
    await bob_phone.close()
    offline = await next_where(watcher, "presence:changed", about(bob_id))
    assert offline["status"] == "offline" and offline["last_seen"] >= online["last_seen"]


async def test_a_reload_within_the_grace_period_is_not_announced(cluster, connect):
    hubs, db = cluster
    (watcher_id, watcher_token), (bob_id, bob_token) = await account(db), await account(db)
    carl_id, carl_token = await account(db)
    watcher = await connect(hubs[0].url, "/chat", watcher_token)
    await thread(watcher, bob_id, carl_id)
    first = await connect(hubs[0].url, "/chat", bob_token)
    assert (await next_where(watcher, "presence:changed", about(bob_id)))["status"] == "online"
    await first.close()
    await connect(hubs[1].url, "/chat", bob_token)  # back on the other instance at once
    await connect(hubs[1].url, "/chat", carl_token)
    # the next change the watcher hears of is Carl's, after Bob's grace period would have ended
    nxt = await watcher.next("presence:changed", timeout=10)
    assert nxt["user_id"] == carl_id, nxt


async def test_query_is_for_thread_partners_and_invisible_users_look_offline(cluster, connect):
    hubs, db = cluster
    (watcher_id, watcher_token), (bob_id, bob_token) = await account(db), await account(db)
    stranger_id, stranger_token = await account(db)
    admin_id, admin_token = await account(db, "admin")
    watcher = await connect(hubs[0].url, "/chat", watcher_token)
    await thread(watcher, bob_id)
    bob = await connect(hubs[1].url, "/chat", bob_token)
    assert (await next_where(watcher, "presence:changed", about(bob_id)))["status"] == "online"

    stranger = await connect(hubs[0].url, "/chat", stranger_token)
    assert await stranger.ok("presence:query", {"user_ids": [bob_id, watcher_id]}) == []
    staff = await connect(hubs[1].url, "/chat", admin_token)
    assert [p["status"] for p in await staff.ok("presence:query", {"user_ids": [bob_id, stranger_id]})] == \
        ["online", "online"]

    me = await bob.ok("presence:set", {"invisible": True})
    assert me["status"] == "invisible"
    hidden = await next_where(watcher, "presence:changed", about(bob_id))
    assert hidden == {"user_id": bob_id, "status": "offline", "last_seen": None}
    assert (await watcher.ok("presence:query", {"user_ids": [bob_id]}))[0]["status"] == "offline"
    await bob.ok("presence:set", {"invisible": False})
    assert (await next_where(watcher, "presence:changed", about(bob_id)))["status"] == "online"
    assert await bob.error("presence:query", {"user_ids": []}) == "validation_error"
