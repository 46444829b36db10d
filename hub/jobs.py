"""Runs the registry's periodic jobs for the app's lifetime."""
from __future__ import annotations

import asyncio
import logging

from handlers.context import Actor, Context
from handlers.registry import REGISTRY, Job

log = logging.getLogger("hub.jobs")

SYSTEM = Actor(role="system", name="system")


async def _run_forever(hub, job: Job) -> None:
    """Never dies silently: a failing run is logged and retried with back-off."""
    failures = 0
    every = job.interval(hub.settings)
    while True:
        ctx = hub.context(SYSTEM)
        try:
            await job.func(ctx)
            await hub.fanout.deliver(ctx.events)
            failures = 0
            await asyncio.sleep(every)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            log.exception("job %s failed (%d in a row)", job.name, failures)
            await asyncio.sleep(min(every * 2 ** failures, 30))


async def run_jobs(hub):
    """cleanup_ctx: start every job, and cancel and await them on shutdown."""
    tasks = [asyncio.create_task(_run_forever(hub, job), name=f"job:{job.name}")
             for job in REGISTRY.jobs.values()]
    yield
    hub.stopping.step(f"stopping {len(tasks)} periodic jobs")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
