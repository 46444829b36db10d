"""The generic plain-WebSocket protocol at /ws (aiohttp websockets): any operation as
{id, ns, event, data}, server events with their offsets, resume after a reconnect."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from hub.backends.bus import offset_key
from tests.support.clients import Api
from tests.support.gateways import Plain


async def _send(api, sender: dict, to: int, text: str) -> dict:
    status, body = await api.request("POST", "/api/messages", token=sender["access_token"],
                                     json={"recipient_id": to, "message": text})
    assert status == 201, body
    return body


async def test_requests_for_any_namespace_and_server_events_with_offsets(server, api, http):
    ann, bob = await api.user(), await api.user()
    sock = await Plain.open(http, f"{server.url}/ws?token={ann['access_token']}")
    welcome = await sock.frame()
    assert welcome["type"] == "welcome" and welcome["session"]
    assert set(welcome["recovered"]) == {"/chat", "/dialogs", "/notifications", "/orders", "/sns"}

    sent = await sock.call("message:send", {"recipient_id": bob["user"]["id"], "message": "hi"}, ns="/chat")
    assert sent["ok"] and sent["data"]["message"] == "hi"
    count = await sock.call("notifications:unread-count", ns="/notifications")
    assert count == {"id": 2, "ok": True, "data": {"unread_count": 0}}
    unknown = await sock.call("nope", ns="/chat")
    assert unknown["ok"] is False and unknown["error"]["code"] == "validation_error"
    invalid = await sock.call("message:send", {"recipient_id": "x"}, ns="/chat")
    assert invalid["error"]["code"] == "validation_error" and invalid["error"]["details"]
    forbidden = await sock.call("presence:heartbeat", ns="/operators")  # a user's socket is not in /operators
    assert forbidden["ok"] is False

    reply = await _send(api, bob, ann["user"]["id"], "back at you")
    new = await sock.next(lambda f: f.get("event") == "message:new")
    assert new["ns"] == "/chat" and new["data"]["message_id"] == reply["id"] and new["offset"]
    big = "x" * (server.hub.settings.max_payload_bytes + 10)
    too_large = await sock.call("message:send", {"recipient_id": bob["user"]["id"], "message": big}, ns="/chat")
    assert too_large["error"]["code"] == "payload_too_large"
    await sock.ws.send_str("not json")
    assert (await sock.next(lambda f: f.get("type") == "error"))["error"]["code"] == "validation_error"


async def test_request_rate_is_limited_per_connection(start_server, settings, http):
    # A bucket that refills slower than any machine sends: the test does not race it.
    server = await start_server(replace(settings, event_rate=0.01, event_burst=5))
    ann = await Api(server.url, http).user()
    sock = await Plain.open(http, f"{server.url}/ws?ns=/chat", {"token": ann["access_token"]})
    assert set((await sock.frame())["recovered"]) == {"/chat"}
    burst = server.hub.settings.event_burst
    for i in range(burst + 5):
        await sock.ws.send_str(json.dumps({"id": i, "ns": "/chat", "event": "unread:count"}))
    replies = [await sock.next(lambda f: "ok" in f) for _ in range(burst + 5)]
    limited = [r for r in replies if not r["ok"]]
    assert limited and all(r["error"]["code"] == "rate_limited" for r in limited)


async def test_reconnect_resumes_with_nothing_lost_and_nothing_twice(server, api, http):
    ann, bob = await api.user(), await api.user()
    ann_id = ann["user"]["id"]
    sock = await Plain.open(http, f"{server.url}/ws?ns=/chat,/notifications&token={ann['access_token']}")
    session = (await sock.frame())["session"]
    first = await _send(api, bob, ann_id, "one")
    seen = await sock.next(lambda f: f.get("event") == "message:new")
    assert seen["data"]["message_id"] == first["id"]
    last = {"/chat": seen["offset"]}
    await sock.close()

    missed = [await _send(api, bob, ann_id, f"missed {i}") for i in range(3)]
    again = await Plain.open(http, f"{server.url}/ws?ns=/chat,/notifications",
                             {"token": ann["access_token"], "resume": {"session": session, "offsets": last}})
    welcome = await again.frame()
    assert welcome["session"] == session and welcome["recovered"] == {"/chat": True, "/notifications": True}
    live = await _send(api, bob, ann_id, "live")
    frames = []
    while True:
        frame = await again.frame()
        frames.append(frame)
        if frame.get("event") == "message:new" and frame["data"]["message_id"] == live["id"]:
            break
    news = [f["data"]["message_id"] for f in frames if f.get("event") == "message:new"]
    assert news == [m["id"] for m in missed] + [live["id"]]
    offsets = [f["offset"] for f in frames if f.get("offset")]
    assert len(offsets) == len(set(offsets))  # nothing twice


async def test_an_unknown_or_foreign_session_is_not_recovered(server, api, http):
    ann, eve = await api.user(), await api.user()
    sock = await Plain.open(http, f"{server.url}/ws?ns=/chat&token={ann['access_token']}")
    session = (await sock.frame())["session"]
    await sock.close()
    # Another user's token cannot take over Ann's session.
    thief = await Plain.open(http, f"{server.url}/ws?ns=/chat",
                             {"token": eve["access_token"], "resume": {"session": session, "offsets": {}}})
    assert (await thief.frame())["recovered"] == {"/chat": False}
    stale = await Plain.open(http, f"{server.url}/ws?ns=/chat&token={ann['access_token']}"
                             "&session=unknownsession00&offsets=%7B%7D")
    welcome = await stale.frame()
    assert welcome["recovered"] == {"/chat": False}
    # Not recovered: the client re-reads with sync.
    assert (await stale.call("sync", {}, ns="/chat"))["ok"]


async def test_a_resume_racing_a_steady_sender_loses_doubles_and_reorders_nothing(spawn_hubs, pg_url, redis_url,
                                                                                  redis_prefix, http):
    """The receiver's /ws connection is closed and resumed 20 times while four sends
    are always in flight on the other instance: every resume recovers, and it gets
    every acked message once, in offset order (those published while it resumes
    included), as a Socket.IO socket does."""
    one, two = await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                    "HUB_REDIS_PREFIX": redis_prefix, "HUB_USER_OP_LIMIT": "100000"})
    api, elsewhere = Api(one.url, http), Api(two.url, http)
    bob, ann = await api.user(), await api.user()
    ann_id = ann["user"]["id"]
    acked: list[int] = []
    sending = True

    async def stream() -> None:
        while sending:
            acked.append((await _send(elsewhere, bob, ann_id, "steady"))["id"])

    got: list[tuple[int, str]] = []  # (message id, offset) in arrival order

    async def read(sock: Plain, frames: int) -> None:
        for _ in range(frames):
            frame = await sock.next(lambda f: f.get("event") == "message:new")
            got.append((frame["data"]["message_id"], frame["offset"]))

    url = f"{one.url}/ws?ns=/chat"
    sock = await Plain.open(http, url, {"token": ann["access_token"]})
    session = (await sock.frame())["session"]
    streams = [asyncio.create_task(stream()) for _ in range(4)]
    recovered = []
    for i in range(20):
        await read(sock, 1 + i % 4)
        await sock.close()
        sock = await Plain.open(http, url, {"token": ann["access_token"],
                                            "resume": {"session": session, "offsets": {"/chat": got[-1][1]}}})
        recovered.append((await sock.frame())["recovered"])
    sending = False
    await asyncio.gather(*streams)
    last = (await _send(elsewhere, bob, ann_id, "last"))["id"]
    acked.append(last)
    while got[-1][0] != last:  # the last message comes after every other one
        await read(sock, 1)
    assert recovered == [{"/chat": True}] * 20
    ids = [message_id for message_id, _ in got]
    assert len(ids) == len(set(ids))  # nothing twice
    assert sorted(ids) == sorted(acked)  # nothing lost
    offsets = [offset for _, offset in got]
    assert sorted(offsets, key=offset_key) == offsets  # nothing overtaken
