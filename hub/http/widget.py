"""POST /api/widget/sessions: a website widget gets a visitor token for one dialog.

No authentication: the page's Origin must be one of the assistant's
allowed_origins, and calls are rate-limited per client address. The response
carries CORS headers for that origin (the widget runs on other sites)."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import Field

from handlers import dialogs
from handlers.context import Actor
from handlers.errors import HubError
from handlers.schema import Id, Input
from hub.http.common import HUB, error_response, rate_limit, read_json, validate
from storage import dialogs as dialogs_store

log = logging.getLogger("hub.widget")

PATH = "/api/widget/sessions"
WIDGET = Actor(role="system", name="widget")


class WidgetSession(Input):
    assistant_id: Id
    # The secret visitor id this browser got earlier (kept in localStorage): resumes
    # its open dialog. Long enough not to be guessed; others only ever see a public
    # id derived from it (Dialog.visitor_id).
    visitor_id: str | None = Field(None, min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


def _cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin:
        # The route itself decides (against the assistant) whether the origin may
        # have a session; CORS only lets that page read the answer.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


async def preflight(request: web.Request) -> web.Response:
    response = web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
    })
    return _cors(request, response)


async def create_session(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    try:
        await rate_limit(request, "widget-session", hub.settings.widget_sessions_per_minute)
        req = validate(WidgetSession, await read_json(request))
        ctx = hub.context(WIDGET)
        dialog, secret = await dialogs.widget_session(ctx, req.assistant_id, request.headers.get("Origin"),
                                                      req.visitor_id)
    except HubError as exc:
        return _cors(request, error_response(exc))
    # The origin was just checked against the assistant: its widget connects next.
    hub.widget_origins.add(dialogs.normalize_origin(request.headers["Origin"]))
    ttl = hub.settings.visitor_token_ttl
    token = hub.tokens.visitor(dialog.id, dialog.assistant_id, dialog.visitor_id, ttl)
    body = {"visitor_token": token.token, "dialog_id": dialog.id, "visitor_id": secret,
            "public_visitor_id": dialog.visitor_id, "assistant_id": dialog.assistant_id, "expires_in": ttl}
    return _cors(request, web.json_response(body, status=201))


class WidgetOrigins:
    """The websites assistants embed their widget on: a widget there may open a
    Socket.IO connection without anyone listing the site in HUB_CORS_ORIGINS. Read
    from the database at start and every REFRESH seconds (every instance)."""

    REFRESH = 10.0

    def __init__(self) -> None:
        self.origins: frozenset[str] = frozenset()

    def add(self, origin: str) -> None:
        """An origin just allowed by an assistant, before the next refresh."""
        self.origins = self.origins | {origin}

    async def refresh(self, db) -> None:
        async with db.transaction() as tx:
            self.origins = await dialogs_store.all_allowed_origins(tx)

    async def run(self, db):
        """cleanup_ctx: keep the set fresh for the app's lifetime; never dies silently."""

        async def loop():
            while True:
                try:
                    await self.refresh(db)
                except Exception:
                    log.exception("could not read the assistants' widget origins")
                await asyncio.sleep(self.REFRESH)

        task = asyncio.create_task(loop(), name="widget-origins")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def socketio_origins(configured: tuple[str, ...] | None, widgets: WidgetOrigins):
    """The Socket.IO origin check: the hub's own origin (the console, the demo
    page), the origins in HUB_CORS_ORIGINS ("*": any), and every assistant's
    allowed origins (docs/handoff.md). Tokens, not cookies, authenticate every
    connection; this check keeps other pages from using a visitor's browser."""
    configured = configured or ()
    if "*" in configured:
        return "*"
    allowed = {o.rstrip("/") for o in configured}

    def own_origin(origin: str | None, environ: dict) -> bool:
        host = environ.get("HTTP_HOST")
        if not origin or not host:
            return False
        own = {f"{environ.get('wsgi.url_scheme', 'http')}://{host}"}
        if "HTTP_X_FORWARDED_PROTO" in environ or "HTTP_X_FORWARDED_HOST" in environ:
            scheme = environ.get("HTTP_X_FORWARDED_PROTO", environ.get("wsgi.url_scheme", "http")).split(",")[0]
            fhost = environ.get("HTTP_X_FORWARDED_HOST", host).split(",")[0]
            own.add(f"{scheme.strip()}://{fhost.strip()}")
        return origin in own

    def check(origin: str | None, environ: dict) -> bool:
        if not origin:  # not from a browser page: nothing to check (python-engineio asks anyway)
            return False
        if origin in allowed or origin in widgets.origins or own_origin(origin, environ):
            return True
        # A warning (said once per 30 s, hub/logs.py): a proxy that rewrites Host
        # makes every socket land here (docs/deploy.md).
        log.warning("connection refused: origin %s is not allowed (Host %s; HUB_CORS_ORIGINS)", origin,
                    environ.get("HTTP_HOST"), extra={"reason": "origin", "origin": origin})
        return False

    return check


def routes() -> list[web.RouteDef]:
    return [web.post(PATH, create_session), web.options(PATH, preflight)]
