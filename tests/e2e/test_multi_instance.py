"""Two real `hub serve` processes sharing PostgreSQL and Redis."""
import asyncio

import aiohttp

from tests.support.clients import Api
from tests.support.node import run_node


async def test_cross_instance_delivery_and_multi_device(two_hubs, connect, http):
    one, two = two_hubs
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    sender = await connect(one.url, "/chat", a["access_token"])
    sender_laptop = await connect(two.url, "/chat", a["access_token"])
    phone = await connect(one.url, "/chat", b["access_token"])
    laptop = await connect(two.url, "/chat", b["access_token"])

    msg = await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": "to every device"})
    for device in (phone, laptop):
        new = await device.next("message:new")
        assert new["message_id"] == msg["id"] and new["content"] == "to every device"
        assert (await device.next("thread:created"))["thread_id"] == msg["thread_id"]
    assert (await sender_laptop.next("message:sent"))["message_id"] == msg["id"]
    # Each device got it exactly once: its next message:new is of a later message.
    later = await sender.ok("message:send", {"thread_id": msg["thread_id"], "message": "later"})
    for device in (phone, laptop):
        await device.absent("message:new", until="message:new", where=lambda e: e["message_id"] == later["id"])

    # Typing (volatile, never stored) crosses instances too.
    await laptop.ok("typing:set", {"thread_id": msg["thread_id"], "is_typing": True})
    assert (await sender.next("typing:indicator"))["user_id"] == b["user"]["id"]


async def test_logout_on_one_instance_disconnects_sockets_on_the_other(two_hubs, connect, http):
    one, two = two_hubs
    api_one, api_two = Api(one.url, http), Api(two.url, http)
    login = await api_one.user()
    remote = await connect(two.url, "/chat", login["access_token"])
    gone = asyncio.Event()
    remote.sio.on("disconnect", lambda *a: gone.set(), namespace="/chat")
    status, _ = await api_one.request("POST", "/auth/logout", token=login["access_token"])
    assert status == 200
    await asyncio.wait_for(gone.wait(), 10)
    status, body = await api_two.request("GET", "/auth/me", token=login["access_token"])
    assert status == 401 and body["error"]["message"] == "token revoked"
    # Rate limits are shared too: the login budget is per client across instances.
    codes = []
    for i in range(11):
        api = (api_one, api_two)[i % 2]
        codes.append((await api.request("POST", "/auth/login", json={"email": "x@y.io", "password": "wrong pass"}))[0])
    assert codes[-1] == 429


async def test_official_js_client_across_instances(two_hubs, node, http):
    one, two = two_hubs
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    # run the JS exchange with both users on the second instance after registering on the first
    import json
    out = json.loads(await run_node("chat_exchange.mjs", two.url, a["access_token"], b["access_token"],
                                    str(b["user"]["id"])))
    assert out["event"]["content"] == "hello from js" and out["back"]["content"] == "hi back"


async def test_health_reports_each_dependency(two_hubs):
    async with aiohttp.ClientSession() as http:
        async with http.get(two_hubs[0].url + "/health") as resp:
            body = await resp.json()
    assert resp.status == 200 and body["status"] == "healthy"
    assert set(body["checks"]) == {"database", "redis", "broker"}
