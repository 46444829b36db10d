"""`sync {since, limit}` on /orders and /notifications through real servers (SQLite and
PostgreSQL) and real python-socketio clients.

A cursor never moves past "now minus handlers.sync.SETTLE", so to check what comes
*after* a cursor the tests first move the stored rows' updated_at into the past
(as if they had been written a minute ago), then change things now."""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from storage.notifications import Notification
from storage.orders import Order
from tests.support.business import order_input, service_token, staff
from tests.support.clients import Api
from tests.support.servers import make_settings


@pytest.fixture(params=["sqlite", "postgresql"])
async def hub(request, tmp_path, start_server):
    if request.param == "sqlite":
        return await start_server(make_settings(tmp_path))
    pg_url = request.getfixturevalue("pg_url")
    return await start_server(make_settings(tmp_path, database_url=pg_url))


@pytest.fixture
def hub_api(hub, http) -> Api:
    return Api(hub.url, http)


async def backdate(hub, model, ids: list[int]) -> None:
    """Give the rows distinct updated_at a minute ago, in REVERSE order of `ids`, so
    that (updated_at, id) order differs from id order."""
    base = datetime.now(timezone.utc) - timedelta(minutes=1)
    async with hub.hub.db.transaction() as tx:
        for i, ident in enumerate(reversed(ids)):
            await tx.execute(update(model).where(model.id == ident).values(updated_at=base + timedelta(seconds=i)))


async def sync_all(client, since=None, limit=None) -> tuple[list[dict], str, list[bool]]:
    """Follow has_more to the end; returns every item, the last cursor and each page's has_more."""
    items, flags = [], []
    while True:
        req = {} if since is None else {"since": since}
        if limit is not None:
            req["limit"] = limit
        page = await client.ok("sync", req)
        assert set(page) == {"items", "events", "cursor", "has_more"}
        items += page["items"]
        flags.append(page["has_more"])
        since = page["cursor"]
        if not page["has_more"]:
            return items, since, flags


async def notify(api: Api, user_ids: list[int], title: str) -> list[int]:
    status, body = await api.request("POST", "/api/notifications", token=service_token(),
                                     json={"user_ids": user_ids, "type": "info", "title": title, "message": title})
    assert status == 201, body
    return [i["notification_id"] for i in body["items"]]


# --- /orders --------------------------------------------------------------------------

async def test_orders_changed_since_a_cursor_only_the_customers_own(hub, hub_api, connect):
    alice, bob = await hub_api.user(), await hub_api.user()
    op = await staff(hub, hub_api, "operator")
    ca = await connect(hub.url, "/orders", alice["access_token"])
    cb = await connect(hub.url, "/orders", bob["access_token"])
    cop = await connect(hub.url, "/orders", op["access_token"])
    svc = await connect(hub.url, "/orders", service_token())
    mine = [(await ca.ok("order:create", order_input()))["order_id"] for _ in range(3)]
    theirs = (await cb.ok("order:create", order_input()))["order_id"]
    await backdate(hub, Order, mine + [theirs])

    first, cursor, _ = await sync_all(ca)
    assert [o["order_id"] for o in first] == list(reversed(mine))  # (updated_at, id) order
    assert all(o["customer_id"] == alice["user"]["id"] for o in first)
    assert first[0] == await ca.ok("order:get", {"order_id": mine[-1]})  # the full Order shape

    # Now: staff move one of alice's orders, alice places another, bob places another.
    moved = await cop.ok("order:update-status", {"order_id": mine[1], "status": "processing"})
    new = (await ca.ok("order:create", order_input()))["order_id"]
    bobs_new = (await cb.ok("order:create", order_input()))["order_id"]

    later, _, _ = await sync_all(ca, cursor)
    assert [(o["order_id"], o["status"]) for o in later] == [(mine[1], "processing"), (new, "pending")]
    assert later[0]["updated_at"] == moved["updated_at"]

    # Bob sees only his; staff and services see everybody's.
    bobs = [o["order_id"] for o in (await sync_all(cb))[0]]
    assert bobs == [theirs, bobs_new]
    for client in (cop, svc):
        every = [o["order_id"] for o in (await sync_all(client))[0]]
        assert set(mine + [new, theirs, bobs_new]) <= set(every)
        since_cursor = [o["order_id"] for o in (await sync_all(client, cursor))[0]]
        assert {mine[1], new, bobs_new} <= set(since_cursor) and not set(since_cursor) & {mine[0], mine[2], theirs}


async def test_orders_sync_pages_with_has_more(hub, hub_api, connect):
    alice = await hub_api.user()
    ca = await connect(hub.url, "/orders", alice["access_token"])
    ids = [(await ca.ok("order:create", order_input()))["order_id"] for _ in range(5)]
    await backdate(hub, Order, ids)

    page = await ca.ok("sync", {"limit": 2})
    assert len(page["items"]) == 2 and page["has_more"] is True
    items, cursor, flags = await sync_all(ca, limit=2)
    assert flags == [True, True, False]
    assert [o["order_id"] for o in items] == list(reversed(ids))  # each once, in order
    assert (await ca.ok("sync", {"since": cursor})) == {"items": [], "events": [], "cursor": cursor, "has_more": False}
    # Exactly `limit` left: the page is full but nothing more is there.
    two = await ca.ok("sync", {"since": (await ca.ok("sync", {"limit": 3}))["cursor"], "limit": 2})
    assert len(two["items"]) == 2 and two["has_more"] is False


async def test_recent_changes_are_repeated_never_skipped(hub, hub_api, connect):
    """Within the settle time the cursor stays behind: the next sync returns the change
    again (clients apply by id) rather than risk skipping a late commit."""
    alice = await hub_api.user()
    ca = await connect(hub.url, "/orders", alice["access_token"])
    order = await ca.ok("order:create", order_input())
    page = await ca.ok("sync", {})
    assert [o["order_id"] for o in page["items"]] == [order["order_id"]]
    again = await ca.ok("sync", {"since": page["cursor"]})
    assert [o["order_id"] for o in again["items"]] == [order["order_id"]]


# --- /notifications ---------------------------------------------------------------------

async def test_notifications_created_read_and_deleted_since_a_cursor(hub, hub_api, connect):
    alice, bob = await hub_api.user(), await hub_api.user()
    ca = await connect(hub.url, "/notifications", alice["access_token"])
    cb = await connect(hub.url, "/notifications", bob["access_token"])
    a1, b1 = await notify(hub_api, [alice["user"]["id"], bob["user"]["id"]], "first")
    a2, = await notify(hub_api, [alice["user"]["id"]], "second")
    a3, = await notify(hub_api, [alice["user"]["id"]], "third")
    await backdate(hub, Notification, [a1, b1, a2, a3])

    first, cursor, _ = await sync_all(ca)
    assert [n["id"] for n in first] == [a3, a2, a1]
    assert all(n["deleted_at"] is None and n["is_read"] is False for n in first)
    listed = {n["id"]: n for n in (await ca.ok("notifications:list", {}))["items"]}
    assert {k: v for k, v in first[0].items() if k != "deleted_at"} == listed[a3]

    # Now: alice reads one and deletes another; a new one arrives; bob deletes his.
    await ca.ok("notification:read", {"notification_id": a1})
    await ca.ok("notification:delete", {"notification_id": a2})
    a4, = await notify(hub_api, [alice["user"]["id"]], "fourth")
    await cb.ok("notification:delete", {"notification_id": b1})

    later, _, _ = await sync_all(ca, cursor)
    assert [n["id"] for n in later] == [a1, a2, a4]
    read, deleted, new = later
    assert read["is_read"] is True and read["deleted_at"] is None
    assert deleted["deleted_at"] is not None and datetime.fromisoformat(deleted["deleted_at"]).tzinfo
    assert set(deleted) == {"id", "deleted_at"}  # a tombstone: nothing of what it said
    assert new["title"] == "fourth" and new["deleted_at"] is None and new["is_read"] is False
    # The deleted one is gone from the list, but sync told the client to remove it.
    assert a2 not in {n["id"] for n in (await ca.ok("notifications:list", {}))["items"]}

    bobs, _, _ = await sync_all(cb)
    assert [(n["id"], n["deleted_at"] is not None) for n in bobs] == [(b1, True)]


async def test_notifications_sync_pages_with_has_more(hub, hub_api, connect):
    alice = await hub_api.user()
    ca = await connect(hub.url, "/notifications", alice["access_token"])
    ids = [i for t in range(5) for i in await notify(hub_api, [alice["user"]["id"]], f"n{t}")]
    await backdate(hub, Notification, ids)
    items, cursor, flags = await sync_all(ca, limit=2)
    assert flags == [True, True, False]
    assert [n["id"] for n in items] == list(reversed(ids))
    assert (await ca.ok("sync", {"since": cursor}))["items"] == []


# --- bad requests -----------------------------------------------------------------------

BAD_CURSORS = [
    "not a cursor",
    base64.urlsafe_b64encode(b"yesterday|1").decode(),
    base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|x").decode(),
    "x" * 201,
    17,
]


@pytest.mark.parametrize("namespace", ["/orders", "/notifications"])
async def test_bad_cursor_or_limit_is_a_validation_error(server, api, connect, namespace):
    alice = await api.user()
    client = await connect(server.url, namespace, alice["access_token"])
    for bad in BAD_CURSORS:
        reply = await client.call("sync", {"since": bad})
        assert reply["ok"] is False and reply["error"]["code"] == "validation_error", (bad, reply)
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "5"}, {"since": None, "cursor": "x"}):
        assert await client.error("sync", bad) == "validation_error", bad
    assert (await client.ok("sync", {"since": None}))["has_more"] is False


async def test_services_have_no_notifications_to_sync(server, connect):
    svc = await connect(server.url, "/notifications", service_token())
    assert await svc.error("sync", {}) == "forbidden"
