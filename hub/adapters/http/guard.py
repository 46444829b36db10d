"""Limits every HTTP request meets before its route (issue 18, items 12 and 14;
docs/security.md): connections per client address, the time a request
body may take to arrive, and the size of the Authorization header. They run
for every route, the Socket.IO endpoints included.

A connection holds its address's slot while its request runs; a websocket the
hub takes over from aiohttp (engine.websocket.LeanWebSocket) keeps it (`keep_slot`)
until the connection ends."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from handlers.errors import PayloadTooLarge, RateLimited

log = logging.getLogger("hub.http")

# The longest Authorization header read (a hub token is under 1 KiB). A longer one
# is answered `payload_too_large` (413), up to aiohttp's header field limit
# (HEADER_FIELD_BYTES), past which aiohttp's parser answers 400 before any route.
MAX_AUTHORIZATION_BYTES = 8 * 1024
HEADER_FIELD_BYTES = 16 * 1024
# The longest request line aiohttp parses (its default is 8190 bytes): a path with
# two ids of 5,000 digits still reaches the routes, which answer it with the contract's
# error (validation_error), not aiohttp's plain-text 400.
REQUEST_LINE_BYTES = 16 * 1024
# With 64 headers at most, a request's headers hold at most 1 MiB (aiohttp's own
# defaults: 128 x 8 KiB).
MAX_HEADERS = 64

_SLOT = web.RequestKey("hub.connection_slot", object)


class Slot:
    """One connection of one address, counted until released (once)."""

    __slots__ = ("counts", "address", "kept")

    def __init__(self, counts: dict[str, int], address: str) -> None:
        self.counts, self.address, self.kept = counts, address, False
        counts[address] = counts.get(address, 0) + 1

    def release(self) -> None:
        if self.counts is None:
            return
        left = self.counts[self.address] - 1
        if left:
            self.counts[self.address] = left
        else:
            del self.counts[self.address]
        self.counts = None


def keep_slot(request: web.BaseRequest) -> Slot | None:
    """Take over the slot of `request`: the caller releases it when its
    connection ends, the request's end does not."""
    slot = request.get(_SLOT)
    if slot is not None:
        slot.kept = True
    return slot


def middlewares(settings, client_ip) -> list:
    """The guard's middlewares for these settings; `client_ip(request)` names the
    address a connection counts against (the X-Forwarded-For client behind a
    trusted proxy, HUB_TRUST_PROXY)."""
    counts: dict[str, int] = {}
    per_address = settings.max_connections_per_address
    body_timeout = settings.body_timeout

    @web.middleware
    async def guard(request: web.Request, handler):
        if len(request.headers.get("Authorization", "")) > MAX_AUTHORIZATION_BYTES:
            raise PayloadTooLarge(f"the Authorization header is longer than {MAX_AUTHORIZATION_BYTES} bytes")
        slot = None
        if per_address:
            address = client_ip(request)
            if counts.get(address, 0) >= per_address:
                raise RateLimited(f"too many connections from this address (at most {per_address})",
                                  details={"retry_after": 1})
            slot = request[_SLOT] = Slot(counts, address)
        timer = expired = None
        if body_timeout and request.body_exists and not request.content.is_eof():
            expired = []

            def expire() -> None:
                if request.content.is_eof() or request.transport is None:
                    return
                expired.append(True)
                log.warning("%s %s from %s: the request body did not arrive within %ss, closing the connection",
                            request.method, request.path, client_ip(request), body_timeout)
                request.transport.close()  # the handler's read fails with ConnectionResetError

            timer = asyncio.get_running_loop().call_later(body_timeout, expire)
        try:
            return await handler(request)
        except ConnectionError:
            # The client's connection is gone (closed by the body timeout, or by the
            # client mid-body): nobody to answer, nothing to log a traceback for.
            if not expired and request.transport is not None and not request.transport.is_closing():
                raise
            return web.Response(status=400)  # never sent
        finally:
            if timer is not None:
                timer.cancel()
            if slot is not None and not slot.kept:
                slot.release()

    return [guard]
