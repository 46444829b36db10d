"""/chat: direct and group threads, messages, receipts, typing.

This module holds the namespace, its inputs, outputs and server events; the
operations are in chat_send.py (message:send and its group commit), chat_threads.py
(threads, membership, typing) and chat_messages.py (reading, editing, deleting,
searching and syncing messages)."""
from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from handlers.roles import ACCOUNTS
from handlers.context import Context
from handlers.errors import ValidationFailed
from handlers.registry import namespace, server_event
from handlers import sync
from handlers.schema import Id, Input, Limit, Output, PageNumber, Paging, Text, exactly_one
from storage import chat as store
from storage.base import aware

CHAT = "/chat"
namespace(CHAT, "Direct and group messaging between users.", roles=ACCOUNTS)


# --- models ------------------------------------------------------------------

class AttachmentOut(Output):
    id: int
    filename: str
    content_type: str
    size: int
    url: str


class MessageOut(Output):
    id: int
    thread_id: int
    sender_id: int
    recipient_id: int | None
    message: str
    booking_id: int | None
    attachments: list[AttachmentOut]
    is_read: bool
    created_at: datetime
    edited_at: datetime | None
    client_msg_id: str | None


class SyncedMessage(MessageOut):
    deleted_at: None = None  # a deleted message comes as a MessageTombstone


class MessageTombstone(sync.Tombstone):
    id: int
    thread_id: int


class ThreadOut(Output):
    thread_id: int
    kind: str
    title: str | None
    member_ids: list[int]
    created_at: datetime


class ThreadSummary(Output):
    thread_id: int
    kind: str
    other_user_id: int | None
    other_user_name: str | None
    title: str | None
    last_message: str | None
    last_message_at: datetime | None
    unread_count: int


class History(Output):
    messages: list[MessageOut]
    total: int
    page: int


class Updated(Output):
    updated: int


class UnreadCount(Output):
    unread_count: int


class Deleted(Output):
    message_id: int
    deleted_at: datetime


class Nothing(Output):
    pass


class ThreadRef(Input):
    """Either a thread id or the other user of a direct thread."""

    thread_id: Id | None = None
    other_user_id: Id | None = None

    _one_of = exactly_one("thread_id", "other_user_id")


class SendMessage(Input):
    recipient_id: Id | None = None
    thread_id: Id | None = None
    message: Text() = ""
    booking_id: Id | None = None
    attachment_ids: list[Id] = Field(default_factory=list, max_length=10)
    client_msg_id: Text(100, min_length=1) | None = None

    _one_of = exactly_one("recipient_id", "thread_id")

    @model_validator(mode="after")
    def _check(self):
        if not self.message.strip() and not self.attachment_ids:
            raise ValueError("message is empty")
        return self


class CreateThread(Input):
    member_ids: list[Id] = Field(min_length=1, max_length=100)
    title: Text(200) | None = None


class ListThreads(Paging):
    pass


class ThreadHistory(ThreadRef):
    page: PageNumber = 1
    page_size: Limit = 50


class SearchMessages(Input):
    query: Text(200, min_length=1)
    user_id: Id | None = None


class MessageRef(Input):
    message_id: Id


class EditMessage(MessageRef):
    message: Text(min_length=1)


class SetTyping(ThreadRef):
    is_typing: bool


# --- server events -------------------------------------------------------------

@server_event(CHAT, "message:new")
class MessageNew(Output):
    """A message arrived in one of the user's threads."""

    message_id: int
    thread_id: int
    sender_id: int
    content: str
    timestamp: datetime
    message: MessageOut


@server_event(CHAT, "message:sent")
class MessageSent(MessageNew):
    """A message the user sent from another of their devices."""


@server_event(CHAT, "message:edited")
class MessageEdited(Output):
    """A message was edited by its sender."""

    message_id: int
    thread_id: int
    new_content: str
    edited_at: datetime


@server_event(CHAT, "message:deleted")
class MessageDeleted(Output):
    """A message was deleted by its sender."""

    message_id: int
    thread_id: int
    deleted_at: datetime


@server_event(CHAT, "message:read")
class MessageRead(Output):
    """A member read a message."""

    message_id: int
    thread_id: int
    reader_id: int
    read_at: datetime


@server_event(CHAT, "typing:indicator")
class TypingIndicator(Output):
    """A member started or stopped typing. Not stored."""

    thread_id: int
    user_id: int
    is_typing: bool


@server_event(CHAT, "thread:created")
class ThreadCreated(Output):
    """The user became a member of a new thread."""

    thread_id: int
    first_message_id: int | None
    kind: str
    title: str | None
    member_ids: list[int]


@server_event(CHAT, "thread:updated")
class ThreadUpdated(Output):
    """A thread of the user got a new message."""

    thread_id: int
    message_count: int


# --- helpers of the operations ------------------------------------------------

def check_length(ctx: Context, text: str) -> None:
    limit = ctx.settings.max_message_chars
    if len(text) > limit:
        raise ValidationFailed(
            f"message is longer than {limit} characters",
            details=[{"loc": ["message"], "msg": f"at most {limit} characters", "type": "string_too_long"}],
        )


async def messages_out(tx, messages: list[store.Message], viewer: int) -> list[MessageOut]:
    ids = [m.id for m in messages]
    atts = await store.attachments_of(tx, ids)
    read_by = await store.readers(tx, ids)
    out = []
    for m in messages:
        readers = read_by[m.id]
        is_read = bool(readers - {viewer}) if m.sender_id == viewer else viewer in readers
        out.append(MessageOut(
            id=m.id, thread_id=m.thread_id, sender_id=m.sender_id, recipient_id=m.recipient_id,
            message=m.body, booking_id=m.booking_id, is_read=is_read,
            created_at=aware(m.created_at), edited_at=aware(m.edited_at), client_msg_id=m.client_msg_id,
            attachments=[attachment_out(a) for a in atts[m.id]],
        ))
    return out


def attachment_out(a: store.Attachment) -> AttachmentOut:
    return AttachmentOut(id=a.id, filename=a.filename, content_type=a.content_type, size=a.size,
                         url=f"/api/attachments/{a.id}")


async def message_out(tx, message: store.Message, viewer: int) -> MessageOut:
    return (await messages_out(tx, [message], viewer))[0]


def thread_out(thread: store.Thread, members: list[int]) -> ThreadOut:
    return ThreadOut(thread_id=thread.id, kind=thread.kind, title=thread.title, member_ids=members,
                     created_at=aware(thread.created_at))
