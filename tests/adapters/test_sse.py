"""Server-Sent Events at /sse: the browser's own EventSource (Chromium) resumes after a
forced drop with nothing lost and nothing twice; aiohttp for the edges."""
from __future__ import annotations

import asyncio
import json

from tests.support.business import service_token
from tests.support.proxy import TcpProxy
from tests.support.paths import JS_DIR
from tests.support.sse import read_sse

async def notify(api, user_id: int, title: str) -> int:
    status, body = await api.request("POST", "/api/notifications", token=service_token(),
                                     json={"user_id": user_id, "type": "info", "title": title, "message": "m"})
    assert status == 201, body
    return body["items"][0]["notification_id"]


async def test_eventsource_in_chromium_resumes_after_a_forced_drop(server, api, browser_deps):
    ann = await api.user()
    uid = ann["user"]["id"]
    proxy = await TcpProxy(("127.0.0.1", server.port)).start()
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / "sse_eventsource.mjs"), proxy.url,
        f"/sse?ns=/notifications&token={ann['access_token']}", "4", browser_deps,
        cwd=JS_DIR, stdout=asyncio.subprocess.PIPE)
    try:
        async def next_line() -> dict:
            return json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))

        async def next_event() -> dict:
            while (item := await next_line())["type"] in ("open", "error"):
                pass
            return item

        assert (await next_line())["type"] == "open"
        ids = [await notify(api, uid, "before")]
        first = await next_event()
        assert first["type"] == "push:received" and first["data"]["notification_id"] == ids[0] and first["id"]
        proxy.drop()  # neither side closed it: the browser reconnects with Last-Event-ID
        ids += [await notify(api, uid, "missed 1"), await notify(api, uid, "missed 2")]
        while (await next_line())["type"] != "open":
            pass
        ids.append(await notify(api, uid, "after"))
        rest = [await next_event() for _ in range(3)]
        assert [e["data"]["notification_id"] for e in [first] + rest] == ids
        assert [e["data"]["title"] for e in rest] == ["missed 1", "missed 2", "after"]
        assert len({e["id"] for e in [first] + rest}) == 4  # each once, each its own offset
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proxy.close()


async def test_sse_takes_the_token_from_a_cookie_and_says_sync_beyond_the_window(server, api, http):
    ann = await api.user()
    uid = ann["user"]["id"]
    cookies = {"hub_token": ann["access_token"]}
    async with http.get(f"{server.url}/sse?ns=/notifications", cookies=cookies) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        nid = await notify(api, uid, "hello")
        (event,) = await read_sse(resp, 1)
        assert event["event"] == "push:received" and event["data"]["notification_id"] == nid
    # An offset older than the recovery window: the stream first says to re-read.
    async with http.get(f"{server.url}/sse?ns=/notifications", cookies=cookies,
                        headers={"Last-Event-ID": "1000-0"}) as resp:
        (sync,) = await read_sse(resp, 1)
        assert sync["event"] == "sync" and sync["data"] == {"ns": "/notifications", "reason": "gap"}
        nid = await notify(api, uid, "live")
        (event,) = await read_sse(resp, 1)
        assert event["data"]["notification_id"] == nid


async def test_sse_refuses_bad_tokens_and_namespaces(server, api, http):
    ann = await api.user()
    async with http.get(f"{server.url}/sse?ns=/notifications&token=garbage") as resp:
        body = await resp.json()
        assert resp.status == 401 and body["error"]["code"] == "unauthorized"
    async with http.get(f"{server.url}/sse?ns=/operators&token={ann['access_token']}") as resp:
        assert resp.status == 403
    async with http.get(f"{server.url}/sse?ns=/nope&token={ann['access_token']}") as resp:
        assert resp.status == 422
    status, _ = await api.request("POST", "/auth/logout", token=ann["access_token"])
    async with http.get(f"{server.url}/sse?ns=/notifications&token={ann['access_token']}") as resp:
        assert resp.status == 401
