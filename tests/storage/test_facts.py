"""common/facts.py: the cache of facts that never change, and its shared reads."""
import asyncio

import pytest

from common.facts import Facts


async def test_concurrent_misses_of_one_key_share_one_read():
    facts, reads = Facts(), []
    release = asyncio.Event()

    async def read():
        reads.append(1)
        await release.wait()
        facts.put("k", "value")
        return "value"

    waiters = [asyncio.create_task(facts.load("k", read)) for _ in range(50)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.gather(*waiters) == ["value"] * 50
    assert len(reads) == 1
    assert await facts.load("k", read) == "value" and len(reads) == 1  # cached now


async def test_a_failed_read_fails_every_waiter_and_caches_nothing():
    facts, reads = Facts(), []

    async def read():
        reads.append(1)
        await asyncio.sleep(0.01)
        raise LookupError("no such thread")

    results = await asyncio.gather(*[facts.load("k", read) for _ in range(5)], return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results) and len(reads) == 1
    with pytest.raises(LookupError):
        await facts.load("k", read)
    assert len(reads) == 2  # read again: a miss is not remembered


async def test_a_cancelled_waiter_does_not_cancel_the_read_of_the_others():
    facts = Facts()
    release = asyncio.Event()

    async def read():
        await release.wait()
        facts.put("k", 7)
        return 7

    first = asyncio.create_task(facts.load("k", read))
    second = asyncio.create_task(facts.load("k", read))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    assert await second == 7
    assert first.cancelled()
