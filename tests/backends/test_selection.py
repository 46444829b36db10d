"""Backends are chosen by HUB_REDIS_URL's scheme, and the Redis ones share one client."""
import dataclasses

import pytest

from hub.backends import UnsupportedBackend, build_backends
from hub.backends.bus.memory import MemoryBroker
from hub.backends.bus.redis import RedisBroker
from hub.backends.limits.memory import MemoryLimits
from hub.backends.limits.redis import RedisLimits
from tests.support.servers import make_settings


def test_without_a_url_every_backend_is_in_memory(tmp_path):
    backends = build_backends(make_settings(tmp_path))
    assert isinstance(backends.bus, MemoryBroker) and isinstance(backends.limits, MemoryLimits)
    assert backends.redis is None


async def test_redis_backends_share_one_client(tmp_path, any_redis_url, redis_prefix):
    """On plain Redis and on a cluster alike (redis+cluster://)."""
    backends = build_backends(make_settings(tmp_path, redis_url=any_redis_url, redis_prefix=redis_prefix))
    try:
        assert isinstance(backends.bus, RedisBroker) and isinstance(backends.limits, RedisLimits)
        held = [b.redis for b in (backends.bus, backends.presence, backends.user_presence, backends.limits,
                                  backends.revoked, backends.coalescing)]
        assert all(client is backends.redis for client in held)
        await backends.ping()
        await backends.revoked.revoke("jti-1", 60)
        assert await backends.redis.exists(f"{redis_prefix}:revoked:jti-1")
    finally:
        await backends.close()


@pytest.mark.parametrize("url, refused", [("memcached://h:11211", "no backends for memcached://")])
def test_other_schemes_are_refused_clearly(tmp_path, url, refused):
    settings = dataclasses.replace(make_settings(tmp_path), redis_url=url)
    with pytest.raises(UnsupportedBackend, match=refused):
        build_backends(settings)
