"""The AsyncAPI 3.0 document of the hub, generated from the registry at request
time: every namespace present is a channel, every operation a `send` with its
ack as the reply, every server event a `receive`. Nothing here is hand-written
per event; schemas come from the pydantic models."""
from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from handlers.registry import REGISTRY, Registry
from handlers.resource_types import documented

REF = "#/components/schemas/{model}"
ERROR_CODES = ("validation_error", "unauthorized", "forbidden", "not_found", "conflict", "rate_limited",
               "payload_too_large", "unavailable", "internal_error")


class ErrorBody(BaseModel):
    """The error object of a failed request (ack `error`, HTTP body `error`)."""

    code: Literal[ERROR_CODES]  # type: ignore[valid-type]
    message: str
    details: Any = None


class ErrorEvent(ErrorBody):
    """Sent as the `error` event for a failed request that asked for no ack."""

    event: str


class ErrorReply(BaseModel):
    """The ack of a failed request."""

    ok: Literal[False]
    error: ErrorBody


def _key(name: str) -> str:
    """An AsyncAPI component/map key (`^[A-Za-z0-9._-]+$`) for an event or namespace name."""
    return re.sub(r"[^A-Za-z0-9.\-_]", "_", name.strip("/")) or "root"


def _version() -> str:
    try:
        return version("hub")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _schemas(registry: Registry) -> tuple[dict, dict]:
    """One pass over every model, so that shared and same-named models get one,
    unambiguous definition each."""
    inputs: list = [(("error", "reply"), "serialization", TypeAdapter(ErrorReply)),
                    (("error", "event"), "serialization", TypeAdapter(ErrorEvent))]
    for (ns, event), op in registry.operations.items():
        if not op.socket:  # HTTP only: in the OpenAPI document
            continue
        inputs.append(((ns, event, "request"), "validation", TypeAdapter(op.input)))
        inputs.append(((ns, event, "ack"), "serialization", op.output))
    for (ns, event), ev in registry.events.items():
        inputs.append(((ns, event, "event"), "serialization", TypeAdapter(ev.model)))
    by_key, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    return {key: schema for (key, _mode), schema in by_key.items()}, defs.get("$defs", {})


def _ack(data_schema: dict) -> dict:
    ok = {"type": "object", "properties": {"ok": {"const": True}, "data": data_schema},
          "required": ["ok", "data"]}
    return {"oneOf": [ok, {"$ref": REF.format(model="ErrorReply")}]}


def build(registry: Registry = REGISTRY, *, host: str = "localhost:8000", protocol: str = "ws") -> dict:
    """The AsyncAPI 3.0.0 document of every namespace in `registry`."""
    schemas, defs = _schemas(registry)
    channels: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    messages: dict[str, dict] = {}

    for ns, spec in sorted(registry.namespaces.items()):
        chan = _key(ns)
        chan_ref = {"$ref": f"#/channels/{chan}"}
        chan_messages: dict[str, dict] = {}

        def add_message(key: str, message: dict) -> dict:
            messages[f"{chan}.{key}"] = message
            chan_messages[key] = {"$ref": f"#/components/messages/{chan}.{key}"}
            return {"$ref": f"#/channels/{chan}/messages/{key}"}

        for event, op in sorted(registry.operations_of(ns).items()):
            k = _key(event)
            request = add_message(f"{k}.request", {
                "name": event, "title": f"{event} request", "summary": op.summary,
                "payload": schemas[(ns, event, "request")],
            })
            ack = add_message(f"{k}.ack", {
                "name": f"{event} ack", "title": f"{event} acknowledgement",
                "summary": f"The ack of {event}: {{ok: true, data}} or {{ok: false, error}}.",
                "payload": _ack(schemas[(ns, event, "ack")]),
            })
            operation = {
                "action": "send", "channel": chan_ref, "title": event, "summary": op.summary,
                "messages": [request], "reply": {"channel": chan_ref, "messages": [ack]},
                "x-roles": sorted(op.roles or spec.roles),
            }
            if op.http:
                operation["x-http"] = {"method": op.http.method, "path": op.http.path}
            operations[f"{chan}.{k}"] = operation

        for event, ev in sorted(registry.events_of(ns).items()):
            k = _key(event)
            message = add_message(f"{k}.event", {
                "name": event, "title": event, "summary": ev.summary,
                "payload": schemas[(ns, event, "event")], "x-publishable": ev.publishable,
                **({"x-coalesce-by": list(ev.coalesce_by)} if ev.coalesce_by else {}),
            })
            operations[f"{chan}.{k}.event"] = {
                "action": "receive", "channel": chan_ref, "title": event, "summary": ev.summary,
                "messages": [message], "x-publishable": ev.publishable,
            }

        error = add_message("error.event", {
            "name": "error", "title": "error",
            "summary": "The error of a request sent without an ack callback.",
            "payload": schemas[("error", "event")],
        })
        operations[f"{chan}.error.event"] = {
            "action": "receive", "channel": chan_ref, "title": "error",
            "summary": "Errors of requests that asked for no ack.", "messages": [error],
        }
        channels[chan] = {
            "address": ns, "title": ns, "description": spec.description, "messages": chan_messages,
            "x-roles": sorted(spec.roles), "x-publish-rooms": list(spec.publish_rooms),
        }

    _plain_ws(channels, operations, messages, schemas)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "hub",
            "version": _version(),
            "description": (
                "Real-time messaging hub over Socket.IO v5 (Engine.IO v4). Each channel is a "
                "Socket.IO namespace; each `send` operation is a client event whose reply is its "
                "acknowledgement; each `receive` operation is a server event. Events marked "
                "`x-publishable` may also be sent by backend services through `POST /api/publish`."
            ),
        },
        "defaultContentType": "application/json",
        # Live resource types and their status machines (resource:update, resource:updated).
        "x-resource-types": documented(registry.resource_types),
        "servers": {
            "hub": {
                "host": host, "protocol": protocol, "pathname": "/socket.io/",
                "description": "Socket.IO endpoint; connect with auth {token} or ?token=.",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            },
            "plain": {
                "host": host, "protocol": protocol, "pathname": "/ws",
                "description": "The generic plain-WebSocket protocol (docs/clients.md), for clients "
                               "without a Socket.IO library: the same operations and events.",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": defs,
            "messages": messages,
            "securitySchemes": {
                "token": {
                    "type": "httpApiKey", "name": "token", "in": "query",
                    "description": "A hub JWT (access, service or visitor token), sent as the "
                                   "Socket.IO connect auth {token} or as ?token=.",
                },
            },
        },
    }


def _plain_ws(channels: dict, operations: dict, messages: dict, schemas: dict) -> None:
    """The generic plain-WebSocket protocol at /ws: one channel, with its websocket
    binding, whose frames wrap every namespace's requests, acks and events."""
    text = {"type": "string"}
    frames = {
        "request": ("A request for any operation: data is the event's input.", {
            "type": "object", "required": ["id", "ns", "event"],
            "properties": {"id": {"type": ["integer", "string"]}, "ns": text, "event": text, "data": {"type": "object"}}}),
        "reply": ("The answer to a request: the Socket.IO ack with the request's id.", {
            "type": "object", "required": ["id", "ok"],
            "properties": {"id": {"type": ["integer", "string"]}, "ok": {"type": "boolean"}, "data": {},
                           "error": {"$ref": REF.format(model="ErrorBody")}}}),
        "event": ("A server event of a namespace, with its log offset (null: volatile).", {
            "type": "object", "required": ["ns", "event", "data", "offset"],
            "properties": {"ns": text, "event": text, "data": {"type": "object"}, "offset": {"type": ["string", "null"]}}}),
        "hello": ("The first client frame when the token is not in the query: token, and resume "
                  "{session, offsets: {namespace: last offset seen}} after a reconnect.", {
            "type": "object",
            "properties": {"token": text, "resume": {"type": "object", "properties": {
                "session": text, "offsets": {"type": "object", "additionalProperties": text}}}}}),
        "welcome": ("The server's first frame: the session to resume later, and which namespaces "
                    "were recovered (false: re-read with `sync`).", {
            "type": "object", "required": ["type", "session", "recovered"],
            "properties": {"type": {"const": "welcome"}, "session": text, "window": {"type": "number"},
                           "recovered": {"type": "object", "additionalProperties": {"type": "boolean"}}}}),
    }
    chan_messages = {}
    for key, (summary, payload) in frames.items():
        messages[f"plain.{key}"] = {"name": key, "title": f"/ws {key}", "summary": summary, "payload": payload}
        chan_messages[key] = {"$ref": f"#/components/messages/plain.{key}"}
    channels["plain"] = {
        "address": "/ws", "title": "/ws", "servers": [{"$ref": "#/servers/plain"}],
        "description": "Every namespace over one plain websocket (docs/clients.md).",
        "messages": chan_messages,
        "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0", "query": {
            "type": "object", "properties": {
                "token": text, "ns": {"type": "string", "description": "comma-separated namespaces"},
                "session": text, "offsets": {"type": "string", "description": "JSON {namespace: offset}"}}}}},
    }
    ref = {"$ref": "#/channels/plain"}

    def msgs(*keys: str) -> list[dict]:
        return [{"$ref": f"#/channels/plain/messages/{k}"} for k in keys]

    operations["plain.request"] = {"action": "send", "channel": ref, "title": "request",
                                   "messages": msgs("request", "hello"),
                                   "reply": {"channel": ref, "messages": msgs("reply")}}
    operations["plain.event"] = {"action": "receive", "channel": ref, "title": "event",
                                 "messages": msgs("event", "welcome")}


async def asyncapi_json(request: web.Request) -> web.Response:
    protocol = "wss" if request.scheme == "https" else "ws"
    return web.json_response(build(REGISTRY, host=request.host, protocol=protocol))


def routes() -> list[web.RouteDef]:
    return [web.get("/asyncapi.json", asyncapi_json)]
