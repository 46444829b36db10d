"""/chat: users' presence, across devices and instances (hub/backends/presence/, the same
machinery as operators' consoles, under its own keys).

Each /chat socket of a user is a console: the user is online while one is there,
and for the grace period after the last went away (a reload or a switch of device
does not flap). An instance that dies takes its sockets with it (instance stamps).
Changes are not announced as they happen: each connect and disconnect asks for a
look at the user (at the end of the grace period for a disconnect), and every
`user_presence_batch` seconds one instance takes the looks due, claims each change
once and announces it to the users who share a thread with them. A user may be
invisible: others see them offline."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from pydantic import Field

from handlers.chat import CHAT
from handlers.context import Context
from handlers.handoff import console_id
from handlers.errors import Unavailable
from handlers.registry import connection_hooks, operation, periodic, server_event
from handlers.schema import Id, Input, Output
from storage import chat as store

log = logging.getLogger("hub.user_presence")
INVISIBLE = "invisible"  # what the user chose; others see "offline"
MAX_QUERY = 200


class UserPresence(Output):
    user_id: int
    status: str  # online | offline (invisible: only to the user themself)
    last_seen: datetime | None


@server_event(CHAT, "presence:changed")
class PresenceChanged(UserPresence):
    """A user one shares a thread with came online or went offline."""


class PresenceQuery(Input):
    user_ids: list[Id] = Field(min_length=1, max_length=MAX_QUERY)


class PresenceSet(Input):
    invisible: bool


def _seen(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp, timezone.utc) if stamp else None


def _shown(user_id: int, record, *, own: bool = False) -> UserPresence:
    """What others see of a record (the user themself also sees that they are invisible)."""
    if record is None:
        return UserPresence(user_id=user_id, status="offline", last_seen=None)
    if record.chosen == INVISIBLE:  # not even when they were last seen
        status = INVISIBLE if own and record.status != "offline" else "offline"
        return UserPresence(user_id=user_id, status=status, last_seen=None)
    return UserPresence(user_id=user_id, status=record.status, last_seen=_seen(record.last_seen))


async def _on_connect(ctx: Context) -> None:
    if ctx.actor.id is None or ctx.user_presence is None:
        return
    try:
        await ctx.user_presence.connect(ctx.actor.id, console_id(ctx))
        await ctx.user_presence.look_at([ctx.actor.id], time.time())
    except Exception as exc:  # chat still works; the user just looks offline
        log.warning("presence of user %s not recorded on connect: %s", ctx.actor.id, exc)


async def _on_disconnect(ctx: Context) -> None:
    if ctx.actor.id is None or ctx.user_presence is None:
        return
    presence = ctx.user_presence
    try:
        await presence.disconnect(ctx.actor.id, console_id(ctx))
        await presence.look_at([ctx.actor.id], time.time() + presence.grace)
    except Exception as exc:
        log.warning("presence of user %s not recorded on disconnect: %s", ctx.actor.id, exc)


connection_hooks(CHAT, on_connect=_on_connect, on_disconnect=_on_disconnect)


async def _records(ctx: Context, user_ids: list[int]):
    try:
        return await ctx.user_presence.many(user_ids)
    except Exception as exc:
        log.warning("user presence unreachable: %s", exc)
        raise Unavailable("presence is unavailable right now; retry shortly") from exc


@operation(CHAT, "presence:query")
async def query(ctx: Context, req: PresenceQuery) -> list[UserPresence]:
    """The presence of users one shares a thread with (staff: anyone); other users
    are left out of the answer."""
    wanted = list(dict.fromkeys(req.user_ids))
    if not ctx.actor.is_staff:
        async with ctx.db.transaction() as tx:
            allowed = (await store.partners(tx, [ctx.actor.id], among=wanted))[ctx.actor.id] | {ctx.actor.id}
        wanted = [u for u in wanted if u in allowed]
    records = await _records(ctx, wanted)
    return [_shown(u, r, own=u == ctx.actor.id) for u, r in zip(wanted, records)]


@operation(CHAT, "presence:set")
async def set_presence(ctx: Context, req: PresenceSet) -> UserPresence:
    """Become invisible (others see you offline) or visible again."""
    presence = ctx.user_presence
    try:
        await presence.update(ctx.actor.id, status=INVISIBLE if req.invisible else "online")
        await presence.look_at([ctx.actor.id], time.time())
    except Exception as exc:
        log.warning("user presence unreachable: %s", exc)
        raise Unavailable("presence is unavailable right now; retry shortly") from exc
    return _shown(ctx.actor.id, (await _records(ctx, [ctx.actor.id]))[0], own=True)


@periodic("user-presence", every=lambda settings: settings.user_presence_batch)
async def announce(ctx: Context) -> None:
    """Announce the changes of the users whose look is due (each taken by one instance)."""
    presence = ctx.user_presence
    ids = await presence.due()
    if not ids:
        return
    changed = []
    for user_id, record in zip(ids, await presence.many(ids)):
        shown = _shown(user_id, record)
        if await presence.claim_change(user_id, shown.status):
            changed.append(shown)
    if not changed:
        return
    async with ctx.db.transaction() as tx:  # a read: the events are volatile
        partners = await store.partners(tx, [p.user_id for p in changed])
    for shown in changed:
        ctx.emit(PresenceChanged(**shown.model_dump()), users=sorted(partners[shown.user_id]))
