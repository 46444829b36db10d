"""The recovery session store (hub/backends/sessions/), one contract in memory and on
Redis: a record comes back as it was saved until its ttl runs out, `touch` extends
the records still there (and revives none), `delete` ends one, and a save replaces."""
import asyncio

import pytest

from hub.backends.sessions import MemorySessions, RedisSessions, SessionRecord


@pytest.fixture(params=["memory", "redis", "cluster"])
async def sessions(request):
    if request.param == "memory":
        yield MemorySessions()
        return
    # redis_prefix: a key prefix of this test's own, deleted afterwards.
    store = RedisSessions.from_url(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"), request.getfixturevalue("redis_prefix"))
    yield store
    await store.close()


def record(sid: str = "s1", rooms: tuple[str, ...] = ("user:1", "thread:é")) -> SessionRecord:
    return SessionRecord("/chat", "user:1:ann:None:None:None", rooms, sid, "1700000000000-0")


async def test_a_record_comes_back_as_saved_and_a_save_replaces(sessions):
    assert await sessions.get("nobody") is None
    await sessions.save("p1", record(), 30)
    await sessions.save("p2", record("s2", ()), 30)
    assert await sessions.get("p1") == record()
    assert await sessions.get("p2") == record("s2", ())
    await sessions.save("p1", record("s3", ("user:1",)), 30)
    assert await sessions.get("p1") == record("s3", ("user:1",))


async def test_a_record_expires_with_its_ttl(sessions):
    await sessions.save("short", record(), 0.05)
    await sessions.save("long", record(), 30)
    await asyncio.sleep(0.3)
    assert await sessions.get("short") is None
    assert await sessions.get("long") == record()


async def test_touch_extends_the_records_still_there_and_revives_none(sessions):
    await sessions.save("kept", record(), 0.2)
    await sessions.save("gone", record(), 0.05)
    await asyncio.sleep(0.1)  # "gone" expired; "kept" has not
    await sessions.touch(["kept", "gone", "never"], 30)
    await asyncio.sleep(0.3)  # past "kept"'s first ttl
    assert await sessions.get("kept") == record()
    assert await sessions.get("gone") is None
    assert await sessions.get("never") is None


async def test_delete_ends_a_record(sessions):
    await sessions.save("p", record(), 30)
    await sessions.save("other", record(), 30)
    await sessions.delete("p")
    await sessions.delete("missing")  # no error
    assert await sessions.get("p") is None
    assert await sessions.get("other") == record()


async def test_records_are_shared_by_every_store_on_one_redis(redis_url, redis_prefix):
    """Two instances on one Redis: a client recovers on either."""
    one, two = RedisSessions.from_url(redis_url, redis_prefix), RedisSessions.from_url(redis_url, redis_prefix)
    elsewhere = RedisSessions.from_url(redis_url, redis_prefix + ":other")
    try:
        await one.save("p", record(), 30)
        assert await two.get("p") == record()
        assert await elsewhere.get("p") is None  # another prefix is another hub
        await two.delete("p")
        assert await one.get("p") is None
    finally:
        for store in (one, two, elsewhere):
            await store.close()
