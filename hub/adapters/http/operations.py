"""The generic HTTP adapter: every registered operation with an HTTP method and
path is served here, with the same input and output as its Socket.IO event (if
it has one). HTTP-only operations (accounts, publishing) are served alike; those
whose bodies are not JSON (attachments) get a thin route of their own, which
runs the operation through `run` below."""
from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from handlers.context import Actor, Context
from handlers.errors import Forbidden
from handlers.registry import REGISTRY, Operation
from hub.adapters.http.common import HUB, path_value, rate_limit, read_json, request_actor, validate
from hub.adapters.services import Services
from hub.auth import hash_password, verify_password
from hub.backends.limits import spend_operation

# The actor of a public operation (register, log in, refresh): no token, no rights.
ANONYMOUS = Actor(role="anonymous")


class _Passwords:
    """hub.auth's password hashing, as handlers.ports.Passwords."""

    @staticmethod
    async def hash(password: str) -> str:
        return await hash_password(password)

    @staticmethod
    async def verify(password: str, stored: str | None) -> bool:
        return await verify_password(password, stored)


# What an operation's context may hold beyond `Context`'s fields (a subclass such as
# handlers.accounts.AccountContext declares them), by field name.
PORTS: dict[str, Callable[[Services], Any]] = {
    "tokens": lambda hub: hub.tokens,
    "passwords": lambda hub: _Passwords(),
    "revocations": lambda hub: hub.revocations,
    "fanout": lambda hub: hub.fanout,
    "limits": lambda hub: hub.limits,
}
_BASE = [f.name for f in dataclasses.fields(Context) if f.init]


def context_type(op: Operation) -> type[Context]:
    return typing.get_type_hints(op.func).get("ctx", Context)


def _ports(kind: type[Context]) -> list[str]:
    """The fields of `kind` the adapter fills from PORTS; an unknown one fails at start."""
    extra = [f.name for f in dataclasses.fields(kind) if f.init and f.name not in _BASE]
    unknown = [name for name in extra if name not in PORTS]
    if unknown:
        raise RuntimeError(f"{kind.__name__}: no port for {unknown} (hub/adapters/http/operations.py PORTS)")
    return extra


def make_context(hub: Services, op: Operation, actor: Actor) -> Context:
    ctx = hub.context(actor)
    kind = context_type(op)
    if kind is Context:
        return ctx
    return kind(**{name: getattr(ctx, name) for name in _BASE}, **{name: PORTS[name](hub) for name in _ports(kind)})


async def caller(request: web.Request, op: Operation) -> Actor:
    """The operation's actor, checked against its roles and budget (before its body is read)."""
    hub = request.app[HUB]
    assert op.http is not None
    if op.http.public:
        return ANONYMOUS
    actor = await request_actor(request)
    spec = REGISTRY.namespaces.get(op.namespace)
    roles = op.roles or (spec.roles if spec else None)  # an HTTP-only operation without roles: any actor
    if roles is not None and actor.acts_as not in roles:
        raise Forbidden(f"{actor.acts_as} may not {op.event}")
    if op.http.spend:
        spend_operation(hub.limits, hub.settings, actor)
    return actor


async def run(request: web.Request, op: Operation, actor: Actor, req: BaseModel) -> Any:
    """Run the operation; its events are delivered once it returns. The result as the
    operation returned it (a thin route renders it)."""
    hub = request.app[HUB]
    ctx = make_context(hub, op, actor)
    result = await op.func(ctx, req)
    await hub.fanout.deliver(ctx.events)
    return result


def _handler(op: Operation):
    http = op.http
    assert http is not None
    status = http.status or (201 if http.method == "POST" else 200)

    async def handle(request: web.Request) -> web.Response:
        hub = request.app[HUB]
        if http.per_address:
            name, setting = http.per_address
            await rate_limit(request, name, getattr(hub.settings, setting))
        actor = await caller(request, op)
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
        result = await run(request, op, actor, req)
        return web.json_response(op.output.dump_python(result, mode="json"), status=status)

    return handle


def _digits(path: str) -> str:
    """Ids are integers: `/api/messages/{message_id}` does not also match
    `/api/messages/threads`, so a wrong method there gets 405 with the right `Allow`."""
    return re.sub(r"\{(\w+_id)\}", r"{\1:\\d+}", path)


def routes() -> list[web.RouteDef]:
    ops = [op for op in REGISTRY.operations.values() if op.http]
    for op in ops:
        _ports(context_type(op))  # fail at start, not at the first request
    return [web.route(op.http.method, _digits(op.http.path), _handler(op)) for op in ops if op.http.generic]
