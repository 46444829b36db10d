"""`sync {since}` for /chat and /sns: catching up from durable storage."""
import asyncio
import math

from handlers import sync
from tests.support.clients import Api
from tests.support.servers import make_settings


async def _drain(client, since=None, limit=200):
    """Every page from `since`; returns (items, last cursor, pages)."""
    items, pages, cursor = [], 0, since
    while True:
        page = await client.ok("sync", {"since": cursor, "limit": limit} if cursor else {"limit": limit})
        items += page["items"]
        cursor, pages = page["cursor"], pages + 1
        if not page["has_more"]:
            return items, cursor, pages


async def test_chat_sync_returns_changes_since_a_cursor(server, api, connect, monkeypatch):
    monkeypatch.setattr(sync, "SETTLE", sync.timedelta(0))  # cursors may follow the newest change here
    a, b, outsider = await api.user(), await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    co = await connect(server.url, "/chat", outsider["access_token"])
    sent = [await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": f"s{i}"}) for i in range(5)]
    items, cursor, pages = await _drain(cb, limit=2)
    assert [m["message"] for m in items] == [f"s{i}" for i in range(5)] and pages == 3
    assert all(m["deleted_at"] is None for m in items)

    await asyncio.sleep(0.01)
    await ca.ok("message:edit", {"message_id": sent[1]["id"], "message": "s1 edited"})
    await ca.ok("message:delete", {"message_id": sent[2]["id"]})
    await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "s5"})
    changed, _, _ = await _drain(cb, since=cursor)
    assert [(m["id"], m.get("message"), m["deleted_at"] is not None) for m in changed] == [
        (sent[1]["id"], "s1 edited", False), (sent[2]["id"], None, True), (changed[2]["id"], "s5", False)]
    assert set(changed[1]) == {"id", "thread_id", "deleted_at"}  # a tombstone, nothing of the message
    # Someone else's conversation never shows up.
    assert (await _drain(co))[0] == []
    assert await cb.error("sync", {"since": "bm90IGEgY3Vyc29y"}) == "validation_error"


async def test_cursor_never_passes_the_settle_margin(server, api, connect):
    """A change committed late with an earlier timestamp is still picked up next time."""
    a, b = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "fresh"})
    first = await cb.ok("sync")
    again = await cb.ok("sync", {"since": first["cursor"]})
    assert [m["message"] for m in again["items"]] == ["fresh"]  # repeated, not skipped


async def test_sns_sync_sees_only_visible_posts_and_deletions(server, api, connect, monkeypatch):
    monkeypatch.setattr(sync, "SETTLE", sync.timedelta(0))
    author, reader = await api.user(), await api.user()
    ca = await connect(server.url, "/sns", author["access_token"])
    cr = await connect(server.url, "/sns", reader["access_token"])
    public = await ca.ok("post:create", {"platforms": ["twitter"], "content": "hello #sync"})
    draft = await ca.ok("post:create", {"platforms": ["twitter"], "content": "secret draft", "draft": True})
    items, cursor, _ = await _drain(cr)
    assert [p["post_id"] for p in items] == [public["post_id"]]
    assert {p["post_id"] for p in (await _drain(ca))[0]} == {public["post_id"], draft["post_id"]}

    await asyncio.sleep(0.01)
    await cr.ok("post:like", {"post_id": public["post_id"]})
    await ca.ok("post:delete", {"post_id": public["post_id"]})
    changed, _, _ = await _drain(cr, since=cursor)
    assert [p["post_id"] for p in changed] == [public["post_id"]]
    assert set(changed[0]) == {"post_id", "deleted_at"} and changed[0]["deleted_at"] is not None


async def test_dialogs_sync_stays_in_each_callers_scope(server, api, connect, monkeypatch):
    from tests.support.dialogs import account, assistant, bot_token, visitor

    monkeypatch.setattr(sync, "SETTLE", sync.timedelta(0))
    owner_id, owner = await account(server.hub.db)
    mine = await assistant(api, owner)
    _, other_owner = await account(server.hub.db)
    theirs = await assistant(api, other_owner, name="Other")
    v1, v2, v3 = await visitor(api, mine["id"]), await visitor(api, mine["id"]), await visitor(api, theirs["id"])
    clients = {}
    for name, token in (("v1", v1["visitor_token"]), ("v2", v2["visitor_token"]), ("v3", v3["visitor_token"]),
                        ("bot", bot_token(mine["id"])), ("owner", owner)):
        clients[name] = await connect(server.url, "/dialogs", token)
    for name, v in (("v1", v1), ("v2", v2), ("v3", v3)):
        await clients[name].ok("dialog:send", {"dialog_id": v["dialog_id"], "text": f"from {name}"})

    def texts(items):
        return sorted(m["text"] for m in items)

    assert texts((await _drain(clients["v1"]))[0]) == ["from v1"]
    assert texts((await _drain(clients["bot"]))[0]) == ["from v1", "from v2"]
    assert texts((await _drain(clients["owner"]))[0]) == ["from v1", "from v2"]
    _, cursor, _ = await _drain(clients["v2"])
    await clients["bot"].ok("dialog:send", {"dialog_id": v2["dialog_id"], "text": "bot answers v2"})
    assert texts((await _drain(clients["v2"], since=cursor))[0]) == ["bot answers v2"]


async def test_a_sync_loop_over_many_recent_changes_ends_and_returns_each_once(start_server, tmp_path, http,
                                                                               connect):
    """320 messages in the last few seconds, pages of 100: the documented loop ends
    after ceil(320 / 100) pages, each message once, in order; the resting cursor it
    ends on steps back, so the next sync repeats the recent ones rather than risk
    skipping a slow commit."""
    server = await start_server(make_settings(tmp_path, event_rate=1000.0, event_burst=1000))
    api = Api(server.url, http)
    a, b = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    sent = [(await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": f"m{i}"}))["id"]
            for i in range(320)]
    items, pages, cursor = [], 0, None
    while pages < 20:  # the old cursor sent the first page back forever
        page = await cb.ok("sync", {"since": cursor, "limit": 100} if cursor else {"limit": 100})
        items += [m["id"] for m in page["items"]]
        cursor, pages = page["cursor"], pages + 1
        if not page["has_more"]:
            break
    assert pages == math.ceil(320 / 100)
    assert items == sent
    assert len((await cb.ok("sync", {"since": cursor, "limit": 1000}))["items"]) == 320
