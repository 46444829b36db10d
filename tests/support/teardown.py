"""Teardown steps that cannot hang the suite: each is bounded, and a hang fails with
every task's stack."""
from __future__ import annotations

import asyncio


async def bounded(awaitable, what: str, timeout: float = 10):
    """Await a teardown step; if it hangs, fail with every task's stack instead of
    sitting until the suite's timeout (a teardown once hung here, unexplained)."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        stacks = []
        for task in asyncio.all_tasks():
            frames = task.get_stack(limit=8)
            stacks.append(f"{task.get_name()}: " + " <- ".join(
                f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno} {f.f_code.co_name}" for f in frames))
        raise AssertionError(f"{what} took over {timeout} s; tasks:\n" + "\n".join(stacks)) from None


async def all_bounded(awaitables, what: str, *, timeout: float = 10, ignore=()) -> None:
    """Run every teardown step, one after the other, even if one hangs or fails;
    then fail with the first that did. Errors of the `ignore` kinds do not count
    (a hang always does)."""
    failed = None
    for awaitable in awaitables:
        try:
            await bounded(awaitable, what, timeout)
        except AssertionError as exc:  # hung (bounded's own error), before `ignore` may swallow it
            failed = failed or exc
        except ignore:
            pass
        except Exception as exc:
            failed = failed or exc
    if failed:
        raise failed
