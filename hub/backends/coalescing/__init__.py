"""Coalescing ("at most once per interval, trailing change never lost") the same on
every instance (base.py says how): in memory (memory.py) or on Redis (redis.py)."""
from hub.backends.coalescing.base import Coalescing

__all__ = ["Coalescing"]
