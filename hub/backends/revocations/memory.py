"""Revoked tokens in one process (base.py says what this is)."""
from __future__ import annotations

from hub.backends.revocations.base import RevokedTokens


class MemoryRevokedTokens(RevokedTokens):
    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember(jti, ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self.known(jti)
