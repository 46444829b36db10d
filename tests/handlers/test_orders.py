"""/orders end to end: real servers, real python-socketio clients."""
from __future__ import annotations

import asyncio
import re

import pytest

from tests.support.business import ITEMS, order_input, service_token, staff
from tests.support.clients import Api
from tests.support.servers import make_settings

ORDER_FIELDS = {"order_id", "order_number", "customer_id", "status", "items", "total_krw", "billing_address",
                "shipping_address", "tracking_number", "estimated_delivery", "client_order_id", "created_at",
                "updated_at"}


async def quiet(client, event: str) -> None:
    """No `event` reached `client` so far (beyond what the test took): an order of its
    own user, created now, is announced to the same socket after anything sent to it
    before, so once that order:created is in, an earlier `event` would be too."""
    mine = (await client.ok("order:create", order_input()))["order_id"]
    await client.absent(event, until="order:created", where=lambda e: e["order_id"] == mine)


async def test_create_order_reaches_customer_devices_and_staff_but_no_other_customer(server, api, connect):
    alice, bob = await api.user(), await api.user()
    op = await staff(server, api, "operator")
    phone = await connect(server.url, "/orders", alice["access_token"])
    laptop = await connect(server.url, "/orders", alice["access_token"])
    other = await connect(server.url, "/orders", bob["access_token"])
    console = await connect(server.url, "/orders", op["access_token"])
    backend = await connect(server.url, "/orders", service_token())

    order = await phone.ok("order:create", order_input(billing_address={"line1": "1 Main St", "city": "Seoul"}))
    assert set(order) == ORDER_FIELDS
    assert order["customer_id"] == alice["user"]["id"] and order["status"] == "pending"
    assert order["total_krw"] == 2 * 15000 + 990
    assert order["items"] == ITEMS and order["billing_address"] == {"line1": "1 Main St", "city": "Seoul"}
    assert re.fullmatch(r"ORD-\d{8}-0*%d" % order["order_id"], order["order_number"])
    assert order["tracking_number"] is None and order["client_order_id"] is None

    expected = {"order_id": order["order_id"], "customer_id": alice["user"]["id"], "total_krw": 30990,
                "items_count": 2, "order_number": order["order_number"], "status": "pending",
                "created_at": order["created_at"]}
    for client in (phone, laptop, console, backend):
        assert await client.next("order:created") == expected
    await quiet(other, "order:created")


async def test_customer_sees_only_own_orders_staff_and_services_see_all(server, api, connect):
    alice, bob = await api.user(), await api.user()
    admin = await staff(server, api, "admin")
    ca = await connect(server.url, "/orders", alice["access_token"])
    cb = await connect(server.url, "/orders", bob["access_token"])
    cadmin = await connect(server.url, "/orders", admin["access_token"])
    csvc = await connect(server.url, "/orders", service_token())
    a1 = await ca.ok("order:create", order_input())
    a2 = await ca.ok("order:create", order_input())
    b1 = await cb.ok("order:create", order_input())

    assert (await ca.ok("order:get", {"order_id": a1["order_id"]}))["order_id"] == a1["order_id"]
    assert await cb.error("order:get", {"order_id": a1["order_id"]}) == "not_found"
    assert await ca.error("order:get", {"order_id": 10**9}) == "not_found"
    assert (await cadmin.ok("order:get", {"order_id": b1["order_id"]}))["customer_id"] == bob["user"]["id"]
    assert (await csvc.ok("order:get", {"order_id": a2["order_id"]}))["order_id"] == a2["order_id"]

    mine = await ca.ok("orders:list", {})
    assert mine["total"] == 2 and [o["order_id"] for o in mine["items"]] == [a2["order_id"], a1["order_id"]]
    assert (mine["limit"], mine["offset"]) == (50, 0)
    assert await ca.error("orders:list", {"customer_id": bob["user"]["id"]}) == "forbidden"
    assert (await cb.ok("orders:list", {"customer_id": bob["user"]["id"]}))["total"] == 1

    everything = await cadmin.ok("orders:list", {"limit": 200})
    ids = {o["order_id"] for o in everything["items"]}
    assert {a1["order_id"], a2["order_id"], b1["order_id"]} <= ids
    only_bob = await csvc.ok("orders:list", {"customer_id": bob["user"]["id"]})
    assert [o["order_id"] for o in only_bob["items"]] == [b1["order_id"]]
    page = await cadmin.ok("orders:list", {"customer_id": alice["user"]["id"], "limit": 1, "offset": 1})
    assert page["total"] == 2 and [o["order_id"] for o in page["items"]] == [a1["order_id"]]

    await cadmin.ok("order:update-status", {"order_id": a1["order_id"], "status": "processing"})
    processing = await cadmin.ok("orders:list", {"status": "processing", "customer_id": alice["user"]["id"]})
    assert [o["order_id"] for o in processing["items"]] == [a1["order_id"]]
    assert (await ca.ok("orders:list", {"status": "pending"}))["total"] == 1
    assert await cadmin.error("orders:list", {"status": "lost"}) == "validation_error"


async def test_status_machine_events_and_conflicts(server, api, connect):
    alice, bob = await api.user(), await api.user()
    op = await staff(server, api, "operator")
    ca = await connect(server.url, "/orders", alice["access_token"])
    cb = await connect(server.url, "/orders", bob["access_token"])
    console = await connect(server.url, "/orders", op["access_token"])
    order = await ca.ok("order:create", order_input())
    oid = order["order_id"]
    await console.next("order:created")

    # Only staff and services move orders; the customer cannot.
    assert await ca.error("order:update-status", {"order_id": oid, "status": "cancelled"}) == "forbidden"
    # Skipping a step is a conflict and changes nothing.
    assert await console.error("order:update-status", {"order_id": oid, "status": "delivered"}) == "conflict"
    reply = await console.call("order:update-status", {"order_id": oid, "status": "shipped", "tracking_number": "T1"})
    assert reply["error"]["code"] == "conflict" and reply["error"]["details"] == {
        "status": "pending", "allowed": ["cancelled", "processing"]}

    moved = await console.ok("order:update-status", {"order_id": oid, "status": "processing"})
    assert moved["status"] == "processing" and moved["updated_at"] >= order["updated_at"]
    for client in (ca, console):
        ev = await client.next("order:updated")
        assert ev["order_id"] == oid and ev["status"] == "processing" and ev["previous_status"] == "pending"
        assert ev["customer_id"] == alice["user"]["id"]

    # Shipping needs a tracking number, and tracking numbers go only with shipping.
    assert await console.error("order:update-status", {"order_id": oid, "status": "shipped"}) == "validation_error"
    assert await console.error("order:update-status", {"order_id": oid, "status": "cancelled",
                                                       "tracking_number": "X"}) == "validation_error"
    assert await console.error("order:update-status", {"order_id": oid, "status": "shipped", "tracking_number": "T",
                                                       "estimated_delivery": "not a date"}) == "validation_error"
    shipped = await console.ok("order:update-status", {"order_id": oid, "status": "shipped",
                                                       "tracking_number": "CJ123456789",
                                                       "estimated_delivery": "2026-12-01"})
    assert shipped["tracking_number"] == "CJ123456789" and shipped["estimated_delivery"] == "2026-12-01"
    for client in (ca, console):
        assert (await client.next("order:updated"))["status"] == "shipped"
        assert await client.next("order:shipped") == {"order_id": oid, "order_number": order["order_number"],
                                                      "customer_id": alice["user"]["id"],
                                                      "tracking_number": "CJ123456789",
                                                      "estimated_delivery": "2026-12-01"}
    # Shipped orders cannot be cancelled any more.
    assert await console.error("order:update-status", {"order_id": oid, "status": "cancelled"}) == "conflict"
    done = await console.ok("order:update-status", {"order_id": oid, "status": "delivered"})
    assert done["status"] == "delivered" and done["tracking_number"] == "CJ123456789"
    assert (await ca.next("order:updated"))["status"] == "delivered"
    for status in ("pending", "processing", "shipped", "cancelled", "delivered"):
        extra = {"tracking_number": "T"} if status == "shipped" else {}
        assert await console.error("order:update-status", {"order_id": oid, "status": status, **extra}) == "conflict"
    assert (await ca.ok("order:get", {"order_id": oid}))["status"] == "delivered"

    # Cancelling is allowed from pending and from processing, and is final.
    svc = await connect(server.url, "/orders", service_token())
    p = await ca.ok("order:create", order_input())
    assert (await svc.ok("order:update-status", {"order_id": p["order_id"], "status": "cancelled"}))["status"] == "cancelled"
    assert await svc.error("order:update-status", {"order_id": p["order_id"], "status": "processing"}) == "conflict"
    q = await ca.ok("order:create", order_input())
    await svc.ok("order:update-status", {"order_id": q["order_id"], "status": "processing"})
    assert (await svc.ok("order:update-status", {"order_id": q["order_id"], "status": "cancelled"}))["status"] == "cancelled"
    assert await svc.error("order:update-status", {"order_id": 10**9, "status": "processing"}) == "not_found"

    # Bob never heard about any of Alice's orders.
    await quiet(cb, "order:created")
    for event in ("order:updated", "order:shipped"):
        assert cb.queue(event).empty()


async def test_create_is_idempotent_per_customer(server, api, connect):
    alice, bob = await api.user(), await api.user()
    ca = await connect(server.url, "/orders", alice["access_token"])
    cb = await connect(server.url, "/orders", bob["access_token"])
    first = await ca.ok("order:create", order_input(client_order_id="cart-1"))
    assert first["client_order_id"] == "cart-1"
    await ca.next("order:created")
    again = await ca.ok("order:create", order_input(client_order_id="cart-1", items=[ITEMS[0]]))
    assert again == first
    await quiet(ca, "order:created")
    # The key is per customer: Bob's "cart-1" is his own order.
    theirs = await cb.ok("order:create", order_input(client_order_id="cart-1"))
    assert theirs["order_id"] != first["order_id"] and theirs["customer_id"] == bob["user"]["id"]
    assert (await ca.ok("orders:list", {}))["total"] == 2  # "cart-1" once, and quiet()'s later order


async def _concurrent_duplicates(server, http, connect):
    api = Api(server.url, http)
    alice = await api.user()
    clients = [await connect(server.url, "/orders", alice["access_token"]) for _ in range(4)]
    replies = await asyncio.gather(*[
        c.ok("order:create", order_input(client_order_id="double-click")) for c in clients for _ in range(2)])
    assert len({r["order_id"] for r in replies}) == 1
    assert (await clients[0].ok("orders:list", {}))["total"] == 1
    # Exactly one order:created went out: each device of Alice gets it once, and the
    # next one it gets is of a later order.
    later = (await clients[0].ok("order:create", order_input()))["order_id"]
    for c in clients:
        await c.next("order:created")
        await c.absent("order:created", until="order:created", where=lambda e: e["order_id"] == later)


async def test_concurrent_duplicates_return_the_first_order_sqlite(server, http, connect):
    await _concurrent_duplicates(server, http, connect)


async def test_concurrent_duplicates_return_the_first_order_postgresql(start_server, pg_url, tmp_path, http, connect):
    await _concurrent_duplicates(await start_server(make_settings(tmp_path, database_url=pg_url)), http, connect)


async def test_order_numbers_are_unique_across_instances(start_server, pg_url, tmp_path, http):
    one = await start_server(make_settings(tmp_path / "a", database_url=pg_url))
    two = await start_server(make_settings(tmp_path / "b", database_url=pg_url))
    api_one, api_two = Api(one.url, http), Api(two.url, http)
    alice = await api_one.user()
    token = alice["access_token"]

    async def place(api):
        status, body = await api.request("POST", "/api/orders", token=token, json=order_input())
        assert status == 201, body
        return body

    orders = await asyncio.gather(*[place(api) for api in (api_one, api_two) for _ in range(5)])
    numbers = [o["order_number"] for o in orders]
    assert len(set(numbers)) == 10
    assert all(re.fullmatch(r"ORD-\d{8}-\d{6,}", n) for n in numbers)


@pytest.mark.parametrize("bad", [
    {"items": []},
    {"items": [ITEMS[0]] * 101},
    {"items": [{"product_id": 1, "quantity": 0, "price_krw": 1}]},
    {"items": [{"product_id": 1, "quantity": 1, "price_krw": -1}]},
    {"items": [{"product_id": 1, "quantity": 1, "price_krw": "100"}]},
    {"items": [{"product_id": 1, "quantity": 1.5, "price_krw": 100}]},
    {"items": [{"product_id": 1, "quantity": 1, "price_krw": 100, "discount": 5}]},
    {"total_krw": 1},
    {"billing_address": ""},
    {"shipping_address": None},
    {"client_order_id": ""},
])
async def test_invalid_orders_are_refused(server, api, connect, bad):
    alice = await api.user()
    ca = await connect(server.url, "/orders", alice["access_token"])
    reply = await ca.call("order:create", order_input(**bad))
    assert reply["ok"] is False and reply["error"]["code"] == "validation_error", reply
    assert reply["error"]["details"]
    assert (await ca.ok("orders:list", {}))["total"] == 0


async def test_http_routes_share_the_operations(server, api):
    alice, bob = await api.user(), await api.user()
    status, order = await api.request("POST", "/api/orders", token=alice["access_token"], json=order_input())
    assert status == 201 and order["customer_id"] == alice["user"]["id"] and order["total_krw"] == 30990
    status, got = await api.request("GET", f"/api/orders/{order['order_id']}", token=alice["access_token"])
    assert status == 200 and got == order
    status, body = await api.request("GET", f"/api/orders/{order['order_id']}", token=bob["access_token"])
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.request("POST", "/api/orders", json=order_input())
    assert status == 401
    status, body = await api.request("POST", "/api/orders", token=service_token(), json=order_input())
    assert status == 403  # services have no customer account to order for


async def test_who_may_connect_and_order(server, api, connect):
    svc = await connect(server.url, "/orders", service_token())
    assert await svc.error("order:create", order_input()) == "forbidden"
    alice = await api.user()
    ca = await connect(server.url, "/orders", alice["access_token"])
    assert await ca.error("order:cancel", {"order_id": 1}) == "validation_error"  # unknown event


async def test_racing_status_updates_have_one_winner(start_server, pg_url, tmp_path, http, connect):
    server = await start_server(make_settings(tmp_path, database_url=pg_url))
    api = Api(server.url, http)
    alice = await api.user()
    ca = await connect(server.url, "/orders", alice["access_token"])
    consoles = [await connect(server.url, "/orders", service_token(f"console{i}")) for i in range(4)]
    for target in ("processing", "cancelled", "processing"):
        order = await ca.ok("order:create", order_input())
        # Everyone asks for the same move: a racer that read the old status loses the
        # compare-and-set, one that read the winner's status asks for an illegal move;
        # both are conflicts. (Mixed targets could legally chain, e.g. processing then
        # cancelled, and give two winners without any race being lost.)
        targets = [target] * 4
        replies = await asyncio.gather(*[
            c.call("order:update-status", {"order_id": order["order_id"], "status": s})
            for c, s in zip(consoles, targets)])
        winners = [r for r in replies if r["ok"]]
        assert len(winners) == 1, replies
        assert all(r["error"]["code"] == "conflict" for r in replies if not r["ok"])
        final = await ca.ok("order:get", {"order_id": order["order_id"]})
        assert final["status"] == winners[0]["data"]["status"]
        # The customer hears about the one change that happened, once.
        assert (await ca.next("order:updated"))["status"] == final["status"]
        await quiet(ca, "order:updated")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_official_js_client(server, api, node, transport):
    import json

    from tests.support.node import run_node

    alice = await api.user()
    out = json.loads(await run_node("orders_notifications.mjs", server.url, alice["access_token"], service_token(),
                                    str(alice["user"]["id"]), transport))
    order = out["order"]["data"]
    assert out["order"]["ok"] and order["total_krw"] == 10000 and order["shipping_address"]["zip"] == "48000"
    assert out["staffSaw"]["order_id"] == order["order_id"] and out["staffSaw"]["items_count"] == 1
    assert out["processing"]["data"]["status"] == "processing"
    assert out["customerSaw"] == {**out["customerSaw"], "status": "processing", "previous_status": "pending"}
    assert out["shippedEvent"]["tracking_number"] == "JS-TRACK"
    assert out["shippedEvent"]["estimated_delivery"] == "2026-12-24"
    assert out["illegal"]["error"]["code"] == "conflict"
    nid = out["notified"]["data"]["items"][0]["notification_id"]
    assert out["push"]["notification_id"] == nid and out["push"]["body"] == "On its way"
    assert [n["id"] for n in out["list"]["data"]["items"]] == [nid]
    assert out["transport"] == transport
