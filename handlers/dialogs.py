"""/dialogs: assistants, bot and widget conversations, and the handoff state machine.

Rooms (docs/handoff.md):
- `dialog:{id}`: the people of a dialog: its visitor (joined on connect), and
  owners/operators who `dialog:join` it. Bots are never in it.
- `bots:{assistant_id}`: every bot socket of an assistant (joined on connect).
  Visitor messages reach it only while no operator holds the dialog.
- `operators` in /operators: every operator/admin console.

The handoff core (request, accept, takeover, release, requeue) lives here and is
used by /operators too: each transition is one compare-and-set UPDATE of the
dialog row, and every change emits events carrying the new `version`."""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import datetime
from typing import Awaitable, Callable, Literal

from pydantic import ConfigDict, Field, field_validator

from handlers.roles import USER, ADMIN, SERVICE, VISITOR, ACCOUNTS, ANYONE
from handlers import sync
from handlers.context import Actor, Context
from handlers.errors import Conflict, Forbidden, HubError, NotFound, ValidationFailed
from handlers.registry import namespace, operation, rejoin_check, server_event
from handlers.schema import DateTime, Id, Input, Limit, Offset, Output, Page, Text
from storage import dialogs as store
from storage import users as users_store
from storage.base import aware, utcnow

log = logging.getLogger("hub.handoff")

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

class AssistantOut(Output):
    id: int
    name: str
    allowed_origins: list[str]
    owner_id: int
    system_prompt: str | None
    created_at: datetime


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


class HandoffRequestedOut(Output):
    dialog_id: int
    handoff_status: str
    queue_position: int | None
    version: int


class AssistantDeleted(Output):
    assistant_id: int


class Nothing(Output):
    pass


_ORIGIN = re.compile(r"^https?://[a-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9a-f:]+\](:\d{1,5})?$")


def normalize_origin(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def _origins(value: list[str]) -> list[str]:
    out = []
    for o in value:
        norm = normalize_origin(o)
        if not _ORIGIN.match(norm):
            raise ValueError(f"{o!r} is not an origin like https://example.com[:port]")
        out.append(norm)
    return list(dict.fromkeys(out))


class CreateAssistant(Input):
    name: Text(200, min_length=1)
    allowed_origins: list[Text(200)] = Field(default_factory=list, max_length=50)
    system_prompt: Text(20000) | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _check(cls, value):
        return _origins(value)


class AssistantRef(Input):
    assistant_id: Id


class UpdateAssistant(AssistantRef):
    name: Text(200, min_length=1) | None = None
    allowed_origins: list[Text(200)] | None = Field(None, max_length=50)
    system_prompt: Text(20000) | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _check(cls, value):
        return None if value is None else _origins(value)


class ListAssistants(Input):
    limit: Limit = 50
    offset: Offset = 0


class ListDialogs(Input):
    # Lax: these also come from an HTTP query string.
    model_config = ConfigDict(extra="forbid", strict=False)

    user_id: Id | None = Field(None, description="dialogs held by this operator")
    assistant_id: Id | None = None
    status: Literal["open", "closed"] | None = None
    date_from: DateTime | None = None
    date_to: DateTime | None = None
    search: Text(200, min_length=1) | None = None
    limit: Limit = 50
    offset: Offset = 0


class DialogRef(Input):
    dialog_id: Id


class DialogMessages(DialogRef):
    limit: Limit = 50
    before_id: Id | None = None


class SendDialogMessage(DialogRef):
    text: Text(min_length=1)
    client_msg_id: Text(100, min_length=1) | None = None


class RequestHandoff(DialogRef):
    reason: Text(500) | None = None
    request_id: Text(100, min_length=1) | None = None


class SetTyping(DialogRef):
    is_typing: bool


# --- server events ---------------------------------------------------------------------

@server_event(DIALOGS, "message:added")
class MessageAdded(Output):
    """A message was added to a dialog."""

    dialog_id: int
    message: DialogMessageOut
    timestamp: datetime


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


@server_event(DIALOGS, "typing:indicator")
class DialogTyping(Output):
    """Someone in the dialog started or stopped typing. Not stored."""

    dialog_id: int
    sender: str
    is_typing: bool


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


@server_event(DIALOGS, "assistant:changed")
class AssistantChanged(Output):
    """An assistant was created, changed or deleted. Sent to its owner; every
    instance also hears it on the bus and refreshes the widget origins it allows."""

    assistant_id: int
    deleted: bool = False


@server_event(OPERATORS, "message:added")
class OperatorMessageAdded(MessageAdded):
    """A message in a dialog the operator holds."""


# --- views and access ----------------------------------------------------------------

def assistant_out(a: store.Assistant) -> AssistantOut:
    return AssistantOut(id=a.id, name=a.name, allowed_origins=a.allowed_origins, owner_id=a.owner_id,
                        system_prompt=a.system_prompt, created_at=aware(a.created_at))


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


async def owned_assistant(tx, ctx: Context, assistant_id: int) -> store.Assistant:
    a = await store.get_assistant(tx, assistant_id)
    if a is None:
        raise NotFound("no such assistant")
    if a.owner_id != ctx.actor.id and ctx.actor.role != ADMIN:
        raise Forbidden("this assistant is not yours")
    return a


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


def _sender(ctx: Context) -> tuple[str, str | None]:
    actor = ctx.actor
    if actor.role == VISITOR:
        return "visitor", actor.visitor_id
    if actor.role == SERVICE:
        return "assistant", str(actor.assistant_id)
    return ("operator" if actor.is_staff else "user"), str(actor.id)


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
    kind, who = _sender(ctx)
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


async def takeover(ctx: Context, tx, d: store.Dialog) -> store.Dialog:
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


# --- operations: assistants ---------------------------------------------------------------

OWNERS = ACCOUNTS  # who may own assistants and take their dialogs over


@operation(DIALOGS, "assistant:create", roles=OWNERS, http=("POST", "/api/assistants"))
async def create_assistant(ctx: Context, req: CreateAssistant) -> AssistantOut:
    """Create an assistant owned by the caller, with the website origins allowed to embed its widget."""
    async with ctx.transaction() as tx:
        a = await store.create_assistant(tx, owner_id=ctx.actor.id, name=req.name,
                                         allowed_origins=req.allowed_origins, system_prompt=req.system_prompt)
        ctx.emit(AssistantChanged(assistant_id=a.id), users=[a.owner_id])
        return assistant_out(a)


@operation(DIALOGS, "assistants:list", roles=OWNERS, http=("GET", "/api/assistants"))
async def list_assistants(ctx: Context, req: ListAssistants) -> Page[AssistantOut]:
    """The caller's assistants (an admin's: everyone's)."""
    owner = None if ctx.actor.role == ADMIN else ctx.actor.id
    async with ctx.transaction() as tx:
        rows, total = await store.list_assistants(tx, owner, req.limit, req.offset)
    return Page[AssistantOut](total=total, limit=req.limit, offset=req.offset, items=[assistant_out(a) for a in rows])


@operation(DIALOGS, "assistant:update", roles=OWNERS, http=("PUT", "/api/assistants/{assistant_id}"))
async def update_assistant(ctx: Context, req: UpdateAssistant) -> AssistantOut:
    """Change an assistant's name, allowed origins or system prompt (owner only)."""
    async with ctx.transaction() as tx:
        a = await owned_assistant(tx, ctx, req.assistant_id)
        fields = req.model_dump(exclude_unset=True, exclude={"assistant_id"})
        if fields.get("name", "") is None:
            del fields["name"]
        if fields.get("allowed_origins", []) is None:
            del fields["allowed_origins"]
        await store.update_assistant(tx, a, **fields)
        ctx.emit(AssistantChanged(assistant_id=a.id), users=[a.owner_id])
        return assistant_out(a)


@operation(DIALOGS, "assistant:delete", roles=OWNERS, http=("DELETE", "/api/assistants/{assistant_id}"))
async def delete_assistant(ctx: Context, req: AssistantRef) -> AssistantDeleted:
    """Delete an assistant and its dialogs (owner only)."""
    async with ctx.transaction() as tx:
        a = await owned_assistant(tx, ctx, req.assistant_id)
        await store.delete_assistant(tx, a)
        ctx.emit(AssistantChanged(assistant_id=a.id, deleted=True), users=[a.owner_id])
    return AssistantDeleted(assistant_id=req.assistant_id)


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
    sender, sender_id = _sender(ctx)
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


@operation(DIALOGS, "dialog:takeover", roles=OWNERS, http=("POST", "/api/dialogs/{dialog_id}/takeover"))
async def take_over(ctx: Context, req: DialogRef) -> DialogOut:
    """Take a dialog from the bot (or from the queue) directly: owners and staff."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        return dialog_out(await takeover(ctx, tx, d))


@operation(DIALOGS, "dialog:release", roles=OWNERS, http=("POST", "/api/dialogs/{dialog_id}/release"))
async def release_dialog(ctx: Context, req: DialogRef) -> DialogOut:
    """Give a dialog the caller holds back to the bot (handoff status `resolved`)."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
        return dialog_out(await release(ctx, tx, d))


@operation(DIALOGS, "dialog:status", http=("GET", "/api/dialogs/{dialog_id}/status"))
async def dialog_status(ctx: Context, req: DialogRef) -> DialogStatus:
    """The dialog's handoff status, operator and version."""
    async with ctx.transaction() as tx:
        return status_out(await reachable_dialog(tx, ctx, req.dialog_id))


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


@operation(DIALOGS, "typing:set")
async def set_typing(ctx: Context, req: SetTyping) -> Nothing:
    """Tell the dialog's other participants that the caller is (or stopped) typing."""
    async with ctx.transaction() as tx:
        d = await reachable_dialog(tx, ctx, req.dialog_id)
    sender, _ = _sender(ctx)
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
