"""The bus between instances and the log of durable events (base.py says what it
does): in memory (memory.py) or on Redis (redis.py)."""
from hub.backends.bus.base import (HOLD, Broker, BrokerUnavailable, Handler, Replay, Route, offset_key, scan,
                                   valid_offset)

__all__ = ["HOLD", "Broker", "BrokerUnavailable", "Handler", "Replay", "Route", "offset_key", "scan",
           "valid_offset"]
