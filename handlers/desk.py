"""The operators' desk: internal notes on dialogs, the team's canned replies and
the list of operators with their names and live status (docs/handoff.md)."""
from __future__ import annotations

from datetime import datetime

from pydantic import Field

from handlers.roles import STAFF
from handlers import dialogs as dlg
from handlers.context import Context
from handlers.errors import Conflict, NotFound
from handlers.operators import presence_store
from handlers.registry import operation, server_event
from handlers.schema import Empty, Id, Input, Output, Text
from storage import desk as desk_store
from storage import dialogs as store
from storage import users as users_store
from storage.base import aware



class NoteIn(dlg.DialogRef):
    text: Text(4000, min_length=1)


class NoteOut(Output):
    id: int
    dialog_id: int
    author_id: int | None
    text: str
    created_at: datetime


@server_event(dlg.OPERATORS, "note:added")
class NoteAdded(Output):
    """An operator wrote an internal note on a dialog (staff only; never to the visitor)."""

    dialog_id: int
    note: NoteOut


class CannedIn(Input):
    shortcut: str = Field(min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    text: Text(4000, min_length=1)


class CannedUpdate(Input):
    reply_id: Id
    shortcut: str | None = Field(None, min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    text: Text(4000, min_length=1) | None = None


class CannedRef(Input):
    reply_id: Id


class CannedOut(Output):
    id: int
    shortcut: str
    text: str
    updated_at: datetime


@server_event(dlg.OPERATORS, "canned:changed")
class CannedChanged(Output):
    """The team's canned replies changed (`deleted`: this one is gone)."""

    reply: CannedOut
    deleted: bool = False


class OperatorOut(Output):
    operator_id: int
    name: str
    email: str
    status: str
    active_chats: int
    max_active_chats: int


def note_out(n: desk_store.DialogNote) -> NoteOut:
    return NoteOut(id=n.id, dialog_id=n.dialog_id, author_id=n.author_id, text=n.text,
                   created_at=aware(n.created_at))


def canned_out(r: desk_store.CannedReply) -> CannedOut:
    return CannedOut(id=r.id, shortcut=r.shortcut, text=r.text, updated_at=aware(r.updated_at))


# --- notes ------------------------------------------------------------------------------

@operation(dlg.OPERATORS, "note:add", roles=STAFF, http=("POST", "/api/dialogs/{dialog_id}/notes"))
async def add_note(ctx: Context, req: NoteIn) -> NoteOut:
    """An internal note on a dialog: every operator's console sees it, the visitor
    and the bot never do."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        note = note_out(await desk_store.add_note(tx, d.id, ctx.actor.id, req.text))
        ctx.emit(NoteAdded(dialog_id=d.id, note=note), rooms=[dlg.OPERATORS_ROOM])
    return note


@operation(dlg.OPERATORS, "notes:list", roles=STAFF, http=("GET", "/api/dialogs/{dialog_id}/notes"))
async def list_notes(ctx: Context, req: dlg.DialogRef) -> list[NoteOut]:
    """A dialog's internal notes, oldest first."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
        return [note_out(n) for n in await desk_store.notes(tx, d.id)]


# --- canned replies ------------------------------------------------------------------------

@operation(dlg.OPERATORS, "canned:list", roles=STAFF, http=("GET", "/api/canned-replies"))
async def list_canned(ctx: Context, req: Empty) -> list[CannedOut]:
    """The team's canned replies, by shortcut."""
    async with ctx.transaction() as tx:
        return [canned_out(r) for r in await desk_store.canned_replies(tx)]


async def _save(ctx: Context, tx, reply: desk_store.CannedReply) -> CannedOut:
    try:
        await desk_store.save_canned(tx, reply)
    except desk_store.DuplicateShortcut:
        raise Conflict(f"the shortcut /{reply.shortcut} is taken", details={"shortcut": reply.shortcut}) from None
    out = canned_out(reply)
    ctx.emit(CannedChanged(reply=out), rooms=[dlg.OPERATORS_ROOM])
    return out


@operation(dlg.OPERATORS, "canned:create", roles=STAFF, http=("POST", "/api/canned-replies"))
async def create_canned(ctx: Context, req: CannedIn) -> CannedOut:
    """A canned reply the whole team can insert by typing `/shortcut`."""
    async with ctx.transaction() as tx:
        return await _save(ctx, tx, desk_store.CannedReply(shortcut=req.shortcut, text=req.text,
                                                           created_by=ctx.actor.id))


async def _canned(tx, reply_id: int) -> desk_store.CannedReply:
    reply = await desk_store.get_canned(tx, reply_id)
    if reply is None:
        raise NotFound("no such canned reply")
    return reply


@operation(dlg.OPERATORS, "canned:update", roles=STAFF, http=("PUT", "/api/canned-replies/{reply_id}"))
async def update_canned(ctx: Context, req: CannedUpdate) -> CannedOut:
    """Change a canned reply's shortcut or text."""
    async with ctx.transaction() as tx:
        reply = await _canned(tx, req.reply_id)
        reply.shortcut = req.shortcut or reply.shortcut
        reply.text = req.text or reply.text
        return await _save(ctx, tx, reply)


@operation(dlg.OPERATORS, "canned:delete", roles=STAFF, http=("DELETE", "/api/canned-replies/{reply_id}"))
async def delete_canned(ctx: Context, req: CannedRef) -> CannedOut:
    """Delete a canned reply."""
    async with ctx.transaction() as tx:
        reply = await _canned(tx, req.reply_id)
        out = canned_out(reply)
        await desk_store.delete_canned(tx, reply)
        ctx.emit(CannedChanged(reply=out, deleted=True), rooms=[dlg.OPERATORS_ROOM])
    return out


# --- the team ---------------------------------------------------------------------------------

@operation(dlg.OPERATORS, "operators:list", roles=STAFF, http=("GET", "/api/operators"))
async def list_operators(ctx: Context, req: Empty) -> list[OperatorOut]:
    """Every operator seen in the last day, with their name, live status and load
    (`presence:changed` tells what changes next)."""
    async with presence_store():
        records = {r.operator_id: r for r in await ctx.presence.all()} if ctx.presence else {}
    async with ctx.transaction() as tx:
        people = await users_store.by_ids(tx, records)
        held = await store.count_held(tx, list(records))
    return [OperatorOut(operator_id=op, name=people[op].display_name, email=people[op].email, status=rec.status,
                        active_chats=held.get(op, 0),
                        max_active_chats=rec.max_active_chats or ctx.settings.max_active_chats)
            for op, rec in sorted(records.items()) if op in people]
