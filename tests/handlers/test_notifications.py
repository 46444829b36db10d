"""/notifications and POST /api/notifications through real servers and clients."""
from __future__ import annotations

from tests.support.business import service_token, staff
from tests.support.clients import Api, Client

NOTIFICATION_FIELDS = {"id", "type", "title", "message", "action_url", "data", "is_read", "created_at"}


async def notify(api, token: str | None, **body) -> tuple[int, dict]:
    return await api.request("POST", "/api/notifications", token=token, json=body)


async def test_push_reaches_every_socket_of_the_user_and_is_stored(server, api, connect):
    alice, bob = await api.user(), await api.user()
    phone = await connect(server.url, "/notifications", alice["access_token"])
    laptop = await connect(server.url, "/notifications", alice["access_token"])
    other = await connect(server.url, "/notifications", bob["access_token"])
    status, body = await notify(api, service_token(), user_id=alice["user"]["id"], type="order",
                                title="Shipped", message="Your order is on its way",
                                action_url="/orders/42", data={"order_id": 42})
    assert status == 201, body
    assert body["created"] == 1 and body["items"][0]["user_id"] == alice["user"]["id"]
    nid = body["items"][0]["notification_id"]
    for client in (phone, laptop):
        push = await client.next("push:received")
        assert push["notification_id"] == nid and push["title"] == "Shipped"
        assert push["body"] == "Your order is on its way" and push["action_url"] == "/orders/42"
        assert push["type"] == "order" and push["data"] == {"order_id": 42}
    # Bob's first push is one sent to him later.
    _, later = await notify(api, service_token(), user_id=bob["user"]["id"], type="t", title="later", message="m")
    later_id = later["items"][0]["notification_id"]
    await other.absent("push:received", until="push:received", where=lambda e: e["notification_id"] == later_id)

    page = await phone.ok("notifications:list", {})
    assert page["total"] == 1 and (page["limit"], page["offset"]) == (50, 0)
    (item,) = page["items"]
    assert set(item) == NOTIFICATION_FIELDS
    assert item == {"id": nid, "type": "order", "title": "Shipped", "message": "Your order is on its way",
                    "action_url": "/orders/42", "data": {"order_id": 42}, "is_read": False,
                    "created_at": push["created_at"]}
    assert [n["id"] for n in (await other.ok("notifications:list", {}))["items"]] == [later_id]


async def test_offline_user_finds_notifications_on_next_connect(server, api, connect):
    alice = await api.user()
    uid = alice["user"]["id"]
    for i in range(3):
        status, _ = await notify(api, service_token(), user_ids=[uid], type="info", title=f"n{i}", message="m")
        assert status == 201
    client = await connect(server.url, "/notifications", alice["access_token"])
    page = await client.ok("notifications:list", {})
    assert [n["title"] for n in page["items"]] == ["n2", "n1", "n0"]  # newest first
    assert all(not n["is_read"] for n in page["items"])
    assert await client.ok("notifications:unread-count") == {"unread_count": 3}
    # Stored ones are listed, not replayed as pushes: the first push is of a later one.
    _, later = await notify(api, service_token(), user_ids=[uid], type="info", title="later", message="m")
    later_id = later["items"][0]["notification_id"]
    await client.absent("push:received", until="push:received", where=lambda e: e["notification_id"] == later_id)


async def test_read_read_all_delete_and_paging_touch_only_own(server, api, connect):
    alice, bob = await api.user(), await api.user()
    ca = await connect(server.url, "/notifications", alice["access_token"])
    cb = await connect(server.url, "/notifications", bob["access_token"])
    status, body = await notify(api, service_token(), user_ids=[alice["user"]["id"]] * 2 + [bob["user"]["id"]],
                                type="t", title="hello", message="m")
    assert status == 201 and body["created"] == 2  # duplicates in user_ids count once
    for i in range(4):
        await notify(api, service_token(), user_id=alice["user"]["id"], type="t", title=f"a{i}", message="m")
    mine = [n["id"] for n in (await ca.ok("notifications:list", {"limit": 200}))["items"]]
    bobs = [n["id"] for n in (await cb.ok("notifications:list", {}))["items"]]
    assert len(mine) == 5 and len(bobs) == 1

    page = await ca.ok("notifications:list", {"limit": 2, "offset": 1})
    assert page["total"] == 5 and [n["id"] for n in page["items"]] == mine[1:3]
    assert await ca.error("notifications:list", {"limit": 0}) == "validation_error"
    assert await ca.error("notifications:list", {"unread_only": "yes"}) == "validation_error"

    read = await ca.ok("notification:read", {"notification_id": mine[0]})
    assert read["id"] == mine[0] and read["is_read"] is True
    assert (await ca.ok("notification:read", {"notification_id": mine[0]}))["is_read"] is True  # idempotent
    assert await ca.error("notification:read", {"notification_id": bobs[0]}) == "not_found"
    assert await cb.ok("notifications:unread-count") == {"unread_count": 1}
    assert await ca.ok("notifications:unread-count") == {"unread_count": 4}
    unread = await ca.ok("notifications:list", {"unread_only": True})
    assert unread["total"] == 4 and mine[0] not in [n["id"] for n in unread["items"]]

    assert await ca.ok("notification:delete", {"notification_id": mine[1]}) == {"notification_id": mine[1]}
    assert await ca.error("notification:delete", {"notification_id": mine[1]}) == "not_found"
    assert await ca.error("notification:delete", {"notification_id": bobs[0]}) == "not_found"
    assert await ca.error("notification:read", {"notification_id": mine[1]}) == "not_found"
    assert mine[1] not in [n["id"] for n in (await ca.ok("notifications:list", {}))["items"]]

    assert await ca.ok("notifications:read-all") == {"updated": 3}
    assert await ca.ok("notifications:read-all") == {"updated": 0}
    assert await ca.ok("notifications:unread-count") == {"unread_count": 0}
    assert (await ca.ok("notifications:list", {"unread_only": True}))["total"] == 0
    # Bob's stayed unread.
    assert await cb.ok("notifications:unread-count") == {"unread_count": 1}


async def test_other_devices_hear_about_reads_and_deletes(server, api, connect):
    alice, bob = await api.user(), await api.user()
    phone = await connect(server.url, "/notifications", alice["access_token"])
    laptop = await connect(server.url, "/notifications", alice["access_token"])
    other = await connect(server.url, "/notifications", bob["access_token"])
    ids = []
    for title in ("a", "b", "c"):
        _, body = await notify(api, service_token(), user_id=alice["user"]["id"], type="t", title=title, message="m")
        ids.append(body["items"][0]["notification_id"])

    await phone.ok("notification:read", {"notification_id": ids[0]})
    assert await laptop.next("notifications:updated") == {"action": "read", "notification_id": ids[0],
                                                         "unread_count": 2}
    await phone.ok("notification:read", {"notification_id": ids[0]})  # already read: nothing to tell
    await laptop.ok("notification:delete", {"notification_id": ids[1]})
    assert await phone.next("notifications:updated") == {"action": "deleted", "notification_id": ids[1],
                                                        "unread_count": 1}
    await phone.ok("notifications:read-all")
    assert await laptop.next("notifications:updated") == {"action": "read-all", "notification_id": None,
                                                         "unread_count": 0}
    await phone.ok("notifications:read-all")  # nothing left unread: nothing to tell
    # The laptop's next update is of a later read on the phone (none came for the
    # repeated ones); not echoed to the device that acted: the phone's first is of a
    # later delete on the laptop.
    _, body = await notify(api, service_token(), user_id=alice["user"]["id"], type="t", title="d", message="m")
    later = body["items"][0]["notification_id"]
    await phone.ok("notification:read", {"notification_id": later})
    await laptop.absent("notifications:updated", until="notifications:updated",
                        where=lambda e: e == {"action": "read", "notification_id": later, "unread_count": 0})
    await laptop.ok("notification:delete", {"notification_id": later})
    await phone.absent("notifications:updated", until="notifications:updated",
                       where=lambda e: e["action"] == "deleted" and e["notification_id"] == later)
    # Never sent to anyone else: Bob's own later push comes first.
    _, body = await notify(api, service_token(), user_id=bob["user"]["id"], type="t", title="b", message="m")
    await other.absent("notifications:updated", until="push:received")


async def test_create_route_is_for_services_only_and_validates(server, api, connect):
    alice = await api.user()
    uid = alice["user"]["id"]
    good = dict(user_id=uid, type="t", title="x", message="m")
    assert (await notify(api, None, **good))[0] == 401
    status, body = await notify(api, alice["access_token"], **good)
    assert status == 403 and body["error"]["code"] == "forbidden"
    op = await staff(server, api, "admin")
    assert (await notify(api, op["access_token"], **good))[0] == 403

    status, body = await notify(api, service_token(), user_ids=[uid, 10**9], type="t", title="x", message="m")
    assert status == 404 and body["error"]["details"] == {"user_ids": [10**9]}
    for bad in ({"user_ids": [uid]}, {"user_id": None}, {"action_url": "javascript:alert(1)"},
                {"title": ""}, {"message": 5}, {"extra": 1}, {"user_ids": []}, {"data": []}):
        status, body = await notify(api, service_token(), **{**good, **bad})
        assert status == 422 and body["error"]["code"] == "validation_error", (bad, body)
        assert body["error"]["details"]
    client = await connect(server.url, "/notifications", alice["access_token"])
    assert (await client.ok("notifications:list", {}))["total"] == 0
    # A user's socket cannot create notifications either.
    assert await client.error("notification:create", good) == "forbidden"


async def test_service_socket_creates_notifications_too(server, api, connect):
    alice = await api.user()
    user = await connect(server.url, "/notifications", alice["access_token"])
    backend = await connect(server.url, "/notifications", service_token())
    created = await backend.ok("notification:create", {"user_id": alice["user"]["id"], "type": "t",
                                                        "title": "via socket", "message": "m"})
    push = await user.next("push:received")
    assert push["notification_id"] == created["items"][0]["notification_id"] and push["title"] == "via socket"
    # A service has no notifications of its own.
    assert await backend.error("notifications:list", {}) == "forbidden"


async def test_push_crosses_instances(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix}
    one, two = await spawn_hubs(2, env)
    alice = await Api(one.url, http).user()
    sockets = [await Client("/notifications").connect(hub.url, alice["access_token"]) for hub in (one, two)]
    try:
        status, body = await notify(Api(one.url, http), service_token(), user_id=alice["user"]["id"],
                                    type="t", title="everywhere", message="m")
        assert status == 201, body
        for client in sockets:
            assert (await client.next("push:received"))["title"] == "everywhere"
        # Stored once, in the shared database: both instances list it.
        for client in sockets:
            assert (await client.ok("notifications:list", {}))["total"] == 1
    finally:
        for client in sockets:
            await client.close()
