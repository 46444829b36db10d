"""Coalescing's contract suite (hub/backends/coalescing/base.py: throttle/due), run on
memory and on Redis."""
import asyncio

import pytest

from hub.backends.coalescing.memory import MemoryCoalescing
from hub.backends.coalescing.redis import RedisCoalescing


@pytest.fixture(params=["memory", "redis", "cluster"])
async def states(request, redis_prefix):
    """Two handles on one coalescing store, as two instances would have."""
    if request.param == "memory":
        state = MemoryCoalescing()
        yield state, state
        return
    redis_url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    a, b = RedisCoalescing.from_url(redis_url, redis_prefix), RedisCoalescing.from_url(redis_url, redis_prefix)
    yield a, b
    await a.close()
    await b.close()


async def test_first_change_acts_at_once_then_coalesces(states):
    a, b = states
    assert await a.throttle("g", "k1", 0.5) is True
    # Within the interval nobody acts again, on either instance: the key is pending.
    assert await a.throttle("g", "k1", 0.5) is False
    assert await b.throttle("g", "k1", 0.5) is False
    assert await a.due("g", 0.5) == [] and await b.due("g", 0.5) == []
    # Other keys and groups are independent.
    assert await b.throttle("g", "k2", 0.5) is True
    assert await b.throttle("other", "k1", 0.5) is True


async def test_pending_change_is_due_once_after_the_interval(states):
    a, b = states
    assert await a.throttle("g", "k", 0.3)
    assert not await b.throttle("g", "k", 0.3)
    await asyncio.sleep(0.4)
    got_a, got_b = await a.due("g", 0.3), await b.due("g", 0.3)
    assert sorted(got_a + got_b) == ["k"]  # exactly one instance is told to act
    # Acting claimed a new interval: a change now is pending again, not acted at once.
    assert not await a.throttle("g", "k", 0.3)
    assert await a.due("g", 0.3) == []
    await asyncio.sleep(0.4)
    assert await b.due("g", 0.3) == ["k"]
    assert await a.due("g", 0.3) == []  # nothing pending any more


async def test_acting_at_once_clears_the_pending_mark(states):
    a, b = states
    assert await a.throttle("g", "k", 0.2)
    assert not await a.throttle("g", "k", 0.2)
    await asyncio.sleep(0.3)
    # The interval passed: the next change acts at once and the older pending mark
    # is covered by it (the caller reads current data after the claim).
    assert await b.throttle("g", "k", 0.2)
    await asyncio.sleep(0.3)
    assert await a.due("g", 0.2) == []


async def test_due_respects_limit(states):
    a, _ = states
    for i in range(5):
        assert await a.throttle("g", f"k{i}", 0.2)
        assert not await a.throttle("g", f"k{i}", 0.2)
    await asyncio.sleep(0.3)
    first = await a.due("g", 0.2, limit=2)
    rest = await a.due("g", 0.2, limit=10)
    assert len(first) == 2 and sorted(first + rest) == [f"k{i}" for i in range(5)]
