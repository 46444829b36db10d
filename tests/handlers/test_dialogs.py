"""/dialogs and /operators through a real server and real Socket.IO clients: the whole
handoff story, the widget session route, authorization and the queue."""
import pytest

from tests.support.dialogs import ORIGIN, account, assistant, bot_token, next_where, visitor, widget_session


@pytest.fixture
async def world(server, api, connect):
    """An owner with an assistant, its bot connected, one visitor connected."""
    owner_id, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    bot = await connect(server.url, "/dialogs", bot_token(a["id"]))
    v = await visitor(api, a["id"])
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    return {"owner": owner, "owner_id": owner_id, "assistant": a, "bot": bot, "visitor": vis,
            "dialog_id": v["dialog_id"], "session": v}


async def test_full_handoff_story(server, api, connect, world):
    bot, vis, did = world["bot"], world["visitor"], world["dialog_id"]
    op_id, op_token = await account(server.hub.db, "operator")
    console = await connect(server.url, "/operators", op_token)
    op_dialogs = await connect(server.url, "/dialogs", op_token)

    # visitor -> bot, bot -> visitor
    sent = await vis.ok("dialog:send", {"dialog_id": did, "text": "hello, where is my order?"})
    assert sent["sender"] == "visitor" and sent["sender_id"] == world["session"]["public_visitor_id"]
    assert sent["sender_id"] != world["session"]["visitor_id"]  # the widget's secret is shown to nobody
    heard = await bot.next("message:added")
    assert heard["dialog_id"] == did and heard["message"]["text"] == "hello, where is my order?"
    reply = await bot.ok("dialog:send", {"dialog_id": did, "text": "I don't know, sorry."})
    assert reply["sender"] == "assistant" and reply["sender_id"] == world["assistant"]["id"]
    assert (await vis.next("message:added"))["message"]["id"] == reply["id"]

    # handoff request -> queue position to the visitor, handoff:requested to operators
    req = await vis.ok("dialog:handoff", {"dialog_id": did, "reason": "wants a human"})
    assert req["handoff_status"] == "requested" and req["queue_position"] == 1
    status = await vis.next("handoff:status")
    assert status["status"] == "requested" and status["version"] == req["version"]
    assert (await vis.next("queue:position")) == {"dialog_id": did, "position": 1}
    assert (await bot.next("handoff:status"))["status"] == "requested"
    requested = await console.next("handoff:requested")
    assert requested["dialog_id"] == did and requested["queue_position"] == 1 and requested["reason"] == "wants a human"
    assert (await console.next("queue:updated")) == {"size": 1}
    queue = await console.ok("handoff:queue")
    assert [q["dialog_id"] for q in queue] == [did] and queue[0]["position"] == 1

    # the operator accepts, then joins the dialog to converse
    taken = await console.ok("handoff:accept", {"dialog_id": did})
    assert taken["handoff_status"] == "active" and taken["operator_id"] == op_id
    assert taken["version"] > req["version"]
    accepted = await console.next("handoff:accepted")
    assert accepted == {"dialog_id": did, "operator_id": op_id, "version": taken["version"]}
    active = await vis.next("handoff:status")
    assert active["status"] == "active" and active["operator_id"] == op_id and active["version"] == taken["version"]
    assert (await bot.next("handoff:status"))["status"] == "active"
    assert (await console.next("queue:updated")) == {"size": 0}
    assert [d["dialog_id"] for d in await console.ok("chats:active")] == [did]
    await op_dialogs.ok("dialog:join", {"dialog_id": did})

    # conversation: the bot hears nothing and may not talk over the operator
    await vis.ok("dialog:send", {"dialog_id": did, "text": "are you a human?"})
    seen = await op_dialogs.next("message:added")
    assert seen["message"]["text"] == "are you a human?"
    assert (await console.next("message:added"))["message"]["text"] == "are you a human?"
    answer = await op_dialogs.ok("dialog:send", {"dialog_id": did, "text": "Yes, I am Anna."})
    assert answer["sender"] == "operator" and answer["sender_id"] == op_id
    assert (await vis.next("message:added"))["message"]["text"] == "Yes, I am Anna."
    assert await bot.error("dialog:send", {"dialog_id": did, "text": "me too!"}) == "conflict"

    # release -> the bot hears the visitor again
    released = await console.ok("handoff:release", {"dialog_id": did})
    assert released["handoff_status"] == "resolved" and released["version"] > taken["version"]
    assert (await console.next("handoff:released"))["operator_id"] == op_id
    assert (await vis.next("handoff:status"))["status"] == "resolved"
    assert (await bot.next("handoff:status"))["status"] == "resolved"
    assert await op_dialogs.error("dialog:send", {"dialog_id": did, "text": "one more"}) == "conflict"
    await vis.ok("dialog:send", {"dialog_id": did, "text": "thanks, bot again?"})
    # The first message the bot hears since the handoff is this one: it heard nothing
    # while the operator held the dialog.
    await bot.absent("message:added", until="message:added", where=lambda e: e["message"]["text"] == "thanks, bot again?")

    history = await vis.ok("dialog:messages", {"dialog_id": did})
    assert [m["sender"] for m in history] == ["visitor", "assistant", "visitor", "operator", "visitor"]
    status = await vis.ok("dialog:status", {"dialog_id": did})
    assert status == {"dialog_id": did, "handoff_status": "resolved", "operator_id": None,
                      "version": released["version"]}


async def test_visitor_token_reaches_only_its_dialog(server, api, connect, world):
    other = await visitor(api, world["assistant"]["id"])
    vis = world["visitor"]
    for event in ("dialog:get", "dialog:messages", "dialog:join", "dialog:status", "dialog:handoff"):
        assert await vis.error(event, {"dialog_id": other["dialog_id"]}) == "forbidden", event
    assert await vis.error("dialog:send", {"dialog_id": other["dialog_id"], "text": "hi"}) == "forbidden"
    assert await vis.error("dialog:get", {"dialog_id": 999999}) == "forbidden"
    listed = await vis.ok("dialogs:list", {})
    assert [d["dialog_id"] for d in listed["items"]] == [world["dialog_id"]]
    # visitors cannot open the operators' console, nor take a dialog over
    refused = await connect_refused(server.url, "/operators", world["session"]["visitor_token"])
    assert refused["data"]["code"] == "forbidden"
    assert await vis.error("dialog:takeover", {"dialog_id": world["dialog_id"]}) == "forbidden"
    # the other visitor's messages never reach this one
    other_vis = await connect(server.url, "/dialogs", other["visitor_token"])
    await other_vis.ok("dialog:send", {"dialog_id": other["dialog_id"], "text": "secret"})
    # the first message this visitor hears is a later one in its own dialog
    await world["bot"].ok("dialog:send", {"dialog_id": world["dialog_id"], "text": "later"})
    await vis.absent("message:added", until="message:added", where=lambda e: e["message"]["text"] == "later")


async def connect_refused(url, namespace, token):
    from tests.support.clients import Client
    client = Client(namespace)
    try:
        await client.connect(url, token)
    except Exception:
        return client.connect_error
    await client.close()
    raise AssertionError("connected")


async def test_bot_cannot_reach_another_assistants_dialogs(server, api, connect, world):
    owner2_id, owner2 = await account(server.hub.db)
    a2 = await assistant(api, owner2, name="Other")
    v2 = await visitor(api, a2["id"])
    bot = world["bot"]
    for event in ("dialog:get", "dialog:messages", "dialog:status", "dialog:handoff"):
        assert await bot.error(event, {"dialog_id": v2["dialog_id"]}) == "forbidden", event
    assert await bot.error("dialog:send", {"dialog_id": v2["dialog_id"], "text": "hi"}) == "forbidden"
    vis2 = await connect(server.url, "/dialogs", v2["visitor_token"])
    await vis2.ok("dialog:send", {"dialog_id": v2["dialog_id"], "text": "for my own bot only"})
    # the first message this bot hears is a later one in its own assistant's dialog
    await world["visitor"].ok("dialog:send", {"dialog_id": world["dialog_id"], "text": "later"})
    await bot.absent("message:added", until="message:added", where=lambda e: e["message"]["text"] == "later")
    listed = await bot.ok("dialogs:list", {})
    assert {d["assistant_id"] for d in listed["items"]} == {world["assistant"]["id"]}
    # nor can the other owner see this owner's dialogs or change their assistant
    status, _ = await api.request("GET", f"/api/dialogs/{world['dialog_id']}", token=owner2)
    assert status == 403
    status, _ = await api.request("PUT", f"/api/assistants/{world['assistant']['id']}", token=owner2,
                                  json={"name": "mine now"})
    assert status == 403
    # a service token without an assistant is not a bot
    plain = await connect(server.url, "/dialogs", bot_token_without_assistant())
    assert await plain.error("dialog:get", {"dialog_id": world["dialog_id"]}) == "forbidden"
    # users cannot accept handoffs
    user_id, user = await account(server.hub.db)
    status, body = await api.request("POST", f"/api/handoff/accept/{world['dialog_id']}", token=user)
    assert status == 403, body


def bot_token_without_assistant() -> str:
    from tests.support.dialogs import tokens
    return tokens().service("billing").token


async def test_widget_session_checks_origin_and_resumes(server, api, world):
    aid = world["assistant"]["id"]
    status, body = await widget_session(api, aid, origin="https://evil.example")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await api.request("POST", "/api/widget/sessions", json={"assistant_id": aid})
    assert status == 403  # no Origin at all
    status, body = await widget_session(api, 424242)
    assert status == 404
    status, body = await widget_session(api, aid, visitor_id="short")
    assert status == 422
    first = world["session"]
    status, again = await widget_session(api, aid, visitor_id=first["visitor_id"])
    assert status == 201 and again["dialog_id"] == first["dialog_id"]
    status, d = await api.request("GET", f"/api/dialogs/{first['dialog_id']}", token=world["owner"])
    assert d["visitor_id"] == first["public_visitor_id"] != first["visitor_id"]
    # the public id shown to staff does not resume the dialog: it is not the secret
    status, other = await widget_session(api, aid, visitor_id=d["visitor_id"])
    assert status == 201 and other["dialog_id"] != first["dialog_id"]
    status, fresh = await widget_session(api, aid)
    assert status == 201 and fresh["dialog_id"] != first["dialog_id"] and fresh["visitor_id"] != first["visitor_id"]
    # CORS: the answer is readable by the allowed page, preflight is answered
    async with api.session.post(api.url + "/api/widget/sessions", json={"assistant_id": aid},
                                headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 201 and resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with api.session.options(api.url + "/api/widget/sessions",
                                   headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}) as resp:
        assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"]


async def test_widget_sessions_are_rate_limited(start_server, make_settings_factory, http):
    from tests.support.clients import Api
    server = await start_server(make_settings_factory(widget_sessions_per_minute=3))
    api = Api(server.url, http)
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    codes = [(await widget_session(api, a["id"]))[0] for _ in range(5)]
    assert codes[:3] == [201, 201, 201] and codes[3:] == [429, 429]


@pytest.fixture
def make_settings_factory(tmp_path):
    from tests.support.servers import make_settings

    def make(**overrides):
        return make_settings(tmp_path, **overrides)
    return make


async def test_queue_positions_follow_waiting_time(server, api, connect, world):
    aid = world["assistant"]["id"]
    op_id, op = await account(server.hub.db, "operator")
    console = await connect(server.url, "/operators", op)
    visitors = []
    for _ in range(3):
        v = await visitor(api, aid)
        c = await connect(server.url, "/dialogs", v["visitor_token"])
        r = await c.ok("dialog:handoff", {"dialog_id": v["dialog_id"], "request_id": "r1"})
        visitors.append((v["dialog_id"], c, r))
    assert [r["queue_position"] for _, _, r in visitors] == [1, 2, 3]
    # asking again with the same request_id changes nothing
    again = await visitors[1][1].ok("dialog:handoff", {"dialog_id": visitors[1][0], "request_id": "r1"})
    assert again["queue_position"] == 2 and again["version"] == visitors[1][2]["version"]
    # each heard their own place; a newcomer at the end of the queue moves nobody, so the
    # first visitor hears nothing more (events are delivered in order: the last visitor's
    # place arriving means everything before it has arrived too)
    for place, (_, c, _) in enumerate(visitors, 1):
        assert (await c.next("queue:position"))["position"] == place
    await next_where(console, "handoff:requested", lambda e: e["dialog_id"] == visitors[2][0])
    await console.ok("handoff:accept", {"dialog_id": visitors[0][0]})
    # the first visitor's next news is its acceptance, the second's its new place
    await visitors[0][1].absent("queue:position", until="handoff:status", where=lambda e: e["status"] == "active")
    await visitors[1][1].absent("queue:position", until="queue:position", where=lambda e: e["position"] == 1)
    assert (await visitors[2][1].next("queue:position"))["position"] == 2
    st = await console.ok("handoff:status", {"dialog_id": visitors[2][0]})
    assert st["status"] == "requested" and st["queue_position"] == 2
    # the last visitor changes their mind
    cancelled = await visitors[2][1].ok("dialog:handoff-cancel", {"dialog_id": visitors[2][0]})
    assert cancelled["handoff_status"] == "cancelled"
    assert [q["dialog_id"] for q in await console.ok("handoff:queue")] == [visitors[1][0]]
    # an operator cannot accept what is not waiting
    assert await console.error("handoff:accept", {"dialog_id": visitors[2][0]}) == "conflict"


async def test_takeover_release_and_owner_listing(server, api, connect, world):
    owner = await connect(server.url, "/dialogs", world["owner"])
    did = world["dialog_id"]
    await world["visitor"].ok("dialog:send", {"dialog_id": did, "text": "my parcel is lost"})
    assert await owner.error("dialog:send", {"dialog_id": did, "text": "hi"}) == "conflict"  # not held
    held = await owner.ok("dialog:takeover", {"dialog_id": did})
    assert held["handoff_status"] == "active" and held["operator_id"] == world["owner_id"]
    msg = await owner.ok("dialog:send", {"dialog_id": did, "text": "owner here", "client_msg_id": "c1"})
    again = await owner.ok("dialog:send", {"dialog_id": did, "text": "owner here", "client_msg_id": "c1"})
    assert msg["sender"] == "user" and again["id"] == msg["id"]
    op_id, op = await account(server.hub.db, "operator")
    op_dialogs = await connect(server.url, "/dialogs", op)
    assert await op_dialogs.error("dialog:takeover", {"dialog_id": did}) == "conflict"
    assert await op_dialogs.error("dialog:release", {"dialog_id": did}) == "forbidden"
    await owner.ok("dialog:release", {"dialog_id": did})
    page = await owner.ok("dialogs:list", {"search": "PARCEL"})
    assert [d["dialog_id"] for d in page["items"]] == [did] and page["total"] == 1
    assert (await owner.ok("dialogs:list", {"search": "nothing like this"}))["total"] == 0
    status, body = await api.request("GET", "/api/dialogs?status=open&limit=5", token=op)
    assert status == 200 and did in [d["dialog_id"] for d in body["items"]]
    assistants = await owner.ok("assistants:list", {})
    assert [a["id"] for a in assistants["items"]] == [world["assistant"]["id"]]


async def test_presence_and_auto_detect_on_one_instance(server, api, connect, world):
    op_id, op = await account(server.hub.db, "operator")
    watcher_id, watcher = await account(server.hub.db, "operator")
    w = await connect(server.url, "/operators", watcher)
    c = await connect(server.url, "/operators", op)
    mine = lambda e: e["operator_id"] == op_id  # noqa: E731
    assert (await next_where(w, "presence:changed", mine)) == {"operator_id": op_id, "status": "online"}
    me = await c.ok("presence:update", {"status": "away", "max_active_chats": 2})
    assert me["status"] == "away" and me["max_active_chats"] == 2 and me["active_chats"] == 0
    assert (await next_where(w, "presence:changed", mine)) == {"operator_id": op_id, "status": "away"}
    assert (await w.ok("presence:status", {"operator_id": op_id}))["status"] == "away"
    verdict = await c.ok("handoff:auto-detect", {"text": "I want to talk to a real person"})
    assert verdict["should_handoff"] and "explicit_request" in verdict["reasons"]
    verdict = await c.ok("handoff:auto-detect", {"text": "Позовите живого оператора!"})
    assert verdict["should_handoff"]
    verdict = await c.ok("handoff:auto-detect", {"text": "what are your opening hours?"})
    assert not verdict["should_handoff"] and verdict["score"] == 0
    # a bot scores its own dialog, not another assistant's
    bot_ops = await connect(server.url, "/operators", bot_token(world["assistant"]["id"]))
    vis, did = world["visitor"], world["dialog_id"]
    await vis.ok("dialog:send", {"dialog_id": did, "text": "where is my refund"})
    await world["bot"].ok("dialog:send", {"dialog_id": did, "text": "Sorry, I don't know."})
    await vis.ok("dialog:send", {"dialog_id": did, "text": "where is my refund??? this is useless"})
    verdict = await bot_ops.ok("handoff:auto-detect", {"dialog_id": did})
    assert verdict["should_handoff"], verdict
    assert {"repeated_message", "bot_failed", "frustration"} <= set(verdict["reasons"])
    assert await bot_ops.error("handoff:queue") == "forbidden"
    assert await c.error("handoff:auto-detect", {"dialog_id": did, "text": "x"}) == "validation_error"


async def test_going_offline_requeues_held_dialogs(server, api, connect, world):
    op_id, op = await account(server.hub.db, "operator")
    console = await connect(server.url, "/operators", op)
    vis, did = world["visitor"], world["dialog_id"]
    await vis.ok("dialog:handoff", {"dialog_id": did})
    held = await console.ok("handoff:accept", {"dialog_id": did})
    assert (await console.ok("presence:status"))["active_chats"] == 1
    await console.ok("presence:update", {"status": "offline"})
    ev = await next_where(console, "handoff:requested", lambda e: e["reason"] == "operator_offline", timeout=15)
    assert ev["dialog_id"] == did and ev["version"] > held["version"]
    status = await next_where(vis, "handoff:status", lambda e: e["reason"] == "operator_offline")
    assert status["status"] == "requested" and status["operator_id"] is None
    assert (await console.ok("presence:status"))["active_chats"] == 0
    assert await console.ok("chats:active") == []


async def test_http_mirrors_of_the_handoff_operations(server, api, world):
    op_id, op = await account(server.hub.db, "operator")
    did, vt = world["dialog_id"], world["session"]["visitor_token"]
    status, body = await api.request("POST", "/api/handoff/request", token=vt,
                                     json={"dialog_id": did, "reason": "by http", "request_id": "h1"})
    assert status == 201 and body["handoff_status"] == "requested" and body["queue_position"] == 1
    status, queue = await api.request("GET", "/api/handoff/queue", token=op)
    assert status == 200 and [q["dialog_id"] for q in queue] == [did] and queue[0]["reason"] == "by http"
    status, hb = await api.request("POST", "/api/operator/presence/heartbeat", token=op, json={})
    assert status == 201 and hb["status"] == "online" and hb["operator_id"] == op_id
    status, body = await api.request("POST", f"/api/handoff/accept/{did}", token=op, json={})
    assert status == 201 and body["operator_id"] == op_id
    status, again = await api.request("POST", f"/api/handoff/accept/{did}", token=world["owner"], json={})
    assert status == 403  # owners take over, they do not accept from the queue
    status, st = await api.request("GET", f"/api/handoff/status/{did}", token=op)
    assert status == 200 and st["status"] == "active" and st["queue_position"] is None
    status, chats = await api.request("GET", "/api/operator/active-chats", token=op)
    assert [c["dialog_id"] for c in chats] == [did]
    status, msg = await api.request("POST", f"/api/dialogs/{did}/messages", token=op, json={"text": "hello from http"})
    assert status == 201 and msg["sender"] == "operator"
    status, body = await api.request("POST", f"/api/handoff/release/{did}", token=op, json={})
    assert status == 201 and body["handoff_status"] == "resolved"
    status, verdict = await api.request("POST", "/api/handoff/auto-detect", token=op, json={"text": "оператор!"})
    assert status == 201 and verdict["should_handoff"]
    status, body = await api.request("GET", "/api/handoff/queue", token=vt)
    assert status == 403


async def test_http_only_holder_who_stops_heartbeating_is_requeued(start_server, make_settings_factory, http,
                                                                   connect):
    from tests.support.clients import Api
    server = await start_server(make_settings_factory(presence_timeout=1.0, presence_grace=1.0))
    api = Api(server.url, http)
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    v = await visitor(api, a["id"])
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    await vis.ok("dialog:handoff", {"dialog_id": v["dialog_id"]})
    op_id, op = await account(server.hub.db, "operator")
    status, body = await api.request("POST", f"/api/handoff/accept/{v['dialog_id']}", token=op, json={})
    assert status == 201 and body["operator_id"] == op_id
    # no console, no heartbeat: after the timeout and the grace period the dialog goes back
    ev = await next_where(vis, "handoff:status", lambda e: e["reason"] == "operator_offline", timeout=15)
    assert ev["status"] == "requested" and ev["version"] > body["version"]


async def test_one_operator_cannot_exceed_the_chat_limit_by_racing(start_server, tmp_path, pg_url, http, connect):
    """Two accepts by the same operator at the same time: the limit holds (PostgreSQL)."""
    import asyncio

    from tests.support.clients import Api
    from tests.support.servers import make_settings

    server = await start_server(make_settings(tmp_path, database_url=pg_url, max_active_chats=1))
    api = Api(server.url, http)
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    dialogs = []
    for _ in range(2):
        v = await visitor(api, a["id"])
        vis = await connect(server.url, "/dialogs", v["visitor_token"])
        await vis.ok("dialog:handoff", {"dialog_id": v["dialog_id"]})
        dialogs.append(v["dialog_id"])
    _, op = await account(server.hub.db, "operator")
    consoles = [await connect(server.url, "/operators", op) for _ in range(2)]
    for _ in range(5):
        replies = await asyncio.gather(*(c.call("handoff:accept", {"dialog_id": d}) for c, d in zip(consoles, dialogs)))
        assert sorted(r["ok"] for r in replies) == [False, True], replies
        assert [r["error"]["code"] for r in replies if not r["ok"]] == ["conflict"]
        won = next(r["data"]["dialog_id"] for r in replies if r["ok"])
        await consoles[0].ok("handoff:release", {"dialog_id": won})
        v_status = await consoles[0].ok("handoff:status", {"dialog_id": won})
        assert v_status["status"] == "resolved"
        # back in the queue for the next round
        status, _ = await api.request("POST", "/api/handoff/request", token=owner, json={"dialog_id": won})
        assert status in (200, 201)


async def test_socketio_accepts_assistant_origins_and_refuses_others(server, api, http):
    """Browsers on an assistant's allowed website may open Socket.IO connections (the
    hub reads the origins from the database); other websites may not."""
    _, owner = await account(server.hub.db)
    await assistant(api, owner, origins=["https://allowed.example"])

    async def handshake(origin: str) -> int:
        async with http.get(server.url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}) as resp:
            return resp.status

    assert await handshake("https://evil.example") == 400
    await server.hub.widget_origins.refresh(server.hub.db)  # what every instance does every 10 s
    assert await handshake("https://allowed.example") == 200
    assert await handshake("https://evil.example") == 400
    assert await handshake(server.url) == 200  # the hub's own pages
