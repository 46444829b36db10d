"""The one way the hub makes a Redis client, and the client its backends share.

An instance has ONE client (one connection pool) for every Redis backend
(`shared_client`, made by hub/backends/__init__.py). The bus also keeps two
connections of its own outside the pool, made from the pool's settings: one
subscribed to the bus channel (a subscribed connection can do nothing else) and
one for its PUBLISH batches (hub/backends/bus/redis.py)."""
from __future__ import annotations

import socket

import redis.asyncio as aioredis

MAX_CONNECTIONS = 100  # per client, as redis-py's default pool
WAIT_FOR_CONNECTION = 5.0  # seconds a command may wait for a free one
# A connection that went quiet is probed by the kernel after 5 s, then every
# second, and dropped after 3 probes unanswered (a Redis host that vanished);
# commands are bounded by each client's socket_timeout besides.
KEEPALIVE = {opt: value for opt, value in ((getattr(socket, "TCP_KEEPIDLE", None), 5),
                                           (getattr(socket, "TCP_KEEPINTVL", None), 1),
                                           (getattr(socket, "TCP_KEEPCNT", None), 3)) if opt is not None}
# A pooled connection idle this long is PINGed before its next command.
HEALTH_CHECK_INTERVAL = 10
# Seconds a command (or a connect) of the shared client may take: a Redis that
# stopped answering fails the backends' commands (each falls back as it says)
# instead of holding their callers.
COMMAND_TIMEOUT = 2


def redis_client(url: str, **kwargs) -> aioredis.Redis:
    """A client whose pool waits for a free connection when all are busy. redis-py's
    default pool raises "Too many connections" past 100 commands at once instead:
    when thousands of clients reconnected together (an instance restarted), most of
    their connects were refused because their session records could not be saved."""
    kwargs = {"socket_keepalive": True, "socket_keepalive_options": KEEPALIVE,
              "health_check_interval": HEALTH_CHECK_INTERVAL, **kwargs}
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                    timeout=WAIT_FOR_CONNECTION, **kwargs)
    return aioredis.Redis.from_pool(pool)


def shared_client(url: str) -> aioredis.Redis:
    """The client an instance's Redis backends share (or one backend made on its
    own, by its `from_url`)."""
    return redis_client(url, socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=COMMAND_TIMEOUT)
