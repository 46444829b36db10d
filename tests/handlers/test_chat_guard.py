"""/chat authorization, bad input for every event, and limits."""
import asyncio
from dataclasses import replace

import pytest

from handlers.registry import REGISTRY


@pytest.fixture
async def three(server, api, connect):
    """Alice and Bob share a direct thread and a group; Mallory is in neither."""
    a, b, m = await api.user(), await api.user(), await api.user()
    ca, cb, cm = [await connect(server.url, "/chat", u["access_token"]) for u in (a, b, m)]
    direct = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "secret"})
    group = await ca.ok("thread:create", {"member_ids": [b["user"]["id"]], "title": "private"})
    in_group = await cb.ok("message:send", {"thread_id": group["thread_id"], "message": "group secret"})
    return dict(a=a, b=b, m=m, ca=ca, cb=cb, cm=cm, direct=direct, group=group, in_group=in_group)


async def test_outsider_cannot_reach_other_peoples_threads_any_way(three, server, api):
    cm, direct, group, in_group = three["cm"], three["direct"], three["group"], three["in_group"]
    a, b = three["a"]["user"]["id"], three["b"]["user"]["id"]
    for thread_id in (direct["thread_id"], group["thread_id"]):
        assert await cm.error("thread:history", {"thread_id": thread_id}) == "forbidden"
        assert await cm.error("message:send", {"thread_id": thread_id, "message": "let me in"}) == "forbidden"
        assert await cm.error("thread:read-all", {"thread_id": thread_id}) == "forbidden"
        assert await cm.error("typing:set", {"thread_id": thread_id, "is_typing": True}) == "forbidden"
    for msg in (direct, in_group):
        assert await cm.error("message:read", {"message_id": msg["id"]}) == "not_found"
        assert await cm.error("message:edit", {"message_id": msg["id"], "message": "x"}) == "not_found"
        assert await cm.error("message:delete", {"message_id": msg["id"]}) == "not_found"
    # Naming another user never opens a conversation that is not yours.
    assert (await cm.ok("thread:history", {"other_user_id": a}))["total"] == 0
    assert await cm.ok("messages:search", {"query": "secret"}) == []
    assert await cm.ok("messages:search", {"query": "secret", "user_id": b}) == []
    assert await cm.ok("threads:list") == []
    assert (await cm.ok("unread:count"))["unread_count"] == 0
    # Nothing of theirs was delivered to the outsider either: the first message and
    # thread the outsider hears of are of a later message sent to them.
    later = await three["ca"].ok("message:send", {"recipient_id": three["m"]["user"]["id"], "message": "later"})
    await cm.absent("message:new", until="message:new", where=lambda e: e["message_id"] == later["id"])
    await cm.absent("thread:created", until="thread:created", where=lambda e: e["thread_id"] == later["thread_id"])
    # Attachments of the thread are not downloadable by the outsider.
    import aiohttp
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", b"private bytes", filename="p.txt", content_type="text/plain")
        async with http.post(server.url + "/api/attachments", data=form,
                             headers={"Authorization": f"Bearer {three['a']['access_token']}"}) as resp:
            att = await resp.json()
        await three["ca"].ok("message:send", {"thread_id": direct["thread_id"], "message": "file",
                                              "attachment_ids": [att["id"]]})
        for who, expected in ((three["b"], 200), (three["m"], 404)):
            async with http.get(server.url + att["url"], headers={"Authorization": f"Bearer {who['access_token']}"}) as resp:
                assert resp.status == expected
                if expected == 200:
                    assert await resp.read() == b"private bytes"


async def test_attachment_upload_limits_and_ownership(server, api, connect, http):
    a, b = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    import aiohttp

    async def upload(token, content: bytes):
        form = aiohttp.FormData()
        form.add_field("file", content, filename="f.bin", content_type="application/octet-stream")
        async with http.post(server.url + "/api/attachments", data=form,
                             headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.json()

    status, body = await upload(a["access_token"], b"x" * (server.hub.settings.max_attachment_bytes + 1))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, att = await upload(a["access_token"], b"ok")
    assert status == 201 and att["size"] == 2
    # Someone else's upload cannot be attached.
    assert await cb.error("message:send", {"recipient_id": a["user"]["id"], "message": "steal",
                                           "attachment_ids": [att["id"]]}) == "validation_error"
    msg = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "pic", "attachment_ids": [att["id"]]})
    assert msg["attachments"] == [{"id": att["id"], "filename": "f.bin", "content_type": "application/octet-stream",
                                   "size": 2, "url": att["url"]}]
    # ...and not twice; the failed send stored nothing.
    assert await ca.error("message:send", {"recipient_id": b["user"]["id"], "message": "again",
                                           "attachment_ids": [att["id"]]}) == "validation_error"
    assert (await ca.ok("thread:history", {"thread_id": msg["thread_id"]}))["total"] == 1
    status, body = await upload(None, b"anon")
    assert status == 401


BAD_INPUT = {
    "message:send": [{}, {"recipient_id": 1, "thread_id": 1, "message": "x"}, {"recipient_id": "1", "message": "x"},
                     {"recipient_id": 2, "message": "   "}, {"recipient_id": 2, "message": 5},
                     {"recipient_id": 2, "message": "x", "extra": 1}, {"recipient_id": 2, "message": "x", "client_msg_id": ""},
                     {"recipient_id": 2, "message": "x", "attachment_ids": list(range(11))}],
    "threads:list": [{"limit": 0}, {"limit": "5"}, {"offset": -1}],
    "thread:history": [{}, {"thread_id": 1, "other_user_id": 2}, {"thread_id": 1, "page": 0},
                       {"thread_id": 1, "page_size": 1000}],
    "thread:create": [{}, {"member_ids": []}, {"member_ids": "1"}, {"member_ids": [1], "title": "t" * 201}],
    "messages:search": [{}, {"query": ""}, {"query": 5}, {"query": "q" * 201}],
    "message:read": [{}, {"message_id": "1"}, {"message_id": 0}],
    "thread:read-all": [{}, {"thread_id": None, "other_user_id": None}],
    "unread:count": [{"unexpected": True}],
    "message:edit": [{}, {"message_id": 1}, {"message_id": 1, "message": ""}],
    "message:delete": [{}, {"message_id": -3}],
    "typing:set": [{"thread_id": 1}, {"thread_id": 1, "is_typing": "yes"}, {"is_typing": True}],
    "sync": [{"since": 5}, {"since": "not a cursor"}, {"limit": 0}, {"limit": 5000}],
    "auth:refresh": [{}, {"token": ""}, {"token": 5}, {"token": "t" * 5000}, {"token": "t", "extra": 1}],
    "presence:query": [{}, {"user_ids": []}, {"user_ids": [0]}, {"user_ids": ["1"]}, {"user_ids": [2**63]},
                       {"user_ids": list(range(1, 1000))}],
    "presence:set": [{}, {"invisible": "yes"}, {"invisible": True, "extra": 1}],
}


def test_bad_input_table_covers_every_chat_event():
    assert set(BAD_INPUT) == set(REGISTRY.operations_of("/chat"))


@pytest.mark.parametrize("event,payload", [(e, p) for e, ps in BAD_INPUT.items() for p in ps])
async def test_bad_input_is_a_validation_error_with_details(server, api, connect, event, payload):
    user = await api.user()
    client = await connect(server.url, "/chat", user["access_token"])
    reply = await client.call(event, payload)
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply
    assert reply["error"]["details"], reply
    assert client.sio.connected


@pytest.mark.parametrize("payload", ["a string", 42, [1, 2], None])
async def test_non_object_payloads(server, api, connect, payload):
    user = await api.user()
    client = await connect(server.url, "/chat", user["access_token"])
    reply = await client.call("message:send", payload)
    assert reply["error"]["code"] == "validation_error"
    assert (await client.ok("unread:count")) == {"unread_count": 0}


async def test_unknown_event_and_extra_arguments(server, api, connect):
    user = await api.user()
    client = await connect(server.url, "/chat", user["access_token"])
    reply = await client.call("thread:explode", {})
    assert reply == {"ok": False, "error": {"code": "validation_error", "message": "unknown event 'thread:explode' in /chat"}}
    reply = await client.sio.call("unread:count", ({}, {}), namespace="/chat")
    assert reply["error"]["code"] == "validation_error"


async def test_oversized_payload_and_message(server, api, connect):
    a, b = await api.user(), await api.user()
    client = await connect(server.url, "/chat", a["access_token"])
    limit = server.hub.settings.max_payload_bytes
    reply = await client.call("message:send", {"recipient_id": b["user"]["id"], "message": "x" * (limit + 10)})
    assert reply["error"]["code"] == "payload_too_large"
    chars = server.hub.settings.max_message_chars
    reply = await client.call("message:send", {"recipient_id": b["user"]["id"], "message": "é" * (chars + 1)})
    assert reply["error"]["code"] == "validation_error" and reply["error"]["details"][0]["loc"] == ["message"]
    assert (await client.ok("message:send", {"recipient_id": b["user"]["id"], "message": "é" * chars}))["id"]
    assert client.sio.connected


async def test_event_rate_limit_applies_per_connection(start_server, settings, http, connect):
    from tests.support.clients import Api

    server = await start_server(replace(settings, event_rate=2.0, event_burst=5))
    api = Api(server.url, http)
    flooder, calm = await api.user(), await api.user()
    cf = await connect(server.url, "/chat", flooder["access_token"])
    cc = await connect(server.url, "/chat", calm["access_token"])
    replies = await asyncio.gather(*(cf.call("unread:count") for _ in range(20)))
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]
    assert codes.count("ok") <= 6 and codes.count("rate_limited") >= 14
    # The flood does not touch another connection's budget.
    assert (await cc.ok("unread:count")) == {"unread_count": 0}
    assert cf.sio.connected


async def test_self_and_unknown_recipients(server, api, connect):
    a = await api.user()
    client = await connect(server.url, "/chat", a["access_token"])
    assert await client.error("message:send", {"recipient_id": a["user"]["id"], "message": "me"}) == "validation_error"
    assert await client.error("message:send", {"recipient_id": 999999, "message": "?"}) == "not_found"
    assert await client.error("thread:create", {"member_ids": [999999]}) == "not_found"
    assert await client.error("thread:history", {"other_user_id": 999999}) == "not_found"
    assert await client.error("message:send", {"thread_id": 999999, "message": "?"}) == "not_found"


async def test_staff_tokens_only_where_allowed(server, api, connect):
    """Service tokens have no user account: /chat refuses them at connect."""
    import socketio

    token = server.hub.tokens.service("billing").token
    errors = []
    client = socketio.AsyncClient(reconnection=False)
    client.on("connect_error", lambda data: errors.append(data), namespace="/chat")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.url, namespaces=["/chat"], auth={"token": token}, wait_timeout=3)
    assert errors[0]["data"]["code"] == "forbidden"
