"""Live resources (issue 22, part 1) across two `hub serve` processes on PostgreSQL
and Redis: declare and update over a service socket and HTTP, watch late and get the
current state, illegal transitions, cancel reaching the service, coalescing for a
client that does not read, and EduStream's booking_update on its plain socket."""
import asyncio
import json

import pytest

from storage.db import Database
from tests.support.business import service_token
from tests.support.clients import Api
from tests.support.dialogs import account, bot_token, next_where
from tests.support.gateways import Plain
from tests.support.protocol import open_polling, text

NS = "/notifications"


@pytest.fixture
async def cluster(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_EVENT_RATE": "500", "HUB_EVENT_BURST": "1000", "HUB_USER_OP_LIMIT": "100000"}
    hubs = await spawn_hubs(2, env)
    db = Database(pg_url)
    yield hubs, db, [Api(h.url, http) for h in hubs]
    await db.close()


def update(resource_id, status, **fields) -> dict:
    return {"resource_type": "task", "resource_id": resource_id, "status": status, **fields}


async def test_late_watch_gets_the_current_state_then_every_change_in_order(cluster, connect):
    hubs, db, apis = cluster
    uid, token = await account(db)
    service = await connect(hubs[0].url, NS, service_token("analytics"))
    await service.ok("resource:update", update("t-1", "queued", owners={"user_ids": [uid]}))
    await service.ok("resource:update", update("t-1", "running", progress=10))
    await service.ok("resource:update", update("t-1", "running", progress=20))

    # arriving late, on the other instance: the current state at once
    user = await connect(hubs[1].url, NS, token)
    state = await user.ok("resource:watch", {"resource_type": "task", "resource_id": "t-1"})
    assert (state["status"], state["progress"], state["version"]) == ("running", 20, 3)

    await service.ok("resource:update", update("t-1", "running", progress=50))
    status, body = await apis[0].request("POST", "/api/resources", token=service_token("analytics"),
                                         json=update("t-1", "succeeded", progress=100, result={"score": 7}))
    assert status == 201, body
    progress = await user.next("resource:updated")
    assert (progress["status"], progress["progress"], progress["version"]) == ("running", 50, 4)
    done = await user.next("resource:updated")
    assert done == {"resource_type": "task", "resource_id": "t-1", "status": "succeeded", "progress": 100,
                    "result": {"score": 7}, "error": None, "version": 5}
    # the status change is durable (it carries its log offset); the progress was volatile
    assert len(user.offsets["resource:updated"]) == 1

    listed = await user.ok("resources:list", {"resource_type": "task"})
    assert [(r["resource_id"], r["status"], r["version"]) for r in listed["items"]] == [("t-1", "succeeded", 5)]
    # away longer than the recovery window: sync tells how it ended
    synced = await user.ok("resources:sync", {})
    assert [(r["resource_id"], r["status"], r["version"]) for r in synced["items"]] == [("t-1", "succeeded", 5)]
    assert synced["has_more"] is False and synced["cursor"]
    # someone else's resource is not there for another user
    _, other = await account(db)
    stranger = await connect(hubs[0].url, NS, other)
    assert await stranger.error("resource:watch", {"resource_type": "task", "resource_id": "t-1"}) == "not_found"
    assert (await stranger.ok("resources:list", {}))["items"] == []

    # watching every task one owns: their states, then changes of a new one
    everything = await user.ok("resource:watch", {"resource_type": "task"})
    assert [r["resource_id"] for r in everything["items"]] == ["t-1"]
    await service.ok("resource:update", update("t-2", "queued", owners={"room": f"user:{uid}"}))
    assert (await next_where(user, "resource:updated", lambda e: e["resource_id"] == "t-2"))["status"] == "queued"


async def test_illegal_transitions_are_conflicts_and_only_services_update(cluster, connect):
    hubs, db, apis = cluster
    uid, token = await account(db)
    service = await connect(hubs[0].url, NS, service_token("edustream"))
    booking = {"resource_type": "booking", "resource_id": 41, "owners": {"user_ids": [uid]}}
    assert await service.error("resource:update", {**booking, "status": "COMPLETED"}) == "conflict"
    created = await service.ok("resource:update", {**booking, "status": "PENDING"})
    assert (created["resource_id"], created["version"]) == ("41", 1)
    assert await service.error("resource:update", {**booking, "status": "COMPLETED"}) == "conflict"
    await service.ok("resource:update", {**booking, "status": "CANCELLED"})
    # an ended resource stays ended, progress included
    assert await service.error("resource:update", {**booking, "status": "CANCELLED"}) == "conflict"
    assert await service.error("resource:update", {**booking, "status": "SHIPPED"}) == "validation_error"
    # another service may not move it; users and bots may not update at all
    other = await connect(hubs[1].url, NS, service_token("billing"))
    assert await other.error("resource:update", {**booking, "status": "CONFIRMED"}) == "forbidden"
    user = await connect(hubs[1].url, NS, token)
    assert await user.error("resource:update", {**booking, "status": "CONFIRMED"}) == "forbidden"
    status, body = await apis[1].request("POST", "/api/resources", token=bot_token(1),
                                         json={**booking, "status": "CONFIRMED"})
    assert status == 403, body


async def test_cancel_reaches_the_service_socket(cluster, connect):
    hubs, db, _ = cluster
    uid, token = await account(db)
    service = await connect(hubs[0].url, NS, service_token("contentgen"))
    await service.ok("resource:update", update("video-9", "running", progress=5, owners={"user_ids": [uid]}))
    user = await connect(hubs[1].url, NS, token)
    asked = await user.ok("resource:cancel", {"resource_type": "task", "resource_id": "video-9"})
    assert asked["status"] == "running"
    request = await service.next("resource:cancel-requested")
    assert request == {"resource_type": "task", "resource_id": "video-9", "status": "running", "requested_by": uid}
    assert service.offsets["resource:cancel-requested"], "durable: a reconnecting service recovers it"
    await service.ok("resource:update", update("video-9", "cancelled"))
    assert await user.error("resource:cancel", {"resource_type": "task", "resource_id": "video-9"}) == "conflict"


class Polling:
    """A raw Engine.IO long-polling client on aiohttp: it reads only when the test polls,
    so between polls it is a client that does not read."""

    def __init__(self, http, url: str):
        self.http, self.url = http, url

    async def open(self, token: str) -> "Polling":
        self.sid, _ = await open_polling(self.http, self.url, "/socket.io/")
        await self.send(f'40{NS},' + json.dumps({"token": token}))
        assert (await self.poll())[0].startswith(f"40{NS},")
        return self

    async def send(self, packet: str) -> None:
        status, body = await text(self.http, "POST", f"{self.url}/socket.io/?EIO=4&transport=polling&sid={self.sid}",
                                  data=packet)
        assert status == 200, body

    async def poll(self) -> list[str]:
        status, body = await text(self.http, "GET", f"{self.url}/socket.io/?EIO=4&transport=polling&sid={self.sid}")
        assert status == 200, body
        return [p for p in body.split("\x1e") if p]

    async def updates(self, until) -> list[dict]:
        """Poll until an update satisfies `until`; every resource:updated received."""
        seen: list[dict] = []
        while not seen or not until(seen[-1]):
            for packet in await self.poll():
                if packet.startswith(f'42{NS},["resource:updated"'):
                    seen.append(json.loads(packet[len(f"42{NS},"):])[1])
        return seen


async def test_a_client_that_does_not_read_gets_the_latest_progress_and_every_end(cluster, connect, http):
    hubs, db, _ = cluster
    uid, token = await account(db)
    service = await connect(hubs[0].url, NS, service_token("analytics"))
    await service.ok("resource:update", update("big", "running", progress=0, owners={"user_ids": [uid]}))
    slow = await Polling(http, hubs[1].url).open(token)
    await slow.send(f'42{NS},1["resource:watch",{{"resource_type":"task","resource_id":"big"}}]')
    assert (await slow.poll())[0].startswith(f"43{NS},1")

    for p in range(1, 31):  # while the client does not poll
        await service.ok("resource:update", update("big", "running", progress=p))
    # the first went out before it fell behind; then only the latest
    got = await slow.updates(lambda e: e["progress"] == 30)
    assert [e["progress"] for e in got] == [1, 30]

    for p in range(31, 41):
        await service.ok("resource:update", update("big", "running", progress=p))
    await service.ok("resource:update", update("big", "failed", error="out of memory"))
    got = await slow.updates(lambda e: e["status"] == "failed")
    # the end supersedes what was held, and carries the latest progress with it
    assert [(e["status"], e["progress"]) for e in got] == [("running", 31), ("failed", 40)]
    assert got[-1]["error"] == "out of memory" and got[-1]["version"] == 42


async def test_booking_update_reaches_edustreams_plain_socket(cluster, connect, http):
    hubs, db, _ = cluster
    uid, token = await account(db)
    plain = await Plain.open(http, f"{hubs[1].url}/ws/{uid}?token={token}")
    service = await connect(hubs[0].url, NS, service_token("edustream"))
    booking = {"resource_type": "booking", "resource_id": 77, "owners": {"user_ids": [uid]}}
    await service.ok("resource:update", {**booking, "status": "PENDING"})
    await service.ok("resource:update", {**booking, "status": "CONFIRMED", "result": {"room_url": "/r/77"}})
    first = await plain.next(lambda f: f.get("type") == "booking_update")
    second = await plain.next(lambda f: f.get("type") == "booking_update")
    assert (first["booking_id"], first["status"], first["version"]) == (77, "PENDING", 1)
    assert (second["status"], second["result"], second["version"]) == ("CONFIRMED", {"room_url": "/r/77"}, 2)
    await plain.close()


async def test_the_api_documents_show_the_resource_types_and_their_machines(server, api):
    for path in ("/asyncapi.json", "/openapi.json"):
        status, doc = await api.request("GET", path)
        assert status == 200
        types = doc["x-resource-types"]
        assert types["task"]["transitions"]["running"] == ["succeeded", "failed", "cancelled"]
        assert set(types["booking"]["terminal"]) >= {"CANCELLED", "COMPLETED"}
        assert "PENDING" in types["booking"]["initial"]


async def test_a_watcher_away_for_a_moment_recovers_every_status_change_and_its_watch(cluster, connect,
                                                                                    js_driver):
    hubs, db, _ = cluster
    uid, token = await account(db)
    service = await connect(hubs[1].url, NS, service_token("scraper"))
    for rid in ("run-1", "run-2"):
        await service.ok("resource:update", update(rid, "queued", owners={"user_ids": [uid]}))
    js = await js_driver()
    assert await js.do("connect", url=hubs[0].url, ns=NS, token=token) == {"recovered": False}
    for rid in ("run-1", "run-2"):
        assert (await js.do("call", event="resource:watch", data={"resource_type": "task", "resource_id": rid}))["ok"]
    await js.do("drop")
    await service.ok("resource:update", update("run-1", "running"))
    await service.ok("resource:update", update("run-1", "succeeded", result={"pages": 3}))
    await js.do("resume", url=hubs[1].url)  # back on the other instance
    assert (await js.do("reconnected"))["recovered"] is True
    # the watch itself came back: run-2's next change reaches it too
    await service.ok("resource:update", update("run-2", "cancelled"))
    for _ in range(200):
        # (a new session's replay starts a little before its connect: older versions
        # may come again, which a client drops by version)
        got = [(d["resource_id"], d["status"], bool(o)) for e, d, o in await js.do("events")
               if e == "resource:updated" and d["version"] > 1]
        if ("run-2", "cancelled", True) in got:
            break
        await asyncio.sleep(0.05)
    assert got == [("run-1", "running", True), ("run-1", "succeeded", True), ("run-2", "cancelled", True)]
    await js.do("close")
