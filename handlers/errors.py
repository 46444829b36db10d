"""The one error hierarchy of operations. Each carries a contract error code and
its HTTP status; transports turn them into their own shape."""
from __future__ import annotations

import errno
import logging
import math
import socket
from typing import Any

import asyncpg.exceptions as asyncpg
import redis.exceptions as redis_exc
from sqlalchemy import exc as sa_exc


class HubError(Exception):
    code = "internal_error"
    status = 500
    default_message = "Internal error"

    def __init__(self, message: str | None = None, details: Any = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details

    def body(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationFailed(HubError):
    code, status, default_message = "validation_error", 422, "Invalid input"


class Unauthorized(HubError):
    code, status, default_message = "unauthorized", 401, "Authentication required"


class Forbidden(HubError):
    code, status, default_message = "forbidden", 403, "Not allowed"


class NotFound(HubError):
    code, status, default_message = "not_found", 404, "Not found"


class Conflict(HubError):
    code, status, default_message = "conflict", 409, "Conflict"


class PayloadTooLarge(HubError):
    code, status, default_message = "payload_too_large", 413, "Payload too large"


class RateLimited(HubError):
    """Always says when to retry: `details.retry_after` (whole seconds), and the
    `Retry-After` header over HTTP."""

    code, status, default_message = "rate_limited", 429, "Too many requests"

    def __init__(self, message: str | None = None, details: dict | None = None, *, retry_after: float = 1):
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(message, {"retry_after": self.retry_after, **(details or {})})


class Unavailable(HubError):
    code, status, default_message = "unavailable", 503, "Service unavailable"


class InternalError(HubError):
    pass


def validation_details(exc) -> list[dict]:
    """Field errors of a pydantic ValidationError, without echoing the input back."""
    return [
        {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def is_outage(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) says a dependency — the database, Redis —
    cannot be reached right now: refused or lost connections, a pool or connect
    timeout, a server shutting down. Such failures are the client's cue to retry
    (`unavailable`), not a bug of ours (`internal_error`)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, _OUTAGES) or (isinstance(e, OSError) and e.errno in _UNREACHABLE):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, asyncpg.InterfaceError) and "closed" in str(e):  # used after it died
            return True
        # SQLAlchemy wraps the driver's error in `orig`, its adapter chains asyncpg's.
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False


def unexpected(exc: BaseException, log: logging.Logger, what: str) -> HubError:
    """What an exception that is no HubError is answered with, logged: an outage in
    one line (it fails every request while it lasts), anything else with its trace."""
    if is_outage(exc):
        log.warning("%s: unavailable: %s", what, exc)
        return Unavailable("a service the hub depends on is unreachable right now; retry shortly")
    log.error("%s failed", what, exc_info=exc)
    return InternalError()


_OUTAGES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    TimeoutError,  # asyncio's too: a connect that never completed
    socket.gaierror,  # the host's name does not resolve
    sa_exc.TimeoutError,  # no pooled connection came free in time
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    redis_exc.ConnectionError, redis_exc.TimeoutError,
)
_UNREACHABLE = {  # OSError errnos of a network that cannot reach the host
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN,
}
