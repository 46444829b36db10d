"""Issue 18 item 10: a user's operations are limited over all their sockets, HTTP
requests and instances; uploads have daily quotas and orphans are removed; every
refusal says when to retry (Retry-After over HTTP, retry_after in acks)."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.support.clients import Api
from tests.support.servers import make_settings


async def upload(api: Api, token: str, content: bytes = b"hello") -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", content, filename="f.txt", content_type="text/plain")
    return await api.request("POST", "/api/attachments", token=token, data=form)


async def test_a_users_budget_is_shared_by_their_sockets_on_every_instance(start_server, tmp_path, redis_url,
                                                                           redis_prefix, http, connect):
    settings = make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix, user_op_limit=20,
                             user_op_window=60)
    one, two = await start_server(settings), await start_server(settings)
    user = await Api(one.url, http).user()
    a = await connect(one.url, "/chat", user["access_token"])
    b = await connect(two.url, "/chat", user["access_token"])
    for _ in range(15):
        await a.ok("unread:count")
    # Instance two hears of instance one's 15 within a flush or two: it refuses well
    # before its own count alone (20) would.
    served = 0
    while True:
        reply = await b.call("unread:count")
        if not reply["ok"]:
            break
        served += 1
        assert served < 20, "instance two never counted instance one's operations"
        await asyncio.sleep(0.25)
    assert reply["error"]["code"] == "rate_limited" and reply["error"]["details"]["retry_after"] >= 1
    assert served <= 12
    # Another user's budget is their own.
    other = await Api(two.url, http).user()
    c = await connect(two.url, "/chat", other["access_token"])
    assert await c.ok("unread:count") is not None


async def test_http_operation_routes_share_the_users_budget(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, user_op_limit=5, user_op_window=60))
    api = Api(server.url, http)
    user = await api.user()
    for _ in range(4):
        status, body = await api.request("GET", "/api/sns/posts", token=user["access_token"])
        assert status == 200, body
    sns = await connect(server.url, "/sns", user["access_token"])
    await sns.ok("posts:list", {})  # the fifth, over a socket
    async with http.get(server.url + "/api/sns/posts",
                        headers={"Authorization": f"Bearer {user['access_token']}"}) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["error"]["code"] == "rate_limited", body
        assert int(resp.headers["Retry-After"]) == body["error"]["details"]["retry_after"] >= 1
    reply = await sns.call("posts:list", {})
    assert reply["error"]["code"] == "rate_limited" and reply["error"]["details"]["retry_after"] >= 1


async def test_a_connections_own_limit_says_when_to_retry(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, event_rate=0.5, event_burst=1))
    user = await Api(server.url, http).user()
    chat = await connect(server.url, "/chat", user["access_token"])
    await chat.ok("unread:count")
    reply = await chat.call("unread:count")
    assert reply["error"]["code"] == "rate_limited" and reply["error"]["details"]["retry_after"] >= 1


async def test_attachment_quotas(start_server, tmp_path, http):
    server = await start_server(make_settings(tmp_path, attachments_per_day=2, attachment_bytes_per_day=100))
    api = Api(server.url, http)
    user, other = await api.user(), await api.user()
    for _ in range(2):
        status, body = await upload(api, user["access_token"])
        assert status == 201, body
    async with http.post(server.url + "/api/attachments", data=aiohttp.FormData({"file": b"x"}),
                         headers={"Authorization": f"Bearer {user['access_token']}"}) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["error"]["code"] == "rate_limited", body
        assert 3600 < int(resp.headers["Retry-After"]) <= 86400
    status, body = await upload(api, other["access_token"], b"y" * 101)  # over the bytes
    assert status == 429, body
    status, body = await upload(api, other["access_token"], b"y" * 100)
    assert status == 201, body


async def test_uploads_never_attached_are_removed(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, orphan_attachment_age=1.0))
    api = Api(server.url, http)
    alice, bob = await api.user(), await api.user()
    _, kept = await upload(api, alice["access_token"])
    _, orphan = await upload(api, alice["access_token"])
    chat = await connect(server.url, "/chat", alice["access_token"])
    await chat.ok("message:send", {"recipient_id": bob["user"]["id"], "message": "file",
                                   "attachment_ids": [kept["id"]]})
    deadline = time.monotonic() + 30
    while (await api.request("GET", orphan["url"], token=alice["access_token"]))[0] != 404:
        assert time.monotonic() < deadline, "the orphan upload was never removed"
        await asyncio.sleep(0.2)
    status, _ = await api.request("GET", kept["url"], token=alice["access_token"])
    assert status == 200
