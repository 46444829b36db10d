"""What every HTTP route shares: the error shape, JSON bodies, the caller's actor."""
from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel, ValidationError

from handlers.context import Actor
from handlers.errors import (Forbidden, HubError, NotFound, PayloadTooLarge, RateLimited, Unauthorized,
                             ValidationFailed, unexpected, validation_details)
from handlers.schema import MAX_ID
from hub.adapters.services import Services
from storage import jsoncodec

log = logging.getLogger("hub.http")

HUB = web.AppKey("hub", Services)  # the running instance (hub.app.Hub)


class MethodNotAllowed(ValidationFailed):
    status, default_message = 405, "Method not allowed"


_STATUS_ERRORS = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge, 401: Unauthorized, 403: Forbidden,
                  429: RateLimited}


def error_response(exc: HubError, headers: dict | None = None) -> web.Response:
    if isinstance(exc, RateLimited):
        headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
    # `detail` repeats the message for clients of the reference APIs, which read that.
    return web.json_response({"error": exc.body(), "detail": exc.message}, status=exc.status,
                             headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler):
    """Every failure leaves as the contract's error object; no trace ever does."""
    try:
        return await handler(request)
    except HubError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or request.path.startswith("/socket.io"):
            raise
        kind = _STATUS_ERRORS.get(exc.status, ValidationFailed if exc.status < 500 else HubError)
        error = kind(exc.reason)
        if exc.status < 500:
            # The request was at fault (e.g. a plain GET on a websocket path: 400): keep
            # aiohttp's status, never answer it as an internal error.
            error.status = exc.status
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(error, allow)
    except Exception as exc:
        return error_response(unexpected(exc, log, f"{request.method} {request.path}"))


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json(loads=jsoncodec.loads)
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("request body too large") from None
    except (ValueError, UnicodeDecodeError):  # too deep a nesting too
        raise ValidationFailed("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object")
    return body


def path_value(value: str) -> int | str:
    """A path segment as the operation's input gets it: ASCII digits as an int
    (str.isdigit also takes "²", and int() refuses thousands of digits), anything
    else as given, for the input model to refuse."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= len(str(MAX_ID)) else value


def path_id(request: web.Request, name: str) -> int:
    """The path segment `name` as an id; not found when it is not one."""
    value = path_value(request.match_info[name])
    if not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise NotFound("not found")
    return value


def validate(model: type[BaseModel], data: dict, *, strict: bool | None = None) -> BaseModel:
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise ValidationFailed("invalid input", details=validation_details(exc)) from None


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


async def request_actor(request: web.Request) -> Actor:
    hub = request.app[HUB]
    return await hub.auth.actor(bearer(request))


def client_ip(request: web.Request) -> str:
    if request.app[HUB].settings.trust_proxy:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.remote or "unknown"


async def rate_limit(request: web.Request, name: str, per_minute: int) -> None:
    retry = await request.app[HUB].limits.hit(f"{name}:{client_ip(request)}", per_minute, 60)
    if retry:
        raise RateLimited(f"too many {name} attempts; retry in {retry}s", retry_after=retry)
