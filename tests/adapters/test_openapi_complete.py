"""/openapi.json is complete: generated from the registry (every operation with an
HTTP route, HTTP-only ones included) plus the few routes that are no operation, it
validates as OpenAPI 3.1 (openapi-spec-validator) and names every route the app
serves but the pages and the WebSocket endpoints listed here."""
from __future__ import annotations

from dataclasses import replace

from openapi_spec_validator import validate

from handlers.registry import REGISTRY
from tests.conftest import Api

# Not JSON APIs: pages and their files, and the WebSocket endpoints (Socket.IO and
# the plain WebSocket gateways: described in /asyncapi.json).
NOT_API = {
    "/favicon.ico", "/console", "/widget/demo", "/widget.js", "/web/{name}", "/vendor/{name}",
    "/admin-ui", "/admin-ui/{name}",
    "/socket.io/", "/socket.io-msgpack/",
    "/ws", "/ws/{user_id}", "/ws/dialog/{dialog_id}", "/ws/site-dialog/{dialog_id}",
    "/ws/widget-dialog/{dialog_id}", "/ws/operator/{operator_id}",
}


async def test_every_served_route_is_in_the_validated_document(start_server, settings, http):
    # The admin UI on: its pages are routed too, and must be among the listed ones.
    server = await start_server(replace(settings, admin_ui=True))
    status, doc = await Api(server.url, http).request("GET", "/openapi.json")
    assert status == 200
    validate(doc)  # raises unless a valid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0"
    served, pages = set(), set()
    for route in server.app.router.routes():
        path = route.resource.canonical
        if path in NOT_API:
            pages.add(path)
        elif route.method not in ("HEAD", "OPTIONS"):  # aiohttp's own HEAD, and CORS preflights
            served.add((route.method.lower(), path))
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served - documented == set()
    assert documented - served == set()
    assert pages == NOT_API  # the list names no route that is gone


async def test_accounts_attachments_and_publish_come_from_the_registry(server, api):
    status, doc = await api.request("GET", "/openapi.json")
    by_id = {op["operationId"]: (method, path, op) for path, item in doc["paths"].items()
             for method, op in item.items()}
    http_ops = [op for op in REGISTRY.operations.values() if op.http]
    for op in http_ops:
        method, path, entry = by_id[f"{op.namespace}:{op.event}"]
        assert (method, path) == (op.http.method.lower(), op.http.path)
    only_http = {(op.http.method, op.http.path) for op in http_ops if not op.socket}
    assert {("POST", "/auth/register"), ("POST", "/auth/login"), ("POST", "/auth/refresh"),
            ("POST", "/auth/logout"), ("GET", "/auth/me"), ("POST", "/api/publish"),
            ("POST", "/api/attachments"), ("GET", "/api/attachments/{id}")} <= only_http
    login = doc["paths"]["/auth/login"]["post"]
    assert login["security"] == [] and "200" in login["responses"]
    assert doc["paths"]["/auth/register"]["post"]["responses"].keys() >= {"201", "409", "422"}
    assert doc["paths"]["/auth/me"]["get"]["security"] == [{"bearer": []}]
    upload = doc["paths"]["/api/attachments"]["post"]
    assert set(upload["requestBody"]["content"]) == {"multipart/form-data"}
    download = doc["paths"]["/api/attachments/{id}"]["get"]
    assert download["responses"]["200"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    assert {(p["in"], p["name"]) for p in download["parameters"]} == {("path", "id")}
    # HTTP-only operations are no Socket.IO events: not in the AsyncAPI document.
    status, asyncapi = await api.request("GET", "/asyncapi.json")
    titles = {op.get("title") for op in asyncapi["operations"].values()}
    assert not {"login", "register", "publish", "upload", "download"} & titles


def test_no_http_only_operation_is_a_socket_event():
    http_only = [op for op in REGISTRY.operations.values() if not op.socket]
    assert http_only and all(op.http for op in http_only)
    # Their groups are no Socket.IO namespaces, and no namespace serves them.
    assert not {op.namespace for op in http_only} & set(REGISTRY.namespaces)
    for name in REGISTRY.namespaces:
        assert all(op.socket for op in REGISTRY.operations_of(name).values())
