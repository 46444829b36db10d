"""The in-flight buffer of streamed replies (hub/backends/streams/), the same contract in
memory and on Redis: one open stream per dialog, bounded text, appends in order
(also many at once), a close that exactly one of several concurrent callers wins, reads
of the text so far, and a bounded idle sweep."""
import asyncio

import pytest

from hub.backends.streams import MemoryStreams, OpenStream, RedisStreams, StreamError


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


# Reads and ends: `get` gives the text so far or why there is none, a close gives the
# final state once, and the idle sweep is bounded.

async def test_get_gives_the_text_so_far_or_why_there_is_none(buffer):
    assert await reason(buffer.get("s-nothing")) == "missing"
    sid = await buffer.open(21, 5)
    assert await buffer.get(sid) == OpenStream(sid, 21, 5, 0, "")
    await buffer.append(sid, 5, "Grüß ", 100)
    await buffer.append(sid, 5, "dich", 100)
    assert await buffer.get(sid) == OpenStream(sid, 21, 5, 2, "Grüß dich")
    await buffer.close(sid, "done")
    assert await reason(buffer.get(sid)) == "closed:done"


async def test_a_close_gives_the_final_state_once(buffer):
    assert await buffer.close("s-nothing", "done") is None
    sid = await buffer.open(22, 5)
    delta = await buffer.append(sid, 5, "abc", 100)
    assert (delta.seq, delta.text, delta.dialog_id) == (1, "abc", 22)  # the delta, not the whole text
    await buffer.append(sid, 5, "def", 100)
    assert await buffer.close(sid, "taken_over") == OpenStream(sid, 22, 5, 2, "abcdef")
    assert await buffer.close(sid, "timeout") is None
    assert await reason(buffer.append(sid, 5, "g", 100)) == "closed:taken_over"  # the first reason stays


async def test_of_dialog_lists_only_its_open_stream(buffer):
    assert await buffer.of_dialog(23) == []
    mine, other = await buffer.open(23, 5), await buffer.open(24, 6)
    await buffer.append(mine, 5, "x", 100)
    assert await buffer.of_dialog(23) == [OpenStream(mine, 23, 5, 1, "x")]
    await buffer.close(other, "done")
    assert await buffer.of_dialog(24) == []


async def test_the_idle_sweep_is_bounded_and_skips_streams_that_move(buffer):
    quiet = [await buffer.open(30 + i, 5) for i in range(3)]
    busy = await buffer.open(40, 5)
    await asyncio.sleep(0.5)
    await buffer.append(busy, 5, "still going", 100)  # a delta makes it not idle
    idle = await buffer.idle(0.25)
    assert set(idle) == set(quiet)
    assert len(await buffer.idle(0.25, limit=2)) == 2


async def test_streams_are_shared_by_every_store_on_one_redis(redis_url, redis_prefix):
    """Two instances on one Redis: a delta on one, the close on the other."""
    one, two = RedisStreams.from_url(redis_url, redis_prefix), RedisStreams.from_url(redis_url, redis_prefix)
    try:
        sid = await one.open(50, 5)
        assert await reason(two.open(50, 5)) == f"busy:{sid}"
        await two.append(sid, 5, "hello", 100)
        assert await one.close(sid, "done") == OpenStream(sid, 50, 5, 1, "hello")
        assert await two.close(sid, "timeout") is None
    finally:
        await one.close_all()
        await two.close_all()
