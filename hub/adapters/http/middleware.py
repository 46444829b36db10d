"""What wraps every HTTP route: the access log with a request id, and CORS for the
origins in HUB_CORS_ORIGINS.

The Socket.IO endpoints are left alone: python-engineio answers their CORS itself
(from the same setting, hub/adapters/http/widget.py `socketio_origins`), and a websocket's
request lasts as long as the connection (connections are logged and counted in
hub/adapters/socketio.py and hub/metrics.py instead)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from aiohttp import web

from handlers.errors import Forbidden
from hub.adapters.http.common import HUB, error_response
from hub.settings import Settings

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After"
PREFLIGHT_MAX_AGE = "600"


def _socketio(request: web.Request) -> bool:
    return request.path.startswith("/socket.io")


def cors(settings: Settings):
    """Browsers on the configured origins may call every route. The hub authenticates
    with bearer tokens, never cookies, so no credentials are allowed
    (`Access-Control-Allow-Credentials` is never sent): a page sends its token in
    `Authorization`, which the preflight allows."""
    configured = settings.cors_origins or ()
    any_origin = "*" in configured
    allowed = frozenset(o.rstrip("/") for o in configured)

    def headers_for(origin: str | None) -> dict[str, str]:
        if not origin or not (any_origin or origin in allowed):
            return {}
        return {"Access-Control-Allow-Origin": "*" if any_origin else origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": EXPOSE_HEADERS}

    @web.middleware
    async def middleware(request: web.Request, handler):
        if _socketio(request):
            return await handler(request)
        origin = request.headers.get("Origin")
        headers = headers_for(origin)
        if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
            if headers:
                return web.Response(status=204, headers={
                    **headers, "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": PREFLIGHT_MAX_AGE})
            if request.match_info.http_exception is not None:
                # No route of its own answers this preflight (the widget's does, for the
                # assistants' sites): the origin is simply not allowed.
                return error_response(Forbidden(f"origin {origin} is not allowed (HUB_CORS_ORIGINS)"))
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects and the like, raised past errors_middleware
            exc.headers.update(headers)
            raise
        if "Access-Control-Allow-Origin" not in response.headers:
            response.headers.update(headers)
        return response

    return middleware


access = logging.getLogger("hub.access")
REQUEST_ID = "X-Request-ID"
# A caller's (or the proxy's) request id is kept if it looks like one; else a new one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Health checks and scrapes come every few seconds: logged at DEBUG unless they fail.
PROBES = frozenset({"/health", "/ready", "/metrics"})


def route_of(request: web.Request) -> str:
    """The route's template (`/api/attachments/{id}`), not the path: bounded, and
    without the ids in it."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_log(request: web.Request, handler):
    """One line per request: method, route, status, milliseconds, request id; the id
    is echoed in the response's X-Request-ID. Counted and timed by route and status."""
    if _socketio(request):
        return await handler(request)
    given = request.headers.get(REQUEST_ID, "")
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers[REQUEST_ID] = request_id
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's code for it)
        raise
    finally:
        seconds = time.perf_counter() - started
        ms = round(seconds * 1000, 1)
        route = route_of(request)
        metrics = request.app[HUB].metrics
        metrics.child(metrics.http_requests, request.method, route, str(status)).inc()
        metrics.child(metrics.http_latency, request.method, route).observe(seconds)
        level = logging.DEBUG if route in PROBES and status < 400 else logging.INFO
        access.log(level, "%s %s %d %.1fms request_id=%s", request.method, route, status, ms, request_id,
                   extra={"method": request.method, "route": route, "status": status, "ms": ms,
                          "request_id": request_id})


def chain(settings: Settings) -> list:
    """The middlewares of this module, outermost first (before errors_middleware)."""
    return [access_log, cors(settings)]
