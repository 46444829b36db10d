"""The support desk through a real server and real Socket.IO clients: close,
transfer, transcript, the offline message, notes, canned replies, automatic
routing, desk settings and app keys (handlers/routing.py, desk.py, widgets.py)."""
import asyncio

import pytest

from tests.support.clients import Api
from tests.support.dialogs import ORIGIN, account, assistant, bot_token, next_where, visitor, widget_session
from tests.support.servers import make_settings


@pytest.fixture
async def desk(server, api, connect):
    """An owner's assistant, its bot, a visitor waiting for a human, two operators."""
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    bot = await connect(server.url, "/dialogs", bot_token(a["id"]))
    v = await visitor(api, a["id"])
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    ops = []
    for _ in range(2):
        op_id, token = await account(server.hub.db, "operator")
        ops.append({"id": op_id, "token": token, "console": await connect(server.url, "/operators", token),
                    "dialogs": await connect(server.url, "/dialogs", token)})
    return {"owner": owner, "assistant": a, "bot": bot, "visitor": vis, "dialog_id": v["dialog_id"], "ops": ops}


async def held(console, dialog_id):
    return await console.ok("handoff:accept", {"dialog_id": dialog_id})


async def test_close_ends_the_dialog_for_everyone_and_a_new_message_starts_another(desk, api):
    vis, did, anna = desk["visitor"], desk["dialog_id"], desk["ops"][0]
    await vis.ok("dialog:handoff", {"dialog_id": did})
    taken = await held(anna["console"], did)
    await anna["dialogs"].ok("dialog:join", {"dialog_id": did})
    closed = await anna["dialogs"].ok("dialog:close", {"dialog_id": did})
    assert closed["status"] == "closed" and closed["handoff_status"] == "resolved"
    assert closed["version"] > taken["version"] and closed["closed_at"]
    ended = await vis.next("dialog:closed")
    assert ended == {"dialog_id": did, "version": closed["version"], "closed_by": "operator"}
    assert (await desk["bot"].next("dialog:closed"))["dialog_id"] == did
    assert (await next_where(anna["console"], "dialog:closed", lambda e: e["dialog_id"] == did))["version"] == \
        closed["version"]
    assert await anna["console"].ok("chats:active") == []  # no longer held: a free place
    assert await vis.error("dialog:send", {"dialog_id": did, "text": "hello?"}) == "conflict"
    # closing twice changes nothing; a new session of the same visitor opens a new dialog
    assert (await anna["dialogs"].ok("dialog:close", {"dialog_id": did}))["version"] == closed["version"]
    status, again = await widget_session(api, desk["assistant"]["id"])
    assert status == 201 and again["dialog_id"] != did


async def test_visitor_closes_a_waiting_dialog_and_it_leaves_the_queue(desk):
    vis, did, console = desk["visitor"], desk["dialog_id"], desk["ops"][0]["console"]
    await vis.ok("dialog:handoff", {"dialog_id": did})
    await next_where(console, "queue:updated", lambda e: e["size"] == 1)
    closed = await vis.ok("dialog:close", {"dialog_id": did})
    assert closed["handoff_status"] == "cancelled"
    await next_where(console, "queue:updated", lambda e: e["size"] == 0)
    assert await console.ok("handoff:queue") == []


async def test_transfer_to_an_operator_who_accepts(desk):
    vis, did = desk["visitor"], desk["dialog_id"]
    anna, boris = desk["ops"]
    await vis.ok("dialog:handoff", {"dialog_id": did})
    await held(anna["console"], did)
    offered = await anna["dialogs"].ok("dialog:transfer", {"dialog_id": did, "operator_id": boris["id"]})
    assert offered["transfer_to"] == boris["id"] and offered["operator_id"] == anna["id"]
    event = await next_where(boris["console"], "transfer:offered", lambda e: e["dialog_id"] == did)
    assert event == {"dialog_id": did, "from_operator_id": anna["id"], "to_operator_id": boris["id"],
                     "version": offered["version"]}
    # only the one offered may take it
    assert await anna["console"].error("transfer:accept", {"dialog_id": did}) == "conflict"
    taken = await boris["console"].ok("transfer:accept", {"dialog_id": did})
    assert taken["operator_id"] == boris["id"] and taken["transfer_to"] is None
    status = await next_where(vis, "handoff:status", lambda e: e["version"] == taken["version"])
    assert status["operator_id"] == boris["id"] and status["reason"] == "transferred"
    assert [d["dialog_id"] for d in await boris["console"].ok("chats:active")] == [did]
    assert await anna["console"].ok("chats:active") == []
    assert await anna["dialogs"].error("dialog:send", {"dialog_id": did, "text": "still me?"}) == "conflict"


async def test_a_declined_transfer_returns_to_the_holder(desk):
    did = desk["dialog_id"]
    anna, boris = desk["ops"]
    await desk["visitor"].ok("dialog:handoff", {"dialog_id": did})
    await held(anna["console"], did)
    await anna["dialogs"].ok("dialog:transfer", {"dialog_id": did, "operator_id": boris["id"]})
    back = await boris["console"].ok("transfer:decline", {"dialog_id": did})
    assert back["operator_id"] == anna["id"] and back["transfer_to"] is None
    returned = await next_where(anna["console"], "transfer:returned", lambda e: e["dialog_id"] == did)
    assert returned["reason"] == "declined" and returned["operator_id"] == anna["id"]
    assert await boris["console"].error("transfer:accept", {"dialog_id": did}) == "conflict"


async def test_transfer_without_operator_goes_back_to_the_queue(desk):
    vis, did = desk["visitor"], desk["dialog_id"]
    anna, boris = desk["ops"]
    await vis.ok("dialog:handoff", {"dialog_id": did})
    await held(anna["console"], did)
    # only the holder may transfer
    assert await boris["dialogs"].error("dialog:transfer", {"dialog_id": did}) == "conflict"
    queued = await anna["dialogs"].ok("dialog:transfer", {"dialog_id": did})
    assert queued["handoff_status"] == "requested" and queued["operator_id"] is None
    requested = await next_where(boris["console"], "handoff:requested", lambda e: e["reason"] == "transferred")
    assert requested["dialog_id"] == did and requested["queue_position"] == 1
    assert (await next_where(vis, "queue:position", lambda e: True))["position"] == 1
    assert (await boris["console"].ok("handoff:accept", {"dialog_id": did}))["operator_id"] == boris["id"]


async def test_transcript_has_the_bots_part_and_notes_only_for_staff(desk):
    vis, bot, did = desk["visitor"], desk["bot"], desk["dialog_id"]
    anna = desk["ops"][0]
    await vis.ok("dialog:send", {"dialog_id": did, "text": "Where is my parcel?"})
    await bot.ok("dialog:send", {"dialog_id": did, "text": "It is on its way."})
    await vis.ok("dialog:handoff", {"dialog_id": did})
    await held(anna["console"], did)
    note = await anna["console"].ok("note:add", {"dialog_id": did, "text": "VIP customer, be nice"})
    assert note["author_id"] == anna["id"]
    seen = await next_where(desk["ops"][1]["console"], "note:added", lambda e: e["dialog_id"] == did)
    assert seen["note"]["text"] == "VIP customer, be nice"
    # the visitor never gets a note: not live (their next event is the operator's message), not stored
    await anna["dialogs"].ok("dialog:send", {"dialog_id": did, "text": "Hello, I am Anna."})
    await next_where(vis, "message:added", lambda e: e["message"]["text"] == "Hello, I am Anna.")
    mine = await vis.ok("dialog:transcript", {"dialog_id": did})
    assert mine["notes"] is None and "VIP" not in mine["text"]
    staff = await anna["dialogs"].ok("dialog:transcript", {"dialog_id": did})
    assert [(m["sender"], m["text"]) for m in staff["messages"]] == [
        ("visitor", "Where is my parcel?"), ("assistant", "It is on its way."), ("operator", "Hello, I am Anna.")]
    assert [n["text"] for n in staff["notes"]] == ["VIP customer, be nice"]
    assert "assistant: It is on its way." in staff["text"]
    assert [n["text"] for n in await anna["console"].ok("notes:list", {"dialog_id": did})] == ["VIP customer, be nice"]


async def test_offline_message_is_a_dialog_the_team_sees_next(desk, api, connect, server):
    vis, did, console = desk["visitor"], desk["dialog_id"], desk["ops"][0]["console"]
    out = await vis.ok("dialog:leave-message", {"dialog_id": did, "text": "Please call me back about order 42",
                                                "contact": "ann@example.com", "name": "Ann"})
    assert out["handoff_status"] == "requested" and out["queue_position"] == 1
    queue = await console.ok("handoff:queue")
    assert queue[0]["dialog_id"] == did and queue[0]["reason"] == "offline_message"
    assert queue[0]["visitor_label"] == "Ann" and queue[0]["preview"] == "Please call me back about order 42"
    assert queue[0]["origin"] == ORIGIN
    d = await desk["ops"][0]["dialogs"].ok("dialog:get", {"dialog_id": did})
    assert d["visitor_contact"] == "ann@example.com" and d["visitor_name"] == "Ann"
    # a dialog already waiting (the bot handed it over) becomes an offline message, in its place
    v2 = await visitor(api, desk["assistant"]["id"])
    vis2 = await connect(server.url, "/dialogs", v2["visitor_token"])
    asked = await desk["bot"].ok("dialog:handoff", {"dialog_id": v2["dialog_id"], "reason": "asked for a person"})
    left = await vis2.ok("dialog:leave-message", {"dialog_id": v2["dialog_id"], "text": "Call me",
                                                  "contact": "+49 30 1234567"})
    assert left["queue_position"] == 2 and left["version"] == asked["version"] + 1
    again = await next_where(console, "handoff:requested", lambda e: e["version"] == left["version"])
    assert again["reason"] == "offline_message" and again["dialog_id"] == v2["dialog_id"]
    assert (await next_where(vis2, "handoff:status", lambda e: e["version"] == left["version"]))["reason"] == \
        "offline_message"
    # a bot or an operator cannot leave a visitor's message
    assert await desk["bot"].error("dialog:leave-message", {"dialog_id": did, "text": "x",
                                                            "contact": "bot@x.example"}) == "forbidden"


async def test_canned_replies_crud_for_the_team(desk):
    anna, boris = desk["ops"]
    made = await anna["console"].ok("canned:create", {"shortcut": "refund", "text": "Refunds take 5 days."})
    seen = await next_where(boris["console"], "canned:changed", lambda e: e["reply"]["id"] == made["id"])
    assert seen["reply"]["shortcut"] == "refund" and not seen["deleted"]
    assert await boris["console"].error("canned:create", {"shortcut": "refund", "text": "again"}) == "conflict"
    assert await boris["console"].error("canned:create", {"shortcut": "Bad Shortcut", "text": "x"}) == \
        "validation_error"
    changed = await boris["console"].ok("canned:update", {"reply_id": made["id"], "text": "Refunds take 3 days."})
    assert changed["text"] == "Refunds take 3 days." and changed["shortcut"] == "refund"
    assert [r["text"] for r in await anna["console"].ok("canned:list")] == ["Refunds take 3 days."]
    await anna["console"].ok("canned:delete", {"reply_id": made["id"]})
    assert await anna["console"].ok("canned:list") == []


async def test_operators_list_has_names_and_status_of_everyone_online(desk, server, connect):
    anna, boris = desk["ops"]
    listed = await anna["console"].ok("operators:list")
    assert {o["operator_id"]: o["status"] for o in listed} == {anna["id"]: "online", boris["id"]: "online"}
    assert all(o["name"] and o["max_active_chats"] == 5 for o in listed)


@pytest.mark.parametrize("routing", ["least_busy", "round_robin"])
async def test_automatic_routing_assigns_within_capacity(desk, api, connect, server, routing):
    a, owner = desk["assistant"], desk["owner"]
    anna, boris = desk["ops"]
    for op in (anna, boris):
        await op["console"].ok("presence:update", {"status": "online", "max_active_chats": 2})
    owner_sock = await connect(server.url, "/dialogs", owner)
    settings = await owner_sock.ok("assistant:settings", {"assistant_id": a["id"], "routing": routing})
    assert settings["routing"] == routing
    dialogs = [desk["dialog_id"]]
    socks = [desk["visitor"]]
    for _ in range(4):
        v = await visitor(api, a["id"])
        dialogs.append(v["dialog_id"])
        socks.append(await connect(server.url, "/dialogs", v["visitor_token"]))
    for sock, did in zip(socks, dialogs):
        await sock.ok("dialog:handoff", {"dialog_id": did})
    # four are assigned at once (two each: their capacity), the fifth waits
    chats = {op["id"]: [d["dialog_id"] for d in await op["console"].ok("chats:active")] for op in (anna, boris)}
    assert sorted(len(c) for c in chats.values()) == [2, 2]
    assert sorted(chats[anna["id"]] + chats[boris["id"]]) == dialogs[:4]
    # the first two went to different operators (the one with less, or whose turn it was)
    assert (dialogs[0] in chats[anna["id"]]) != (dialogs[1] in chats[anna["id"]])
    assert [q["dialog_id"] for q in await anna["console"].ok("handoff:queue")] == [dialogs[4]]
    # a freed place is filled from the queue by the sweep
    await anna["console"].ok("handoff:release", {"dialog_id": chats[anna["id"]][0]})
    taken = await next_where(anna["console"], "handoff:accepted", lambda e: e["dialog_id"] == dialogs[4], timeout=10)
    assert taken["operator_id"] == anna["id"]


async def test_settings_and_availability_reach_the_widget_session(desk, api, connect, server):
    a, owner = desk["assistant"], desk["owner"]
    owner_sock = await connect(server.url, "/dialogs", owner)
    changed = await owner_sock.ok("assistant:settings", {
        "assistant_id": a["id"], "greeting": "Hi! How can we help?", "title": "Tea shop", "color": "#2e4a3b",
        "hours": {"timezone": "Europe/Berlin", "days": [], "open": "09:00", "close": "17:00"}})
    assert changed["title"] == "Tea shop" and changed["hours"]["timezone"] == "Europe/Berlin"
    assert (await owner_sock.next("assistant:changed"))["assistant_id"] == a["id"]
    # Every field null (found by the fuzz audit): an assistant keeps its routing, the rest clear.
    cleared = await owner_sock.ok("assistant:settings", {"assistant_id": a["id"], "routing": None, "title": None})
    assert cleared["routing"] == "manual" and cleared["title"] is None
    assert (await owner_sock.next("assistant:changed"))["assistant_id"] == a["id"]
    await owner_sock.ok("assistant:settings", {"assistant_id": a["id"], "title": "Tea shop"})
    status, session = await widget_session(api, a["id"])
    assert status == 201
    assert session["settings"] == {"name": "Helper", "title": "Tea shop", "greeting": "Hi! How can we help?",
                                   "color": "#2e4a3b", "routing": "manual", "open_now": False}
    assert session["operators_online"] == 2 and session["bot_online"] is True
    avail = await desk["visitor"].ok("dialog:availability", {"dialog_id": desk["dialog_id"]})
    assert avail == {"operators_online": 2, "open_now": False, "routing": "manual", "bot_online": True}
    assert await owner_sock.error("assistant:settings", {"assistant_id": a["id"], "color": "red"}) == \
        "validation_error"
    assert await owner_sock.error("assistant:settings", {"assistant_id": a["id"],
                                                         "hours": {"timezone": "Mars/Base"}}) == "validation_error"
    stranger = await connect(server.url, "/dialogs", (await account(server.hub.db))[1])
    assert await stranger.error("assistant:settings", {"assistant_id": a["id"], "title": "mine"}) == "forbidden"


async def test_app_key_gives_a_native_app_a_session_without_origin(desk, api, connect, server):
    a, owner = desk["assistant"], desk["owner"]
    owner_sock = await connect(server.url, "/dialogs", owner)
    made = await owner_sock.ok("app-key:create", {"assistant_id": a["id"], "name": "iOS app"})
    assert made["key"].startswith("hubapp_")
    body = {"assistant_id": a["id"]}
    status, session = await api.request("POST", "/api/widget/sessions", json=body,
                                        headers={"X-Hub-App-Key": made["key"]})
    assert status == 201, session
    app = await connect(server.url, "/dialogs", session["visitor_token"])
    assert (await app.ok("dialog:get", {"dialog_id": session["dialog_id"]}))["channel"] == "api"
    # no key and no origin, a wrong key, another assistant's id: refused
    assert (await api.request("POST", "/api/widget/sessions", json=body))[0] == 403
    assert (await api.request("POST", "/api/widget/sessions", json=body,
                              headers={"X-Hub-App-Key": "hubapp_not-a-real-key"}))[0] == 403
    other = await assistant(api, owner, name="Other")
    assert (await api.request("POST", "/api/widget/sessions", json={"assistant_id": other["id"]},
                              headers={"X-Hub-App-Key": made["key"]}))[0] == 403
    listed = await owner_sock.ok("app-keys:list", {"assistant_id": a["id"]})
    assert [(k["name"], k["key"], k["revoked_at"]) for k in listed] == [("iOS app", None, None)]
    revoked = await owner_sock.ok("app-key:revoke", {"assistant_id": a["id"], "key_id": made["id"]})
    assert revoked["revoked_at"]
    assert (await api.request("POST", "/api/widget/sessions", json=body,
                              headers={"X-Hub-App-Key": made["key"]}))[0] == 403


async def test_app_key_sessions_are_rate_limited_per_key(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, app_key_sessions_per_minute=2,
                                             widget_sessions_per_minute=100))
    api = Api(server.url, http)
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    owner_sock = await connect(server.url, "/dialogs", owner)
    key = (await owner_sock.ok("app-key:create", {"assistant_id": a["id"], "name": "app"}))["key"]
    answers = [(await api.request("POST", "/api/widget/sessions", json={"assistant_id": a["id"]},
                                  headers={"X-Hub-App-Key": key}))[0] for _ in range(3)]
    assert answers == [201, 201, 429]


async def test_an_unanswered_transfer_returns_after_the_timeout(start_server, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, transfer_timeout=0.5))
    api = Api(server.url, http)
    _, owner = await account(server.hub.db)
    a = await assistant(api, owner)
    v = await visitor(api, a["id"])
    vis = await connect(server.url, "/dialogs", v["visitor_token"])
    (anna_id, anna), (boris_id, boris) = [await account(server.hub.db, "operator") for _ in range(2)]
    anna_console = await connect(server.url, "/operators", anna)
    anna_dialogs = await connect(server.url, "/dialogs", anna)
    await vis.ok("dialog:handoff", {"dialog_id": v["dialog_id"]})
    await anna_console.ok("handoff:accept", {"dialog_id": v["dialog_id"]})
    offered = await anna_dialogs.ok("dialog:transfer", {"dialog_id": v["dialog_id"], "operator_id": boris_id})
    returned = await next_where(anna_console, "transfer:returned", lambda e: e["dialog_id"] == v["dialog_id"])
    assert returned == {"dialog_id": v["dialog_id"], "operator_id": anna_id, "to_operator_id": boris_id,
                        "version": offered["version"] + 1, "reason": "timeout"}
    boris_console = await connect(server.url, "/operators", boris)
    assert await boris_console.error("transfer:accept", {"dialog_id": v["dialog_id"]}) == "conflict"
    d = await anna_dialogs.ok("dialog:get", {"dialog_id": v["dialog_id"]})
    assert d["operator_id"] == anna_id and d["transfer_to"] is None


def test_opening_hours_in_the_assistants_time_zone():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from handlers.widgets import Hours

    hours = Hours(timezone="Europe/Berlin", days=[0, 1, 2, 3, 4], open="09:00", close="17:00")
    at = lambda *args: datetime(*args, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()  # noqa: E731
    assert hours.is_open(at(2026, 12, 7, 9, 0))  # Monday 09:00 Berlin
    assert not hours.is_open(at(2026, 12, 7, 8, 59))
    assert not hours.is_open(at(2026, 12, 7, 17, 0))
    assert not hours.is_open(at(2026, 12, 6, 12, 0))  # Sunday
    # 12:00 in Berlin is 11:00 UTC in winter: the zone is the assistant's, not the server's
    assert hours.is_open(datetime(2026, 12, 7, 11, 0, tzinfo=ZoneInfo("UTC")).timestamp())


async def test_the_widget_learns_whether_a_bot_is_connected(desk, api, connect, server):
    a, did = desk["assistant"], desk["dialog_id"]
    assert (await desk["visitor"].ok("dialog:availability", {"dialog_id": did}))["bot_online"] is True
    await desk["bot"].sio.disconnect()
    for _ in range(50):  # the server handles the disconnect on its own time
        if not (await desk["visitor"].ok("dialog:availability", {"dialog_id": did}))["bot_online"]:
            break
        await asyncio.sleep(0.1)
    status, session = await widget_session(api, a["id"])
    assert status == 201 and session["bot_online"] is False
    await connect(server.url, "/dialogs", bot_token(a["id"]))
    status, session = await widget_session(api, a["id"])
    assert session["bot_online"] is True  # counted when it connected
