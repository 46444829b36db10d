"""Periodic jobs (hub/jobs.py) end with the app, even one whose run swallowed the
cancellation that was meant to stop it (as library code racing its own cancellation
does, once): a shutdown is not held up by it."""
from __future__ import annotations

import asyncio

from aiohttp import web

from handlers.registry import REGISTRY, Job
from hub.app import create_app
from tests.support.servers import make_settings


async def test_a_job_that_swallows_its_cancellation_still_ends_with_the_app(tmp_path):
    running, swallowed = asyncio.Event(), []

    async def stubborn(ctx) -> None:
        running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)  # and the job's loop goes on, to run again soon

    REGISTRY.jobs["test.stubborn"] = Job(name="test.stubborn", func=stubborn, every=0.01)
    try:
        runner = web.AppRunner(create_app(make_settings(tmp_path)), shutdown_timeout=1)
        await runner.setup()
        await asyncio.wait_for(running.wait(), 10)
        # Before the jobs were owned by engine.Tasks this waited for ever.
        await asyncio.wait_for(runner.cleanup(), 10)
    finally:
        del REGISTRY.jobs["test.stubborn"]
    assert swallowed == [True]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "job:test.stubborn"]
