"""What `hub serve` says, read from its output: an access line per request (method,
route, status, ms, request id, echoed in X-Request-ID), a line per refused
connection and per handoff change, Alembic kept quiet, one line for a warning
repeated while Redis is down, the shutdown, all as JSON lines with HUB_LOG_FORMAT=json."""
import json
import os
import subprocess
import sys

import socketio

from tests.support.clients import Api
from tests.support.dialogs import ORIGIN
from tests.support.paths import ROOT


def lines(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


async def test_hub_serve_logs_requests_refusals_handoffs_and_its_stop(spawn_hubs, private_redis, http):
    [hub] = await spawn_hubs(1, {"HUB_LOG_FORMAT": "json", "HUB_REDIS_URL": private_redis.url})
    api = Api(hub.url, http)

    owner = {"email": "owner@example.com", "password": "password123"}
    async with http.post(hub.url + "/auth/register", json=owner, headers={"X-Request-ID": "req-42"}) as resp:
        assert resp.status == 201 and resp.headers["X-Request-ID"] == "req-42"
    async with http.post(hub.url + "/auth/login", json=owner) as resp:
        generated = resp.headers["X-Request-ID"]
        token = (await resp.json())["access_token"]
    _, assistant = await api.request("POST", "/api/assistants", token=token,
                                     json={"name": "Helper", "allowed_origins": [ORIGIN]})
    _, session = await api.request("POST", "/api/widget/sessions", json={"assistant_id": assistant["id"]},
                                   headers={"Origin": ORIGIN})
    dialog = session["dialog_id"]
    status, _ = await api.request("POST", "/api/handoff/request", token=session["visitor_token"],
                                  json={"dialog_id": dialog, "reason": "wants a human"})
    assert status == 201
    status, _ = await api.request("POST", f"/api/dialogs/{dialog}/takeover", token=token, json={})
    assert status == 201

    client = socketio.AsyncClient(reconnection=False)
    try:
        await client.connect(hub.url, namespaces=["/chat"], auth={"token": "not-a-token"}, wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        pass
    await client.disconnect()

    # A page of another site (or a proxy dropping the Host's port) is refused at the handshake.
    async with http.get(hub.url + "/socket.io/?EIO=4&transport=polling",
                        headers={"Origin": "https://elsewhere.example"}) as resp:
        assert resp.status == 400

    # Redis goes away: each login would warn that its attempt was not counted.
    private_redis.stop()
    for _ in range(12):
        await api.request("POST", "/auth/login", json={"email": "nobody@example.com", "password": "password123"})
    hub.stop()

    out = lines(hub.log)
    assert out, hub.log.read_text()
    access = [line for line in out if line["logger"] == "hub.access"]
    register = next(line for line in access if line["route"] == "/auth/register")
    assert register["method"] == "POST" and register["status"] == 201 and register["request_id"] == "req-42"
    assert isinstance(register["ms"], float)
    assert any(line["request_id"] == generated and line["route"] == "/auth/login" for line in access)
    assert any(line["route"] == "/api/dialogs/{dialog_id}/takeover" and line["status"] == 201 for line in access)

    refused = [line for line in out if line["logger"] == "hub.namespaces" and "refused" in line["message"]]
    assert [(line["namespace"], line["reason"]) for line in refused] == [("/chat", "unauthorized")], refused
    [origin] = [line for line in out if line.get("reason") == "origin"]
    assert origin["level"] == "WARNING" and origin["origin"] == "https://elsewhere.example", origin
    handoffs = [(line["dialog_id"], line["handoff_status"], line["reason"])
                for line in out if line["logger"] == "hub.handoff"]
    assert handoffs == [(dialog, "requested", "wants a human"), (dialog, "active", None)]

    assert not [line for line in out if line["logger"].startswith("alembic")]
    assert sum("database schema upgraded" in line["message"] for line in out) == 1
    not_counted = [line for line in out if line["message"].startswith("rate limit not counted")]
    assert len(not_counted) == 1, not_counted
    messages = [line["message"] for line in out]
    stopping = next(i for i, m in enumerate(messages) if m.startswith("shutdown: "))
    assert any(m.startswith("instance ") and m.endswith(" stopped") for m in messages[stopping:]), messages[-5:]


def test_cli_commands_say_nothing_of_alembic(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HUB_")}, "HUB_DATA_DIR": str(tmp_path)}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "hub.cli", "migrate"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "alembic" not in done.stderr.lower(), done.stderr
    assert done.stdout.strip() == "schema is up to date"
