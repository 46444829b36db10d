"""One contract suite for operator presence, run against memory and Redis."""
import secrets
import time

import pytest
import redis.asyncio as aioredis

from hub.backends.presence.memory import MemoryPresence
from hub.backends.presence.redis import RedisPresence
from tests.support.services import REDIS_URL, delete_prefixed, unavailable

TIMEOUT, GRACE = 10.0, 5.0


@pytest.fixture(params=["memory", "redis", "cluster"])
async def presence(request):
    if request.param == "memory":
        yield MemoryPresence(timeout=TIMEOUT, grace=GRACE)
        return
    prefix = f"hubtest:{secrets.token_hex(4)}"
    url = REDIS_URL if request.param == "redis" else request.getfixturevalue("cluster_url")
    p = RedisPresence.from_url(url, prefix, timeout=TIMEOUT, grace=GRACE)
    try:
        await p.redis.ping()
    except Exception as exc:
        await p.close()
        unavailable("Redis", exc)
    yield p
    await delete_prefixed(p.redis, prefix)
    await p.close()


async def test_unknown_operator_has_no_presence(presence):
    assert await presence.get(404) is None


async def test_connected_console_is_online_and_counts(presence):
    await presence.connect(1, "a:1")
    await presence.connect(1, "b:2")
    rec = await presence.get(1)
    assert rec.status == "online" and rec.consoles == 2 and rec.offline_since is None
    assert [r.operator_id for r in await presence.all()] == [1]


async def test_grace_period_after_last_disconnect(presence):
    await presence.connect(1, "a:1")
    await presence.connect(1, "b:2")
    await presence.disconnect(1, "a:1")
    now = time.time()
    assert (await presence.get(1, now + GRACE + 1)).status == "online"  # b still live
    await presence.disconnect(1, "b:2")
    now = time.time()
    assert (await presence.get(1, now + GRACE - 1)).status == "online"  # within grace: no flap
    rec = await presence.get(1, now + GRACE + 1)
    assert rec.status == "offline" and rec.consoles == 0
    assert now - 1 < rec.offline_since - GRACE <= now + 0.5


async def test_reconnect_within_grace_keeps_online(presence):
    await presence.connect(1, "a:1")
    await presence.disconnect(1, "a:1")
    await presence.connect(1, "a:2")  # page reload
    assert (await presence.get(1, time.time() + GRACE + 1)).status == "online"


async def test_missed_heartbeats_then_grace(presence):
    await presence.connect(1, "a:1")  # never disconnects (its instance died)
    start = time.time()
    assert (await presence.get(1, start + TIMEOUT - 1)).status == "online"
    assert (await presence.get(1, start + TIMEOUT + GRACE - 1)).status == "online"
    assert (await presence.get(1, start + TIMEOUT + GRACE + 1)).status == "offline"
    await presence.heartbeat(1, "a:1")
    assert (await presence.get(1, time.time() + TIMEOUT - 1)).status == "online"


async def test_chosen_status_and_limit(presence):
    await presence.connect(1, "a:1")
    await presence.update(1, status="away", max_active_chats=3)
    rec = await presence.get(1)
    assert (rec.status, rec.chosen, rec.max_active_chats) == ("away", "away", 3)
    await presence.update(1, status="offline")
    rec = await presence.get(1)
    assert rec.status == "offline" and rec.offline_since is not None
    await presence.connect(1, "a:2")  # a console connecting brings them back
    assert (await presence.get(1)).status == "online"
    assert (await presence.get(1)).max_active_chats == 3


async def test_claim_change_is_once_per_change(presence):
    assert not await presence.claim_change(1, "offline")  # never announced = offline
    assert await presence.claim_change(1, "online")
    assert not await presence.claim_change(1, "online")
    assert await presence.claim_change(1, "offline")
    assert await presence.claim_change(1, "online")


async def test_looks_are_due_once_at_the_later_time_asked(presence):
    now = time.time()
    await presence.look_at([1, 2], now - 1)
    await presence.look_at([2], now + 60)  # a later look replaces the earlier one
    assert await presence.due(now) == [1]
    assert await presence.due(now) == []  # handed out once
    assert await presence.due(now + 61) == [2]


async def test_operators_are_independent(presence):
    await presence.connect(1, "a:1")
    await presence.connect(2, "a:2")
    await presence.disconnect(2, "a:2")
    now = time.time() + GRACE + 1
    assert (await presence.get(1, now)).status == "online"
    assert (await presence.get(2, now)).status == "offline"
    assert sorted(r.operator_id for r in await presence.all()) == [1, 2]


async def test_operators_idle_for_a_day_are_forgotten(presence):
    from hub.backends.presence import FORGET_AFTER
    await presence.connect(1, "a:1")
    await presence.disconnect(1, "a:1")
    later = time.time() + FORGET_AFTER + 10
    assert [r.operator_id for r in await presence.all(later)] == []


async def test_consoles_of_an_instance_that_stopped_stamping_are_gone_from_its_last_stamp():
    """Redis only (several instances): every instance stamps itself alive; the
    consoles of one that stopped (SIGKILLed) count as gone since its last stamp,
    long before their heartbeats would lapse; consoles of no instance (HTTP) do not."""
    import asyncio

    from hub.backends.presence import INSTANCE_TTL

    prefix = f"hubtest:{secrets.token_hex(4)}"
    dying = RedisPresence.from_url(REDIS_URL, prefix, timeout=TIMEOUT, grace=GRACE, instance_id="dying")
    observer = RedisPresence.from_url(REDIS_URL, prefix, timeout=TIMEOUT, grace=GRACE)
    try:
        await dying.redis.ping()
    except Exception as exc:
        await dying.close()
        await observer.close()
        unavailable("Redis", exc)
    try:
        await dying.start()
        while await observer.redis.zscore("{" + f"{prefix}:presence" + "}:instances", "dying") is None:
            await asyncio.sleep(0.02)
        await dying.connect(1, "dying:sid1")
        await dying.connect(2, "http:token2")
        await dying.close()  # stamps no more
        stamped = time.time()
        assert (await observer.get(1, stamped + INSTANCE_TTL - 1)).status == "online"
        later = stamped + max(INSTANCE_TTL, GRACE) + 1  # well before TIMEOUT + GRACE
        rec = await observer.get(1, later)
        assert rec.status == "offline" and rec.consoles == 0
        assert rec.offline_since <= stamped + GRACE
        assert (await observer.get(2, later)).status == "online"  # its heartbeat has not lapsed
        # the dying instance's ids are due for a look when their grace period ends, once
        assert await observer.due(later) == [1]
        assert await observer.due(later) == []
    finally:
        await delete_prefixed(observer.redis, prefix)
        await observer.close()
