"""More Redis commands at once than a client has connections: they wait their turn
(a mass reconnect saves thousands of session records together)."""
import asyncio

from hub.backends.sessions import RedisSessions, SessionRecord
from hub.backends.redis import MAX_CONNECTIONS


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(redis_url, redis_prefix):
    sessions = RedisSessions.from_url(redis_url, redis_prefix)
    try:
        n = 5 * MAX_CONNECTIONS
        await asyncio.gather(*(sessions.save(f"p{i}", SessionRecord("/chat", "who", (), f"s{i}", "0-0"), 30) for i in range(n)))
        got = await asyncio.gather(*(sessions.get(f"p{i}") for i in range(n)))
        assert [g.sid for g in got] == [f"s{i}" for i in range(n)]
    finally:
        await sessions.close()
