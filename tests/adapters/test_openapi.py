"""/openapi.json: OpenAPI 3.1 of every HTTP route, valid by an OpenAPI validator."""
from __future__ import annotations

import re

from openapi_spec_validator import validate

# Pages and transports that are not JSON APIs: the console and widget assets, the
# Socket.IO endpoints and the plain WebSocket gateways (described in /asyncapi.json).
NOT_API = re.compile(r"^/(socket\.io|console|widget/demo|widget\.js|web/|vendor/|favicon\.ico|ws\b)")


def _template(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)


async def test_openapi_describes_every_http_route_and_validates(server, api):
    status, doc = await api.request("GET", "/openapi.json")
    assert status == 200
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0" and doc["servers"][0]["url"] == server.url
    served = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = _template(info.get("path") or info.get("formatter") or "")
        if route.method in ("HEAD", "OPTIONS", "*") or not path or NOT_API.match(path):
            continue
        served.add((route.method.lower(), path))
    documented = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert served - documented == set()
    assert documented - served == set()
    for route in ("/auth/login", "/health", "/ready", "/metrics", "/api/publish", "/api/notifications",
                  "/api/attachments", "/api/widget/sessions", "/api/messages", "/sse"):
        assert route in doc["paths"], route
    assert "text/event-stream" in doc["paths"]["/sse"]["get"]["responses"]["200"]["content"]


async def test_a_mirrored_operation_has_its_path_query_and_error_shapes(server, api):
    status, doc = await api.request("GET", "/openapi.json")
    history = doc["paths"]["/api/messages/threads/{other_user_id}"]["get"]
    params = {(p["in"], p["name"]) for p in history["parameters"]}
    assert {("path", "other_user_id"), ("query", "page"), ("query", "page_size")} <= params
    assert ("query", "other_user_id") not in params
    send = doc["paths"]["/api/messages"]["post"]
    assert set(send["responses"]) >= {"201", "401", "422"}
    assert send["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/HttpError")
    error = doc["components"]["schemas"]["HttpError"]
    assert set(error["required"]) == {"error", "detail"}
    read = doc["paths"]["/api/messages/{message_id}/read"]
    assert set(read) == {"patch"}
