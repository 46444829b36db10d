"""The Socket.IO Admin UI (issue 23, part 6; docs/operations.md): the official
front end served at /admin-ui/, connected to the /admin namespace with an admin
token, lists the servers, sockets, rooms and events of one instance and of two on
Redis (tests/js/admin_ui.mjs, headless Chromium); other tokens are refused, and with
HUB_ADMIN_UI off neither /admin nor /admin-ui/ is served."""
import asyncio
import json
import re

import socketio

from storage.db import Database
from tests.support.clients import connect_refusal
from tests.support.dialogs import account
from tests.support.node import run_node
from tests.support.paths import ROOT
from tests.support.servers import make_settings
from tests.support.teardown import bounded

ARTIFACTS = ROOT / "tmp" / "artifacts" / "admin_ui"


async def admin_refusal(url: str, auth) -> str | None:
    """The connect_error message of an /admin connection with `auth`, None if accepted."""
    client = socketio.AsyncClient(reconnection=False)
    try:
        await client.connect(url, namespaces=["/admin"], auth=auth, transports=["websocket"], wait_timeout=5)
    except socketio.exceptions.ConnectionError as exc:
        return str(exc)
    await client.disconnect()
    return None


async def until_true(check) -> None:
    while not check():
        await asyncio.sleep(0.05)


async def test_only_admin_tokens_connect(start_server, tmp_path, http):
    server = await start_server(make_settings(tmp_path, admin_ui=True))
    _, user = await account(server.hub.db, "user")
    _, operator = await account(server.hub.db, "operator")
    _, admin = await account(server.hub.db, "admin")
    assert await admin_refusal(server.url, {"username": "admin", "password": user}) is not None
    assert await admin_refusal(server.url, {"token": operator}) is not None
    assert await admin_refusal(server.url, {"username": "admin", "password": "not a token"}) is not None
    assert await admin_refusal(server.url, None) is not None
    assert await admin_refusal(server.url, {"username": "admin", "password": admin}) is None
    assert await admin_refusal(server.url, {"token": admin}) is None
    # A connection its namespace refuses is reported gone, not left connected in the UI.
    watcher = socketio.AsyncClient(reconnection=False)
    gone, seen = [], []
    watcher.on("socket_disconnected", lambda *args: gone.append(args), namespace="/admin")
    watcher.on("socket_connected", lambda *args: seen.append(args[0]), namespace="/admin")
    watcher.on("event_received", lambda *args: seen.append(args), namespace="/admin")
    features: list = []
    watcher.on("config", lambda config: features.append(config["supportedFeatures"]), namespace="/admin")
    await watcher.connect(server.url, namespaces=["/admin"], auth={"token": admin}, transports=["websocket"])
    chat = socketio.AsyncClient(reconnection=False)
    try:
        assert await connect_refusal(server.url, "/chat", "not a token") is not None
        await bounded(until_true(lambda: any(args[0] == "/chat" and args[2] == "connection refused" for args in gone)),
                      "the refused /chat connection reported gone")
        # No credential reaches the UI: not a header's, nor a token event's.
        await chat.connect(server.url + "/?token=in-the-query", namespaces=["/chat"], auth={"token": user},
                           headers={"Authorization": "Bearer in-a-header"}, transports=["websocket"])
        await chat.call("auth:refresh", {"token": user}, namespace="/chat", timeout=10)
        await bounded(until_true(lambda: any(isinstance(s, tuple) and s[2][0] == "auth:refresh" for s in seen)),
                      "auth:refresh reported")
        assert user not in json.dumps(seen) and "in-a-header" not in json.dumps(seen)
        assert "in-the-query" not in json.dumps(seen)
        # Read-only: no action that joins sockets to rooms or emits to them past the hub's checks.
        await bounded(until_true(lambda: features), "the config event")
        assert not {"EMIT", "JOIN", "LEAVE", "DISCONNECT"} & set(features[0])
    finally:
        await chat.disconnect()
        await watcher.disconnect()
    async with http.get(server.url + "/admin-ui/") as resp:
        assert resp.status == 200
        assert "connect-src 'self'" in resp.headers["Content-Security-Policy"]
    async with http.get(server.url + "/admin-ui/..%2F..%2Fpackage.json") as resp:
        assert resp.status == 404


async def test_off_by_default(start_server, tmp_path, http):
    server = await start_server(make_settings(tmp_path))
    _, admin = await account(server.hub.db, "admin")
    assert await admin_refusal(server.url, {"token": admin}) is not None
    async with http.get(server.url + "/admin-ui/") as resp:
        assert resp.status == 404


async def watch(chromium: str, ui: str, token: str, users: list[dict], servers: list[str], shot: str) -> dict:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = await run_node("admin_ui.mjs", json.dumps({
        "chromium": chromium, "ui": ui, "token": token, "users": users, "servers": servers,
        "shot": str(ARTIFACTS / shot)}), timeout=120)
    return json.loads(out.strip().splitlines()[-1])


async def test_the_ui_shows_server_sockets_and_rooms(browser_deps, start_server, tmp_path):  # noqa: F811
    server = await start_server(make_settings(tmp_path, admin_ui=True))
    _, admin = await account(server.hub.db, "admin")
    user_id, user = await account(server.hub.db, "user")
    seen = await watch(browser_deps, server.url, admin, [{"url": server.url, "token": user, "room": f"user:{user_id}"}],
                       [server.hub.settings.instance_id], "one.png")
    assert seen["ok"]


async def test_the_ui_shows_both_instances(browser_deps, spawn_hubs, pg_url, redis_url, redis_prefix):  # noqa: F811
    hubs = await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                "HUB_REDIS_PREFIX": redis_prefix, "HUB_ADMIN_UI": "on"})
    servers = [re.search(r"instance (\S+) ready", hub.log.read_text()).group(1) for hub in hubs]
    db = Database(pg_url)
    try:
        _, admin = await account(db, "admin")
        users = []
        for hub in hubs:
            user_id, token = await account(db, "user")
            users.append({"url": hub.url, "token": token, "room": f"user:{user_id}"})
    finally:
        await db.close()
    # The UI is on the first instance; the second's server, socket and room reach it over the bus.
    seen = await watch(browser_deps, hubs[0].url, admin, users, servers, "two.png")
    assert seen["ok"]
