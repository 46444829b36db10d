"""Revocations survive restarts (the database is the truth), service and bot tokens
are listed and revoked from the CLI, and refresh-token reuse ends every access
token of the family at once. Real `hub serve` processes, real clients."""
from __future__ import annotations

import asyncio
import subprocess
import sys

import jwt

from tests.support.clients import Api, connect_refusal
from tests.support.paths import ROOT
from tests.support.servers import SECRET, HubProcess

PUBLISH = {"namespace": "/notifications", "event": "status:updated", "to": {"user_ids": [1]},
           "data": {"resource_type": "invoice", "resource_id": 1, "status": "paid"}}


def cli(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "hub.cli", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def jti(token: str) -> str:
    return jwt.decode(token, SECRET, algorithms=["HS256"])["jti"]


async def status_with(http, url: str, token: str) -> tuple[int, int]:
    """(GET /auth/me status for a user token, POST /api/publish status for a service token)."""
    api = Api(url, http)
    return (await api.request("GET", "/auth/me", token=token))[0], \
        (await api.request("POST", "/api/publish", token=token, json=PUBLISH))[0]


async def restart(hub: HubProcess) -> HubProcess:
    hub.stop()
    return await hub.start().ready()


async def test_single_instance_restart_keeps_revocations(spawn_hubs, http):
    hub, = await spawn_hubs(1, {})
    api = Api(hub.url, http)
    login = await api.user()
    service = cli(hub.env, "token", "issue", "--role", "service", "--name", "billing").strip()
    bot = cli(hub.env, "token", "issue", "--role", "service", "--name", "bot", "--assistant-id", "1").strip()
    assert (await api.request("GET", "/auth/me", token=login["access_token"]))[0] == 200
    assert (await api.request("POST", "/api/publish", token=service, json=PUBLISH))[0] == 200

    for token in (login["access_token"], service, bot):
        status, body = await api.request("POST", "/auth/logout", token=token)
        assert status == 200, body

    hub = await restart(hub)
    api = Api(hub.url, http)
    status, body = await api.request("GET", "/auth/me", token=login["access_token"])
    assert status == 401 and body["error"]["message"] == "token revoked"
    status, body = await api.request("POST", "/api/publish", token=service, json=PUBLISH)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    for namespace, token in (("/chat", login["access_token"]), ("/notifications", service), ("/dialogs", bot)):
        refusal = await connect_refusal(hub.url, namespace, token)
        assert refusal == {"code": "unauthorized", "message": "token revoked"}, (namespace, refusal)
    # The account itself works: a new login is not revoked.
    status, fresh = await api.request("POST", "/auth/login", json={"email": login["user"]["email"],
                                                                  "password": "password123"})
    assert status == 200 and (await api.request("GET", "/auth/me", token=fresh["access_token"]))[0] == 200


async def test_cli_lists_and_revokes_service_tokens_and_live_sockets_end(spawn_hubs, http):
    hub, = await spawn_hubs(1, {})
    env = hub.env
    billing = cli(env, "token", "issue", "--role", "service", "--name", "billing").strip()
    bot = cli(env, "token", "issue", "--role", "service", "--name", "helper-bot", "--assistant-id", "7").strip()
    lines = [line.split("\t") for line in cli(env, "token", "list").splitlines()]
    assert lines[0] == ["id", "role", "name", "assistant", "issued", "expires", "revoked"]
    rows = {row[0]: row for row in lines[1:]}
    assert rows[jti(billing)][1:4] == ["service", "billing", "-"]
    assert rows[jti(bot)][1:4] == ["bot", "helper-bot", "7"]
    assert rows[jti(bot)][6] == "-" and rows[jti(bot)][5] > rows[jti(bot)][4]

    import socketio

    sio = socketio.AsyncClient(reconnection=False)
    gone = asyncio.Event()
    sio.on("disconnect", lambda *a: gone.set(), namespace="/notifications")
    await sio.connect(hub.url, namespaces=["/notifications"], auth={"token": billing}, wait_timeout=5)
    try:
        assert cli(env, "token", "revoke", jti(billing)).strip() == f"revoked {jti(billing)}"
        # The running instance learns it from the database and ends the socket.
        await asyncio.wait_for(gone.wait(), 15)
    finally:
        await sio.disconnect()
    api = Api(hub.url, http)
    assert (await api.request("POST", "/api/publish", token=billing, json=PUBLISH))[0] == 401
    assert await connect_refusal(hub.url, "/dialogs", bot) is None  # the other token is untouched
    rows = {row.split("\t")[0]: row.split("\t") for row in cli(env, "token", "list").splitlines()[1:]}
    assert rows[jti(billing)][6] != "-" and rows[jti(bot)][6] == "-"
    assert "already revoked" in cli(env, "token", "revoke", jti(billing))
    out = subprocess.run([sys.executable, "-m", "hub.cli", "token", "revoke", "nosuchid"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no service token" in out.stderr
    # A user's access token can be revoked by giving it whole.
    login = await api.user()
    cli(env, "token", "revoke", login["access_token"])
    hub = await restart(hub)
    assert (await Api(hub.url, http).request("GET", "/auth/me", token=login["access_token"]))[0] == 401


async def test_redis_restart_and_a_new_instance_keep_revocations(spawn_hubs, private_redis, pg_url, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": private_redis.url}
    one, two = await spawn_hubs(2, env)
    api = Api(one.url, http)
    login = await api.user()
    service = cli(one.env, "token", "issue", "--role", "service", "--name", "billing").strip()
    assert (await api.request("POST", "/auth/logout", token=login["access_token"]))[0] == 200
    assert (await Api(two.url, http).request("POST", "/auth/logout", token=service))[0] == 200

    # Redis comes back empty (no persistence): the revocation keys are gone.
    private_redis.stop()
    private_redis.start()
    three, = await spawn_hubs(1, env)
    for hub in (one, two, three):
        assert (await status_with(http, hub.url, login["access_token"]))[0] == 401, hub.url
        assert (await status_with(http, hub.url, service))[1] == 401, hub.url
        refusal = await connect_refusal(hub.url, "/chat", login["access_token"])
        assert refusal == {"code": "unauthorized", "message": "token revoked"}, hub.url


async def test_refresh_reuse_ends_every_live_access_token_of_the_family(server, api, connect):
    login = await api.user()
    first_access = login["access_token"]
    sock = await connect(server.url, "/chat", first_access)
    gone = asyncio.Event()
    sock.sio.on("disconnect", lambda *a: gone.set(), namespace="/chat")
    status, pair = await api.request("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert status == 200
    # The rotated refresh token comes back (a thief kept a copy): the whole family ends,
    # including the access token issued with the reused refresh token.
    status, body = await api.request("POST", "/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert status == 401
    for token in (first_access, pair["access_token"]):
        status, body = await api.request("GET", "/auth/me", token=token)
        assert status == 401 and body["error"]["message"] == "token revoked"
    await asyncio.wait_for(gone.wait(), 10)
    assert not sock.sio.connected
