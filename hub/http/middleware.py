"""What wraps every HTTP route: CORS for the origins in HUB_CORS_ORIGINS.

The Socket.IO endpoints are left alone: python-engineio answers their CORS itself
(from the same setting, hub/http/widget.py `socketio_origins`)."""
from __future__ import annotations

from aiohttp import web

from handlers.errors import Forbidden
from hub.http.common import error_response
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


def chain(settings: Settings) -> list:
    """The middlewares of this module, outermost first (before errors_middleware)."""
    return [cors(settings)]
