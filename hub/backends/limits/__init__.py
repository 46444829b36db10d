"""Rate limits, login back-off and operation budgets every instance agrees on
(base.py says how): in memory (memory.py) or on Redis (redis.py)."""
from hub.backends.limits.base import Limits, spend_operation

__all__ = ["Limits", "spend_operation"]
