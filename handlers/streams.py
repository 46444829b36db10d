"""Streamed bot replies in /dialogs (docs/live-state.md, "Streamed bot replies").

A bot starts a reply, sends deltas and ends it. Deltas go to the dialog's room at
once as volatile `message:delta` events (never stored one by one); the text so far
lives in the bounded in-flight buffer (hub/backends/streams/), so a client arriving
mid-stream reads it with `dialog:streams` and then applies only deltas with a
higher seq. The reply is stored once, as a message whose `client_msg_id` is the
stream's id, announced by the one durable `message:added`: when the bot ends it,
when an operator takes the dialog over (cut: `interrupted`), or when the bot went
silent for `stream_timeout` seconds (a periodic job; the buffer's atomic close makes
it exactly once across instances)."""
from __future__ import annotations

import logging

from handlers import handoff
from handlers.roles import BOT
from handlers import dialogs as dlg
from handlers.context import Context
from handlers.errors import Conflict, NotFound, ValidationFailed
from handlers.registry import operation, periodic, server_event
from handlers.schema import Input, Output, Text
from handlers.ports import OpenStream, StreamError
from storage import dialogs as store

log = logging.getLogger("hub.streams")

StreamId = Text(40, min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")


class StartStream(dlg.DialogRef):
    pass


class StreamDelta(Input):
    stream_id: StreamId
    text: Text(min_length=1)


class StreamRef(Input):
    stream_id: StreamId


class StreamStarted(Output):
    stream_id: str


class DeltaSeq(Output):
    seq: int


class StreamState(Output):
    """An open stream's text so far; apply only deltas with a higher seq."""

    stream_id: str
    seq: int
    text: str


@server_event(dlg.DIALOGS, "message:delta")
class MessageDelta(Output):
    """More text of a bot's streamed reply. Not stored: append `text` when `seq` is
    higher than what you have (a slow client gets several deltas as one, with the
    latest seq); the reply ends with a `message:added` whose message's
    `client_msg_id` is the `stream_id`."""

    dialog_id: int
    stream_id: str
    seq: int
    text: str


def _failed(exc: StreamError) -> Exception:
    if exc.reason.startswith("closed:"):
        why = exc.reason.partition(":")[2]
        return Conflict("this stream has ended" + (": an operator took the dialog over" if why == "interrupted"
                                                   else ""), details={"reason": why})
    if exc.reason.startswith("busy:"):
        return Conflict("a reply is already streaming in this dialog",
                        details={"stream_id": exc.reason.partition(":")[2]})
    if exc.reason == "too_long":
        return ValidationFailed("the reply would be longer than the stream limit",
                                details=[{"loc": ["text"], "msg": "stream too long", "type": "string_too_long"}])
    return NotFound("no such stream")


def _limit(ctx: Context) -> int:
    return min(ctx.settings.stream_max_chars, ctx.settings.max_message_chars)


async def store_reply(ctx: Context, tx, d: store.Dialog, s: OpenStream, *, interrupted: bool) -> dlg.DialogMessageOut:
    """Store an ended stream's text as the assistant's message and announce it (durable)."""
    sender_id = str(s.assistant_id)
    try:
        msg = await store.add_message(tx, d, sender="assistant", sender_id=sender_id, text=s.text,
                                      client_msg_id=s.stream_id, interrupted=interrupted)
    except store.DuplicateClientId:
        return dlg.message_out(await store.by_client_msg_id(tx, d.id, "assistant", sender_id, s.stream_id))
    out = dlg.message_out(msg)
    ctx.emit(dlg.MessageAdded(dialog_id=d.id, message=out, timestamp=out.created_at),
             rooms=[dlg.dialog_room(d.id)])
    if d.handoff_status == "active" and d.operator_id is not None:
        ctx.emit(dlg.OperatorMessageAdded(dialog_id=d.id, message=out, timestamp=out.created_at),
                 users=[d.operator_id])
    return out


@operation(dlg.DIALOGS, "message:stream-start", roles={BOT})
async def stream_start(ctx: Context, req: StartStream) -> StreamStarted:
    """Start a streamed reply in a dialog of the bot's assistant (one at a time per dialog)."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
    dlg.check_bot_may_write(d)
    try:
        return StreamStarted(stream_id=await ctx.streams.buffer.open(d.id, d.assistant_id))
    except StreamError as exc:
        raise _failed(exc) from None


@operation(dlg.DIALOGS, "message:stream-delta", roles={BOT})
async def stream_delta(ctx: Context, req: StreamDelta) -> DeltaSeq:
    """Add text to the bot's streamed reply; sent at once to the dialog as `message:delta`.
    After a takeover (or the end) the answer is `conflict`."""
    svc = ctx.streams
    async with svc.locks.lock(req.stream_id):
        try:
            s = await svc.buffer.append(req.stream_id, ctx.actor.assistant_id, req.text, _limit(ctx))
        except StreamError as exc:
            raise _failed(exc) from None
        await svc.send(MessageDelta(dialog_id=s.dialog_id, stream_id=s.stream_id, seq=s.seq, text=s.text),
                       [dlg.dialog_room(s.dialog_id)])
    return DeltaSeq(seq=s.seq)


@operation(dlg.DIALOGS, "message:stream-end", roles={BOT})
async def stream_end(ctx: Context, req: StreamRef) -> dlg.DialogMessageOut:
    """End the bot's streamed reply: it is stored and announced with one `message:added`."""
    svc = ctx.streams
    async with svc.locks.lock(req.stream_id):
        try:
            s = await svc.buffer.get(req.stream_id)
            if s.assistant_id != ctx.actor.assistant_id:
                raise StreamError("missing")
            ended = await svc.buffer.close(req.stream_id, "ended")
            if ended is None:
                raise StreamError("closed:ended")
        except StreamError as exc:
            raise _failed(exc) from None
    svc.locks.drop(req.stream_id)
    async with ctx.transaction() as tx:
        d = await store.get_dialog(tx, ended.dialog_id)
        if d is None:
            raise NotFound("no such dialog")
        # Taken over between the last delta and now: stored, but as cut short.
        return await store_reply(ctx, tx, d, ended, interrupted=d.handoff_status == "active")


@operation(dlg.DIALOGS, "dialog:streams", http=("GET", "/api/dialogs/{dialog_id}/streams"))
async def dialog_streams(ctx: Context, req: dlg.DialogRef) -> list[StreamState]:
    """The dialog's reply streaming now, with its text so far: call it after
    connecting or `dialog:join`, then apply only `message:delta`s with a higher seq."""
    async with ctx.transaction() as tx:
        d = await dlg.reachable_dialog(tx, ctx, req.dialog_id)
    found = await ctx.streams.buffer.of_dialog(d.id)
    if ctx.origin:
        for s in found:
            ctx.streams.deltas.settle(ctx.origin, s.stream_id, s.seq)
    return [StreamState(stream_id=s.stream_id, seq=s.seq, text=s.text) for s in found]


async def cut(ctx: Context, tx, d: store.Dialog) -> None:
    """An operator took the dialog, or it closed: its streaming reply ends here,
    stored as interrupted."""
    if ctx.streams is None:  # a context without the instance's services (storage tests)
        return
    for s in await ctx.streams.buffer.of_dialog(d.id):
        ended = await ctx.streams.buffer.close(s.stream_id, "interrupted")
        if ended is not None:
            await store_reply(ctx, tx, d, ended, interrupted=True)


handoff.silence_hooks.append(cut)


@periodic("streams:timeout", every=lambda settings: min(settings.stream_timeout / 3, 5.0))
async def end_silent_streams(ctx: Context) -> None:
    """Streams whose bot went silent (crashed) end with what they had."""
    buffer = ctx.streams.buffer
    for stream_id in await buffer.idle(ctx.settings.stream_timeout):
        ended = await buffer.close(stream_id, "timeout")
        if ended is None:
            continue  # another instance (or the bot) ended it first
        log.info("stream %s of dialog %d ended after %.0f s of silence", stream_id, ended.dialog_id,
                 ctx.settings.stream_timeout)
        async with ctx.transaction() as tx:
            d = await store.get_dialog(tx, ended.dialog_id)
            if d is not None:
                await store_reply(ctx, tx, d, ended, interrupted=True)
