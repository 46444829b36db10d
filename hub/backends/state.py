"""`SharedState`: what `hub.state` and `ctx.state` reach today, three separate
backends behind the methods their callers already use: rate limits
(hub/backends/limits/), revoked tokens (hub/backends/revocations/) and coalescing
(hub/backends/coalescing/), plus the shared Redis client's ping.

It holds no state of its own. It stays until its callers (the HTTP routes,
gateways, namespaces, SNS handlers, fan-out and revocation service, Authenticator)
take the backend they use from the hub instead; then it can go."""
from __future__ import annotations

from typing import Awaitable, Callable

from hub.backends.coalescing import Coalescing
from hub.backends.limits import Limits
from hub.backends.revocations import RevokedTokens


class SharedState:
    def __init__(self, limits: Limits, revoked: RevokedTokens, coalescing: Coalescing,
                 ping: Callable[[], Awaitable[None]]) -> None:
        self.limits = limits
        self.revoked = revoked
        self.coalescing = coalescing
        self.ping = ping  # raises if the backends' store is unreachable
        # The hot path (every operation of a user): no hop through a method here.
        self.spend = limits.spend

    async def start(self) -> None:
        await self.limits.start()

    async def close(self) -> None:
        await self.limits.close()
        await self.revoked.close()
        await self.coalescing.close()

    # Rate limits and login back-off (hub/backends/limits/base.py).

    async def hit(self, key: str, limit: int, window: int) -> int:
        return await self.limits.hit(key, limit, window)

    async def hit_many(self, hits: dict[str, int], limit: int, window: int) -> dict[str, int]:
        return await self.limits.hit_many(hits, limit, window)

    async def failed(self, key: str, free: int, cap: int) -> int:
        return await self.limits.failed(key, free, cap)

    async def locked(self, key: str) -> int:
        return await self.limits.locked(key)

    async def forgive(self, key: str) -> None:
        await self.limits.forgive(key)

    # Revoked tokens (hub/backends/revocations/base.py).

    async def revoke(self, jti: str, ttl: int) -> None:
        await self.revoked.revoke(jti, ttl)

    async def is_revoked(self, jti: str) -> bool:
        return await self.revoked.is_revoked(jti)

    def remember_revoked(self, jti: str, ttl: int) -> None:
        self.revoked.remember(jti, ttl)

    def known_revoked(self, jti: str) -> bool:
        return self.revoked.known(jti)

    # Coalescing (hub/backends/coalescing/base.py).

    async def throttle(self, group: str, key: str, interval: float) -> bool:
        return await self.coalescing.throttle(group, key, interval)

    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]:
        return await self.coalescing.due(group, interval, limit)
