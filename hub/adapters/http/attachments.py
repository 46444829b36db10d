"""The thin routes of chat attachments (handlers/attachments.py): a multipart upload
read with a size limit, and a file download. Everything else of them is the
operations'; the registry describes both routes for the OpenAPI document."""
from __future__ import annotations

from aiohttp import web

from handlers import attachments
from handlers.errors import Forbidden, PayloadTooLarge, ValidationFailed
from handlers.registry import REGISTRY
from hub.adapters.http.common import HUB, path_id
from hub.adapters.http.operations import caller, make_context, run

UPLOAD = REGISTRY.operations[(attachments.GROUP, "upload")]
DOWNLOAD = REGISTRY.operations[(attachments.GROUP, "download")]
CHUNK = 64 * 1024


async def upload(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    try:
        actor = await caller(request, UPLOAD)
    except Forbidden:
        raise Forbidden("only users upload attachments") from None
    limit = hub.settings.max_attachment_bytes
    if request.content_length and request.content_length > limit + CHUNK:
        raise PayloadTooLarge(f"attachments are limited to {limit} bytes")
    # Before reading the file: a user over quota does not get to send it.
    await attachments.within_quota(make_context(hub, UPLOAD, actor), 0)
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
    while chunk := await part.read_chunk(CHUNK):
        content.extend(chunk)
        if len(content) > limit:
            raise PayloadTooLarge(f"attachments are limited to {limit} bytes")
    filename = _clean(part.filename).replace("/", "_").replace("\\", "_")[:255]
    content_type = _clean(part.headers.get("Content-Type", "application/octet-stream"))[:255]
    file = attachments.Upload(filename=filename, content_type=content_type, content=bytes(content))
    att = await run(request, UPLOAD, actor, file)
    return web.json_response(UPLOAD.output.dump_python(att, mode="json"), status=201)


def _clean(header: str) -> str:
    """Header text fit to store: bytes that were not UTF-8 (a Latin-1 filename comes
    through as lone surrogates) become U+FFFD, control characters (NUL) go."""
    text = header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(c for c in text if c.isprintable())


async def download(request: web.Request) -> web.Response:
    actor = await caller(request, DOWNLOAD)
    ref = attachments.AttachmentRef(id=path_id(request, "id"))
    att = await run(request, DOWNLOAD, actor, ref)
    safe_name = att.filename.replace('"', "")
    return web.Response(body=att.content, headers={
        "Content-Type": att.content_type,
        "Content-Disposition": f'attachment; filename="{safe_name}"',
        "X-Content-Type-Options": "nosniff",
    })


def routes() -> list[web.RouteDef]:
    return [web.post(UPLOAD.http.path, upload), web.get(DOWNLOAD.http.path, download)]
