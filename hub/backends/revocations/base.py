"""Answers to "is this token revoked?", the same on every instance.

A revocation is remembered for the token's remaining lifetime. Each instance also
keeps the revocations it has seen (its own, and those heard on the bus, which the
revocation service passes to `remember`): its answers stay right for them while
Redis is unreachable. `MemoryRevokedTokens` (memory.py) serves a single instance;
`RedisRevokedTokens` (redis.py) is shared by all instances on one Redis. Both pass
one contract suite (tests/backends/test_revocations.py)."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod


class RevokedTokens(ABC):
    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}  # jti -> until when this instance knows it revoked

    def remember(self, jti: str, ttl: int) -> None:
        """Note on this instance only that `jti` is revoked for `ttl` seconds."""
        now = time.time()
        self._revoked[jti] = now + ttl
        if len(self._revoked) > 10000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    def known(self, jti: str) -> bool:
        """Whether this instance has seen `jti` revoked (no I/O)."""
        return self._revoked.get(jti, 0) > time.time()

    async def close(self) -> None:
        pass

    @abstractmethod
    async def revoke(self, jti: str, ttl: int) -> None:
        """Remember for `ttl` seconds that the token `jti` is revoked."""

    @abstractmethod
    async def is_revoked(self, jti: str) -> bool: ...
