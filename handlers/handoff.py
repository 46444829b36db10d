"""The handoff state machine of dialogs (docs/handoff.md): request, accept, take
over, release, cancel, requeue. Used by /dialogs (its operations below) and by
/operators (handlers/operators.py, handlers/routing.py): each transition is one
compare-and-set UPDATE of the dialog row, and every change emits events carrying
the new `version`; the /operators events it emits are defined here too."""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from handlers.context import Context
from handlers.dialogs import (DIALOGS, OPERATORS, OPERATORS_ROOM, DialogOut, DialogRef, DialogStatus, bots_room,
                              dialog_out, dialog_room, reachable_dialog, sender_of, status_out)
from handlers.errors import Conflict, Forbidden
from handlers.registry import operation, server_event
from handlers.roles import ADMIN, ANYONE, OWNERS
from handlers.schema import Output, Text
from storage import dialogs as store
from storage import users as users_store
from storage.base import aware, utcnow

log = logging.getLogger("hub.handoff")


class HandoffRequestedOut(Output):
    dialog_id: int
    handoff_status: str
    queue_position: int | None
    version: int



class RequestHandoff(DialogRef):
    reason: Text(500) | None = None
    request_id: Text(100, min_length=1) | None = None



@server_event(DIALOGS, "handoff:status")
class HandoffStatusChanged(Output):
    """The dialog's handoff state changed; drop events with a lower version than seen."""

    dialog_id: int
    status: str
    operator_id: int | None
    version: int
    reason: str | None = None


@server_event(DIALOGS, "queue:position")
class QueuePosition(Output):
    """The visitor's place in the operators' queue (1 = next)."""

    dialog_id: int
    position: int



# Events of /operators, emitted by the handoff core below.

@server_event(OPERATORS, "handoff:requested")
class HandoffRequested(Output):
    """A dialog is waiting for an operator."""

    dialog_id: int
    assistant_id: int
    reason: str | None
    queue_position: int | None
    version: int


@server_event(OPERATORS, "handoff:accepted")
class HandoffAccepted(Output):
    """An operator took a dialog (accepted from the queue, or took it over)."""

    dialog_id: int
    operator_id: int
    version: int


@server_event(OPERATORS, "handoff:released")
class HandoffReleased(Output):
    """A dialog went back to the bot (released), or to the queue (its operator went offline)."""

    dialog_id: int
    operator_id: int | None
    version: int
    reason: str | None = None


@server_event(OPERATORS, "queue:updated")
class QueueUpdated(Output):
    """The number of dialogs waiting for an operator changed."""

    size: int



# --- the handoff core (shared with /operators) -------------------------------------------

# Run after a dialog joined the queue and the write committed: automatic routing
# (handlers/routing.py) registers itself here.
queued_hooks: list[Callable[[Context, int], Awaitable[None]]] = []

# Run inside the transaction of every change after which the bot must stop talking
# (an operator accepts or takes over, the dialog closes): a streamed bot reply in it
# is cut there (handlers/streams.py).
silence_hooks: list[Callable[[Context, object, store.Dialog], Awaitable[None]]] = []

QUEUE_NOTIFY = 500  # at most this many waiting visitors are told their new place per change


async def emit_queue(ctx: Context, tx, from_place: int | None = 1) -> None:
    """Tell operators the queue's size, and the waiting visitors from `from_place`
    on (the places before a change do not move) their new place."""
    waiting = [] if from_place is None else await store.queue(tx, QUEUE_NOTIFY, from_place - 1)
    for place, w in enumerate(waiting, from_place or 1):
        ctx.emit(QueuePosition(dialog_id=w.id, position=place), rooms=[dialog_room(w.id)])
    ctx.emit(QueueUpdated(size=await store.queue_size(tx)), rooms=[OPERATORS_ROOM])


def emit_status(ctx: Context, d: store.Dialog, reason: str | None = None) -> None:
    """Announce a handoff change (every change goes through here, so it is logged here)."""
    log.info("dialog %d handoff %s, operator %s%s", d.id, d.handoff_status, d.operator_id,
             f", reason {reason}" if reason else "",
             extra={"dialog_id": d.id, "handoff_status": d.handoff_status, "operator_id": d.operator_id,
                    "reason": reason})
    ctx.emit(HandoffStatusChanged(dialog_id=d.id, status=d.handoff_status, operator_id=d.operator_id,
                                  version=d.version, reason=reason),
             rooms=[dialog_room(d.id), bots_room(d.assistant_id)])


async def request_handoff(ctx: Context, tx, d: store.Dialog, reason: str | None,
                          request_id: str | None) -> HandoffRequestedOut:
    """none|resolved|cancelled -> requested. Asking again while waiting (or with a
    request_id already used) answers the current state and changes nothing."""

    async def current() -> HandoffRequestedOut:
        return HandoffRequestedOut(dialog_id=d.id, handoff_status=d.handoff_status,
                                   queue_position=await store.queue_position(tx, d), version=d.version)

    if request_id and await store.request_by_id(tx, d.id, request_id) is not None:
        return await current()
    if d.status != "open":
        raise Conflict("this dialog is closed")
    if d.handoff_status == "requested":
        return await current()
    if d.handoff_status == "active":
        raise Conflict("an operator already holds this dialog")
    kind, who = sender_of(ctx)
    if await store.add_request(tx, d, request_id=request_id, reason=reason, requested_by=f"{kind}:{who}") is None:
        await store.get_dialog(tx, d.id)
        return await current()  # a concurrent retry with the same request_id
    changed = await store.transition(tx, d, expect_version=d.version, expect_status=store.REQUESTABLE,
                                     handoff_status="requested", operator_id=None, handoff_reason=reason,
                                     requested_at=utcnow())
    if not changed:
        if d.handoff_status == "requested":
            return await current()
        raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
    position = await store.queue_position(tx, d)
    emit_status(ctx, d, reason)
    ctx.emit(HandoffRequested(dialog_id=d.id, assistant_id=d.assistant_id, reason=reason,
                              queue_position=position, version=d.version), rooms=[OPERATORS_ROOM])
    await emit_queue(ctx, tx, position)
    return HandoffRequestedOut(dialog_id=d.id, handoff_status="requested", queue_position=position,
                               version=d.version)


async def accept(ctx: Context, tx, d: store.Dialog) -> store.Dialog:
    """requested -> active with the calling operator. Of concurrent accepts on any
    instances exactly one UPDATE matches `handoff_status = 'requested'`."""
    me = ctx.actor.id
    if d.handoff_status == "active" and d.operator_id == me:
        return d
    if d.handoff_status != "requested":
        raise Conflict("this dialog is not waiting for an operator",
                       details={"handoff_status": d.handoff_status, "version": d.version})
    await check_capacity(ctx, tx)
    place = await store.queue_position(tx, d)
    if not await store.transition(tx, d, expect_status=["requested"], handoff_status="active", operator_id=me,
                                  accepted_at=utcnow()):
        raise Conflict("another operator accepted this dialog first",
                       details={"operator_id": d.operator_id, "version": d.version})
    await announce_taken(ctx, tx, d, place)
    return d


async def take_over(ctx: Context, tx, d: store.Dialog) -> store.Dialog:
    """Any state but active (held by someone else) -> active with the caller."""
    me = ctx.actor.id
    if d.handoff_status == "active":
        if d.operator_id == me:
            return d
        raise Conflict("another operator holds this dialog", details={"operator_id": d.operator_id})
    if d.status != "open":
        raise Conflict("this dialog is closed")
    if ctx.actor.is_staff:
        await check_capacity(ctx, tx)
    place = await store.queue_position(tx, d)  # None unless it was waiting
    if not await store.transition(tx, d, expect_version=d.version, handoff_status="active", operator_id=me,
                                  accepted_at=utcnow()):
        raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
    await announce_taken(ctx, tx, d, place)
    return d


async def check_capacity(ctx: Context, tx) -> None:
    me = ctx.actor.id
    try:
        rec = await ctx.presence.get(me) if ctx.presence else None
    except Exception:  # presence unreachable: the default limit still applies
        rec = None
    limit = (rec.max_active_chats if rec and rec.max_active_chats else None) or ctx.settings.max_active_chats
    # Two accepts by one operator at once must not both pass the count.
    await users_store.lock(tx, me)
    held = (await store.count_held(tx, [me]))[me]
    if held >= limit:
        raise Conflict(f"you already hold {held} dialogs (your limit is {limit})",
                       details={"active_chats": held, "max_active_chats": limit})


def console_id(ctx: Context) -> str:
    """One operator console: a socket on this instance, or an HTTP client (by its token)."""
    if ctx.origin:
        return f"{ctx.settings.instance_id}:{ctx.origin}"
    return f"http:{ctx.actor.jti}"


async def announce_taken(ctx: Context, tx, d: store.Dialog, place: int | None) -> None:
    """Announce that `d` is held now; `place`: where it was in the queue, if it was."""
    if ctx.actor.is_staff and ctx.presence is not None:
        # Taking a dialog counts as a heartbeat of the console it came from, so a
        # holder who never heartbeats (HTTP-only) still lapses and gets requeued.
        try:
            await ctx.presence.heartbeat(ctx.actor.id, console_id(ctx))
        except Exception:
            pass  # presence unreachable: the sweep cannot requeue without it anyway
    await store.close_requests(tx, d.id, "accepted", d.operator_id)
    for hook in silence_hooks:
        await hook(ctx, tx, d)
    if place is not None and d.requested_at and ctx.metrics is not None:
        ctx.metrics.handoff_wait.observe((utcnow() - aware(d.requested_at)).total_seconds())
    emit_status(ctx, d)
    ctx.emit(HandoffAccepted(dialog_id=d.id, operator_id=d.operator_id, version=d.version), rooms=[OPERATORS_ROOM])
    if place is not None:
        await emit_queue(ctx, tx, place)


async def release(ctx: Context, tx, d: store.Dialog) -> store.Dialog:
    """active -> resolved: back to the bot. Only the holder (or an admin) may."""
    if d.handoff_status != "active":
        raise Conflict("no operator holds this dialog", details={"handoff_status": d.handoff_status})
    holder = d.operator_id
    if holder != ctx.actor.id and ctx.actor.role != ADMIN:
        raise Forbidden("only the operator holding this dialog can release it")
    if not await store.transition(tx, d, expect_version=d.version, expect_status=["active"],
                                  handoff_status="resolved", operator_id=None):
        raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
    emit_status(ctx, d, "released")
    ctx.emit(HandoffReleased(dialog_id=d.id, operator_id=holder, version=d.version, reason="released"),
             rooms=[OPERATORS_ROOM])
    return d


async def cancel(ctx: Context, tx, d: store.Dialog) -> store.Dialog:
    """requested -> cancelled (the visitor, the bot or the owner changed their mind)."""
    if d.handoff_status != "requested":
        raise Conflict("no handoff is waiting for this dialog", details={"handoff_status": d.handoff_status})
    place = await store.queue_position(tx, d)
    if not await store.transition(tx, d, expect_version=d.version, expect_status=["requested"],
                                  handoff_status="cancelled"):
        raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
    await store.close_requests(tx, d.id, "cancelled")
    emit_status(ctx, d, "cancelled")
    ctx.emit(HandoffReleased(dialog_id=d.id, operator_id=None, version=d.version, reason="cancelled"),
             rooms=[OPERATORS_ROOM])
    await emit_queue(ctx, tx, place)
    return d


async def requeue_operator(ctx: Context, operator_id: int) -> list[int]:
    """Put the dialogs of an operator who went offline back in the queue, keeping
    their original place (requested_at). Per dialog a compare-and-set on its
    version: with several instances sweeping at once, each dialog is requeued
    (and announced) by exactly one of them. Returns the dialogs this call requeued."""
    done, first = [], None
    async with ctx.transaction() as tx:
        for d in await store.held_by(tx, operator_id):
            if not await store.transition(tx, d, expect_version=d.version, expect_status=["active"],
                                          expect_operator=operator_id, handoff_status="requested",
                                          operator_id=None, handoff_reason="operator_offline",
                                          requested_at=d.requested_at or utcnow()):
                continue
            done.append(d.id)
            await store.add_request(tx, d, request_id=None, reason="operator_offline", requested_by="system")
            place = await store.queue_position(tx, d)
            first = place if first is None else min(first, place)
            emit_status(ctx, d, "operator_offline")
            ctx.emit(HandoffReleased(dialog_id=d.id, operator_id=operator_id, version=d.version,
                                     reason="operator_offline"), rooms=[OPERATORS_ROOM])
            ctx.emit(HandoffRequested(dialog_id=d.id, assistant_id=d.assistant_id, reason="operator_offline",
                                      queue_position=place, version=d.version), rooms=[OPERATORS_ROOM])
        if done:
            await emit_queue(ctx, tx, first)
    return done



@operation(DIALOGS, "dialog:takeover", roles=OWNERS, http=("POST", "/api/dialogs/{dialog_id}/takeover"))
async def take_over_dialog(ctx: Context, req: DialogRef) -> DialogOut:
    """Take a dialog from the bot (or from the queue) directly: owners and staff."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        return dialog_out(await take_over(ctx, tx, d))


@operation(DIALOGS, "dialog:release", roles=OWNERS, http=("POST", "/api/dialogs/{dialog_id}/release"))
async def release_dialog(ctx: Context, req: DialogRef) -> DialogOut:
    """Give a dialog the caller holds back to the bot (handoff status `resolved`)."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        return dialog_out(await release(ctx, tx, d))



@operation(DIALOGS, "dialog:handoff", roles=ANYONE,
           http=("POST", "/api/handoff/request"))
async def handoff(ctx: Context, req: RequestHandoff) -> HandoffRequestedOut:
    """Ask for a human: the dialog joins the operators' queue (idempotent with `request_id`)."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        out = await request_handoff(ctx, tx, d, req.reason, req.request_id)
    for hook in queued_hooks:
        await hook(ctx, d.assistant_id)
    return out


@operation(DIALOGS, "dialog:handoff-cancel", http=("POST", "/api/handoff/cancel"))
async def handoff_cancel(ctx: Context, req: DialogRef) -> DialogStatus:
    """Withdraw a waiting handoff request (handoff status `cancelled`)."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        return status_out(await cancel(ctx, tx, d))
