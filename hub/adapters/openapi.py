"""The OpenAPI 3.1 document of every HTTP route, generated at request time beside
the AsyncAPI one (hub/adapters/asyncapi.py): each registered operation with an HTTP
route from the registry (the REST mirror of Socket.IO events, and the HTTP-only
operations: accounts, attachments, publishing), and the few routes that are no
operation (health, metrics, the documents themselves, the widget's session, SSE)
from `HTTP_ROUTES` below. Schemas come from the pydantic models (JSON Schema
2020-12, which OpenAPI 3.1 uses)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from handlers.registry import JSON, REGISTRY, Registry
from handlers.resource_types import documented
from hub.adapters.asyncapi import REF, ErrorBody, _version
from hub.adapters.http.widget import WidgetSession
STATUS = {"validation_error": 422, "unauthorized": 401, "forbidden": 403, "not_found": 404,
          "conflict": 409, "rate_limited": 429, "payload_too_large": 413, "unavailable": 503}


class HttpError(BaseModel):
    """The body of every HTTP error: the contract's error object, and its message again
    as `detail` for clients of the reference APIs."""

    error: ErrorBody
    detail: str


class WidgetSessionOut(BaseModel):
    visitor_token: str
    dialog_id: int


@dataclass(frozen=True)
class HttpRoute:
    """A route that is no operation, described for the document."""

    method: str
    path: str
    summary: str
    request: type[BaseModel] | None = None
    response: Any = None  # a model, or a raw schema dict
    status: int = 200
    auth: bool = True  # a bearer token is required
    content: str = JSON  # the response's media type
    request_content: str = JSON
    body_required: bool = True
    params: tuple[dict, ...] = ()


_TEXT = {"type": "string"}
_ANY = {"type": "object"}

HTTP_ROUTES: tuple[HttpRoute, ...] = (
    HttpRoute("GET", "/health", "Liveness and each dependency's state.", None, _ANY, auth=False),
    HttpRoute("GET", "/ready", "200 only when this instance can serve.", None, _ANY, auth=False),
    HttpRoute("GET", "/metrics", "Prometheus metrics.", None, _TEXT, auth=False, content="text/plain"),
    HttpRoute("POST", "/api/widget/sessions", "A website widget's visitor token and dialog (origin-checked).",
              WidgetSession, WidgetSessionOut, 201, auth=False),
    HttpRoute("GET", "/asyncapi.json", "The AsyncAPI 3.0 document of the Socket.IO namespaces and /ws.",
              None, _ANY, auth=False),
    HttpRoute("GET", "/openapi.json", "This document.", None, _ANY, auth=False),
    HttpRoute(
        "GET", "/sse", "Server-Sent Events of one namespace: each event's `id:` is its log offset, so "
        "`Last-Event-ID` resumes with nothing lost within the recovery window; beyond it a `sync` "
        "event says to re-read.", None, _TEXT, content="text/event-stream",
        params=({"name": "ns", "in": "query", "required": True, "schema": {"type": "string", "example": "/notifications"}},
                {"name": "token", "in": "query", "required": False, "schema": _TEXT,
                 "description": "The token (or the `hub_token` cookie, or a bearer header)."},
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _TEXT})),
)


def _path_params(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)


def _without(schema: dict, defs: dict, names: list[str]) -> dict:
    """An input schema without the fields the path carries (inlined from its
    definition when there are some)."""
    if names and "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if not names or "properties" not in schema:
        return schema
    out = dict(schema)
    out["properties"] = {k: v for k, v in schema["properties"].items() if k not in names}
    if "required" in schema:
        out["required"] = [r for r in schema["required"] if r not in names]
    return out


def _json(schema: dict, media: str = JSON) -> dict:
    return {"content": {media: {"schema": schema}}}


def _errors(*codes: str) -> dict:
    ref = {"$ref": REF.format(model="HttpError")}
    return {str(STATUS[c]): {"description": c, **_json(ref)} for c in codes}


def build(registry: Registry = REGISTRY, *, server: str = "http://localhost:8000") -> dict:
    inputs: list = [(("HttpError",), "serialization", TypeAdapter(HttpError))]
    for route in HTTP_ROUTES:
        for part, model, mode in (("in", route.request, "validation"), ("out", route.response, "serialization")):
            if isinstance(model, type) and issubclass(model, BaseModel):
                inputs.append(((route.method, route.path, part), mode, TypeAdapter(model)))
    ops = [op for op in registry.operations.values() if op.http]
    for op in ops:
        inputs.append(((op.namespace, op.event, "in"), "validation", TypeAdapter(op.input)))
        inputs.append(((op.namespace, op.event, "out"), "serialization", op.output))
    by_key, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    schemas = {key: schema for (key, _mode), schema in by_key.items()}
    paths: dict[str, dict] = {}

    def add(method: str, path: str, operation: dict) -> None:
        paths.setdefault(path, {})[method.lower()] = operation

    for route in HTTP_ROUTES:
        responses = {str(route.status): {"description": route.summary, **_json(
            schemas.get((route.method, route.path, "out"), route.response or _ANY), route.content)}}
        responses.update(_errors("validation_error", "rate_limited", *(["unauthorized"] if route.auth else [])))
        operation: dict[str, Any] = {"summary": route.summary, "operationId": f"{route.method} {route.path}",
                                     "responses": responses}
        if route.params:
            operation["parameters"] = list(route.params)
        if route.request is not None:
            operation["requestBody"] = {"required": route.body_required,
                                        **_json(schemas[(route.method, route.path, "in")], route.request_content)}
        elif route.request_content != JSON:
            operation["requestBody"] = {"required": True, **_json(
                {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
                route.request_content)}
        operation["security"] = [{"bearer": []}] if route.auth else []
        add(route.method, route.path, operation)

    for op in ops:
        http = op.http
        method, path = http.method, http.path
        names = _path_params(path)
        spec = registry.namespaces.get(op.namespace)
        schema = schemas[(op.namespace, op.event, "in")]
        if method == "GET" or names or not http.generic:
            schema = _without(schema, defs.get("$defs", {}), names)
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "integer"}} for n in names]
        roles = op.roles or (spec.roles if spec else None)
        if op.socket:
            description = (f"Mirrors the Socket.IO event `{op.event}` of `{op.namespace}` "
                           f"(roles: {', '.join(sorted(roles or ()))}).")
        else:
            description = ("HTTP only; no token." if http.public else
                           f"HTTP only (roles: {', '.join(sorted(roles)) if roles else 'any token'}).")
        status = http.status or (201 if method == "POST" else 200)
        if http.response == JSON:
            body = _json(schemas[(op.namespace, op.event, "out")])
        else:
            body = _json({"type": "string", "format": "binary"}, http.response)
        operation = {
            "summary": op.summary, "operationId": f"{op.namespace}:{op.event}",
            "tags": [op.namespace], "security": [] if http.public else [{"bearer": []}],
            "description": description,
            "responses": {
                str(status): {"description": "the event's ack data" if op.socket else op.summary, **body},
                **_errors("validation_error", "unauthorized", "forbidden", "not_found", "conflict",
                          "rate_limited", "payload_too_large"),
            },
        }
        if method == "GET":
            params += [{"name": name, "in": "query", "required": name in schema.get("required", []),
                        "schema": prop} for name, prop in schema.get("properties", {}).items()]
        elif http.request != JSON:
            # A file (multipart field `file`): the operation's input is what the thin route reads from it.
            operation["requestBody"] = {"required": True, **_json(
                {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                 "required": ["file"]}, http.request)}
        elif schema.get("properties"):
            required = method != "DELETE" and (op.socket or bool(schema.get("required")))
            operation["requestBody"] = {"required": required, **_json(schema)}
        if params:
            operation["parameters"] = params
        add(method, path, operation)

    return {
        "openapi": "3.1.0",
        "info": {"title": "hub", "version": _version(),
                 "description": "The hub's HTTP routes. Every operation under /api mirrors a Socket.IO "
                                "event (same input and output); errors are {error: {code, message, "
                                "details?}, detail}. Plain WebSocket and Socket.IO are in /asyncapi.json."},
        "servers": [{"url": server}],
        "x-resource-types": documented(registry.resource_types),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(build(REGISTRY, server=f"{request.scheme}://{request.host}"))


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", openapi_json)]
