"""The generic HTTP adapter: every registered operation with an HTTP method and
path is served here with the same input and output as its Socket.IO event."""
from __future__ import annotations

import re

from aiohttp import web

from handlers.errors import Forbidden
from handlers.registry import REGISTRY, Operation
from hub.adapters.http.common import HUB, path_value, read_json, request_actor, validate
from hub.state import spend_operation


def _handler(op: Operation):
    async def handle(request: web.Request) -> web.Response:
        hub = request.app[HUB]
        actor = await request_actor(request)
        spec = REGISTRY.namespaces[op.namespace]
        if actor.acts_as not in (op.roles or spec.roles):
            raise Forbidden(f"{actor.acts_as} may not {op.event}")
        spend_operation(hub.state, hub.settings, actor)
        strict = None
        if request.method == "GET":
            # Query strings are text: "10" must be able to fill an integer field.
            data, strict = dict(request.query), False
        elif not request.body_exists:  # e.g. PATCH /api/messages/{id}/read
            data = {}
        else:
            data = await read_json(request)
        for key, value in request.match_info.items():
            data[key] = path_value(value)
        req = validate(op.input, data, strict=strict)
        ctx = hub.context(actor)
        result = await op.func(ctx, req)
        body = op.output.dump_python(result, mode="json")
        await hub.fanout.deliver(ctx.events)
        return web.json_response(body, status=201 if request.method == "POST" else 200)

    return handle


def _digits(path: str) -> str:
    """Ids are integers: `/api/messages/{message_id}` does not also match
    `/api/messages/threads`, so a wrong method there gets 405 with the right `Allow`."""
    return re.sub(r"\{(\w+_id)\}", r"{\1:\\d+}", path)


def routes() -> list[web.RouteDef]:
    return [
        web.route(op.http[0], _digits(op.http[1]), _handler(op))
        for op in REGISTRY.operations.values() if op.http
    ]
