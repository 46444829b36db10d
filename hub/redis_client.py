"""The one way the hub makes a Redis client."""
from __future__ import annotations

import redis.asyncio as aioredis

MAX_CONNECTIONS = 100  # per client, as redis-py's default pool
WAIT_FOR_CONNECTION = 5.0  # seconds a command may wait for a free one


def redis_client(url: str, **kwargs) -> aioredis.Redis:
    """A client whose pool waits for a free connection when all are busy. redis-py's
    default pool raises "Too many connections" past 100 commands at once instead:
    when thousands of clients reconnected together (an instance restarted), most of
    their connects were refused because their session records could not be saved."""
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                    timeout=WAIT_FOR_CONNECTION, **kwargs)
    return aioredis.Redis.from_pool(pool)
