"""/chat end to end through a real server and real python-socketio clients."""


async def test_direct_message_reaches_recipient_and_senders_other_device(server, api, connect):
    a, b = await api.user(), await api.user()
    phone = await connect(server.url, "/chat", a["access_token"])
    laptop = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    msg = await phone.ok("message:send", {"recipient_id": b["user"]["id"], "message": "hi"})
    new = await cb.next("message:new")
    assert new["message_id"] == msg["id"] and new["content"] == "hi" and new["sender_id"] == a["user"]["id"]
    assert new["message"]["recipient_id"] == b["user"]["id"]
    sent = await laptop.next("message:sent")
    assert sent["message_id"] == msg["id"]
    assert await phone.nothing("message:sent", 0.2)  # not echoed to the sending socket
    created = await cb.next("thread:created")
    assert created == {"thread_id": msg["thread_id"], "first_message_id": msg["id"], "kind": "direct",
                       "title": None, "member_ids": sorted([a["user"]["id"], b["user"]["id"]])}
    updated = await cb.next("thread:updated")
    assert updated == {"thread_id": msg["thread_id"], "message_count": 1}
