"""Who is online, shared by every instance (base.py says how): in memory (memory.py)
or on Redis (redis.py)."""
from hub.backends.presence.base import FORGET_AFTER, INSTANCE_TTL, STATUSES, Presence, PresenceRecord

__all__ = ["FORGET_AFTER", "INSTANCE_TTL", "STATUSES", "Presence", "PresenceRecord"]
