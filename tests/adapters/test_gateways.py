"""The reference products' plain WebSocket clients against the hub: EduStream's
/ws/{user_id} and the AI platform's dialog and operator sockets (aiohttp websockets)."""
from __future__ import annotations

import asyncio

import aiohttp

from hub.adapters.gateways.plainws import HEARTBEAT
from tests.support.business import service_token, staff
from tests.support.dialogs import assistant, visitor as widget_session
from tests.support.gateways import Plain


async def test_edustream_socket_gets_flat_messages_sent_over_rest(server, api, http):
    ann, bob = await api.user(), await api.user()
    ann_id, bob_id = ann["user"]["id"], bob["user"]["id"]
    phone = await Plain.open(http, f"{server.url}/ws/{bob_id}?token={bob['access_token']}")
    # The token may also come as the first message.
    laptop = await Plain.open(http, f"{server.url}/ws/{bob_id}", {"token": bob["access_token"]})
    ann_ws = await Plain.open(http, f"{server.url}/ws/{ann_id}?token={ann['access_token']}")

    status, sent = await api.request("POST", "/api/messages", token=ann["access_token"],
                                     json={"recipient_id": bob_id, "message": "hello Bob", "booking_id": 7})
    assert status == 201
    for sock in (phone, laptop):
        new = await sock.frame()
        assert new == {"type": "new_message", "message_id": sent["id"], "sender_id": ann_id,
                       "sender_email": ann["user"]["email"], "message": "hello Bob",
                       "created_at": sent["created_at"], "thread_id": sent["thread_id"], "booking_id": 7}
    sent_elsewhere = await ann_ws.frame()  # sent over REST: every socket of Ann's is another device
    assert sent_elsewhere["type"] == "message_sent" and sent_elsewhere["message_id"] == sent["id"]

    status, _ = await api.request("POST", "/api/notifications", token=service_token(),
                                  json={"user_id": bob_id, "type": "lesson", "title": "Tomorrow",
                                        "message": "Lesson at 10"})
    assert status == 201
    note = await phone.frame()
    assert note["type"] == "notification" and note["title"] == "Tomorrow" and note["message"] == "Lesson at 10"
    assert note["notification_type"] == "lesson"
    status, _ = await api.request("POST", "/api/publish", token=service_token(), json={
        "namespace": "/notifications", "event": "status:updated", "to": {"user_ids": [bob_id]},
        "data": {"resource_type": "booking", "resource_id": 31, "status": "confirmed"}})
    assert status in (200, 201)
    booking = await phone.frame()
    assert booking == {"type": "booking_update", "booking_id": 31, "status": "confirmed"}

    # A request on the socket itself (defaults to /chat) and a ping.
    reply = await phone.call("unread:count")
    assert reply == {"id": 1, "ok": True, "data": {"unread_count": 1}}
    await phone.ws.send_str('{"type": "ping"}')
    assert await phone.frame() == {"type": "pong"}


async def test_edustream_path_must_be_the_tokens_user_and_bad_tokens_are_refused(server, api, http):
    ann, bob = await api.user(), await api.user()
    sock = await Plain.open(http, f"{server.url}/ws/{bob['user']['id']}?token={ann['access_token']}")
    error, code = await sock.refused()
    assert error["error"]["code"] == "forbidden" and code == 4403
    sock = await Plain.open(http, f"{server.url}/ws/{ann['user']['id']}", {"hello": "no token"})
    error, code = await sock.refused()
    assert error["error"]["code"] == "unauthorized" and code == 4401
    sock = await Plain.open(http, f"{server.url}/ws/{ann['user']['id']}?token=garbage")
    assert (await sock.refused())[1] == 4401


async def test_logout_closes_plain_sockets_and_the_revoked_token_is_refused(server, api, http):
    ann = await api.user()
    token, uid = ann["access_token"], ann["user"]["id"]
    live = await Plain.open(http, f"{server.url}/ws/{uid}?token={token}")
    generic = await Plain.open(http, f"{server.url}/ws", {"token": token})
    assert (await generic.frame())["type"] == "welcome"
    assert (await live.call("unread:count"))["ok"]
    status, _ = await api.request("POST", "/auth/logout", token=token, json={"refresh_token": ann["refresh_token"]})
    assert status in (200, 204)
    assert await live.closed() == 4401
    assert await generic.closed() == 4401
    again = await Plain.open(http, f"{server.url}/ws/{uid}?token={token}")
    error, code = await again.refused()
    assert error["error"] == {"code": "unauthorized", "message": "token revoked"} and code == 4401


async def test_widget_visitor_and_staff_dialog_sockets(server, api, http):
    owner = await api.user()
    a = await assistant(api, owner["access_token"])
    session = await widget_session(api, a["id"])
    did, vt = session["dialog_id"], session["visitor_token"]
    other = await widget_session(api, a["id"])

    # Never readable without the dialog's own visitor token.
    for url, first in ((f"/ws/widget-dialog/{did}", {}), (f"/ws/widget-dialog/{did}?token={other['visitor_token']}", None),
                       (f"/ws/site-dialog/{did}?token={owner['access_token']}", None)):
        sock = await Plain.open(http, server.url + url, first)
        error, code = await sock.refused()
        assert code in (4401, 4403), (url, error)

    visitor = await Plain.open(http, f"{server.url}/ws/widget-dialog/{did}?token={vt}")
    site = await Plain.open(http, f"{server.url}/ws/site-dialog/{did}", {"token": vt})
    staff_ws = await Plain.open(http, f"{server.url}/ws/dialog/{did}?token={owner['access_token']}")
    stranger = await api.user()
    refused = await Plain.open(http, f"{server.url}/ws/dialog/{did}?token={stranger['access_token']}")
    assert (await refused.refused())[0]["error"]["code"] in ("forbidden", "not_found")

    reply = await visitor.call("dialog:send", {"dialog_id": did, "text": "hello?"})
    assert reply["ok"], reply
    added = await staff_ws.next(lambda f: f["type"] == "message_added")
    assert added == {"type": "message_added", "data": {"dialog_id": did, "message": reply["data"],
                                                        "timestamp": reply["data"]["created_at"]}}
    assert (await site.next(lambda f: f["type"] == "message_added"))["data"]["message"]["id"] == reply["data"]["id"]
    # The owner takes over and answers over REST; the visitor's socket gets it.
    status, _ = await api.request("POST", f"/api/dialogs/{did}/takeover", token=owner["access_token"])
    assert status == 201
    status, answer = await api.request("POST", f"/api/dialogs/{did}/messages", token=owner["access_token"],
                                       json={"text": "hi, how can I help?"})
    assert status == 201
    got = await visitor.next(lambda f: f["type"] == "message_added")
    assert got["data"]["message"]["id"] == answer["id"]


async def test_operator_socket_gets_the_queue_and_the_held_dialogs_messages(server, api, http):
    owner = await api.user()
    op = await staff(server, api)
    op_id = op["user"]["id"]
    a = await assistant(api, owner["access_token"])
    session = await widget_session(api, a["id"])
    did, vt = session["dialog_id"], session["visitor_token"]
    wrong = await Plain.open(http, f"{server.url}/ws/operator/{op_id + 1000}?token={op['access_token']}")
    assert (await wrong.refused())[1] == 4403
    console = await Plain.open(http, f"{server.url}/ws/operator/{op_id}?token={op['access_token']}")
    assert (await console.call("presence:heartbeat"))["ok"]

    status, _ = await api.request("POST", "/api/handoff/request", token=vt, json={"dialog_id": did, "reason": "human"})
    assert status == 201
    requested = await console.next(lambda f: f["type"] == "handoff_requested")
    assert requested["data"]["dialog_id"] == did and requested["data"]["reason"] == "human"
    accepted = await console.call("handoff:accept", {"dialog_id": did})
    assert accepted["ok"] and accepted["data"]["operator_id"] == op_id
    status, msg = await api.request("POST", f"/api/dialogs/{did}/messages", token=vt, json={"text": "thanks"})
    added = await console.next(lambda f: f["type"] == "message_added")
    assert added["data"]["message"]["id"] == msg["id"]




async def test_websocket_pings_are_answered_and_the_server_pings_on_a_heartbeat(server, api, http):
    ann = await api.user()
    async with http.ws_connect(f"{server.url.replace('http', 'ws')}/ws/{ann['user']['id']}?token={ann['access_token']}",
                               autoping=False) as ws:
        await ws.ping(b"are you there")
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        msg = await asyncio.wait_for(ws.receive(), HEARTBEAT + 10)  # the server's own ping
        assert msg.type == aiohttp.WSMsgType.PING


async def test_widget_dialog_socket_gets_streamed_deltas_as_message_delta(server, api, http, connect):
    from tests.support.dialogs import bot_token
    owner = await api.user()
    a = await assistant(api, owner["access_token"])
    session = await widget_session(api, a["id"])
    did, vt = session["dialog_id"], session["visitor_token"]
    visitor = await Plain.open(http, f"{server.url}/ws/widget-dialog/{did}?token={vt}")
    assert (await visitor.call("dialog:streams", {"dialog_id": did}))["data"] == []
    bot = await connect(server.url, "/dialogs", bot_token(a["id"]))
    sid = (await bot.ok("message:stream-start", {"dialog_id": did}))["stream_id"]
    await bot.ok("message:stream-delta", {"stream_id": sid, "text": "Hi"})
    delta = await visitor.next(lambda f: f["type"] == "message_delta")
    assert delta == {"type": "message_delta", "data": {"dialog_id": did, "stream_id": sid, "seq": 1, "text": "Hi"}}
    final = await bot.ok("message:stream-end", {"stream_id": sid})
    added = await visitor.next(lambda f: f["type"] == "message_added")
    assert added["data"]["message"] == final
