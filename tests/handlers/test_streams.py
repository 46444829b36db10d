"""Streamed bot replies across two real `hub serve` processes on PostgreSQL and Redis:
a reload mid-stream (the text so far, then the rest, nothing twice), a takeover
mid-stream (the partial reply stored as interrupted, conflict after), a crashed bot's
stream ending after the timeout (once), and coalesced deltas for a slow client."""
import json

import aiohttp
import pytest

from storage.db import Database
from tests.support.clients import Api
from tests.support.dialogs import account, assistant, bot_token, next_where, visitor

STREAM_TIMEOUT = 1.0


@pytest.fixture
async def cluster(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix,
           "HUB_STREAM_TIMEOUT": str(STREAM_TIMEOUT), "HUB_WIDGET_SESSIONS_PER_MINUTE": "1000",
           "HUB_EVENT_RATE": "200", "HUB_EVENT_BURST": "400", "HUB_USER_OP_LIMIT": "100000"}
    hubs = await spawn_hubs(2, env)
    db = Database(pg_url)
    yield hubs, db, [Api(h.url, http) for h in hubs]
    await db.close()


async def setup(cluster, connect, bot_hub=0, visitor_hub=1):
    hubs, db, apis = cluster
    owner_id, owner = await account(db)
    a = await assistant(apis[0], owner)
    v = await visitor(apis[0], a["id"])
    bot = await connect(hubs[bot_hub].url, "/dialogs", bot_token(a["id"]))
    vis = await connect(hubs[visitor_hub].url, "/dialogs", v["visitor_token"])
    return a, v, owner, bot, vis


class Rendered:
    """What a client shows: the stream's text so far, grown only by deltas past its seq."""

    def __init__(self, state: dict | None = None) -> None:
        self.seq = state["seq"] if state else 0
        self.text = state["text"] if state else ""

    def apply(self, delta: dict) -> None:
        if delta["seq"] > self.seq:
            self.seq, self.text = delta["seq"], self.text + delta["text"]


def drain(client, event: str) -> list:
    q, out = client.queue(event), []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_reload_mid_stream_gets_text_so_far_then_the_rest(cluster, connect):
    hubs, db, apis = cluster
    a, v, owner, bot, vis = await setup(cluster, connect)
    did = v["dialog_id"]
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    assert await bot.error("message:stream-start", {"dialog_id": did}) == "conflict"  # one at a time
    words = [f"w{i} " for i in range(30)]
    for i, w in enumerate(words[:10]):
        assert (await bot.ok("message:stream-delta", {"stream_id": sid, "text": w}))["seq"] == i + 1
    seen = Rendered()
    for _ in range(10):  # across instances, in order
        d = await vis.next("message:delta")
        assert d["dialog_id"] == did and d["stream_id"] == sid
        seen.apply(d)
    assert seen.text == "".join(words[:10])

    # the widget reloads: gone while the bot goes on, back on the other instance
    await vis.close()
    for w in words[10:20]:
        await bot.ok("message:stream-delta", {"stream_id": sid, "text": w})
    back = await connect(hubs[0].url, "/dialogs", v["visitor_token"])
    [state] = await back.ok("dialog:streams", {"dialog_id": did})
    assert state == {"stream_id": sid, "seq": 20, "text": "".join(words[:20])}
    shown = Rendered(state)
    for w in words[20:]:
        await bot.ok("message:stream-delta", {"stream_id": sid, "text": w})
    final = await bot.ok("message:stream-end", {"stream_id": sid})
    assert final["text"] == "".join(words) and final["client_msg_id"] == sid and not final["interrupted"]
    added = await next_where(back, "message:added", lambda e: e["message"]["client_msg_id"] == sid)
    assert added["message"] == final
    deltas = drain(back, "message:delta")
    for d in deltas:
        shown.apply(d)
    assert shown.text == final["text"]  # the rest, nothing twice, nothing lost
    assert [d["seq"] for d in deltas if d["seq"] > 20] == list(range(21, 31))
    # the stream is over: its deltas are refused, and nothing is open any more
    assert await bot.error("message:stream-delta", {"stream_id": sid, "text": "late"}) == "conflict"
    assert await back.ok("dialog:streams", {"dialog_id": did}) == []
    history = await back.ok("dialog:messages", {"dialog_id": did})
    assert [m["text"] for m in history] == [final["text"]]


async def test_takeover_mid_stream_stores_the_partial_reply_and_refuses_more(cluster, connect):
    hubs, db, apis = cluster
    a, v, owner, bot, vis = await setup(cluster, connect)
    did = v["dialog_id"]
    console = await connect(hubs[1].url, "/dialogs", owner)
    await console.ok("dialog:join", {"dialog_id": did})
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "Let me check "})
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "your order"})
    for c in (vis, console):
        assert (await next_where(c, "message:delta", lambda e: e["seq"] == 2))["text"] == "your order"

    await console.ok("dialog:takeover", {"dialog_id": did})
    for c in (vis, console):
        ev = await next_where(c, "message:added", lambda e: e["message"]["client_msg_id"] == sid)
        assert ev["message"]["text"] == "Let me check your order" and ev["message"]["interrupted"] is True
        assert ev["message"]["sender"] == "assistant"
    reply = await bot.call("message:stream-delta", {"stream_id": sid, "text": " more"})
    assert not reply["ok"] and reply["error"]["code"] == "conflict"
    assert reply["error"]["details"] == {"reason": "interrupted"}
    assert await bot.error("message:stream-end", {"stream_id": sid}) == "conflict"
    assert await bot.error("message:stream-start", {"dialog_id": did}) == "conflict"  # the operator holds it
    history = await vis.ok("dialog:messages", {"dialog_id": did})
    assert [(m["text"], m["interrupted"]) for m in history] == [("Let me check your order", True)]
    # the operator writes; the visitor's next message:added is theirs: no second reply stored
    sent = await console.ok("dialog:send", {"dialog_id": did, "text": "Hi, a human here"})
    assert (await vis.next("message:added"))["message"]["id"] == sent["id"]


async def test_a_crashed_bots_stream_ends_after_the_timeout_once(cluster, connect):
    hubs, db, apis = cluster
    a, v, owner, bot, vis = await setup(cluster, connect)
    did = v["dialog_id"]
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "Half an ans"})
    await bot.close()  # and never comes back
    ev = await next_where(vis, "message:added", lambda e: True, timeout=STREAM_TIMEOUT + 15)
    assert ev["message"]["client_msg_id"] == sid
    assert (ev["message"]["text"], ev["message"]["interrupted"]) == ("Half an ans", True)
    # both instances sweep; only one stored and announced it: the next event is the visitor's own
    other = await connect(hubs[0].url, "/dialogs", v["visitor_token"])
    sent = await other.ok("dialog:send", {"dialog_id": did, "text": "hello?"})
    assert (await vis.next("message:added"))["message"]["id"] == sent["id"]
    history = await vis.ok("dialog:messages", {"dialog_id": did})
    assert [m["text"] for m in history] == ["Half an ans", "hello?"]


async def test_a_deltas_are_not_for_another_assistants_bot_and_are_bounded(cluster, connect):
    hubs, db, apis = cluster
    a, v, owner, bot, vis = await setup(cluster, connect)
    b = await assistant(apis[0], owner, name="Other")
    stranger = await connect(hubs[1].url, "/dialogs", bot_token(b["id"], "other"))
    assert await stranger.error("message:stream-start", {"dialog_id": v["dialog_id"]}) == "forbidden"
    sid = (await bot.ok("message:stream-start", {"dialog_id": v["dialog_id"]}))["stream_id"]
    assert await stranger.error("message:stream-delta", {"stream_id": sid, "text": "x"}) == "not_found"
    assert await vis.error("message:stream-delta", {"stream_id": sid, "text": "x"}) == "forbidden"
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "x" * 3990})
    assert await bot.error("message:stream-delta", {"stream_id": sid, "text": "y" * 20}) == "validation_error"


class PollingClient:
    """A real Engine.IO long-polling client that polls only when told: a slow client."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http, self.sid = f"{url}/socket.io/?EIO=4&transport=polling", http, None

    async def open(self, token: str) -> None:
        async with self.http.get(self.base) as r:
            self.sid = json.loads((await r.text())[1:])["sid"]
        async with self.http.post(f"{self.base}&sid={self.sid}",
                                  data="40/dialogs," + json.dumps({"token": token})) as r:
            assert r.status == 200
        assert any(p.startswith("40/dialogs,") for p in await self.poll())

    async def poll(self) -> list[str]:
        async with self.http.get(f"{self.base}&sid={self.sid}") as r:
            return (await r.text()).split("\x1e")

    async def events(self, name: str) -> list[dict]:
        out = []
        for p in await self.poll():
            if p.startswith("42/dialogs,"):
                event, data, *_ = json.loads(p[len("42/dialogs,"):])
                if event == name:
                    out.append(data)
        return out


async def test_a_slow_client_gets_coalesced_deltas_not_a_backlog(cluster, connect, http):
    hubs, db, apis = cluster
    a, v, owner, bot, vis = await setup(cluster, connect)
    did = v["dialog_id"]
    slow = PollingClient(hubs[1].url, http)
    await slow.open(v["visitor_token"])
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    words = [f"t{i} " for i in range(40)]
    for w in words:
        await bot.ok("message:stream-delta", {"stream_id": sid, "text": w})
    # the fast client got every delta; the slow one, which polled not once meanwhile...
    await next_where(vis, "message:delta", lambda e: e["seq"] == 40)
    first = await slow.events("message:delta")
    assert [d["seq"] for d in first] == [1]  # ...had the first queued, the rest held back
    rest = await slow.events("message:delta")  # as one delta, the latest seq
    assert [(d["seq"], d["text"]) for d in rest] == [(40, "".join(words[1:]))]
    final = await bot.ok("message:stream-end", {"stream_id": sid})
    shown = Rendered()
    for d in first + rest:
        shown.apply(d)
    assert shown.text == final["text"]


async def test_closing_the_dialog_mid_stream_cuts_it(server, api, connect):
    """On one embedded instance (memory buffer): the visitor closes the dialog while the bot streams."""
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    v = await visitor(api, a["id"])
    did = v["dialog_id"]
    bot = await connect(server.url, "/dialogs", bot_token(a["id"]))
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "As I was say"})
    await vis.ok("dialog:close", {"dialog_id": did})
    added = await vis.next("message:added")
    assert (added["message"]["text"], added["message"]["interrupted"]) == ("As I was say", True)
    assert await bot.error("message:stream-delta", {"stream_id": sid, "text": "ing"}) == "conflict"
    assert await bot.error("message:stream-start", {"dialog_id": did}) == "conflict"
