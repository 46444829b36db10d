"""The revoked tokens' contract suite (hub/backends/revocations/base.py), run on
memory and on Redis."""
import pytest

from hub.backends.revocations.memory import MemoryRevokedTokens
from hub.backends.revocations.redis import RedisRevokedTokens


@pytest.fixture(params=["memory", "redis", "cluster"])
async def revoked(request):
    if request.param == "memory":
        made = MemoryRevokedTokens()
    else:
        made = RedisRevokedTokens.from_url(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"),
                                           request.getfixturevalue("redis_prefix"))
    yield made
    await made.close()


async def test_revocation(revoked):
    assert not await revoked.is_revoked("j1")
    await revoked.revoke("j1", 60)
    assert await revoked.is_revoked("j1") and not await revoked.is_revoked("j2")
    assert revoked.known("j1")  # and this instance knows without asking


async def test_a_revocation_heard_of_is_answered_without_the_store(revoked):
    revoked.remember("heard", 60)
    assert revoked.known("heard") and await revoked.is_revoked("heard")
    revoked.remember("expired", -1)
    assert not revoked.known("expired") and not await revoked.is_revoked("expired")


async def test_revocation_is_shared_between_instances(redis_url, redis_prefix):
    one = RedisRevokedTokens.from_url(redis_url, redis_prefix)
    two = RedisRevokedTokens.from_url(redis_url, redis_prefix)
    try:
        await one.revoke("shared", 60)
        assert await two.is_revoked("shared") and not two.known("shared")
    finally:
        await one.close()
        await two.close()


async def test_an_unreachable_store_answers_from_what_this_instance_heard(private_redis):
    revoked = RedisRevokedTokens.from_url(private_redis.url, "gone")
    try:
        await revoked.revoke("mine", 60)
        private_redis.stop()
        assert await revoked.is_revoked("mine") and not await revoked.is_revoked("other")
    finally:
        await revoked.close()
