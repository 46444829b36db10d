"""/dialogs: bot and website-widget conversations, their rooms, messages and the
widget sessions that open them. Assistants are in handlers/assistants.py; the
handoff state machine (and the /operators events it emits) in handlers/handoff.py.

Rooms (docs/handoff.md):
- `dialog:{id}`: the people of a dialog: its visitor (joined on connect), and
  owners/operators who `dialog:join` it. Bots are never in it.
- `bots:{assistant_id}`: every bot socket of an assistant (joined on connect).
  Visitor messages reach it only while no operator holds the dialog.
- `operators` in /operators: every operator/admin console."""
from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from handlers import sync
from handlers.context import Actor, Context
from handlers.errors import Conflict, Forbidden, HubError, NotFound, ValidationFailed
from handlers.registry import namespace, operation, rejoin_check, server_event
from handlers.roles import ANYONE, SERVICE, USER, VISITOR
from handlers.schema import DateTime, Id, Input, Limit, Output, Page, Paging, Text
from storage import dialogs as store
from storage.base import aware

DIALOGS = "/dialogs"
OPERATORS = "/operators"
OPERATORS_ROOM = "operators"


def dialog_room(dialog_id: int) -> str:
    return f"dialog:{dialog_id}"


def bots_room(assistant_id: int) -> str:
    return f"bots:{assistant_id}"


def _connect_rooms(actor: Actor) -> list[str]:
    if actor.role == VISITOR and actor.dialog_id is not None:
        return [dialog_room(actor.dialog_id)]
    if actor.role == SERVICE and actor.assistant_id is not None:
        return [bots_room(actor.assistant_id)]
    return []


namespace(DIALOGS, "Bot and website-widget conversations with handoff to human operators.",
          roles=ANYONE, connect_rooms=_connect_rooms)


# --- models ------------------------------------------------------------------------

class DialogOut(Output):
    dialog_id: int
    assistant_id: int
    visitor_id: str | None
    channel: str
    status: str
    handoff_status: str
    operator_id: int | None
    version: int
    created_at: datetime
    last_message_at: datetime | None
    # Who and where the visitor is, a pending transfer, when it ended (handlers/routing.py).
    visitor_name: str | None = None
    visitor_contact: str | None = None
    origin: str | None = None
    page_url: str | None = None
    transfer_to: int | None = None
    closed_at: datetime | None = None


class DialogMessageOut(Output):
    id: int
    dialog_id: int
    sender: str
    sender_id: int | str | None
    text: str
    created_at: datetime
    client_msg_id: str | None
    # A streamed reply cut short (takeover, or its bot went silent); its
    # client_msg_id is the stream's id (handlers/streams.py).
    interrupted: bool = False


class DialogStatus(Output):
    dialog_id: int
    handoff_status: str
    operator_id: int | None
    version: int


class Nothing(Output):
    pass


ORIGIN = re.compile(r"^https?://[a-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9a-f:]+\](:\d{1,5})?$")


def normalize_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


class ListDialogs(Paging):
    # Lax: these also come from an HTTP query string.
    model_config = ConfigDict(extra="forbid", strict=False)

    user_id: Id | None = Field(None, description="dialogs held by this operator")
    assistant_id: Id | None = None
    status: Literal["open", "closed"] | None = None
    date_from: DateTime | None = None
    date_to: DateTime | None = None
    search: Text(200, min_length=1) | None = None


class DialogRef(Input):
    dialog_id: Id


class DialogMessages(DialogRef):
    limit: Limit = 50
    before_id: Id | None = None


class SendDialogMessage(DialogRef):
    text: Text(min_length=1)
    client_msg_id: Text(100, min_length=1) | None = None


class SetTyping(DialogRef):
    is_typing: bool


# --- server events ---------------------------------------------------------------------

@server_event(DIALOGS, "message:added")
class MessageAdded(Output):
    """A message was added to a dialog."""

    dialog_id: int
    message: DialogMessageOut
    timestamp: datetime


@server_event(DIALOGS, "typing:indicator")
class DialogTyping(Output):
    """Someone in the dialog started or stopped typing. Not stored."""

    dialog_id: int
    sender: str
    is_typing: bool


@server_event(OPERATORS, "message:added")
class OperatorMessageAdded(MessageAdded):
    """A message in a dialog the operator holds."""


# --- views and access ----------------------------------------------------------------

def dialog_out(d: store.Dialog) -> DialogOut:
    return DialogOut(dialog_id=d.id, assistant_id=d.assistant_id, visitor_id=d.visitor_id, channel=d.channel,
                     status=d.status, handoff_status=d.handoff_status, operator_id=d.operator_id,
                     version=d.version, created_at=aware(d.created_at), last_message_at=aware(d.last_message_at),
                     visitor_name=d.visitor_name, visitor_contact=d.visitor_contact, origin=d.origin,
                     page_url=d.page_url, transfer_to=d.transfer_to, closed_at=aware(d.closed_at))


def message_out(m: store.DialogMessage) -> DialogMessageOut:
    sender_id: int | str | None = m.sender_id
    if m.sender != "visitor" and m.sender_id is not None and m.sender_id.isdigit():
        sender_id = int(m.sender_id)
    return DialogMessageOut(id=m.id, dialog_id=m.dialog_id, sender=m.sender, sender_id=sender_id, text=m.text,
                            created_at=aware(m.created_at), client_msg_id=m.client_msg_id,
                            interrupted=bool(m.interrupted))


def status_out(d: store.Dialog) -> DialogStatus:
    return DialogStatus(dialog_id=d.id, handoff_status=d.handoff_status, operator_id=d.operator_id,
                        version=d.version)


async def reachable_dialog(tx, ctx: Context, dialog_id: int) -> store.Dialog:
    """The dialog, if the actor may see it: its visitor, its assistant's bot, the
    assistant's owner, or staff. Visitors and bots are refused before any lookup,
    so they cannot even learn which other dialogs exist."""
    actor = ctx.actor
    if actor.role == VISITOR and dialog_id != actor.dialog_id:
        raise Forbidden("a visitor token reaches only its own dialog")
    if actor.role == SERVICE and actor.assistant_id is None:
        raise Forbidden("this service token is not scoped to an assistant")
    d = await store.get_dialog(tx, dialog_id)
    if d is None:
        raise NotFound("no such dialog")
    if actor.role == SERVICE and d.assistant_id != actor.assistant_id:
        raise Forbidden("this dialog belongs to another assistant")
    if actor.role == USER:
        a = await store.get_assistant(tx, d.assistant_id)
        if a is None or a.owner_id != actor.id:
            raise Forbidden("this dialog belongs to someone else's assistant")
    return d


@rejoin_check(DIALOGS)
async def _may_rejoin(ctx: Context, room: str) -> bool:
    """A recovering socket is back in a dialog's room only if it may still reach it."""
    kind, _, ident = room.partition(":")
    if kind != "dialog" or not ident.isdigit():
        return False
    try:
        async with ctx.transaction() as tx:
            await reachable_dialog(tx, ctx, int(ident))
    except HubError:
        return False
    return True


def _check_length(ctx: Context, text: str) -> None:
    limit = ctx.settings.max_message_chars
    if len(text) > limit:
        raise ValidationFailed(f"text is longer than {limit} characters",
                               details=[{"loc": ["text"], "msg": f"at most {limit} characters",
                                         "type": "string_too_long"}])


def check_bot_may_write(d: store.Dialog) -> None:
    """A bot writes (sends, streams) only in an open dialog no operator holds."""
    if d.status != "open":
        raise Conflict("this dialog is closed")
    if d.handoff_status == "active":
        raise Conflict("an operator holds this dialog: the bot must not talk over them")


def sender_of(ctx: Context) -> tuple[str, str | None]:
    actor = ctx.actor
    if actor.role == VISITOR:
        return "visitor", actor.visitor_id
    if actor.role == SERVICE:
        return "assistant", str(actor.assistant_id)
    return ("operator" if actor.is_staff else "user"), str(actor.id)


def public_visitor_id(secret: str) -> str:
    """The id a visitor is shown as (dialogs, messages, tokens): derived from the
    secret the widget keeps, which is never stored nor shown to anyone else."""
    return "v" + hashlib.sha256(secret.encode()).hexdigest()[:24]


async def widget_session(ctx: Context, assistant_id: int, origin: str | None,
                         visitor_key: str | None, *, app: bool = False,
                         page_url: str | None = None) -> tuple[store.Dialog, str]:
    """For POST /api/widget/sessions: check the page's origin against the
    assistant's (`app`: a native app that proved an app key instead), and resume
    the visitor's open dialog or start one. `visitor_key` is the secret a returning
    widget presents (generated when none was given); returns the dialog and that secret."""
    async with ctx.transaction() as tx:
        a = await store.get_assistant(tx, assistant_id)
        if a is None:
            raise NotFound("no such assistant")
        if not app and (not origin or normalize_origin(origin) not in a.allowed_origins):
            raise Forbidden("this page's origin is not allowed for this assistant",
                            details={"origin": origin})
        visitor_key = visitor_key or secrets.token_urlsafe(24)
        visitor_id = public_visitor_id(visitor_key)
        d = await store.open_dialog_of(tx, a.id, visitor_id)
        if d is None:
            d = await store.create_dialog(tx, assistant_id=a.id, visitor_id=visitor_id,
                                          channel="api" if app else "widget")
        await store.set_visitor(tx, d, origin=None if app else normalize_origin(origin), page_url=page_url)
    return d, visitor_key


# --- operations: dialogs -----------------------------------------------------------------------

def _scope(ctx: Context) -> dict:
    """What the caller may see: a visitor their dialog, a bot its assistant's, an
    owner their assistants', staff everything."""
    actor = ctx.actor
    if actor.role == VISITOR:
        return {"dialog_id": actor.dialog_id}
    if actor.role == SERVICE:
        if actor.assistant_id is None:
            raise Forbidden("this service token is not scoped to an assistant")
        return {"assistant_ids": [actor.assistant_id]}
    if actor.role == USER:
        return {"owner_id": actor.id}
    return {}


@operation(DIALOGS, "dialogs:list", http=("GET", "/api/dialogs"))
async def list_dialogs(ctx: Context, req: ListDialogs) -> Page[DialogOut]:
    """Dialogs the caller may see, newest activity first: staff all, an owner their
    assistants', a bot its assistant's, a visitor their own. `user_id` filters by
    the operator holding the dialog; `search` looks in message texts."""
    async with ctx.transaction() as tx:
        rows, total = await store.list_dialogs(
            tx, **_scope(ctx), operator_id=req.user_id, assistant_id=req.assistant_id, status=req.status,
            date_from=req.date_from, date_to=req.date_to, search=req.search, limit=req.limit, offset=req.offset)
    return Page[DialogOut](total=total, limit=req.limit, offset=req.offset, items=[dialog_out(d) for d in rows])


@operation(DIALOGS, "dialog:get", http=("GET", "/api/dialogs/{dialog_id}"))
async def get_dialog(ctx: Context, req: DialogRef) -> DialogOut:
    """One dialog."""
    async with ctx.transaction() as tx:
        return dialog_out(await reachable_dialog(tx, ctx, req.dialog_id))


@operation(DIALOGS, "dialog:messages", http=("GET", "/api/dialogs/{dialog_id}/messages"))
async def dialog_messages(ctx: Context, req: DialogMessages) -> list[DialogMessageOut]:
    """The newest `limit` messages of a dialog (before `before_id`), oldest first."""
    async with ctx.transaction() as tx:
        await reachable_dialog(tx, ctx, req.dialog_id)
        return [message_out(m) for m in await store.messages(tx, req.dialog_id, req.limit, req.before_id)]


@operation(DIALOGS, "dialog:send", http=("POST", "/api/dialogs/{dialog_id}/messages"))
async def send(ctx: Context, req: SendDialogMessage) -> DialogMessageOut:
    """Add a message; the sender is the token's: visitor, assistant (bot), operator
    or user (owner). A bot may not write while an operator holds the dialog, and
    staff and owners write only in a dialog they hold (accepted or taken over)."""
    _check_length(ctx, req.text)
    sender, sender_id = sender_of(ctx)
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        if req.client_msg_id:
            earlier = await store.by_client_msg_id(tx, d.id, sender, sender_id, req.client_msg_id)
            if earlier is not None:
                return message_out(earlier)
        if sender == "assistant":
            check_bot_may_write(d)
        elif d.status != "open":
            raise Conflict("this dialog is closed")
        if sender in ("operator", "user") and not (d.handoff_status == "active" and d.operator_id == ctx.actor.id):
            raise Conflict("accept or take over the dialog before writing in it",
                           details={"handoff_status": d.handoff_status, "operator_id": d.operator_id})
        try:
            msg = await store.add_message(tx, d, sender=sender, sender_id=sender_id, text=req.text,
                                          client_msg_id=req.client_msg_id)
        except store.DuplicateClientId:
            return message_out(await store.by_client_msg_id(tx, d.id, sender, sender_id, req.client_msg_id))
        out = message_out(msg)
        rooms = [dialog_room(d.id)]
        if sender == "visitor" and d.handoff_status != "active":
            rooms.append(bots_room(d.assistant_id))  # while an operator holds it, the bot hears nothing
        ctx.emit(MessageAdded(dialog_id=d.id, message=out, timestamp=out.created_at), rooms=rooms, skip_origin=True)
        if d.handoff_status == "active" and d.operator_id is not None:
            ctx.emit(OperatorMessageAdded(dialog_id=d.id, message=out, timestamp=out.created_at),
                     users=[d.operator_id])
    return out


@operation(DIALOGS, "dialog:join", http=None)
async def join(ctx: Context, req: DialogRef) -> DialogOut:
    """Receive a dialog's live events on this socket (visitors are in theirs from
    the start; bots hear their assistant's dialogs through their own room)."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
    if ctx.actor.role != SERVICE:
        ctx.join(dialog_room(d.id))
    return dialog_out(d)


@operation(DIALOGS, "dialog:leave", http=None)
async def leave(ctx: Context, req: DialogRef) -> DialogOut:
    """Stop receiving a dialog's live events on this socket."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
    if ctx.actor.role != VISITOR:
        ctx.leave(dialog_room(d.id))
    return dialog_out(d)


@operation(DIALOGS, "dialog:status", http=("GET", "/api/dialogs/{dialog_id}/status"))
async def dialog_status(ctx: Context, req: DialogRef) -> DialogStatus:
    """The dialog's handoff status, operator and version."""
    async with ctx.transaction() as tx:
        return status_out(await reachable_dialog(tx, ctx, req.dialog_id))


@operation(DIALOGS, "typing:set")
async def set_typing(ctx: Context, req: SetTyping) -> Nothing:
    """Tell the dialog's other participants that the caller is (or stopped) typing."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
    sender, _ = sender_of(ctx)
    rooms = [dialog_room(d.id)]
    if sender != "assistant" and d.handoff_status != "active":
        rooms.append(bots_room(d.assistant_id))
    ctx.emit(DialogTyping(dialog_id=d.id, sender=sender, is_typing=req.is_typing), rooms=rooms, skip_origin=True)
    return Nothing()


@operation(DIALOGS, "sync")
async def sync_messages(ctx: Context, req: sync.SyncRequest) -> sync.SyncPage[DialogMessageOut]:
    """Dialog messages written since a cursor in every dialog the caller may see:
    catching up beyond the recovery window."""
    since = sync.decode(req.since)
    async with ctx.transaction() as tx:
        rows = await store.messages_changed_since(tx, **_scope(ctx), moment=since[0], ident=since[1],
                                                  limit=req.limit + 1)
    items = [message_out(m) for m in rows]
    return sync.SyncPage[DialogMessageOut](**sync.page(rows, items, req.limit, req.since))
