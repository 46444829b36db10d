"""/chat end to end through a real server and real python-socketio clients:
every request event and every server event of the contract."""
import asyncio

from handlers.chat import MessageNew, ThreadUpdated


async def _pair(server, api, connect):
    a, b = await api.user(first_name="Ann"), await api.user(first_name="Bob", last_name="Lee")
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    return a, b, ca, cb


async def test_direct_message_reaches_recipient_and_senders_other_device(server, api, connect):
    a, b = await api.user(), await api.user()
    phone = await connect(server.url, "/chat", a["access_token"])
    laptop = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    msg = await phone.ok("message:send", {"recipient_id": b["user"]["id"], "message": "hi", "booking_id": 7})
    assert msg["message"] == "hi" and msg["booking_id"] == 7 and msg["is_read"] is False
    new = await cb.next("message:new")
    assert new["message_id"] == msg["id"] and new["content"] == "hi" and new["sender_id"] == a["user"]["id"]
    assert new["thread_id"] == msg["thread_id"] and new["timestamp"] == msg["created_at"]
    assert new["message"] == msg and msg["recipient_id"] == b["user"]["id"]
    # The payload is exactly the event model's dump (the send path builds it without one).
    assert new == MessageNew.model_validate(new).model_dump(mode="json")
    sent = await laptop.next("message:sent")
    assert sent == new
    created = await cb.next("thread:created")
    assert created == {"thread_id": msg["thread_id"], "first_message_id": msg["id"], "kind": "direct",
                       "title": None, "member_ids": sorted([a["user"]["id"], b["user"]["id"]])}
    updated = await cb.next("thread:updated")
    assert updated == {"thread_id": msg["thread_id"], "message_count": 1}
    assert updated == ThreadUpdated.model_validate(updated).model_dump(mode="json")
    # The second message reuses the thread: no new thread:created.
    await phone.ok("message:send", {"thread_id": msg["thread_id"], "message": "again"})
    assert (await cb.next("thread:updated"))["message_count"] == 2
    # Not echoed to the sending socket: the phone's first message:sent is of a later
    # message from the laptop; and no new thread:created came before that message's update.
    await laptop.ok("message:send", {"thread_id": msg["thread_id"], "message": "from the laptop"})
    await phone.absent("message:sent", until="message:sent", where=lambda e: e["content"] == "from the laptop")
    await cb.absent("thread:created", until="thread:updated", where=lambda e: e["message_count"] == 3)


async def test_threads_list_history_unread_and_read_receipts(server, api, connect):
    a, b, ca, cb = await _pair(server, api, connect)
    first = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "one"})
    for text in ("two", "three"):
        await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": text})
    threads = await cb.ok("threads:list")
    assert threads == [{
        "thread_id": first["thread_id"], "kind": "direct", "other_user_id": a["user"]["id"],
        "other_user_name": "Ann", "title": None, "last_message": "three",
        "last_message_at": threads[0]["last_message_at"], "unread_count": 3,
    }]
    assert (await cb.ok("unread:count")) == {"unread_count": 3}
    assert (await ca.ok("unread:count")) == {"unread_count": 0}

    page = await cb.ok("thread:history", {"other_user_id": a["user"]["id"], "page_size": 2})
    assert page["total"] == 3 and page["page"] == 1
    assert [m["message"] for m in page["messages"]] == ["two", "three"]
    older = await cb.ok("thread:history", {"thread_id": first["thread_id"], "page": 2, "page_size": 2})
    assert [m["message"] for m in older["messages"]] == ["one"]

    read = await cb.ok("message:read", {"message_id": first["id"]})
    assert read["is_read"] is True
    receipt = await ca.next("message:read")
    assert receipt["message_id"] == first["id"] and receipt["reader_id"] == b["user"]["id"]
    assert (await cb.ok("unread:count"))["unread_count"] == 2
    # The sender sees its message as read now.
    history = await ca.ok("thread:history", {"thread_id": first["thread_id"]})
    assert [m["is_read"] for m in history["messages"]] == [True, False, False]

    assert await cb.ok("thread:read-all", {"other_user_id": a["user"]["id"]}) == {"updated": 2}
    assert {(await ca.next("message:read"))["message_id"] for _ in range(2)} == {m["id"] for m in history["messages"][1:]}
    assert (await cb.ok("unread:count"))["unread_count"] == 0
    assert await cb.ok("thread:read-all", {"thread_id": first["thread_id"]}) == {"updated": 0}


async def test_group_thread_edit_delete_search_typing(server, api, connect):
    a, b, ca, cb = await _pair(server, api, connect)
    c = await api.user()
    cc = await connect(server.url, "/chat", c["access_token"])
    thread = await ca.ok("thread:create", {"member_ids": [b["user"]["id"], c["user"]["id"]], "title": "Trip"})
    members = sorted(u["user"]["id"] for u in (a, b, c))
    assert thread["kind"] == "group" and thread["title"] == "Trip" and thread["member_ids"] == members
    for client in (cb, cc):
        assert (await client.next("thread:created"))["thread_id"] == thread["thread_id"]

    msg = await cb.ok("message:send", {"thread_id": thread["thread_id"], "message": "Pack the Tent"})
    assert msg["recipient_id"] is None
    for client in (ca, cc):
        assert (await client.next("message:new"))["message_id"] == msg["id"]

    await cc.ok("typing:set", {"thread_id": thread["thread_id"], "is_typing": True})
    for client in (ca, cb):
        assert await client.next("typing:indicator") == {"thread_id": thread["thread_id"],
                                                          "user_id": c["user"]["id"], "is_typing": True}
    # Not echoed to the typist: their first indicator is of someone else's later typing.
    await cb.ok("typing:set", {"thread_id": thread["thread_id"], "is_typing": True})
    await cc.absent("typing:indicator", until="typing:indicator", where=lambda e: e["user_id"] == b["user"]["id"])

    found = await ca.ok("messages:search", {"query": "tent"})
    assert [m["id"] for m in found] == [msg["id"]]
    assert await ca.ok("messages:search", {"query": "tent", "user_id": b["user"]["id"]}) == []  # not their direct thread
    assert await ca.ok("messages:search", {"query": "100%"}) == []  # LIKE wildcards are literal

    edited = await cb.ok("message:edit", {"message_id": msg["id"], "message": "Pack the tarp"})
    assert edited["message"] == "Pack the tarp" and edited["edited_at"]
    ev = await ca.next("message:edited")
    assert ev["message_id"] == msg["id"] and ev["new_content"] == "Pack the tarp" and ev["edited_at"] == edited["edited_at"]

    deleted = await cb.ok("message:delete", {"message_id": msg["id"]})
    assert deleted["message_id"] == msg["id"] and deleted["deleted_at"]
    assert (await cc.next("message:deleted")) == {**deleted, "thread_id": thread["thread_id"]}
    assert (await ca.ok("thread:history", {"thread_id": thread["thread_id"]}))["total"] == 0
    assert await ca.ok("messages:search", {"query": "tarp"}) == []
    assert await cb.error("message:edit", {"message_id": msg["id"], "message": "x"}) == "not_found"


async def test_only_the_sender_edits_or_deletes(server, api, connect):
    a, b, ca, cb = await _pair(server, api, connect)
    msg = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "mine"})
    assert await cb.error("message:edit", {"message_id": msg["id"], "message": "yours"}) == "forbidden"
    assert await cb.error("message:delete", {"message_id": msg["id"]}) == "forbidden"
    history = await ca.ok("thread:history", {"thread_id": msg["thread_id"]})
    assert history["messages"][0]["message"] == "mine"


async def test_client_msg_id_makes_send_idempotent(server, api, connect):
    a, b, ca, cb = await _pair(server, api, connect)
    req = {"recipient_id": b["user"]["id"], "message": "once", "client_msg_id": "c-1"}
    replies = await asyncio.gather(*(ca.ok("message:send", req) for _ in range(5)))
    assert len({r["id"] for r in replies}) == 1 and replies[0]["client_msg_id"] == "c-1"
    assert (await cb.next("message:new"))["message_id"] == replies[0]["id"]
    assert (await cb.ok("thread:history", {"other_user_id": a["user"]["id"]}))["total"] == 1
    # The next message:new is of a later message: the duplicates sent none.
    later = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "later"})
    await cb.absent("message:new", until="message:new", where=lambda e: e["message_id"] == later["id"])


async def test_request_without_ack_gets_error_event(server, api, connect):
    a = await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    await ca.sio.emit("message:send", {"recipient_id": "nobody"}, namespace="/chat")
    err = await ca.next("error")
    assert err["code"] == "validation_error" and err["event"] == "message:send"
    assert err["details"][0]["loc"] == ["recipient_id"]
    # A request without ack that succeeds is still processed.
    b = await api.user()
    cb = await connect(server.url, "/chat", b["access_token"])
    await ca.sio.emit("message:send", {"recipient_id": b["user"]["id"], "message": "fire and forget"},
                      namespace="/chat")
    assert (await cb.next("message:new"))["content"] == "fire and forget"
    assert (await cb.ok("unread:count"))["unread_count"] == 1


async def test_polling_transport_works_too(server, api, connect):
    a, b = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"], transports=["polling"])
    cb = await connect(server.url, "/chat", b["access_token"], transports=["polling"])
    msg = await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "over polling"})
    assert (await cb.next("message:new"))["message_id"] == msg["id"]
