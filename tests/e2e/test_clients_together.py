"""Every kind of client on the same operations and the one fan-out: Node's `ws` package
on the plain gateways, and a Socket.IO user, plain-WebSocket users, an SSE consumer
and a REST caller in one thread across two `hub serve` processes on PostgreSQL and Redis."""
from __future__ import annotations

import json

from tests.support.clients import Api
from tests.support.dialogs import assistant, visitor
from tests.support.gateways import Plain
from tests.support.sse import read_sse
from tests.support.node import run_node


async def test_node_ws_clients_edustream_and_generic_with_resume_and_logout(server, api, node):
    ann, bob = await api.user(), await api.user()
    out = json.loads(await run_node("plain_ws.mjs", server.url, ann["access_token"], ann["refresh_token"],
                                    str(ann["user"]["id"]), bob["access_token"], str(bob["user"]["id"])))
    assert out["sent"]["ok"] and out["annGot"]["type"] == "new_message"
    assert out["annGot"]["message_id"] == out["sent"]["data"]["id"]
    assert out["annGot"]["sender_email"] == bob["user"]["email"] and out["annGot"]["message"] == "hi Ann"
    assert out["bobSaw"]["ns"] == "/chat" and out["bobSaw"]["data"]["message_id"] == out["replyId"]
    assert out["resumed"]["recovered"] == {"/chat": True}
    # Nothing lost, nothing twice: the two missed, then the live one.
    assert out["afterResume"] == out["missed"] + [out["live"]]
    assert out["annClosed"] == 4401
    assert out["refused"]["error"]["message"] == "token revoked" and out["refusedCode"] == 4401


async def test_socketio_plain_ws_sse_and_rest_talk_in_one_thread_across_two_instances(two_hubs, connect, http):
    one, two = two_hubs
    api_one, api_two = Api(one.url, http), Api(two.url, http)
    ann, bob, carol, dave = [await api_one.user() for _ in range(4)]
    ids = {name: u["user"]["id"] for name, u in zip("abcd", (ann, bob, carol, dave))}

    ann_sio = await connect(one.url, "/chat", ann["access_token"])  # Socket.IO, instance one
    thread = await ann_sio.ok("thread:create", {"member_ids": [ids["b"], ids["c"], ids["d"]], "title": "all"})
    tid = thread["thread_id"]
    bob_ws = await Plain.open(http, f"{two.url}/ws?ns=/chat&token={bob['access_token']}")  # generic, two
    assert (await bob_ws.frame())["type"] == "welcome"
    bob_phone = await Plain.open(http, f"{one.url}/ws/{ids['b']}", {"token": bob["access_token"]})  # EduStream, one
    async with http.get(f"{two.url}/sse?ns=/chat&token={carol['access_token']}") as carol_sse:  # SSE, two
        assert carol_sse.status == 200

        from_ann = await ann_sio.ok("message:send", {"thread_id": tid, "message": "from Socket.IO"})
        from_bob = await bob_ws.call("message:send", {"thread_id": tid, "message": "from plain ws"}, ns="/chat")
        assert from_bob["ok"], from_bob
        status, from_dave = await api_two.request("POST", "/api/messages", token=dave["access_token"],
                                                  json={"thread_id": tid, "message": "from REST"})
        assert status == 201
        sent = [from_ann["id"], from_bob["data"]["id"], from_dave["id"]]

        # Each of them gets the others' messages, once, in order.
        got_ann = [(await ann_sio.next("message:new"))["message_id"] for _ in range(2)]
        assert got_ann == sent[1:]
        got_bob = [(await bob_ws.next(lambda f: f.get("event") == "message:new"))["data"]["message_id"]
                   for _ in range(2)]
        assert got_bob == [sent[0], sent[2]]
        edu = [await bob_phone.next(lambda f: f["type"] in ("new_message", "message_sent")) for _ in range(3)]
        assert [(f["type"], f["message_id"]) for f in edu] == [
            ("new_message", sent[0]), ("message_sent", sent[1]), ("new_message", sent[2])]
        assert edu[0]["sender_email"] == ann["user"]["email"]
        events = [e for e in await read_sse(carol_sse, 6) if e["event"] == "message:new"]
        while len(events) < 3:
            events += [e for e in await read_sse(carol_sse, 1) if e["event"] == "message:new"]
        assert [e["data"]["message_id"] for e in events] == sent
        assert len({e["id"] for e in events}) == 3
    status, threads = await api_one.request("GET", "/api/messages/threads", token=dave["access_token"])
    assert status == 200 and threads[0]["thread_id"] == tid and threads[0]["unread_count"] == 2
    # The proof that nothing came twice: the next event each gets is a later message.
    later = await ann_sio.ok("message:send", {"thread_id": tid, "message": "later"})
    assert (await bob_ws.next(lambda f: f.get("event") == "message:new"))["data"]["message_id"] == later["id"]
    assert (await bob_phone.next(lambda f: f["type"] == "new_message"))["message_id"] == later["id"]


async def test_widget_visitor_socket_across_two_instances(two_hubs, http):
    one, two = two_hubs
    api_one, api_two = Api(one.url, http), Api(two.url, http)
    owner = await api_one.user()
    a = await assistant(api_one, owner["access_token"])
    session = await visitor(api_two, a["id"])
    did = session["dialog_id"]
    widget = await Plain.open(http, f"{two.url}/ws/widget-dialog/{did}?token={session['visitor_token']}")
    staff = await Plain.open(http, f"{one.url}/ws/dialog/{did}", {"token": owner["access_token"]})
    asked = await widget.call("dialog:send", {"dialog_id": did, "text": "is anyone there?"})
    assert asked["ok"], asked
    added = await staff.next(lambda f: f["type"] == "message_added")
    assert added["data"]["message"]["id"] == asked["data"]["id"]
    assert (await api_one.request("POST", f"/api/dialogs/{did}/takeover", token=owner["access_token"]))[0] == 201
    status, answer = await api_one.request("POST", f"/api/dialogs/{did}/messages", token=owner["access_token"],
                                           json={"text": "yes, a human"})
    assert status == 201
    got = await widget.next(lambda f: f["type"] == "message_added")
    assert got == {"type": "message_added", "data": {"dialog_id": did, "message": answer,
                                                      "timestamp": answer["created_at"]}}
