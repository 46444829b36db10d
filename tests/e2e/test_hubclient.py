"""hubclient (the Python client for bots and services) against a live hub: calls
return data or raise the contract's error, a service publishes, a dropped
connection reconnects and recovers what it missed, and a reconnect that cannot
recover (recovery off) runs the gap handlers, which catch up with `sync`."""
import asyncio
from dataclasses import replace

import pytest

from hubclient import Client, HubError
from tests.support.dialogs import tokens
from tests.support.proxy import TcpProxy
from tests.support.servers import make_settings


@pytest.fixture
async def proxy_to():
    proxies = []

    async def make(port: int) -> tuple[TcpProxy, str]:
        proxy = await TcpProxy(("127.0.0.1", port)).start()
        proxies.append(proxy)
        return proxy, proxy.url

    yield make
    for proxy in proxies:
        await proxy.close()


async def test_calls_errors_and_publish(server, api):
    ann, bob = await api.user(), await api.user()
    async with Client(server.url, ann["access_token"]) as a, Client(server.url, bob["access_token"]) as b:
        chat = await a.connect("/chat")
        sent = await chat.call("message:send", {"recipient_id": bob["user"]["id"], "message": "hi"})
        assert sent["message"] == "hi" and sent["recipient_id"] == bob["user"]["id"]
        with pytest.raises(HubError) as refused:
            await chat.call("message:send", {"recipient_id": bob["user"]["id"], "message": ""})
        assert refused.value.code == "validation_error" and refused.value.details

        alerts = asyncio.Queue()
        await b.connect("/notifications", {"alert:triggered": alerts.put_nowait})
        billing = Client(server.url, tokens().service("billing").token)
        await billing.publish("/notifications", "alert:triggered",
                              {"alert_id": 7, "severity": "info", "message": "paid"}, user_ids=[bob["user"]["id"]])
        assert (await asyncio.wait_for(alerts.get(), 5))["message"] == "paid"
        with pytest.raises(HubError) as wrong:
            await billing.publish("/notifications", "alert:triggered", {"alert_id": 7}, user_ids=[1])
        assert wrong.value.code == "validation_error" and wrong.value.status == 422


async def test_reconnects_and_recovers_what_it_missed(server, api, proxy_to):
    ann, bob = await api.user(), await api.user()
    proxy, url = await proxy_to(server.port)
    gaps = []
    async with Client(server.url, ann["access_token"]) as a, Client(url, bob["access_token"]) as b:
        sender = await a.connect("/chat")
        inbox = asyncio.Queue()
        chat = await b.connect("/chat")
        chat.on("message:new", lambda e: inbox.put_nowait(e["content"]))
        chat.on_gap(lambda ns: gaps.append(ns.name) or asyncio.sleep(0))
        await sender.call("message:send", {"recipient_id": bob["user"]["id"], "message": "before"})
        assert await asyncio.wait_for(inbox.get(), 5) == "before"

        proxy.cut()
        await sender.call("message:send", {"recipient_id": bob["user"]["id"], "message": "while away"})
        proxy.heal()
        assert await asyncio.wait_for(inbox.get(), 15) == "while away"
        await sender.call("message:send", {"recipient_id": bob["user"]["id"], "message": "after"})
        assert await asyncio.wait_for(inbox.get(), 5) == "after"
    assert gaps == []


async def test_a_reconnect_without_recovery_runs_the_gap_handlers(start_server, tmp_path, http, proxy_to):
    from tests.support.clients import Api

    server = await start_server(replace(make_settings(tmp_path), recovery_window=0))
    api = Api(server.url, http)
    ann, bob = await api.user(), await api.user()
    proxy, url = await proxy_to(server.port)
    caught_up = asyncio.Queue()
    async with Client(server.url, ann["access_token"]) as a, Client(url, bob["access_token"]) as b:
        sender = await a.connect("/chat")
        chat = await b.connect("/chat")
        _, cursor = await chat.sync(None)

        async def catch_up(ns):
            items, _ = await ns.sync(cursor)
            caught_up.put_nowait([item["message"] for item in items])

        chat.on_gap(catch_up)
        proxy.cut()
        await sender.call("message:send", {"recipient_id": bob["user"]["id"], "message": "missed"})
        proxy.heal()
        assert "missed" in await asyncio.wait_for(caught_up.get(), 15)


async def test_a_streamed_reply_ends_stored_or_quietly_when_taken_over(server, api, connect):
    from tests.support.dialogs import account, assistant, bot_token, visitor
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    v = await visitor(api, a["id"])
    console = await connect(server.url, "/dialogs", owner)
    async with Client(server.url, bot_token(a["id"])) as hub:
        dialogs = await hub.connect("/dialogs")
        async with dialogs.stream(v["dialog_id"]) as reply:
            assert await reply.send("Hel") == 1
            assert await reply.send("l") is None  # too soon: waits for the next delta
            await asyncio.sleep(0.1)
            assert await reply.send("o") == 2
            assert await reply.send("!") is None  # sent with the end
        assert reply.message["text"] == "Hello!" and not reply.message["interrupted"]
        async with dialogs.stream(v["dialog_id"], min_interval=0) as cut:
            await cut.send("Let me")
            await console.ok("dialog:takeover", {"dialog_id": v["dialog_id"]})
            await cut.send(" see")  # refused: the block ends here, quietly
            raise AssertionError("not reached")
        assert cut.interrupted and cut.message is None
    history = await console.ok("dialog:messages", {"dialog_id": v["dialog_id"]})
    assert [(m["text"], m["interrupted"]) for m in history] == [("Hello!", False), ("Let me", True)]
