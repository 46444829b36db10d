"""Which assistants have a bot connected right now, on any instance, so that the
widget can tell a visitor nobody is there to answer (docs/handoff.md).

Each instance counts its own bot sockets per assistant and keeps one row per
assistant it has bots of in `assistant_bots`, written when the first bot connects,
refreshed by a periodic job and deleted when the last one leaves; a row not
refreshed for STALE seconds (its instance died) does not count."""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta

from handlers.roles import SERVICE
from handlers import dialogs as dlg
from handlers.context import Context
from handlers.registry import REGISTRY, periodic
from storage import desk as desk_store
from storage.base import utcnow

REFRESH = 10.0
STALE = timedelta(seconds=3 * REFRESH)
FORGET = timedelta(hours=1)
# (instance id, assistant id) -> bot sockets of this process (tests run several instances in one)
_local: Counter[tuple[str, int]] = Counter()


def _key(ctx: Context) -> tuple[str, int] | None:
    actor = ctx.actor
    if actor.role == SERVICE and actor.assistant_id is not None:
        return ctx.settings.instance_id, actor.assistant_id
    return None


async def _on_connect(ctx: Context) -> None:
    key = _key(ctx)
    if key is not None:
        _local[key] += 1
        async with ctx.transaction() as tx:
            await desk_store.bot_seen(tx, key[1], key[0])


async def _on_disconnect(ctx: Context) -> None:
    key = _key(ctx)
    if key is None:
        return
    _local[key] -= 1
    if _local[key] <= 0:
        del _local[key]
        async with ctx.transaction() as tx:
            await desk_store.bot_gone(tx, key[1], key[0])


REGISTRY.namespaces[dlg.DIALOGS] = replace(REGISTRY.namespaces[dlg.DIALOGS], on_connect=_on_connect,
                                           on_disconnect=_on_disconnect)


@periodic("bots:refresh", every=REFRESH)
async def refresh(ctx: Context) -> None:
    """Tell the other instances this one still has its bots; drop long-dead rows."""
    mine = [aid for (instance, aid) in _local if instance == ctx.settings.instance_id]
    async with ctx.transaction() as tx:
        for assistant_id in mine:
            await desk_store.bot_seen(tx, assistant_id, ctx.settings.instance_id)
        await desk_store.forget_bots_before(tx, utcnow() - FORGET)  # rows of instances that died


async def bot_online(tx, assistant_id: int) -> bool:
    return await desk_store.bots_seen_since(tx, assistant_id, utcnow() - STALE)
