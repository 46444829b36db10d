"""CORS on every HTTP route from HUB_CORS_ORIGINS, preflight included: a browser app
on an allowed origin can log in and read the answers (errors too); another origin's
preflight is refused. Socket.IO keeps its own CORS (one header, not two)."""
from dataclasses import replace

import pytest

from tests.support.servers import make_settings

APP = "https://app.example.com"
OTHER = "https://evil.example.net"


@pytest.fixture
async def cors_server(start_server, tmp_path):
    return await start_server(replace(make_settings(tmp_path), cors_origins=(APP,)))


def preflight(origin: str, headers: str = "content-type") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers}


async def test_preflight_to_login_from_an_allowed_origin_then_login(cors_server, http):
    async with http.options(cors_server.url + "/auth/login", headers=preflight(APP, "authorization,content-type")) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert "Origin" in resp.headers["Vary"]

    account = {"email": "cors@example.com", "password": "password123"}
    async with http.post(cors_server.url + "/auth/register", json=account, headers={"Origin": APP}) as resp:
        assert resp.status == 201
        assert resp.headers["Access-Control-Allow-Origin"] == APP
    async with http.post(cors_server.url + "/auth/login", json=account, headers={"Origin": APP}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == APP
    # an error answer is readable too
    async with http.get(cors_server.url + "/auth/me", headers={"Origin": APP}) as resp:
        assert resp.status == 401
        assert resp.headers["Access-Control-Allow-Origin"] == APP
        assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_preflight_from_another_origin_is_refused(cors_server, http):
    async with http.options(cors_server.url + "/auth/login", headers=preflight(OTHER)) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert (await resp.json())["error"]["code"] == "forbidden"
    async with http.post(cors_server.url + "/auth/login", json={"email": "x@example.com", "password": "password123"},
                         headers={"Origin": OTHER}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_widget_preflight_and_socketio_keep_their_own_cors(cors_server, http):
    # The widget's route answers any site's preflight (the assistant decides on POST).
    async with http.options(cors_server.url + "/api/widget/sessions", headers=preflight(OTHER)) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == OTHER
    async with http.get(cors_server.url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": APP}) as resp:
        assert resp.status == 200
        assert resp.headers.getall("Access-Control-Allow-Origin") == [APP]
