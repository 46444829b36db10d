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
