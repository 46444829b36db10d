"""The one way the hub makes a Redis client, and the client its backends share.

An instance has ONE client (one connection pool) for every Redis backend
(`shared_client`, made by hub/backends/__init__.py). The bus also keeps two
connections of its own outside the pool, made from the pool's settings: one
subscribed to the bus channel (a subscribed connection can do nothing else) and
one for its PUBLISH batches (hub/backends/bus/redis.py).

On a Redis Cluster (`redis+cluster://host:port,host:port`) the shared client is a
redis-py RedisCluster, which routes each command to the node owning its keys' hash
slot; the backends are the same code on both, their keys built with `tagged` so
that every multi-key command or script stays in one slot (docs/scaling.md)."""
from __future__ import annotations

import socket
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

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


CLUSTER_SCHEME = "redis+cluster"


def tagged(prefix: str, name: str) -> str:
    """The hash tag of a group of keys that commands or scripts use together: Redis
    Cluster puts every key whose name holds the same `{...}` in one slot, so a
    script or MULTI over them runs on one node. Each backend tags per the unit
    its commands span (the bus: all of it; limits: one key's counters), so groups
    still spread over the cluster's nodes. Plain Redis ignores the braces."""
    return "{" + f"{prefix}:{name}" + "}"


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict]:
    """`redis+cluster://[user:password@]host:port[,host:port...][?ssl=true]` -> the
    startup nodes and the client options (credentials, TLS). Any one reachable
    node is enough: the client learns the others from it."""
    parts = urlsplit(url)
    if parts.scheme.lower() != CLUSTER_SCHEME:
        raise ValueError(f"not a {CLUSTER_SCHEME}:// URL")
    auth, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for hostport in hosts.split(","):
        host, sep, port = hostport.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{CLUSTER_SCHEME}:// takes host:port[,host:port...], got {hostport!r}")
        nodes.append((host.strip("[]"), int(port)))
    options: dict = {}
    if auth:
        user, sep, password = auth.partition(":")
        if sep:
            options["password"] = unquote(password)
            if user:
                options["username"] = unquote(user)
        else:
            options["password"] = unquote(user)
    query = parse_qs(parts.query)
    if query.get("ssl", ["false"])[0].lower() in ("1", "true", "yes"):
        options["ssl"] = True
    return nodes, options


def cluster_client(url: str) -> RedisCluster:
    """The shared client on a Redis Cluster: a connection pool per node, the same
    timeouts and keepalive as `shared_client`. It follows MOVED/ASK redirections
    and, after a failover, rereads the slots from the nodes still up."""
    nodes, options = cluster_nodes(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=MAX_CONNECTIONS, socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=COMMAND_TIMEOUT, socket_keepalive=True,
        socket_keepalive_options=KEEPALIVE, health_check_interval=HEALTH_CHECK_INTERVAL, **options)


def client_for(url: str):
    """`cluster_client` for redis+cluster:// URLs, else `shared_client`."""
    if url.partition("://")[0].lower() == CLUSTER_SCHEME:
        return cluster_client(url)
    return shared_client(url)


class OnRedis:
    """How a Redis backend holds its client. Built for an instance
    (hub/backends/__init__.py) it uses the instance's shared client, which the
    builder closes; built by `from_url` (tools, tests) it has a client of its own,
    which `release_client` closes when the backend closes."""

    redis: Any
    _owns_redis = False

    @classmethod
    def from_url(cls, url: str, *args, **kwargs) -> Self:
        backend = cls(client_for(url), *args, **kwargs)
        backend._owns_redis = True
        return backend

    async def release_client(self) -> None:
        if self._owns_redis:
            await self.redis.aclose()
