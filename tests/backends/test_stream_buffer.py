"""The in-flight buffer of streamed replies (hub/backends/streams/), the same contract in
memory and on Redis: one open stream per dialog, bounded text, appends in order
(also many at once), and a close that exactly one of several concurrent callers wins."""
import asyncio

import pytest

from hub.backends.streams import MemoryStreams, RedisStreams, StreamError


@pytest.fixture(params=["memory", "redis", "cluster"])
async def buffer(request):
    if request.param == "memory":
        yield MemoryStreams()
        return
    b = RedisStreams.from_url(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"), request.getfixturevalue("redis_prefix"))
    yield b
    await b.close_all()


async def reason(awaitable) -> str:
    with pytest.raises(StreamError) as caught:
        await awaitable
    return caught.value.reason


async def test_one_open_stream_per_dialog_bounded_and_in_order(buffer):
    sid = await buffer.open(7, 3)
    assert await reason(buffer.open(7, 3)) == f"busy:{sid}"
    assert (await buffer.append(sid, 3, "Hé", 10)).seq == 1
    assert await reason(buffer.append(sid, 4, "x", 10)) == "missing"  # another assistant's bot
    assert await reason(buffer.append("nope", 3, "x", 10)) == "missing"
    many = await asyncio.gather(*(buffer.append(sid, 3, str(i), 10) for i in range(8)))  # one batch on Redis
    assert [d.seq for d in many] == list(range(2, 10))
    assert await reason(buffer.append(sid, 3, "xy", 10)) == "too_long"  # 10 characters, not bytes
    [state] = await buffer.of_dialog(7)
    assert (state.stream_id, state.seq, state.text, state.dialog_id, state.assistant_id) == (sid, 9, "Hé01234567", 7, 3)


async def test_exactly_one_close_wins_and_leaves_a_tombstone(buffer):
    sid = await buffer.open(8, 3)
    await buffer.append(sid, 3, "partial", 100)
    closed = await asyncio.gather(*(buffer.close(sid, "interrupted") for _ in range(5)))
    winners = [c for c in closed if c is not None]
    assert len(winners) == 1 and (winners[0].text, winners[0].seq) == ("partial", 1)
    assert await reason(buffer.append(sid, 3, "more", 100)) == "closed:interrupted"
    assert await buffer.of_dialog(8) == []
    assert await buffer.open(8, 3) != sid  # the dialog may stream again


async def test_idle_streams_are_found(buffer):
    quiet = await buffer.open(9, 3)
    assert await buffer.idle(60) == []
    await asyncio.sleep(0.05)
    assert quiet in await buffer.idle(0.01)
    await buffer.close(quiet, "timeout")
    assert quiet not in await buffer.idle(0.01)
