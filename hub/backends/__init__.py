"""What instances share, each behind one interface with an in-memory and a Redis
implementation: the bus and event log (bus/), presence (presence/), rate limits
(limits/), revoked tokens (revocations/), coalescing (coalescing/), recovery
session records (sessions/) and the buffer of streamed replies (streams/).

`build_backends(settings)` picks the implementation from HUB_REDIS_URL's scheme:
unset, memory (a single instance); redis://, rediss:// or unix://, Redis, every
backend on ONE client (one connection pool, hub/backends/redis.py), the bus adding
the two connections of its own that pub/sub needs; redis+cluster://host:port,...,
a Redis Cluster: the same backends on a RedisCluster client (hash-tagged keys,
sharded pub/sub for the bus: docs/scaling.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import redis.asyncio as aioredis

from hub.backends.bus import Broker
from hub.backends.bus.memory import MemoryBroker
from hub.backends.bus.redis import RedisBroker
from hub.backends.coalescing import Coalescing
from hub.backends.coalescing.memory import MemoryCoalescing
from hub.backends.coalescing.redis import RedisCoalescing
from hub.backends.limits import Limits
from hub.backends.limits.memory import MemoryLimits
from hub.backends.limits.redis import RedisLimits
from hub.backends.presence import FORGET_AFTER, Presence
from hub.backends.presence.memory import MemoryPresence
from hub.backends.presence.redis import RedisPresence
from hub.backends.redis import CLUSTER_SCHEME, cluster_client, shared_client
from hub.backends.revocations import RevokedTokens
from hub.backends.revocations.memory import MemoryRevokedTokens
from hub.backends.revocations.redis import RedisRevokedTokens
from hub.backends.sessions import MemorySessions, RedisSessions, Sessions
from hub.backends.streams import MemoryStreams, RedisStreams, Streams
from hub.settings import Settings


class UnsupportedBackend(ValueError):
    """HUB_REDIS_URL names a store the hub has no backends for."""


@dataclass
class Backends:
    """One instance's backends. Each is started and stopped by what uses it; `close`
    then closes the Redis client they shared."""

    bus: Broker
    presence: Presence  # operators' consoles
    user_presence: Presence  # users' sockets
    limits: Limits
    revoked: RevokedTokens
    coalescing: Coalescing
    sessions: Sessions  # recovery session records
    streams: Streams  # streamed bot replies so far
    redis: aioredis.Redis | None = None  # the shared client (Redis backends only)

    async def ping(self) -> None:
        """Raise if the shared store is unreachable."""
        if self.redis is not None:
            await self.redis.ping()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def _memory(settings: Settings, retention: float) -> Backends:
    return Backends(
        bus=MemoryBroker(retention=retention),
        presence=MemoryPresence(timeout=settings.presence_timeout, grace=settings.presence_grace),
        user_presence=MemoryPresence(timeout=FORGET_AFTER, grace=settings.presence_grace),
        limits=MemoryLimits(), revoked=MemoryRevokedTokens(), coalescing=MemoryCoalescing(),
        sessions=MemorySessions(), streams=MemoryStreams())


def _redis(settings: Settings, retention: float) -> Backends:
    return _on(shared_client(settings.redis_url), settings, retention)


def _cluster(settings: Settings, retention: float) -> Backends:
    return _on(cluster_client(settings.redis_url), settings, retention)


def _on(redis, settings: Settings, retention: float) -> Backends:
    """The Redis backends on one shared client, plain or cluster: the same code."""
    prefix = settings.redis_prefix
    return Backends(
        bus=RedisBroker(redis, prefix, retention=retention, per_room=settings.bus_per_room),
        presence=RedisPresence(redis, prefix, timeout=settings.presence_timeout, grace=settings.presence_grace,
                               instance_id=settings.instance_id),
        # Users have no heartbeat: a socket counts until it disconnects or its instance dies.
        user_presence=RedisPresence(redis, f"{prefix}:users", timeout=FORGET_AFTER,
                                    grace=settings.presence_grace, instance_id=settings.instance_id),
        limits=RedisLimits(redis, prefix), revoked=RedisRevokedTokens(redis, prefix),
        coalescing=RedisCoalescing(redis, prefix), sessions=RedisSessions(redis, prefix),
        streams=RedisStreams(redis, prefix), redis=redis)


# URL scheme -> the backends for it.
BUILDERS: dict[str, Callable[[Settings, float], Backends]] = {
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    CLUSTER_SCHEME: _cluster,
}
NOT_YET: dict[str, str] = {}  # scheme -> why not yet


def build_backends(settings: Settings) -> Backends:
    # The log keeps events a little longer than a session is kept for recovery, so
    # whatever a recoverable session missed is still there.
    retention = settings.recovery_window + 30
    if not settings.redis_url:
        return _memory(settings, retention)
    scheme = settings.redis_url.partition("://")[0].lower()
    if scheme in NOT_YET:
        raise UnsupportedBackend(NOT_YET[scheme])
    builder = BUILDERS.get(scheme)
    if builder is None:
        raise UnsupportedBackend(f"no backends for {scheme}:// URLs (HUB_REDIS_URL takes "
                                 f"{', '.join(s + '://' for s in BUILDERS)})")
    return builder(settings, retention)
