"""Teardown steps that cannot hang the suite: each is bounded, and a hang fails with
every task's stack."""
from __future__ import annotations

import asyncio
import gc


def _awaiting(task: asyncio.Task) -> str:
    """Where a task waits: its whole chain of awaits, outermost first (get_stack
    shows only the outermost frame of a suspended coroutine), through async
    generators too (an `async with` of an @asynccontextmanager, a cleanup context)."""
    places, coro = [], task.get_coro()
    while coro is not None:
        frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                 or getattr(coro, "ag_frame", None))
        if frame is not None:
            places.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
               or getattr(coro, "ag_await", None))
        if nxt is not None and type(nxt).__name__ == "async_generator_asend":
            # `anext(gen)` in flight: the object refers to its generator, and only gc tells.
            nxt = next((r for r in gc.get_referents(nxt) if hasattr(r, "ag_frame")), None)
        coro = nxt
    return " -> ".join(places) or "?"


async def bounded(awaitable, what: str, timeout: float = 10):
    """Await a teardown step; if it hangs, fail with where every task waits (the
    hung step's own chain first) instead of sitting until the suite's timeout."""
    step = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([step], timeout=timeout)
    if done:
        return step.result()
    # Taken before cancelling, so the hung step itself is in the picture.
    stacks = [f"the step: {_awaiting(step)}"] + [f"{t.get_name()}: {_awaiting(t)}" for t in asyncio.all_tasks()
                                                 if t is not step and t is not asyncio.current_task()]
    step.cancel()
    raise AssertionError(f"{what} took over {timeout} s; tasks:\n" + "\n".join(stacks))


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
