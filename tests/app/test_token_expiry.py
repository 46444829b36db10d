"""A socket's token expires with it: refreshed in-band (`auth:refresh`) the socket
lives on; otherwise the hub says `auth:expired` and drops the connection, and the
official client comes back with a fresh token. Real server, real clients."""
from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from tests.support.clients import Api
from tests.support.node import run_node
from tests.support.servers import SECRET, make_settings

TTL = 6


@pytest.fixture
async def short(start_server, tmp_path, http):
    server = await start_server(make_settings(tmp_path, access_token_ttl=TTL))
    return server, Api(server.url, http)


async def relogin(api: Api, login: dict) -> str:
    status, body = await api.request("POST", "/auth/login", json={"email": login["user"]["email"],
                                                                  "password": "password123"})
    assert status == 200, body
    return body["access_token"]


async def test_expired_socket_is_told_and_dropped(short, connect):
    server, api = short
    login = await api.user()
    client = await connect(server.url, "/chat", login["access_token"])
    gone = asyncio.Event()
    client.sio.on("disconnect", lambda *a: gone.set(), namespace="/chat")
    assert await client.next("auth:expired", timeout=TTL + 10) == {"code": "unauthorized",
                                                                    "message": "token expired"}
    await asyncio.wait_for(gone.wait(), 10)
    assert not client.sio.connected


async def test_refreshed_socket_outlives_its_first_token(short, connect):
    server, api = short
    login = await api.user()
    client = await connect(server.url, "/chat", login["access_token"])
    first_expiry = jwt.decode(login["access_token"], SECRET, algorithms=["HS256"])["exp"]
    await asyncio.sleep(max(first_expiry - time.time(), 0) / 2)
    fresh = await relogin(api, login)
    reply = await client.ok("auth:refresh", {"token": fresh})
    assert reply["expires_at"] > first_expiry
    # Past the first token's expiry (and the timer it armed) the socket still works.
    await asyncio.sleep(max(first_expiry - time.time(), 0) + 0.5)
    assert client.sio.connected
    assert (await client.ok("unread:count"))["unread_count"] == 0
    # (that ack left after the first token's timer was due: an auth:expired would be before it)
    assert client.queue("auth:expired").empty()


async def test_refresh_is_checked_like_a_connect(short, connect):
    server, api = short
    login, other = await api.user(), await api.user()
    client = await connect(server.url, "/chat", login["access_token"])
    reply = await client.call("auth:refresh", {"token": other["access_token"]})
    assert reply["error"]["code"] == "forbidden"
    assert (await client.call("auth:refresh", {"token": "not.a.token"}))["error"]["code"] == "unauthorized"
    assert (await client.call("auth:refresh", {}))["error"]["code"] == "validation_error"
    revoked = await relogin(api, login)
    assert (await api.request("POST", "/auth/logout", token=revoked))[0] == 200
    assert (await client.call("auth:refresh", {"token": revoked}))["error"]["message"] == "token revoked"
    # A refresh token is not an access token.
    assert (await client.call("auth:refresh", {"token": login["refresh_token"]}))["error"]["code"] == "unauthorized"


async def test_asyncapi_lists_auth_refresh_in_every_namespace(short):
    server, api = short
    status, doc = await api.request("GET", "/asyncapi.json")
    assert status == 200
    for chan in ("chat", "dialogs", "notifications", "operators", "orders", "sns"):
        assert f"{chan}.auth_refresh" in doc["operations"], chan
        assert f"{chan}.auth_expired.event" in doc["operations"], chan


async def test_official_client_refreshes_in_band_or_reconnects_with_a_fresh_token(short, node):
    server, api = short
    login = await api.user()
    out = json.loads(await run_node("token_refresh.mjs", server.url, login["user"]["email"], "password123",
                                    str(TTL), timeout=90))
    kept, dropped = out["kept"], out["dropped"]
    assert kept["connects"] == 1 and kept["disconnects"] == [] and kept["expired"] == []
    assert all(r["ok"] for r in kept["refreshes"]) and kept["afterRefresh"]["ok"]
    assert dropped["expired"] == [{"code": "unauthorized", "message": "token expired"}]
    assert dropped["disconnects"][0] == "transport close"
    assert dropped["connects"] == 2 and dropped["authCalls"] == 2 and dropped["recovered"] is True
    assert dropped["afterReconnect"]["ok"]
