"""Two brokers on one bus, as two instances would have (the bus tests')."""
from hub.backends.bus.memory import MemoryBroker, MemoryBus
from hub.backends.bus.redis import RedisBroker


def broker_pair(request, kind: str) -> list:
    """In memory, on the run's Redis or on its cluster (keys of the test's own prefix);
    the caller stops them."""
    if kind == "memory":
        bus = MemoryBus()
        return [MemoryBroker(bus), MemoryBroker(bus)]
    url = request.getfixturevalue("redis_url" if kind == "redis" else "cluster_url")
    prefix = request.getfixturevalue("redis_prefix")
    return [RedisBroker.from_url(url, prefix), RedisBroker.from_url(url, prefix)]
