"""Chat attachments: multipart upload with a size limit, download by thread members."""
from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from handlers.errors import Forbidden, NotFound, PayloadTooLarge, RateLimited, ValidationFailed
from hub.adapters.http.common import HUB, path_id, request_actor
from storage import chat
from storage.base import aware, utcnow

DAY = timedelta(days=1)


async def upload(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    actor = await request_actor(request)
    if not actor.is_user:
        raise Forbidden("only users upload attachments")
    limit = hub.settings.max_attachment_bytes
    if request.content_length and request.content_length > limit + 64 * 1024:
        raise PayloadTooLarge(f"attachments are limited to {limit} bytes")
    await _within_quota(hub, actor.id, 0)
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise ValidationFailed("send the file as multipart/form-data in a field named 'file'") from None
    part = await reader.next()
    while part is not None and part.name != "file":
        part = await reader.next()
    if part is None or not part.filename:
        raise ValidationFailed("send the file as multipart/form-data in a field named 'file'")
    content = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        content.extend(chunk)
        if len(content) > limit:
            raise PayloadTooLarge(f"attachments are limited to {limit} bytes")
    filename = _clean(part.filename).replace("/", "_").replace("\\", "_")[:255]
    content_type = _clean(part.headers.get("Content-Type", "application/octet-stream"))[:255]
    await _within_quota(hub, actor.id, len(content))
    async with hub.db.transaction() as tx:
        att = await chat.add_attachment(tx, uploader_id=actor.id, filename=filename,
                                        content_type=content_type, content=bytes(content))
    return web.json_response({"id": att.id, "filename": att.filename, "content_type": att.content_type,
                              "size": att.size, "url": f"/api/attachments/{att.id}"}, status=201)


async def _within_quota(hub, user_id: int, size: int) -> None:
    """Refuse an upload of `size` bytes that would take the user past a day's quota
    (counted in the database: the same on every instance)."""
    settings = hub.settings
    now = utcnow()
    async with hub.db.transaction() as tx:
        count, total, oldest = await chat.uploads_since(tx, user_id, now - DAY)
    if count >= settings.attachments_per_day or total + size > settings.attachment_bytes_per_day:
        retry = ((aware(oldest) + DAY - now).total_seconds()) if oldest else DAY.total_seconds()
        raise RateLimited(f"attachment quota reached ({settings.attachments_per_day} files, "
                          f"{settings.attachment_bytes_per_day} bytes a day)", retry_after=retry)


def _clean(header: str) -> str:
    """Header text fit to store: bytes that were not UTF-8 (a Latin-1 filename comes
    through as lone surrogates) become U+FFFD, control characters (NUL) go."""
    text = header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable())


async def download(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    actor = await request_actor(request)
    attachment_id = path_id(request, "id")
    async with hub.db.transaction() as tx:
        att = await chat.get_attachment(tx, attachment_id, with_content=True)
        allowed = att is not None and actor.is_user and (
            att.uploader_id == actor.id
            or (att.message_id is not None and await _member_of_message(tx, att.message_id, actor.id))
        )
    if not allowed:
        raise NotFound("no such attachment")
    safe_name = att.filename.replace('"', "")
    return web.Response(body=att.content, headers={
        "Content-Type": att.content_type,
        "Content-Disposition": f'attachment; filename="{safe_name}"',
        "X-Content-Type-Options": "nosniff",
    })


async def _member_of_message(tx, message_id: int, user_id: int) -> bool:
    msg = await chat.get_message(tx, message_id)
    return msg is not None and msg.deleted_at is None and await chat.is_member(tx, msg.thread_id, user_id)


def routes() -> list[web.RouteDef]:
    return [web.post("/api/attachments", upload), web.get("/api/attachments/{id}", download)]
