"""Chat attachments: storing an upload within the uploader's daily quota, and
reading one back for its uploader or a member of the thread it was sent in.

HTTP only, and not JSON: the thin routes of hub/adapters/http/attachments.py read
the multipart upload and write the file; the registry describes them for the
OpenAPI document."""
from __future__ import annotations

from datetime import timedelta

from handlers.chat import AttachmentOut, attachment_out
from handlers.chat_messages import visible_message
from handlers.context import Context
from handlers.errors import NotFound, RateLimited
from handlers.registry import Http, operation
from handlers.schema import Id, Input, Output, Text
from storage import chat as store
from storage.base import aware, utcnow

GROUP = "attachments"
DAY = timedelta(days=1)
USERS = {"user", "operator", "admin"}  # accounts: Actor.is_user


class Upload(Input):
    """An uploaded file, as the thin route read it (multipart field `file`)."""

    filename: Text(255)
    content_type: Text(255)
    content: bytes


class AttachmentRef(Input):
    id: Id


class AttachmentFile(Output):
    filename: str
    content_type: str
    content: bytes


async def within_quota(ctx: Context, size: int) -> None:
    """Refuse an upload of `size` bytes that would take the user past a day's quota
    (counted in the database: the same on every instance)."""
    settings = ctx.settings
    now = utcnow()
    async with ctx.db.transaction() as tx:
        count, total, oldest = await store.uploads_since(tx, ctx.actor.id, now - DAY)
    if count >= settings.attachments_per_day or total + size > settings.attachment_bytes_per_day:
        retry = ((aware(oldest) + DAY - now).total_seconds()) if oldest else DAY.total_seconds()
        raise RateLimited(f"attachment quota reached ({settings.attachments_per_day} files, "
                          f"{settings.attachment_bytes_per_day} bytes a day)", retry_after=retry)


@operation(GROUP, "upload", roles=USERS, socket=False,
           http=Http("POST", "/api/attachments", spend=False, request="multipart/form-data"))
async def upload(ctx: Context, file: Upload) -> AttachmentOut:
    """Upload a chat attachment (multipart, field `file`)."""
    await within_quota(ctx, len(file.content))
    async with ctx.db.transaction() as tx:
        att = await store.add_attachment(tx, uploader_id=ctx.actor.id, filename=file.filename,
                                         content_type=file.content_type, content=file.content)
    return attachment_out(att)


@operation(GROUP, "download", socket=False,
           http=Http("GET", "/api/attachments/{id}", spend=False, response="application/octet-stream"))
async def download(ctx: Context, ref: AttachmentRef) -> AttachmentFile:
    """Download an attachment of one of your threads."""
    actor = ctx.actor
    async with ctx.db.transaction() as tx:
        att = await store.get_attachment(tx, ref.id, with_content=True)
        allowed = att is not None and actor.is_user and (
            att.uploader_id == actor.id or (att.message_id is not None and await _seen(tx, ctx, att.message_id)))
    if not allowed:
        raise NotFound("no such attachment")
    return AttachmentFile(filename=att.filename, content_type=att.content_type, content=att.content)


async def _seen(tx, ctx: Context, message_id: int) -> bool:
    """Whether the actor may see the message (chat's own check: live, in one of its threads)."""
    try:
        await visible_message(tx, ctx, message_id)
    except NotFound:
        return False
    return True
