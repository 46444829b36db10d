"""Issue 18's audit, scenario by scenario (the fuzzer, tests/adapters/test_fuzz.py, covers the
rest): bad input is a 4xx at the edge, a bad row cannot stall the outbox relay,
deleted things are tombstones in `sync`."""
from __future__ import annotations

import asyncio
import re
import base64
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
import socketio
from sqlalchemy import insert, select

from handlers import sync
from handlers.schema import MAX_ID
from storage import outbox
from storage.base import utcnow
from tests.support.business import service_token, staff
from tests.support.servers import make_settings

HUGE = [2**63, 2**64, 10**30]


def cursor(moment: str, ident: str = "0") -> str:
    return base64.urlsafe_b64encode(f"{moment}|{ident}".encode()).decode()


# --- item 7: bad input is a 4xx -------------------------------------------------------------

def _unbounded(schema: dict, defs: dict, where: str) -> list[str]:
    """Fields of a JSON schema that are not of the bounded types of handlers/schema.py."""
    if "$ref" in schema:
        return _unbounded(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, where)
    found = []
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key, [])):
            found += _unbounded(sub, defs, where)
    kind = schema.get("type")
    if kind == "integer" and not (schema.get("maximum", 2**63) <= MAX_ID and "minimum" in schema):
        found.append(where)
    if kind == "string" and not any(k in schema for k in ("enum", "const", "format")) and not (
            "maxLength" in schema and "pattern" in schema and not re.search(schema["pattern"], "\x00")
            and not re.search(schema["pattern"], "a\x00b")):
        found.append(where)
    if kind == "array":
        found += _unbounded(schema.get("items", {}), defs, where + "[]")
    if kind == "object":
        for name, prop in schema.get("properties", {}).items():
            found += _unbounded(prop, defs, f"{where}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            found += _unbounded(extra, defs, where + ".*")
        elif extra is True and "x-max-depth" not in schema:
            found.append(where + " (free-form, not a JsonObject)")
    return found


def test_every_input_field_is_bounded():
    """The class stays closed: every field of every input (operations, auth bodies,
    publish, widget sessions) is an Id, Offset, Limit, Text, JsonObject or the like."""
    import hub.app  # noqa: F401  (registers every operation)
    from handlers.registry import REGISTRY
    from handlers import accounts as auth, publish
    from hub.adapters.http import widget

    models = {op.input for op in REGISTRY.operations.values()}
    models |= {auth.RegisterIn, auth.LoginIn, auth.RefreshIn, auth.LogoutIn, publish.PublishIn, widget.WidgetSession}
    found = []
    for model in models:
        schema = model.model_json_schema()
        found += _unbounded(schema, schema.get("$defs", {}), model.__name__)
    assert not found, found


async def test_out_of_range_numbers_are_validation_errors(server, api, connect):
    user = await api.user()
    chat = await connect(server.url, "/chat", user["access_token"])
    sns = await connect(server.url, "/sns", user["access_token"])
    orders = await connect(server.url, "/orders", user["access_token"])
    operator = await staff(server, api)
    ops = await connect(server.url, "/operators", operator["access_token"])
    for n in HUGE:
        assert await chat.error("message:send", {"recipient_id": n, "message": "hi"}) == "validation_error"
        assert await chat.error("threads:list", {"offset": n}) == "validation_error"
        assert await chat.error("thread:history", {"thread_id": 1, "page": n}) == "validation_error"
        assert await sns.error("post:get", {"post_id": n}) == "validation_error"
        assert await orders.error("orders:list", {"offset": n}) == "validation_error"
        assert await ops.error("presence:status", {"operator_id": n}) == "validation_error"
    status, body = await api.request("GET", "/api/sns/posts", token=user["access_token"], params={"offset": str(2**64)})
    assert status == 422 and body["error"]["code"] == "validation_error", body


@pytest.mark.parametrize("segment", ["²", "٣", "9" * 5000, str(2**63), str(2**64)])
async def test_odd_path_ids_are_4xx(server, api, segment):
    user = await api.user()
    for path in (f"/api/orders/{segment}", f"/api/attachments/{segment}"):
        status, body = await api.request("GET", path, token=user["access_token"])
        assert 400 <= status < 500 and body["error"]["code"] in ("validation_error", "not_found"), (path, body)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01"])
async def test_out_of_range_dates_are_validation_errors(server, api, connect, moment):
    user = await api.user()
    sns = await connect(server.url, "/sns", user["access_token"])
    assert await sns.error("post:create", {"platforms": ["twitter"], "content": "x",
                                           "scheduled_at": moment}) == "validation_error"
    assert await sns.error("sync", {"since": cursor(moment)}) == "validation_error"
    assert await sns.error("sync", {"since": cursor("2026-01-01T00:00:00", str(2**64))}) == "validation_error"
    operator = await staff(server, api)
    dialogs = await connect(server.url, "/dialogs", operator["access_token"])
    assert await dialogs.error("dialogs:list", {"date_from": moment}) == "validation_error"
    status, body = await api.request("GET", "/api/dialogs", token=operator["access_token"], params={"date_to": moment})
    assert status == 422, body


async def test_deep_json_is_refused_at_decode(server, api, connect):
    user = await api.user()
    deep = "[" * 5000 + "]" * 5000
    status, body = await api.request("POST", "/auth/login", data=deep, headers={"Content-Type": "application/json"})
    assert status == 422 and body["error"]["code"] == "validation_error"
    # Over Socket.IO a packet too deep to decode is like any undecodable packet: the
    # connection closes (and the server stays well: a new one works).
    client = await connect(server.url, "/chat", user["access_token"])
    closed = asyncio.Event()
    client.sio.on("disconnect", closed.set, namespace="/chat")
    payload: object = 1
    for _ in range(200):
        payload = {"a": payload}
    await client.sio.emit("threads:list", payload, namespace="/chat")
    await asyncio.wait_for(closed.wait(), 10)
    again = await connect(server.url, "/chat", user["access_token"])
    assert await again.ok("threads:list", {}) == []
    # Within the decoder's limit, data deeper than stored JSON may be is a validation error.
    payload = {"k": 1}
    for _ in range(40):
        payload = {"a": payload}
    service = service_token()
    status, body = await api.request("POST", "/api/notifications", token=service, json={
        "user_id": user["user"]["id"], "type": "t", "title": "t", "message": "m", "data": payload})
    assert status == 422, body


async def test_latin1_upload_filename_is_stored(server, api):
    user = await api.user()
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xe9t\xe9.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n")
    status, out = await api.request("POST", "/api/attachments", token=user["access_token"], data=body,
                                    headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 201, out
    assert out["filename"].endswith("t\ufffd.txt")


async def _nul_everywhere(server, api, connect) -> None:
    status, body = await api.request("POST", "/auth/register", json={"email": "a\x00@example.com",
                                                                     "password": "password123"})
    assert status == 422, body
    status, body = await api.request("POST", "/auth/register", json={"email": "nul@example.com",
                                                                     "password": "pass\x00word123"})
    assert status == 422, body
    status, body = await api.request("POST", "/auth/login", json={"email": "a\x00@example.com", "password": "x"})
    assert status == 422, body
    user = await api.user()
    other = await api.user()
    chat = await connect(server.url, "/chat", user["access_token"])
    assert await chat.error("message:send", {"recipient_id": other["user"]["id"],
                                             "message": "a\x00b"}) == "validation_error"
    assert await chat.error("messages:search", {"query": "\x00"}) == "validation_error"
    status, body = await api.request("POST", "/api/notifications", token=service_token(), json={
        "user_id": user["user"]["id"], "type": "t", "title": "t", "message": "m", "data": {"k": "\x00"}})
    assert status == 422, body


async def test_nul_characters_are_validation_errors(server, api, connect):
    await _nul_everywhere(server, api, connect)


async def test_nul_characters_are_validation_errors_on_postgresql(start_server, tmp_path, pg_url, http, connect):
    from tests.support.clients import Api

    server = await start_server(make_settings(tmp_path, database_url=pg_url))
    await _nul_everywhere(server, Api(server.url, http), connect)


# --- item 3: one bad service request cannot block the relay ------------------------------

async def test_publish_and_notify_refuse_integers_beyond_64_bits(server, api, connect):
    user = await api.user()
    uid = user["user"]["id"]
    notes = await connect(server.url, "/notifications", user["access_token"])
    token = service_token()
    status, body = await api.request("POST", "/api/publish", token=token, json={
        "namespace": "/notifications", "event": "status:updated", "to": {"user_ids": [uid]},
        "data": {"resource_type": "booking", "resource_id": 2**64, "status": "x"}})
    assert status == 422, body
    status, body = await api.request("POST", "/api/publish", token=token, json={
        "namespace": "/notifications", "event": "status:updated", "to": {"user_ids": [2**64]},
        "data": {"resource_type": "booking", "resource_id": 1, "status": "x"}})
    assert status == 422, body
    status, body = await api.request("POST", "/api/notifications", token=token, json={
        "user_id": uid, "type": "t", "title": "big", "message": "m", "data": {"n": 2**64}})
    assert status == 422, body
    status, body = await api.request("POST", "/api/notifications", token=token, json={
        "user_ids": [uid, 2**64], "type": "t", "title": "big", "message": "m"})
    assert status == 422, body
    # Nothing was stored or sent: the next good one is the first to arrive, and the only one listed.
    status, body = await api.request("POST", "/api/notifications", token=token, json={
        "user_id": uid, "type": "t", "title": "good", "message": "m"})
    assert status == 201, body
    assert (await notes.next("push:received"))["title"] == "good"
    listed = await notes.ok("notifications:list", {})
    assert [n["title"] for n in listed["items"]] == ["good"]


async def test_a_row_the_bus_refuses_is_set_aside_and_the_relay_goes_on(start_server, tmp_path, redis_url,
                                                                        redis_prefix, api_factory, connect):
    """A poison row (as an older version or another writer may have stored) is set
    aside, counted, logged once; the rows after it are relayed."""
    server = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    api = api_factory(server)
    user = await api.user()
    room = f"user:{user['user']['id']}"
    notes = await connect(server.url, "/notifications", user["access_token"])
    old = utcnow() - timedelta(seconds=30)
    row = {"namespace": "/notifications", "event": "status:updated", "rooms": [room], "skip_sid": None,
           "created_at": old}
    async with server.hub.db.transaction() as tx:
        await tx.execute(insert(outbox.OutboxEvent), [
            {**row, "data": {"resource_type": "poison", "resource_id": 2**64, "status": "x"}},
            {**row, "data": {"resource_type": "good", "resource_id": 1, "status": "x"}}])
    assert (await notes.next("status:updated", timeout=20))["resource_type"] == "good"
    async with server.hub.db.transaction() as tx:
        left = (await tx.execute(select(outbox.OutboxEvent))).scalars().all()
    assert [(r.data["resource_type"], r.failed_at is not None) for r in left] == [("poison", True)]
    assert server.hub.metrics.set_aside._value.get() == 1


@pytest.fixture
def api_factory(http):
    from tests.support.clients import Api

    return lambda server: Api(server.url, http)


# --- item 5: deleted means gone ------------------------------------------------------------

async def test_sync_returns_tombstones_of_deleted_messages_and_posts(server, api, connect, monkeypatch):
    monkeypatch.setattr(sync, "SETTLE", timedelta(0))
    alice, bob = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", alice["access_token"])
    cb = await connect(server.url, "/chat", bob["access_token"])
    form = aiohttp.FormData()
    form.add_field("file", b"secret", filename="secret-plan.pdf", content_type="application/pdf")
    status, att = await api.request("POST", "/api/attachments", token=alice["access_token"], data=form)
    assert status == 201, att
    sent = await ca.ok("message:send", {"recipient_id": bob["user"]["id"], "message": "the plan",
                                        "attachment_ids": [att["id"]]})
    await ca.ok("message:delete", {"message_id": sent["id"]})
    items = (await cb.ok("sync", {}))["items"]
    assert items == [{"id": sent["id"], "thread_id": sent["thread_id"], "deleted_at": items[0]["deleted_at"]}]
    assert "secret-plan" not in str(items) and items[0]["deleted_at"]

    sa = await connect(server.url, "/sns", alice["access_token"])
    sb = await connect(server.url, "/sns", bob["access_token"])
    post = await sa.ok("post:create", {"platforms": ["twitter"], "content": "regret this",
                                       "image_url": "https://img.example.com/regret.png"})
    await sa.ok("post:delete", {"post_id": post["post_id"]})
    for client in (sa, sb):
        posts = (await client.ok("sync", {}))["items"]
        assert posts == [{"post_id": post["post_id"], "deleted_at": posts[0]["deleted_at"]}]
