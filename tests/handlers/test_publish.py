"""POST /api/publish: services send publishable server events, validated against
the namespace's event models, to users, allowed rooms or everyone in a namespace on
every instance; admins, to everyone only."""
from __future__ import annotations

import asyncio

import pytest

from tests.support.business import service_token, staff
from tests.support.clients import Api, Client
from tests.support.gateways import Plain
from tests.support.servers import make_settings

INVOICE = {"invoice_id": 7, "order_id": 42, "pdf_url": "https://billing.example.com/inv/7.pdf"}


async def publish(api, body: dict, token: str | None = "service") -> tuple[int, dict]:
    if token == "service":
        token = service_token()
    return await api.request("POST", "/api/publish", token=token, json=body)


async def test_publish_to_users_reaches_only_them(server, api, connect):
    alice, bob = await api.user(), await api.user()
    phone = await connect(server.url, "/orders", alice["access_token"])
    laptop = await connect(server.url, "/orders", alice["access_token"])
    other = await connect(server.url, "/orders", bob["access_token"])
    status, body = await publish(api, {"namespace": "/orders", "event": "invoice:generated",
                                       "to": {"user_ids": [alice["user"]["id"]]}, "data": INVOICE})
    assert status == 200, body
    assert body["delivered_to_rooms"] == [f"user:{alice['user']['id']}"]
    for client in (phone, laptop):
        assert await client.next("invoice:generated") == INVOICE
        # The offset the service got back is the one the clients got (recovery, de-duplication).
        assert client.offsets["invoice:generated"] == [body["offset"]]
    # Bob's first invoice:generated is one published to him later.
    later = {**INVOICE, "invoice_id": 8}
    status, _ = await publish(api, {"namespace": "/orders", "event": "invoice:generated",
                                    "to": {"user_ids": [bob["user"]["id"]]}, "data": later})
    assert status == 200
    await other.absent("invoice:generated", until="invoice:generated", where=lambda e: e == later)


async def test_every_publishable_event_of_orders_and_notifications(server, api, connect):
    alice = await api.user()
    uid = alice["user"]["id"]
    orders = await connect(server.url, "/orders", alice["access_token"])
    notes = await connect(server.url, "/notifications", alice["access_token"])
    cases = [
        (orders, "/orders", "invoice:generated", INVOICE),
        (orders, "/orders", "invoice:sent", {"invoice_id": 7, "recipient_email": "a@example.com"}),
        (orders, "/orders", "payment:received", {"payment_id": 3, "invoice_id": 7, "amount_krw": 30990}),
        (orders, "/orders", "subscription:renewed", {"subscription_id": 9, "next_billing_date": "2026-12-23"}),
        (orders, "/orders", "refund:initiated", {"order_id": 42, "amount_krw": 990}),
        (notes, "/notifications", "status:updated", {"resource_type": "booking", "resource_id": 5, "status": "confirmed"}),
        (notes, "/notifications", "alert:triggered", {"alert_id": "cpu-1", "severity": "critical", "message": "hot"}),
        (notes, "/notifications", "email:sent", {"email_id": 1, "recipient": "a@example.com", "subject": "Hi",
                                                 "sent_at": "2026-11-23T03:00:00Z"}),
    ]
    for client, ns, event, data in cases:
        status, body = await publish(api, {"namespace": ns, "event": event, "to": {"user_ids": [uid]}, "data": data})
        assert status == 200, (event, body)
        got = await client.next(event)
        if event == "email:sent":
            assert got["sent_at"].startswith("2026-11-23T03:00:00")
            got["sent_at"] = data["sent_at"]
        assert got == data, event


async def test_publish_to_the_staff_room(server, api, connect):
    alice = await api.user()
    op = await staff(server, api, "operator")
    customer = await connect(server.url, "/orders", alice["access_token"])
    console = await connect(server.url, "/orders", op["access_token"])
    backend = await connect(server.url, "/orders", service_token("other-backend"))
    status, body = await publish(api, {"namespace": "/orders", "event": "refund:initiated", "to": {"room": "staff"},
                                       "data": {"order_id": 1, "amount_krw": 100}})
    assert status == 200 and body["delivered_to_rooms"] == ["staff"]
    assert await console.next("refund:initiated") == {"order_id": 1, "amount_krw": 100}
    assert await backend.next("refund:initiated") == {"order_id": 1, "amount_krw": 100}
    # A personal room by name is allowed too (and the customer's first refund:initiated
    # is this one: the staff room's did not reach them).
    status, body = await publish(api, {"namespace": "/orders", "event": "refund:initiated",
                                       "to": {"room": f"user:{alice['user']['id']}"},
                                       "data": {"order_id": 2, "amount_krw": 5}})
    assert status == 200
    await customer.absent("refund:initiated", until="refund:initiated", where=lambda e: e["order_id"] == 2)


NOTICE = {"alert_id": "maintenance-1", "severity": "warning", "message": "Down for maintenance at 02:00 UTC"}


async def test_publish_to_everyone_in_a_namespace(server, api, http, connect):
    """A maintenance notice: one event to every connection of /notifications (users,
    staff, a plain-WebSocket client), whoever sends it of a service and an admin;
    nobody in another namespace gets it, and an admin may publish to nobody else."""
    alice, bob = await api.user(), await api.user()
    admin = await staff(server, api, "admin")
    operator = await staff(server, api, "operator")
    listeners = [await connect(server.url, "/notifications", who["access_token"])
                 for who in (alice, alice, bob, operator)]
    plain = await Plain.open(http, f"{server.url}/ws?ns=/notifications&token={bob['access_token']}")
    await plain.frame()  # welcome
    elsewhere = await connect(server.url, "/orders", alice["access_token"])
    for token, notice in ((service_token(), NOTICE), (admin["access_token"], {**NOTICE, "alert_id": "m-2"})):
        status, body = await publish(api, {"namespace": "/notifications", "event": "alert:triggered",
                                           "to": {"everyone": True}, "data": notice}, token=token)
        assert status == 200 and body["delivered_to_rooms"] == ["everyone"], body
        for client in listeners:
            assert await client.next("alert:triggered") == notice
            assert client.offsets["alert:triggered"][-1] == body["offset"]
        frame = await plain.next(lambda f: f.get("event") == "alert:triggered")
        assert frame["data"] == notice and frame["offset"] == body["offset"]
    # Not another namespace's connections: the /orders socket's first refund:initiated
    # is one published to everyone there afterwards.
    status, _ = await publish(api, {"namespace": "/orders", "event": "refund:initiated", "to": {"everyone": True},
                                    "data": {"order_id": 5, "amount_krw": 1}})
    assert status == 200
    assert await elsewhere.next("refund:initiated") == {"order_id": 5, "amount_krw": 1}
    assert elsewhere.queue("alert:triggered").empty()
    # An admin publishes to everyone only; users not at all.
    for token, target in ((admin["access_token"], {"user_ids": [alice["user"]["id"]]}),
                          (admin["access_token"], {"room": "user:1"}),
                          (alice["access_token"], {"everyone": True})):
        status, reply = await publish(api, {"namespace": "/notifications", "event": "alert:triggered",
                                            "to": target, "data": NOTICE}, token=token)
        assert status == 403 and reply["error"]["code"] == "forbidden", (target, reply)


@pytest.mark.parametrize("body, loc", [
    ({"namespace": "/nope"}, ["namespace"]),
    ({"event": "invoice:lost"}, ["event"]),
    ({"event": "order:created"}, ["event"]),  # a server event, but not publishable
    ({"data": {**INVOICE, "invoice_id": "7"}}, ["data", "invoice_id"]),
    ({"data": {"invoice_id": 7, "order_id": 42}}, ["data", "pdf_url"]),
    ({"data": {**INVOICE, "surprise": 1}}, ["data", "surprise"]),
    ({"to": {"room": "admins"}}, ["to", "room"]),
    ({"to": {"room": "user:abc"}}, ["to", "room"]),
    ({"to": {"room": "staff", "user_ids": [1]}}, ["to"]),
    ({"to": {}}, ["to"]),
    ({"to": {"user_ids": []}}, ["to", "user_ids"]),
    ({"to": {"everyone": False}}, ["to", "everyone"]),
    ({"to": {"everyone": True, "room": "staff"}}, ["to"]),
    ({"data": "text"}, ["data"]),
    ({"extra": 1}, ["extra"]),
])
async def test_invalid_publish_is_refused_with_details(server, api, connect, body, loc):
    alice = await api.user()
    client = await connect(server.url, "/orders", alice["access_token"])
    request = {"namespace": "/orders", "event": "invoice:generated",
               "to": {"user_ids": [alice["user"]["id"]]}, "data": INVOICE, **body}
    status, reply = await publish(api, request)
    assert status == 422, reply
    assert reply["error"]["code"] == "validation_error"
    assert any(d["loc"][:len(loc)] == loc for d in reply["error"]["details"]), reply
    # The client's first invoice:generated is a valid one published later.
    later = {**INVOICE, "invoice_id": 8}
    status, _ = await publish(api, {"namespace": "/orders", "event": "invoice:generated",
                                    "to": {"user_ids": [alice["user"]["id"]]}, "data": later})
    assert status == 200
    await client.absent("invoice:generated", until="invoice:generated", where=lambda e: e == later)


async def test_unknown_event_lists_the_publishable_ones(server, api):
    status, reply = await publish(api, {"namespace": "/notifications", "event": "push:received",
                                        "to": {"user_ids": [1]}, "data": {}})
    assert status == 422
    (detail,) = reply["error"]["details"]
    assert detail["publishable"] == ["alert:triggered", "email:sent", "status:updated"]


async def test_rooms_are_checked_per_namespace(server, api):
    # /notifications has no staff room: services may only address users there.
    status, reply = await publish(api, {"namespace": "/notifications", "event": "alert:triggered",
                                        "to": {"room": "staff"},
                                        "data": {"alert_id": 1, "severity": "info", "message": "x"}})
    assert status == 422 and reply["error"]["details"][0]["loc"] == ["to", "room"]
    status, reply = await publish(api, {"namespace": "/notifications", "event": "alert:triggered",
                                        "to": {"user_ids": [1]},
                                        "data": {"alert_id": 1, "severity": "fatal", "message": "x"}})
    assert status == 422 and reply["error"]["details"][0]["loc"] == ["data", "severity"]


async def test_only_services_may_publish(server, api):
    alice = await api.user()
    admin = await staff(server, api, "admin")
    body = {"namespace": "/orders", "event": "invoice:generated", "to": {"room": "staff"}, "data": INVOICE}
    status, reply = await publish(api, body, token=None)
    assert status == 401 and reply["error"]["code"] == "unauthorized"
    for token in (alice["access_token"], admin["access_token"]):
        status, reply = await publish(api, body, token=token)
        assert status == 403 and reply["error"]["code"] == "forbidden"
    status, reply = await publish(api, body, token="not-a-token")
    assert status == 401


async def test_payload_size_is_limited(start_server, tmp_path, http):
    from tests.support.servers import make_settings

    server = await start_server(make_settings(tmp_path, max_payload_bytes=2000))
    api = Api(server.url, http)
    body = {"namespace": "/orders", "event": "invoice:generated", "to": {"room": "staff"},
            "data": {**INVOICE, "pdf_url": "https://x/" + "a" * 1990}}
    status, reply = await publish(api, body)
    assert status == 413 and reply["error"]["code"] == "payload_too_large"
    small = {**body, "data": INVOICE}
    assert (await publish(api, small))[0] == 200


async def test_published_events_reach_every_instance(spawn_hubs, pg_url, redis_url, redis_prefix, http):
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url, "HUB_REDIS_PREFIX": redis_prefix}
    one, two = await spawn_hubs(2, env)
    alice = await Api(one.url, http).user()
    bob = await Api(two.url, http).user()
    clients = []
    try:
        on_one = await Client("/orders").connect(one.url, alice["access_token"])
        on_two = await Client("/orders").connect(two.url, alice["access_token"])
        bob_two = await Client("/orders").connect(two.url, bob["access_token"])
        staff_two = await Client("/orders").connect(two.url, service_token("console"))
        alerts_two = await Client("/notifications").connect(two.url, alice["access_token"])
        clients = [on_one, on_two, bob_two, staff_two, alerts_two]

        status, body = await publish(Api(one.url, http), {"namespace": "/orders", "event": "payment:received",
                                                          "to": {"user_ids": [alice["user"]["id"]]},
                                                          "data": {"payment_id": 1, "invoice_id": 2, "amount_krw": 3}})
        assert status == 200, body
        for client in (on_one, on_two):
            assert await client.next("payment:received") == {"payment_id": 1, "invoice_id": 2, "amount_krw": 3}
        status, _ = await publish(Api(one.url, http), {"namespace": "/orders", "event": "invoice:sent",
                                                       "to": {"room": "staff"},
                                                       "data": {"invoice_id": 2, "recipient_email": "a@b.co"}})
        assert status == 200
        assert (await staff_two.next("invoice:sent"))["invoice_id"] == 2
        status, _ = await publish(Api(two.url, http), {"namespace": "/notifications", "event": "alert:triggered",
                                                       "to": {"user_ids": [alice["user"]["id"]]},
                                                       "data": {"alert_id": 1, "severity": "warning", "message": "m"}})
        assert status == 200
        assert (await alerts_two.next("alert:triggered"))["severity"] == "warning"
        # to everyone: every /orders connection on both instances
        status, _ = await publish(Api(two.url, http), {"namespace": "/orders", "event": "refund:initiated",
                                                       "to": {"everyone": True}, "data": {"order_id": 7, "amount_krw": 7}})
        assert status == 200
        for client in (on_one, on_two, bob_two, staff_two):
            assert await client.next("refund:initiated") == {"order_id": 7, "amount_krw": 7}
        # Later events published on the first instance, to Bob and to Alice, are the
        # first of their kind they get: the earlier ones did not reach them.
        for user, data in ((bob, {"payment_id": 9, "invoice_id": 9, "amount_krw": 9}),
                           (alice, {"invoice_id": 9, "recipient_email": "a@b.co"})):
            event = "payment:received" if "payment_id" in data else "invoice:sent"
            status, _ = await publish(Api(one.url, http), {"namespace": "/orders", "event": event,
                                                           "to": {"user_ids": [user["user"]["id"]]}, "data": data})
            assert status == 200
        await bob_two.absent("payment:received", until="payment:received", where=lambda e: e["payment_id"] == 9)
        assert bob_two.queue("invoice:sent").empty()
        await on_two.absent("invoice:sent", until="invoice:sent", where=lambda e: e["invoice_id"] == 9)
    finally:
        for client in clients:
            await client.close()


async def test_a_client_back_after_the_window_gets_what_was_published_by_sync(start_server, tmp_path, http,
                                                                              connect, js_driver):
    """Published while the client was away longer than the recovery window: it gets a
    new session, and `sync` brings the events addressed to it (and, for staff, to the
    staff room), once each, and no one else's."""
    server = await start_server(make_settings(tmp_path, recovery_window=1.0))
    api = Api(server.url, http)
    alice, bob = await api.user(), await api.user()
    operator = await staff(server, api)
    js = await js_driver()
    assert await js.do("connect", url=server.url, ns="/orders", token=alice["access_token"]) == {"recovered": False}
    await js.do("drop")
    bodies = [{"namespace": "/orders", "event": "invoice:generated", "to": {"user_ids": [alice["user"]["id"]]},
               "data": {**INVOICE, "invoice_id": i}} for i in (1, 2)]
    bodies.append({"namespace": "/orders", "event": "invoice:generated", "to": {"user_ids": [bob["user"]["id"]]},
                   "data": {**INVOICE, "invoice_id": 3}})
    bodies.append({"namespace": "/orders", "event": "refund:initiated", "to": {"room": "staff"},
                   "data": {"order_id": 42, "amount_krw": 1000}})
    bodies.append({"namespace": "/orders", "event": "invoice:sent", "to": {"everyone": True},
                   "data": {"invoice_id": 4, "recipient_email": "all@example.com"}})
    for body in bodies:
        status, reply = await publish(api, body)
        assert status == 200, reply
    await asyncio.sleep(1.5)  # past the window: the session is gone
    await js.do("resume")
    assert (await js.do("reconnected"))["recovered"] is False
    cursor, events = None, []
    while True:
        page = (await js.do("call", event="sync", data={"since": cursor} if cursor else {}))["data"]
        events += page["events"]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert [(e["event"], e["data"]["invoice_id"]) for e in events] == [("invoice:generated", 1),
                                                                       ("invoice:generated", 2),
                                                                       ("invoice:sent", 4)]
    desk = await connect(server.url, "/orders", operator["access_token"])
    assert [(e["event"], e["data"]) for e in (await desk.ok("sync", {}))["events"]] == [
        ("refund:initiated", {"order_id": 42, "amount_krw": 1000}),
        ("invoice:sent", {"invoice_id": 4, "recipient_email": "all@example.com"})]
    await js.do("close")
