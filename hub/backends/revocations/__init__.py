"""Which tokens are revoked, the same on every instance (base.py says how): in
memory (memory.py) or on Redis (redis.py)."""
from hub.backends.revocations.base import RevokedTokens

__all__ = ["RevokedTokens"]
