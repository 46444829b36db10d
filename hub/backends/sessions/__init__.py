"""Recovery session records: in memory (one instance) or on Redis (shared)."""
from hub.backends.sessions.base import SessionRecord, Sessions
from hub.backends.sessions.memory import MemorySessions
from hub.backends.sessions.redis import RedisSessions

__all__ = ["MemorySessions", "RedisSessions", "SessionRecord", "Sessions"]
