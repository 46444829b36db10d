"""POST /api/widget/sessions: a website widget gets a visitor token for one dialog.

No authentication: the page's Origin must be one of the assistant's
allowed_origins, and calls are rate-limited per client address. The response
carries CORS headers for that origin (the widget runs on other sites). A native
app, which has no Origin, presents one of the assistant's public app keys in the
`X-Hub-App-Key` header instead (rate-limited per key too; revocable)."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import Field

from engine import cancel_and_wait
from handlers import dialogs
from handlers.context import Actor
from handlers import bots, routing, widgets
from handlers.errors import Forbidden, HubError, RateLimited
from handlers.schema import Id, Input
from hub.adapters.http.common import HUB, error_response, rate_limit, read_json, validate
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
    # The page the widget runs on, shown to operators.
    page_url: str | None = Field(None, max_length=500, pattern=r"^https?://")


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
        "Access-Control-Allow-Headers": "Content-Type, X-Hub-App-Key",
        "Access-Control-Max-Age": "600",
    })
    return _cors(request, response)


async def create_session(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    try:
        await rate_limit(request, "widget-session", hub.settings.widget_sessions_per_minute)
        req = validate(WidgetSession, await read_json(request))
        ctx = hub.context(WIDGET)
        app_key = request.headers.get("X-Hub-App-Key")
        if app_key is not None:
            await _check_app_key(request, ctx, app_key, req.assistant_id)
        dialog, secret = await dialogs.widget_session(ctx, req.assistant_id, request.headers.get("Origin"),
                                                      req.visitor_id, app=app_key is not None,
                                                      page_url=req.page_url)
        async with ctx.transaction() as tx:
            assistant = await dialogs_store.get_assistant(tx, dialog.assistant_id)
            bot_online = await bots.bot_online(tx, assistant.id)
        operators_online = len(await routing.online_operators(ctx))
    except HubError as exc:
        return _cors(request, error_response(exc))
    if app_key is None:
        # The origin was just checked against the assistant: its widget connects next.
        hub.widget_origins.add(dialogs.normalize_origin(request.headers["Origin"]))
    ttl = hub.settings.visitor_token_ttl
    token = hub.tokens.visitor(dialog.id, dialog.assistant_id, dialog.visitor_id, ttl)
    body = {"visitor_token": token.token, "dialog_id": dialog.id, "visitor_id": secret,
            "public_visitor_id": dialog.visitor_id, "assistant_id": dialog.assistant_id, "expires_in": ttl,
            "settings": widgets.public_settings(assistant),
            "operators_online": operators_online, "bot_online": bot_online}
    return _cors(request, web.json_response(body, status=201))


async def _check_app_key(request: web.Request, ctx, key: str, assistant_id: int) -> None:
    """A native app's key: it must be one of this assistant's, not revoked; sessions
    are limited per key (and per address, above)."""
    if not 8 <= len(key) <= 100:
        raise Forbidden("this app key is not valid")
    retry = await request.app[HUB].limits.hit(f"app-key-session:{widgets.key_hash(key)}",
                                             request.app[HUB].settings.app_key_sessions_per_minute, 60)
    if retry:
        raise RateLimited(f"too many sessions with this app key; retry in {retry}s",
                          details={"retry_after": retry})
    if await widgets.app_key_assistant(ctx, key) != assistant_id:
        raise Forbidden("this app key is not valid for this assistant (revoked, or another's)")


class WidgetOrigins:
    """The websites assistants embed their widget on: a widget there may open a
    Socket.IO connection without anyone listing the site in HUB_CORS_ORIGINS. Read
    from the database at start, whenever an assistant changes (on every instance at
    once, through the bus), and every REFRESH seconds in case the bus was down."""

    REFRESH = 10.0

    def __init__(self) -> None:
        self.origins: frozenset[str] = frozenset()

    def add(self, origin: str) -> None:
        """An origin just allowed by an assistant, before the next refresh."""
        self.origins = self.origins | {origin}

    def follow(self, fanout, db) -> None:
        """Re-read the origins whenever an assistant changes, on any instance (the
        bus brings assistant:changed to every one at once)."""

        async def changed(data: dict) -> None:
            await self.refresh(db)

        fanout.listen("/dialogs", "assistant:changed", changed)

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
        await cancel_and_wait(task)


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
