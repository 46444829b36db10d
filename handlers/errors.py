"""The one error hierarchy of operations. Each carries a contract error code and
its HTTP status; transports turn them into their own shape."""
from __future__ import annotations

import logging
import math
from typing import Any

from common.outages import is_outage


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


def unexpected(exc: BaseException, log: logging.Logger, what: str) -> HubError:
    """What an exception that is no HubError is answered with, logged: an outage in
    one line (it fails every request while it lasts), anything else with its trace."""
    if is_outage(exc):
        log.warning("%s: unavailable: %s", what, exc)
        return Unavailable("a service the hub depends on is unreachable right now; retry shortly")
    log.error("%s failed", what, exc_info=exc)
    return InternalError()
