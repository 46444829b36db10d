"""The engine owns its background tasks (engine/tasks.py): each is referenced while
it runs, and those still running when the server's app closes are cancelled and
awaited, not left to the event loop."""
from __future__ import annotations

import asyncio

from aiohttp import web

from engine import ProtocolServer
from engine.tasks import Tasks


async def test_a_spawned_task_is_held_until_it_ends():
    tasks = Tasks()
    release = asyncio.Event()
    task = tasks.spawn(release.wait())
    assert len(tasks) == 1
    release.set()
    await task
    assert len(tasks) == 0


async def test_close_cancels_and_awaits_what_still_runs():
    tasks = Tasks()
    ended = []

    async def forever():
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(True)  # runs before close() returns

    task = tasks.spawn(forever())
    await asyncio.sleep(0)  # it starts
    await tasks.close()
    assert task.cancelled() and ended == [True] and len(tasks) == 0
    again = tasks.spawn(asyncio.sleep(0, result="fresh"))  # a server may start again
    assert await again == "fresh"


async def test_close_is_bounded_by_a_task_that_swallows_cancellation(monkeypatch, caplog):
    """Some library code swallows a cancellation once; a task that swallows them
    all must not hold a server's shutdown forever (it did: the app's cleanup waited
    for it). It is cancelled again after each pause and left behind, named, after
    the patience runs out; a well-behaved task beside it still ends."""
    from engine import tasks as tasks_module

    monkeypatch.setattr(tasks_module, "PATIENCE", 0.3)
    monkeypatch.setattr(tasks_module, "PAUSE", 0.05)
    tasks, cancels, stop = Tasks(), [], asyncio.Event()

    async def stubborn():
        while not stop.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(True)

    polite = tasks.spawn(asyncio.sleep(3600))
    task = tasks.spawn(stubborn())
    await asyncio.sleep(0)
    with caplog.at_level("WARNING", logger="engine.tasks"):
        await tasks.close()
    assert polite.cancelled() and not task.done() and len(cancels) >= 2
    assert "stubborn" in caplog.text
    stop.set()
    task.cancel()
    await asyncio.wait([task])


async def test_the_tasks_of_a_server_end_with_its_app():
    sio = ProtocolServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    task = sio.eio.tasks.spawn(asyncio.Event().wait())
    await asyncio.sleep(0)
    await runner.cleanup()
    assert task.cancelled()
    assert len(sio.eio.tasks) == 0
