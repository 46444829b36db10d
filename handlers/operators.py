"""/operators: live handoff consoles — presence, the queue, accept and release.

Presence comes from `ctx.presence` (hub/backends/presence/, shared by every instance);
a periodic sweep announces presence changes once (whichever instance sees them
first claims the announcement) and requeues the dialogs of operators who went
offline (each dialog claimed in the database by a compare-and-set)."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Literal

from pydantic import Field

from handlers import handoff
from handlers.roles import ADMIN, SERVICE, STAFF, CONSOLES
from handlers import autodetect
from handlers import dialogs as dlg
from handlers.context import Actor, Context
from handlers.errors import Forbidden, HubError, NotFound, Unavailable
from handlers.registry import namespace, operation, periodic, server_event
from handlers.schema import Empty, Id, Input, Output, Text, exactly_one
from storage import desk as desk_store
from storage import dialogs as store
from storage.base import aware

OPERATORS = dlg.OPERATORS
log = logging.getLogger("hub.operators")


@asynccontextmanager
async def presence_store():
    """Presence lives in Redis when several instances run: if it is unreachable,
    answer `unavailable` instead of an internal error."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        log.warning("presence store unreachable: %s", exc)
        raise Unavailable("operator presence is unavailable right now; retry shortly") from exc


def _rooms(actor: Actor) -> list[str]:
    return [dlg.OPERATORS_ROOM] if actor.is_staff else []


console_id = handoff.console_id


async def _on_connect(ctx: Context) -> None:
    if ctx.actor.is_staff and ctx.presence is not None:
        try:
            await ctx.presence.connect(ctx.actor.id, console_id(ctx))
            await announce(ctx, ctx.actor.id)
        except Exception as exc:  # the console still works; its next heartbeat registers it
            log.warning("presence of operator %s not recorded on connect: %s", ctx.actor.id, exc)


async def _on_disconnect(ctx: Context) -> None:
    if ctx.actor.is_staff and ctx.presence is not None:
        # No event now: the grace period lets a reloading console come back first.
        try:
            await ctx.presence.disconnect(ctx.actor.id, console_id(ctx))
        except Exception as exc:  # the console's heartbeats lapse instead
            log.warning("presence of operator %s not recorded on disconnect: %s", ctx.actor.id, exc)


namespace(OPERATORS, "Live handoff consoles of operators: presence, queue, accept, release.",
          roles=CONSOLES, connect_rooms=_rooms,
          on_connect=_on_connect, on_disconnect=_on_disconnect)


# --- models ------------------------------------------------------------------------

class PresenceOut(Output):
    operator_id: int
    status: str
    last_seen: datetime | None
    active_chats: int
    max_active_chats: int
    heartbeat_interval: float  # seconds: how often a console should heartbeat (timeout / 3)


class QueueItem(Output):
    dialog_id: int
    assistant_id: int
    reason: str | None
    requested_at: datetime | None
    position: int
    # What the console shows of the waiting visitor (handlers/desk.py's additions).
    visitor_label: str | None = None
    origin: str | None = None
    page_url: str | None = None
    preview: str | None = None


class HandoffStatusOut(Output):
    dialog_id: int
    status: str
    operator_id: int | None
    version: int
    queue_position: int | None


class AutoDetectOut(Output):
    should_handoff: bool
    score: float
    reasons: list[str]


class UpdatePresence(Input):
    status: Literal["online", "away", "offline"]
    max_active_chats: int | None = Field(None, ge=1, le=100)


class PresenceQuery(Input):
    operator_id: Id | None = None


class AutoDetect(Input):
    dialog_id: Id | None = None
    text: Text(4000, min_length=1) | None = None

    _one_of = exactly_one("dialog_id", "text")


@server_event(OPERATORS, "presence:changed")
class PresenceChanged(Output):
    """An operator's presence changed (seen across all their consoles and instances)."""

    operator_id: int
    status: str


# --- presence --------------------------------------------------------------------------

async def announce(ctx: Context, operator_id: int) -> None:
    """Emit presence:changed if the operator's status differs from the last one
    announced; exactly one caller (on any instance) wins each change."""
    rec = await ctx.presence.get(operator_id)
    if rec is not None and await ctx.presence.claim_change(operator_id, rec.status):
        ctx.emit(PresenceChanged(operator_id=operator_id, status=rec.status), rooms=[dlg.OPERATORS_ROOM])


async def _presence_out(ctx: Context, tx, operator_ids: list[int]) -> list[PresenceOut]:
    held = await store.count_held(tx, operator_ids)
    out = []
    for op in operator_ids:
        rec = await ctx.presence.get(op)
        out.append(PresenceOut(
            operator_id=op, status=rec.status if rec else "offline",
            last_seen=datetime.fromtimestamp(rec.last_seen, timezone.utc) if rec and rec.last_seen else None,
            active_chats=held.get(op, 0),
            max_active_chats=(rec.max_active_chats if rec and rec.max_active_chats else ctx.settings.max_active_chats),
            heartbeat_interval=round(ctx.settings.presence_timeout / 3, 3),
        ))
    return out


@operation(OPERATORS, "presence:heartbeat", roles=STAFF, http=("POST", "/api/operator/presence/heartbeat"))
async def heartbeat(ctx: Context, req: Empty) -> PresenceOut:
    """Keep this console alive (send more often than HUB_PRESENCE_TIMEOUT)."""
    me = ctx.actor.id
    async with presence_store():
        await ctx.presence.heartbeat(me, console_id(ctx))
        await announce(ctx, me)
        async with ctx.transaction() as tx:
            return (await _presence_out(ctx, tx, [me]))[0]


@operation(OPERATORS, "presence:update", roles=STAFF, http=("POST", "/api/operator/presence/update"))
async def update(ctx: Context, req: UpdatePresence) -> PresenceOut:
    """Choose online, away or offline (and the most dialogs one holds at once).
    Going offline hands the caller's dialogs back to the queue after HUB_REQUEUE_DELAY."""
    me = ctx.actor.id
    async with presence_store():
        await ctx.presence.heartbeat(me, console_id(ctx))
        await ctx.presence.update(me, status=req.status, max_active_chats=req.max_active_chats)
        await announce(ctx, me)
        async with ctx.transaction() as tx:
            return (await _presence_out(ctx, tx, [me]))[0]


@operation(OPERATORS, "presence:status", roles=STAFF, http=("GET", "/api/operator/presence/status"))
async def status(ctx: Context, req: PresenceQuery) -> PresenceOut | list[PresenceOut]:
    """One operator's presence (default: the caller's); for an admin without
    operator_id, every operator seen recently."""
    async with presence_store(), ctx.transaction() as tx:
        if req.operator_id is None and ctx.actor.role == ADMIN:
            ids = sorted(r.operator_id for r in await ctx.presence.all())
            return await _presence_out(ctx, tx, ids)
        return (await _presence_out(ctx, tx, [req.operator_id or ctx.actor.id]))[0]


# --- chats and the queue -------------------------------------------------------------------------

@operation(OPERATORS, "chats:active", roles=STAFF, http=("GET", "/api/operator/active-chats"))
async def active_chats(ctx: Context, req: Empty) -> list[dlg.DialogOut]:
    """The dialogs the caller holds."""
    async with ctx.transaction() as tx:
        return [dlg.dialog_out(d) for d in await store.held_by(tx, ctx.actor.id)]


@operation(OPERATORS, "handoff:queue", roles=STAFF, http=("GET", "/api/handoff/queue"))
async def handoff_queue(ctx: Context, req: Empty) -> list[QueueItem]:
    """Dialogs waiting for an operator, longest waiting first (at most 500)."""
    async with ctx.transaction() as tx:
        waiting = await store.queue(tx)
        previews = await desk_store.first_visitor_texts(tx, [d.id for d in waiting])
    return [QueueItem(dialog_id=d.id, assistant_id=d.assistant_id, reason=d.handoff_reason,
                      requested_at=aware(d.requested_at), position=i, visitor_label=visitor_label(d),
                      origin=d.origin, page_url=d.page_url, preview=(previews.get(d.id) or "")[:200] or None)
            for i, d in enumerate(waiting, 1)]


def visitor_label(d: store.Dialog) -> str:
    """The name the visitor gave, else a short stable label from their public id."""
    return d.visitor_name or f"Visitor {(d.visitor_id or '')[1:7] or d.id}"


async def _dialog(tx, dialog_id: int) -> store.Dialog:
    d = await store.get_dialog(tx, dialog_id)
    if d is None:
        raise NotFound("no such dialog")
    return d


@operation(OPERATORS, "handoff:accept", roles=STAFF, http=("POST", "/api/handoff/accept/{dialog_id}"))
async def handoff_accept(ctx: Context, req: dlg.DialogRef) -> dlg.DialogOut:
    """Take a waiting dialog. Of operators racing for one dialog, on any instances,
    exactly one succeeds; the others get `conflict`."""
    async with ctx.transaction() as tx:
        d = await _dialog(tx, req.dialog_id)
        return dlg.dialog_out(await handoff.accept(ctx, tx, d))


@operation(OPERATORS, "handoff:release", roles=STAFF, http=("POST", "/api/handoff/release/{dialog_id}"))
async def handoff_release(ctx: Context, req: dlg.DialogRef) -> dlg.DialogOut:
    """Give a held dialog back to the bot (handoff status `resolved`)."""
    async with ctx.transaction() as tx:
        d = await _dialog(tx, req.dialog_id)
        return dlg.dialog_out(await handoff.release(ctx, tx, d))


@operation(OPERATORS, "handoff:status", roles=STAFF, http=("GET", "/api/handoff/status/{dialog_id}"))
async def handoff_status(ctx: Context, req: dlg.DialogRef) -> HandoffStatusOut:
    """A dialog's handoff status, operator, version and place in the queue."""
    async with ctx.transaction() as tx:
        d = await _dialog(tx, req.dialog_id)
        return HandoffStatusOut(dialog_id=d.id, status=d.handoff_status, operator_id=d.operator_id,
                                version=d.version, queue_position=await store.queue_position(tx, d))


@operation(OPERATORS, "handoff:auto-detect", roles=CONSOLES,
           http=("POST", "/api/handoff/auto-detect"))
async def auto_detect(ctx: Context, req: AutoDetect) -> AutoDetectOut:
    """Score whether a visitor needs a human (docs/handoff.md): a text, or a dialog's
    recent messages (bots: only their assistant's dialogs)."""
    threshold = ctx.settings.handoff_threshold
    if req.text is not None:
        verdict = autodetect.score_text(req.text, threshold)
    else:
        if ctx.actor.role == SERVICE and ctx.actor.assistant_id is None:
            raise Forbidden("this service token is not scoped to an assistant")
        async with ctx.transaction() as tx:
            d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
            rows = await store.messages(tx, d.id, 2 * autodetect.RECENT + 4)
        verdict = autodetect.score_dialog([(m.sender, m.text) for m in rows], threshold)
    return AutoDetectOut(should_handoff=verdict.should_handoff, score=verdict.score, reasons=verdict.reasons)


# --- the sweep ------------------------------------------------------------------------------

@periodic("operators:presence-sweep", every=lambda s: max(0.2, min(2.0, s.presence_grace / 4)))
async def presence_sweep(ctx: Context) -> None:
    """Announce presence changes nobody triggered (grace periods ending, heartbeats
    lapsing), and requeue the dialogs of operators offline for HUB_REQUEUE_DELAY."""
    if ctx.presence is None:
        return
    now = time.time()
    for rec in await ctx.presence.all(now):
        if await ctx.presence.claim_change(rec.operator_id, rec.status):
            ctx.emit(PresenceChanged(operator_id=rec.operator_id, status=rec.status), rooms=[dlg.OPERATORS_ROOM])
    async with ctx.transaction() as tx:
        holding = await store.holders(tx)
    for op in holding:
        rec = await ctx.presence.get(op, now)
        # A holder the presence store does not know (an owner who took a dialog over, or
        # a record forgotten after a day without activity) is left alone.
        if rec is not None and rec.status == "offline" and now >= rec.offline_since + ctx.settings.requeue_delay:
            await handoff.requeue_operator(ctx, op)
