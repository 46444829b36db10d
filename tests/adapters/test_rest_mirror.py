"""The REST mirror: every operation the contract maps to a REST operation answers at the
reference API's path and method, with the Socket.IO event's input, output and errors."""
from __future__ import annotations

import asyncio
import json

from dataclasses import replace

from tests.support.business import order_input, service_token, staff
from tests.support.clients import Api


async def test_edustream_messages_over_rest_and_socketio_agree(server, api, connect):
    ann, bob = await api.user(), await api.user()
    at, bt, bob_id = ann["access_token"], bob["access_token"], bob["user"]["id"]
    bob_sock = await connect(server.url, "/chat", bt)

    status, sent = await api.request("POST", "/api/messages", token=at,
                                     json={"recipient_id": bob_id, "message": "hi over REST", "client_msg_id": "k1"})
    assert status == 201, sent
    assert sent["message"] == "hi over REST" and sent["recipient_id"] == bob_id
    new = await bob_sock.next("message:new")
    assert new["message_id"] == sent["id"] and new["content"] == "hi over REST"
    # The idempotency key works over REST too.
    status, again = await api.request("POST", "/api/messages", token=at,
                                      json={"recipient_id": bob_id, "message": "hi over REST", "client_msg_id": "k1"})
    assert status == 201 and again["id"] == sent["id"]

    status, threads = await api.request("GET", "/api/messages/threads", token=bt)
    assert status == 200 and threads[0]["other_user_id"] == ann["user"]["id"] and threads[0]["unread_count"] == 1
    assert threads == await bob_sock.ok("threads:list", {})
    status, history = await api.request("GET", f"/api/messages/threads/{ann['user']['id']}?page_size=10", token=bt)
    assert status == 200 and [m["id"] for m in history["messages"]] == [sent["id"]]
    status, found = await api.request("GET", "/api/messages/search?query=REST", token=bt)
    assert status == 200 and [m["id"] for m in found] == [sent["id"]]
    status, count = await api.request("GET", "/api/messages/unread/count", token=bt)
    assert (status, count) == (200, {"unread_count": 1})

    # PATCH without a body (as EduStream sends it).
    status, read = await api.request("PATCH", f"/api/messages/{sent['id']}/read", token=bt)
    assert status == 200 and read["is_read"] is True
    status, updated = await api.request("PATCH", f"/api/messages/threads/{ann['user']['id']}/read-all", token=bt)
    assert (status, updated) == (200, {"updated": 0})
    status, edited = await api.request("PATCH", f"/api/messages/{sent['id']}", token=at, json={"message": "edited"})
    assert status == 200 and edited["message"] == "edited"
    assert (await bob_sock.next("message:edited"))["new_content"] == "edited"
    # Sender only: the same error as the event's, with `detail` for reference clients.
    status, body = await api.request("DELETE", f"/api/messages/{sent['id']}", token=bt)
    assert status in (403, 404) and body["detail"] == body["error"]["message"]
    assert body["error"]["code"] == (await bob_sock.error("message:delete", {"message_id": sent["id"]}))
    status, deleted = await api.request("DELETE", f"/api/messages/{sent['id']}", token=at)
    assert status == 200 and deleted["message_id"] == sent["id"]


async def test_errors_carry_detail_and_wrong_methods_get_405_with_allow(server, api):
    ann = await api.user()
    status, body = await api.request("GET", "/api/messages/threads")
    assert status == 401 and body["error"]["code"] == "unauthorized" and body["detail"] == body["error"]["message"]
    status, body = await api.request("POST", "/api/messages", token=ann["access_token"], json={"message": ""})
    assert status == 422 and body["error"]["code"] == "validation_error" and body["detail"]
    async with api.session.request("PUT", api.url + "/api/messages/threads") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET,HEAD"
        body = await resp.json()
        assert body["error"]["message"] and body["detail"]
    async with api.session.request("POST", api.url + "/api/notifications/mark-all-read") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "PATCH"


async def test_notifications_over_rest(server, api):
    ann = await api.user()
    token, uid = ann["access_token"], ann["user"]["id"]
    for title in ("one", "two"):
        status, made = await api.request("POST", "/api/notifications", token=service_token(),
                                         json={"user_id": uid, "type": "info", "title": title, "message": "m"})
        assert status == 201, made
    status, page = await api.request("GET", "/api/notifications?limit=1", token=token)
    assert status == 200 and page["total"] == 2 and page["limit"] == 1 and len(page["items"]) == 1
    first = page["items"][0]["id"]
    status, read = await api.request("PATCH", f"/api/notifications/{first}/read", token=token)
    assert status == 200 and read["is_read"] is True
    status, body = await api.request("PATCH", "/api/notifications/mark-all-read", token=token)
    assert (status, body) == (200, {"updated": 1})
    status, body = await api.request("DELETE", f"/api/notifications/{first}", token=token)
    assert (status, body) == (200, {"notification_id": first})
    status, body = await api.request("DELETE", f"/api/notifications/{first}", token=token)
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_dialogs_operators_orders_sns_routes(server, api):
    owner = await api.user()
    op = await staff(server, api)
    ot, opt = owner["access_token"], op["access_token"]
    status, assistant = await api.request("POST", "/api/assistants", token=ot,
                                          json={"name": "Helper", "allowed_origins": ["https://shop.example"]})
    assert status == 201, assistant
    status, session = await api.request("POST", "/api/widget/sessions", json={"assistant_id": assistant["id"]},
                                        headers={"Origin": "https://shop.example"})
    assert status == 201, session
    did, vt = session["dialog_id"], session["visitor_token"]
    status, msg = await api.request("POST", f"/api/dialogs/{did}/messages", token=vt, json={"text": "a human?"})
    assert status == 201 and msg["sender"] == "visitor"
    status, msgs = await api.request("GET", f"/api/dialogs/{did}/messages", token=ot)
    assert status == 200 and [m["id"] for m in msgs] == [msg["id"]]
    status, body = await api.request("POST", "/api/handoff/request", token=vt, json={"dialog_id": did})
    assert status == 201 and body["handoff_status"] == "requested"
    status, body = await api.request("POST", "/api/operator/presence/heartbeat", token=opt)
    assert status == 201 and body["operator_id"] == op["user"]["id"]
    status, dialog = await api.request("POST", f"/api/handoff/accept/{did}", token=opt)
    assert status == 201 and dialog["handoff_status"] == "active"
    other = await staff(server, api)
    status, body = await api.request("POST", f"/api/handoff/accept/{did}", token=other["access_token"])
    assert status == 409 and body["error"]["code"] == "conflict"

    status, order = await api.request("POST", "/api/orders", token=ot, json=order_input())
    assert status == 201, order
    status, got = await api.request("GET", f"/api/orders/{order['order_id']}", token=ot)
    assert status == 200 and got == order

    status, post = await api.request("POST", "/api/sns/posts", token=ot, json={"platforms": ["telegram"], "content": "hey"})
    assert status == 201, post
    status, liked = await api.request("POST", f"/api/sns/posts/{post['post_id']}/like", token=opt)
    assert status == 201 and liked == {"post_id": post["post_id"], "total_likes": 1}
    status, posts = await api.request("GET", "/api/sns/posts?limit=5", token=ot)
    assert status == 200 and posts["items"][0]["post_id"] == post["post_id"]


async def test_curl_sends_a_message(server, api):
    ann, bob = await api.user(), await api.user()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-X", "POST", f"{server.url}/api/messages",
        "-H", f"Authorization: Bearer {ann['access_token']}", "-H", "Content-Type: application/json",
        "-d", json.dumps({"recipient_id": bob["user"]["id"], "message": "from curl"}),
        "-w", "\n%{http_code}", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    body, _, code = out.decode().rpartition("\n")
    assert code == "201" and json.loads(body)["message"] == "from curl"
    status, count = await api.request("GET", "/api/messages/unread/count", token=bob["access_token"])
    assert count == {"unread_count": 1}


async def test_every_contract_mirror_is_routed(server):
    from handlers.registry import REGISTRY
    mirrored = {(op.http[0], op.http[1]) for op in REGISTRY.operations.values() if op.http}
    for route in [("POST", "/api/messages"), ("GET", "/api/messages/threads"),
                  ("GET", "/api/messages/threads/{other_user_id}"), ("PATCH", "/api/messages/{message_id}/read"),
                  ("GET", "/api/notifications"), ("PATCH", "/api/notifications/mark-all-read"),
                  ("GET", "/api/dialogs/{dialog_id}/messages"), ("POST", "/api/handoff/accept/{dialog_id}"),
                  ("POST", "/api/operator/presence/heartbeat"), ("POST", "/api/orders")]:
        assert route in mirrored, route



async def test_rest_requests_of_a_token_are_rate_limited(start_server, settings, http):
    # REST requests spend the user's operation budget (the one its sockets spend too).
    server = await start_server(replace(settings, user_op_limit=3, user_op_window=60))
    api = Api(server.url, http)
    ann = await api.user()
    codes = [(await api.request("GET", "/api/messages/unread/count", token=ann["access_token"]))[0] for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    status, body = await api.request("GET", "/api/messages/unread/count", token=ann["access_token"])
    assert status == 429 and body["error"]["code"] == "rate_limited" and body["error"]["details"]["retry_after"] > 0
    other = await api.user()  # a budget per user
    assert (await api.request("GET", "/api/messages/unread/count", token=other["access_token"]))[0] == 200
