"""The support desk across two real `hub serve` processes sharing PostgreSQL and
Redis: automatic routing racing on both instances (and operators accepting by hand
meanwhile) never puts an operator over max_active_chats, and an assistant's change
reaches the other instance's origin check at once."""
import asyncio

import pytest

from storage.db import Database
from tests.support.clients import Api
from tests.support.dialogs import account, assistant, visitor

CAPACITY, OPERATORS, VISITORS = 3, 4, 30


@pytest.fixture
async def cluster(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_WIDGET_SESSIONS_PER_MINUTE": "1000", "HUB_EVENT_RATE": "200", "HUB_EVENT_BURST": "400"}
    hubs = await spawn_hubs(2, env)
    db = Database(pg_url)
    yield hubs, db, [Api(h.url, http) for h in hubs]
    await db.close()


async def test_routing_races_on_two_instances_never_exceed_capacity(cluster, connect):
    hubs, db, apis = cluster
    _, owner = await account(db)
    a = await assistant(apis[0], owner)
    owner_sock = await connect(hubs[0].url, "/dialogs", owner)
    consoles = []
    for i in range(OPERATORS):
        _, token = await account(db, "operator")
        console = await connect(hubs[i % 2].url, "/operators", token)
        await console.ok("presence:update", {"status": "online", "max_active_chats": CAPACITY})
        consoles.append(console)
    await owner_sock.ok("assistant:settings", {"assistant_id": a["id"], "routing": "least_busy"})
    visitors = []
    for i in range(VISITORS):
        v = await visitor(apis[i % 2], a["id"])
        visitors.append((v["dialog_id"], await connect(hubs[i % 2].url, "/dialogs", v["visitor_token"])))

    # every visitor asks at once, on both instances, while operators also accept by hand
    async def grab(console):
        for did, _ in visitors:
            await console.call("handoff:accept", {"dialog_id": did})

    await asyncio.gather(*[vis.ok("dialog:handoff", {"dialog_id": did}) for did, vis in visitors],
                         *[grab(c) for c in consoles])

    # the assignments after each request (and the sweeps) fill every free place, never more
    waiting = VISITORS - CAPACITY * OPERATORS
    for _ in range(50):
        held = [len(await c.ok("chats:active")) for c in consoles]
        assert max(held) <= CAPACITY, held
        if len(await consoles[0].ok("handoff:queue")) == waiting:
            break
        await asyncio.sleep(0.2)
    assert held == [CAPACITY] * OPERATORS
    for c in consoles:
        me = await c.ok("presence:status")
        assert me["active_chats"] == CAPACITY == me["max_active_chats"]


async def test_an_assistants_new_origin_reaches_the_other_instance_at_once(cluster, connect, http):
    hubs, db, apis = cluster
    _, owner = await account(db)
    # the owner listens on the second instance; the change is made on the first
    listener = await connect(hubs[1].url, "/dialogs", owner)
    site = "https://new-shop.example"

    async def handshake(url: str) -> int:
        async with http.get(url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": site}) as resp:
            return resp.status

    assert await handshake(hubs[1].url) == 400
    a = await assistant(apis[0], owner, origins=[site])
    changed = await listener.next("assistant:changed")
    assert changed == {"assistant_id": a["id"], "deleted": False}
    # no widget session on the second instance, no 10-second refresh: it knows already
    assert await handshake(hubs[1].url) == 200
    status, _ = await apis[0].request("PUT", f"/api/assistants/{a['id']}", token=owner,
                                      json={"allowed_origins": []})
    assert status == 200
    await listener.next("assistant:changed")
    assert await handshake(hubs[1].url) == 400
