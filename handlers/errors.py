"""The one error hierarchy of operations. Each carries a contract error code and
its HTTP status; transports turn them into their own shape."""
from __future__ import annotations

import math
from typing import Any


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
    """Every refusal for rate says when to come back: `retry_after` whole seconds in
    the details (acks), and the Retry-After header over HTTP (hub/http/common.py)."""

    code, status, default_message = "rate_limited", 429, "Too many requests"

    def __init__(self, message: str | None = None, retry_after: float = 1) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(message, details={"retry_after": self.retry_after})


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
