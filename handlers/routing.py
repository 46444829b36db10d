"""How dialogs reach operators and how they end: automatic routing, transfer,
close, transcript and the offline message (docs/handoff.md).

Routing: an assistant's `routing` is `manual` (operators pull from the queue),
`round_robin` (the online operator with room who got a dialog longest ago) or
`least_busy` (the online operator with room holding the fewest). One assignment is
one transaction that row-locks every candidate operator (in id order), counts what
they hold and moves the dialog with a compare-and-set: `handoff:accept` locks its
operator the same way, so whatever races on however many instances, nobody ends
up over their `max_active_chats`. Assignments run right after a dialog joins the
queue and on every instance's sweep (an operator coming online, a dialog freed)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from pydantic import Field

from handlers import handoff
from handlers.roles import USER, OPERATOR, ADMIN, VISITOR, STAFF
from handlers import desk
from handlers import dialogs as dlg
from handlers.context import Context
from handlers.errors import Conflict, Forbidden, NotFound
from handlers.registry import operation, periodic, server_event
from handlers.schema import Id, Output, Text
from storage import desk as desk_store
from storage import dialogs as store
from storage import users as users_store
from storage.base import aware, utcnow

TRANSCRIPT_LIMIT = 2000
NEVER = datetime.min.replace(tzinfo=timezone.utc)
log = logging.getLogger("hub.routing")


# --- models ------------------------------------------------------------------------

class Transfer(dlg.DialogRef):
    operator_id: Id | None = Field(None, description="the operator offered the dialog; none: the queue")


class LeaveMessage(dlg.DialogRef):
    text: Text(4000, min_length=1)
    contact: Text(200, min_length=3) = Field(description="an email address or phone number")
    name: Text(100, min_length=1) | None = None


class Transcript(Output):
    dialog: dlg.DialogOut
    messages: list[dlg.DialogMessageOut]
    notes: list[desk.NoteOut] | None = None  # staff only
    text: str  # the conversation as plain text, one line per message


@server_event(dlg.DIALOGS, "dialog:closed")
class DialogClosed(Output):
    """The dialog ended (status `closed`); a visitor writing again starts a new one."""

    dialog_id: int
    version: int
    closed_by: str


@server_event(dlg.OPERATORS, "dialog:closed")
class OperatorDialogClosed(DialogClosed):
    """A dialog ended: it leaves the queue and its holder's chats."""


@server_event(dlg.OPERATORS, "transfer:offered")
class TransferOffered(Output):
    """The holder offers a dialog to another operator, who accepts (`transfer:accept`)
    or declines; unanswered it returns after HUB_TRANSFER_TIMEOUT seconds."""

    dialog_id: int
    from_operator_id: int
    to_operator_id: int
    version: int


@server_event(dlg.OPERATORS, "transfer:returned")
class TransferReturned(Output):
    """An offered transfer was declined or timed out: the holder keeps the dialog."""

    dialog_id: int
    operator_id: int | None  # the holder (none: the dialog went back to the queue meanwhile)
    to_operator_id: int
    version: int
    reason: str  # declined | timeout


# --- automatic routing -----------------------------------------------------------------

async def online_operators(ctx: Context) -> dict[int, int]:
    """Online operators and their limits."""
    if ctx.presence is None:
        return {}
    try:
        records = await ctx.presence.all()
    except Exception:  # presence unreachable: nobody is assigned automatically meanwhile
        return {}
    return {r.operator_id: r.max_active_chats or ctx.settings.max_active_chats
            for r in records if r.status == "online"}


def _choose(routing: str, free: list[int], held: dict[int, int], turns: dict[int, datetime]) -> int:
    if routing == "least_busy":
        return min(free, key=lambda op: (held[op], turns.get(op, NEVER), op))
    return min(free, key=lambda op: (turns.get(op, NEVER), op))  # round robin: longest without one


async def route_waiting(ctx: Context, assistant_id: int | None = None) -> int:
    """Assign what waits for assistants with automatic routing (oldest first) to
    online operators with room; how many were assigned. One transaction holding
    every candidate's row lock: concurrent routings and accepts wait for it and
    then count what it assigned."""
    limits = await online_operators(ctx)
    if not limits:
        return 0
    async with ctx.transaction() as tx:
        routed = await desk_store.routed_assistants(tx, assistant_id)
        if not routed or not await desk_store.waiting_of(tx, list(routed), limit=1):
            return 0  # the usual case of a sweep: no lock taken
        candidates = await desk_store.lock_operators(tx, sorted(limits))
        held = await store.count_held(tx, candidates)
        turns = {op: aware(at) for op, at in (await desk_store.last_turns(tx, candidates)).items()}
        done = 0
        for d in await desk_store.waiting_of(tx, list(routed)):
            free = [op for op in candidates if held[op] < limits[op]]
            if not free:
                break
            pick = _choose(routed[d.assistant_id], free, held, turns)
            place = await store.queue_position(tx, d)
            if not await store.transition(tx, d, expect_version=d.version, expect_status=["requested"],
                                          handoff_status="active", operator_id=pick, accepted_at=utcnow()):
                continue  # accepted by hand meanwhile
            held[pick] += 1
            turns[pick] = utcnow()
            await desk_store.record_turn(tx, pick)
            await handoff.announce_taken(ctx, tx, d, place)
            done += 1
    return done


async def route_after(ctx: Context, assistant_id: int) -> None:
    """Route right after a committed change put a dialog in the queue. A failure here
    must not turn that change's answer into an error: the sweep routes it instead."""
    try:
        await route_waiting(ctx, assistant_id)
    except Exception:
        log.exception("routing the queue of assistant %s failed; the sweep retries", assistant_id)


handoff.queued_hooks.append(route_after)


@periodic("routing:sweep", every=1.0)
async def routing_sweep(ctx: Context) -> None:
    """Assign waiting dialogs (operators came online or got room) and return
    transfers nobody answered."""
    await route_waiting(ctx)
    before = utcnow() - timedelta(seconds=ctx.settings.transfer_timeout)
    async with ctx.transaction() as tx:
        expired = await desk_store.expired_transfers(tx, before)
        for d in expired:
            await _return_transfer(ctx, tx, d, "timeout")


# --- transfer ---------------------------------------------------------------------------

async def _return_transfer(ctx: Context, tx, d: store.Dialog, reason: str) -> None:
    target = d.transfer_to
    if target is None or not await store.transition(tx, d, expect_version=d.version, transfer_to=None,
                                                    transfer_at=None):
        return
    ctx.emit(TransferReturned(dialog_id=d.id, operator_id=d.operator_id, to_operator_id=target,
                              version=d.version, reason=reason), rooms=[dlg.OPERATORS_ROOM])


async def _requeued(ctx: Context, tx, d: store.Dialog, holder: int | None) -> None:
    """Announce a dialog its holder handed back to the queue (keeping its place)."""
    await store.add_request(tx, d, request_id=None, reason="transferred", requested_by=f"operator:{holder}")
    place = await store.queue_position(tx, d)
    handoff.emit_status(ctx, d, "transferred")
    ctx.emit(handoff.HandoffReleased(dialog_id=d.id, operator_id=holder, version=d.version, reason="transferred"),
             rooms=[dlg.OPERATORS_ROOM])
    ctx.emit(handoff.HandoffRequested(dialog_id=d.id, assistant_id=d.assistant_id, reason="transferred",
                                  queue_position=place, version=d.version), rooms=[dlg.OPERATORS_ROOM])
    await handoff.emit_queue(ctx, tx, place)


@operation(dlg.DIALOGS, "dialog:transfer", roles=STAFF, http=("POST", "/api/dialogs/{dialog_id}/transfer"))
async def transfer(ctx: Context, req: Transfer) -> dlg.DialogOut:
    """Hand a dialog one holds to another operator (who must accept it, or it
    returns), or without `operator_id` back to the queue."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        if d.handoff_status != "active" or (d.operator_id != ctx.actor.id and ctx.actor.role != ADMIN):
            raise Conflict("only the operator holding this dialog can transfer it",
                           details={"handoff_status": d.handoff_status, "operator_id": d.operator_id})
        holder = d.operator_id
        if req.operator_id is None:
            if not await store.transition(tx, d, expect_version=d.version, expect_status=["active"],
                                          handoff_status="requested", operator_id=None, transfer_to=None,
                                          transfer_at=None, handoff_reason="transferred",
                                          requested_at=d.requested_at or utcnow()):
                raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
            await _requeued(ctx, tx, d, holder)
            assistant_id = d.assistant_id
        else:
            if req.operator_id == holder:
                raise Conflict("you already hold this dialog")
            target = await users_store.get(tx, req.operator_id)
            if target is None or target.role not in STAFF:
                raise NotFound("no such operator")
            if not await store.transition(tx, d, expect_version=d.version, expect_status=["active"],
                                          transfer_to=target.id, transfer_at=utcnow()):
                raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
            ctx.emit(TransferOffered(dialog_id=d.id, from_operator_id=holder, to_operator_id=target.id,
                                     version=d.version), rooms=[dlg.OPERATORS_ROOM])
            assistant_id = None
        out = dlg.dialog_out(d)
    if assistant_id is not None:
        await route_after(ctx, assistant_id)
    return out


@operation(dlg.OPERATORS, "transfer:accept", roles=STAFF, http=("POST", "/api/handoff/transfer/{dialog_id}/accept"))
async def transfer_accept(ctx: Context, req: dlg.DialogRef) -> dlg.DialogOut:
    """Take a dialog another operator offered you (within your max_active_chats)."""
    me = ctx.actor.id
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        if d.transfer_to != me or d.handoff_status != "active":
            raise Conflict("this dialog is not offered to you", details={"version": d.version})
        await handoff.check_capacity(ctx, tx)
        holder = d.operator_id
        if not await store.transition(tx, d, expect_version=d.version, expect_status=["active"], operator_id=me,
                                      transfer_to=None, transfer_at=None, accepted_at=utcnow()):
            raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
        handoff.emit_status(ctx, d, "transferred")
        ctx.emit(handoff.HandoffAccepted(dialog_id=d.id, operator_id=me, version=d.version), rooms=[dlg.OPERATORS_ROOM])
        ctx.emit(handoff.HandoffReleased(dialog_id=d.id, operator_id=holder, version=d.version, reason="transferred"),
                 users=[holder] if holder else [])
        return dlg.dialog_out(d)


@operation(dlg.OPERATORS, "transfer:decline", roles=STAFF,
           http=("POST", "/api/handoff/transfer/{dialog_id}/decline"))
async def transfer_decline(ctx: Context, req: dlg.DialogRef) -> dlg.DialogOut:
    """Decline a dialog offered to you: it stays with the operator who offered it."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        if d.transfer_to != ctx.actor.id:
            raise Conflict("this dialog is not offered to you", details={"version": d.version})
        await _return_transfer(ctx, tx, d, "declined")
        return dlg.dialog_out(d)


# --- close and transcript ------------------------------------------------------------------

@operation(dlg.DIALOGS, "dialog:close", http=("POST", "/api/dialogs/{dialog_id}/close"))
async def close(ctx: Context, req: dlg.DialogRef) -> dlg.DialogOut:
    """End a dialog (status `closed`): its visitor, its bot, its owner or staff. A
    waiting handoff is cancelled, a held one resolved; the visitor's next message
    starts a new dialog."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        if d.status == "closed":
            return dlg.dialog_out(d)
        if ctx.actor.role in (OPERATOR, USER) and d.handoff_status == "active" and d.operator_id != ctx.actor.id:
            raise Forbidden("another operator holds this dialog")
        before = d.handoff_status
        place = await store.queue_position(tx, d)
        ended = {"requested": "cancelled", "active": "resolved"}.get(before, before)
        if not await store.transition(tx, d, expect_version=d.version, status="closed", closed_at=utcnow(),
                                      handoff_status=ended, transfer_to=None, transfer_at=None):
            raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
        await store.close_requests(tx, d.id, "cancelled")
        for hook in handoff.silence_hooks:
            await hook(ctx, tx, d)
        by = CLOSERS.get(ctx.actor.role, "operator")
        handoff.emit_status(ctx, d, "closed")
        ctx.emit(DialogClosed(dialog_id=d.id, version=d.version, closed_by=by),
                 rooms=[dlg.dialog_room(d.id), dlg.bots_room(d.assistant_id)])
        ctx.emit(OperatorDialogClosed(dialog_id=d.id, version=d.version, closed_by=by), rooms=[dlg.OPERATORS_ROOM])
        if place is not None:
            await handoff.emit_queue(ctx, tx, place)
        return dlg.dialog_out(d)


CLOSERS = {"visitor": "visitor", "service": "assistant", "user": "user"}


def _line(m: store.DialogMessage) -> str:
    return f"[{aware(m.created_at):%Y-%m-%d %H:%M:%S}] {m.sender}: {m.text}"


@operation(dlg.DIALOGS, "dialog:transcript", http=("GET", "/api/dialogs/{dialog_id}/transcript"))
async def transcript(ctx: Context, req: dlg.DialogRef) -> Transcript:
    """The whole conversation (bot, visitor and operators; at most 2,000 messages),
    also as plain text; staff also get the internal notes."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        rows = await store.messages(tx, d.id, TRANSCRIPT_LIMIT)
        notes = await desk_store.notes(tx, d.id) if ctx.actor.is_staff else None
    return Transcript(dialog=dlg.dialog_out(d), messages=[dlg.message_out(m) for m in rows],
                      notes=None if notes is None else [desk.note_out(n) for n in notes],
                      text="\n".join(_line(m) for m in rows))


# --- when nobody is there --------------------------------------------------------------

@operation(dlg.DIALOGS, "dialog:leave-message", roles={VISITOR}, http=("POST", "/api/dialogs/{dialog_id}/offline-message"))
async def leave_message(ctx: Context, req: LeaveMessage) -> handoff.HandoffRequestedOut:
    """The offline form: the visitor leaves a message and a contact. The dialog
    joins the queue (reason `offline_message`), so the team sees it next."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        if d.status != "open":
            raise Conflict("this dialog is closed")
        if d.handoff_status == "active":
            raise Conflict("an operator holds this dialog: write to them")
        await store.set_visitor(tx, d, visitor_name=req.name, visitor_contact=req.contact)
        msg = await store.add_message(tx, d, sender="visitor", sender_id=ctx.actor.visitor_id, text=req.text,
                                      client_msg_id=None)
        out = dlg.message_out(msg)
        ctx.emit(dlg.MessageAdded(dialog_id=d.id, message=out, timestamp=out.created_at),
                 rooms=[dlg.dialog_room(d.id)], skip_origin=True)
        if d.handoff_status == "requested":
            answer = await _now_offline_message(ctx, tx, d)
        else:
            answer = await handoff.request_handoff(ctx, tx, d, "offline_message", None)
    await route_after(ctx, d.assistant_id)
    return answer


async def _now_offline_message(ctx: Context, tx, d: store.Dialog) -> handoff.HandoffRequestedOut:
    """A dialog already waiting (the bot handed it over) becomes an offline message:
    same place, new reason and version, announced so the consoles show who wrote."""
    if not await store.transition(tx, d, expect_version=d.version, expect_status=["requested"],
                                  handoff_reason="offline_message"):
        raise Conflict("the dialog changed meanwhile; try again", details={"version": d.version})
    place = await store.queue_position(tx, d)
    handoff.emit_status(ctx, d, "offline_message")
    ctx.emit(handoff.HandoffRequested(dialog_id=d.id, assistant_id=d.assistant_id, reason="offline_message",
                                  queue_position=place, version=d.version), rooms=[dlg.OPERATORS_ROOM])
    return handoff.HandoffRequestedOut(dialog_id=d.id, handoff_status="requested", queue_position=place,
                                   version=d.version)
