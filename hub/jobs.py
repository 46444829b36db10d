"""Runs the registry's periodic jobs for the app's lifetime."""
from __future__ import annotations

import asyncio
import logging

from engine import Tasks
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
    """cleanup_ctx: start every job, and cancel and await them on shutdown. A
    cancellation that lands inside a run can be swallowed by what the run awaits; the
    job's loop would then go on forever (a frequent job was seen to hang a shutdown),
    so the jobs are owned by `Tasks`, which cancels again until each has ended."""
    tasks = Tasks()
    for job in REGISTRY.jobs.values():
        tasks.spawn(_run_forever(hub, job)).set_name(f"job:{job.name}")
    yield
    hub.stopping.step(f"stopping {len(tasks)} periodic jobs")
    await tasks.close()
