"""More Redis commands at once than a client has connections: they wait their turn
(a mass reconnect saves thousands of session records together)."""
import asyncio

from hub.recovery import RedisSessions
from hub.redis_client import MAX_CONNECTIONS


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(redis_url, redis_prefix):
    sessions = RedisSessions(redis_url, redis_prefix)
    try:
        n = 5 * MAX_CONNECTIONS
        await asyncio.gather(*(sessions.save(f"p{i}", {"i": i}, 30) for i in range(n)))
        got = await asyncio.gather(*(sessions.get(f"p{i}") for i in range(n)))
        assert [g["i"] for g in got] == list(range(n))
    finally:
        await sessions.close()
