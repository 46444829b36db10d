"""The rate limits' contract suite (hub/backends/limits/base.py), run on memory and
on Redis: request counters, the login back-off and the operation budget."""
import asyncio

import pytest

from handlers.context import Actor
from handlers.errors import RateLimited
from hub.backends.limits import spend_operation
from hub.backends.limits.memory import MemoryLimits
from hub.backends.limits.redis import RedisLimits


@pytest.fixture(params=["memory", "redis", "cluster"])
async def limits(request):
    if request.param == "memory":
        made = MemoryLimits()
    else:
        made = RedisLimits.from_url(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"), request.getfixturevalue("redis_prefix"))
    yield made
    await made.close()


async def test_rate_limit_window(limits):
    results = [await limits.hit("login:1.2.3.4", 3, 60) for _ in range(5)]
    assert results[:3] == [0, 0, 0] and all(0 < r <= 60 for r in results[3:])
    assert await limits.hit("login:5.6.7.8", 3, 60) == 0


async def test_hit_many_counts_each_key_as_often_as_given(limits):
    assert await limits.hit_many({"a": 2, "b": 1}, 3, 60) == {"a": 0, "b": 0}
    verdict = await limits.hit_many({"a": 2, "b": 1}, 3, 60)
    assert verdict["a"] > 0 and verdict["b"] == 0


async def test_backoff_doubles_and_is_forgiven(limits):
    assert [await limits.failed("acct", 3, 5) for _ in range(6)] == [0, 0, 1, 2, 4, 5]
    assert 4 <= await limits.locked("acct") <= 5 and await limits.locked("other") == 0
    await limits.forgive("acct")
    assert await limits.locked("acct") == 0 and await limits.failed("acct", 3, 5) == 0


class _Settings:
    user_op_limit, user_op_window = 3, 60


async def test_an_actors_operation_budget_is_spent_then_refused(limits):
    await limits.start()
    alice = Actor(id=1, role="user", name="alice")
    for _ in range(3):
        spend_operation(limits, _Settings, alice)
    with pytest.raises(RateLimited) as refused:
        spend_operation(limits, _Settings, alice)
    assert 0 < refused.value.retry_after <= 60
    spend_operation(limits, _Settings, Actor(id=2, role="user", name="bob"))  # a budget per actor


async def test_spending_on_one_instance_is_refused_on_the_other(redis_url, redis_prefix):
    """`spend` counts locally and adds to the shared counters every SPEND_FLUSH
    seconds: a key over the limit there is refused on every instance, also on one
    whose own count is far within it."""
    one, two = RedisLimits.from_url(redis_url, redis_prefix), RedisLimits.from_url(redis_url, redis_prefix)
    await one.start()
    await two.start()
    try:
        assert not any(one.spend("ops:user:7", 200, 60) for _ in range(200))
        spent_here = 0
        for _ in range(100):  # until the flushes (SPEND_FLUSH = 0.5 s) told `two`
            spent_here += 1
            if two.spend("ops:user:7", 200, 60):
                break
            await asyncio.sleep(0.1)
        assert spent_here < 200 and two.spend("ops:user:7", 200, 60) > 0
    finally:
        await one.close()
        await two.close()
