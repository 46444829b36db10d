"""A bot (a service token scoped to one assistant) acts only within its assistant's
dialogs: none of an unscoped service's powers (orders, notifications, publishing),
no chat, no sns. Real server, real clients; the unscoped service keeps its powers."""
from __future__ import annotations

import pytest

from tests.support.business import order_input, service_token
from tests.support.clients import connect_refusal
from tests.support.dialogs import account, assistant, bot_token, visitor


@pytest.fixture
async def scene(server, api):
    owner_id, owner = await account(server.hub.db)
    mine = await assistant(api, owner, name="Mine")
    other = await assistant(api, owner, name="Other")
    customer = await api.user()
    status, order = await api.request("POST", "/api/orders", token=customer["access_token"], json=order_input())
    assert status == 201, order
    return {"bot": bot_token(mine["id"]), "mine": await visitor(api, mine["id"]),
            "other": await visitor(api, other["id"]), "order": order, "customer": customer}


@pytest.mark.parametrize("namespace", ["/orders", "/notifications", "/chat", "/sns"])
async def test_bot_cannot_connect_outside_dialogs(server, scene, namespace):
    refused = await connect_refusal(server.url, namespace, scene["bot"])
    assert refused is not None and refused["code"] == "forbidden", refused


async def test_bot_has_no_service_powers_over_http(server, api, scene):
    bot, order, customer = scene["bot"], scene["order"], scene["customer"]
    status, body = await api.request("GET", f"/api/orders/{order['order_id']}", token=bot)
    assert status == 403 and body["error"]["code"] == "forbidden", body
    status, body = await api.request("POST", "/api/notifications", token=bot, json={
        "user_id": customer["user"]["id"], "type": "promo", "title": "free money", "message": "click"})
    assert status == 403 and body["error"]["code"] == "forbidden", body
    for target in ({"room": "staff"}, {"user_ids": [customer["user"]["id"]]}):
        status, body = await api.request("POST", "/api/publish", token=bot, json={
            "namespace": "/orders", "event": "invoice:generated", "to": target,
            "data": {"invoice_id": 1, "order_id": order["order_id"], "pdf_url": "https://evil.example/x.pdf"}})
        assert status == 403 and body["error"]["code"] == "forbidden", body
    # The assistant's dialogs stay the bot's; another assistant's do not.
    mine, other = scene["mine"]["dialog_id"], scene["other"]["dialog_id"]
    assert (await api.request("GET", f"/api/dialogs/{mine}", token=bot))[0] == 200
    assert (await api.request("GET", f"/api/dialogs/{other}", token=bot))[0] == 403
    status, body = await api.request("POST", "/api/handoff/auto-detect", token=bot, json={"dialog_id": mine})
    assert status == 201, body


async def test_bot_works_in_its_dialogs_and_unscoped_services_keep_their_powers(server, api, connect, scene):
    bot = await connect(server.url, "/dialogs", scene["bot"])
    mine = scene["mine"]["dialog_id"]
    sent = await bot.ok("dialog:send", {"dialog_id": mine, "text": "hello"})
    assert sent["sender"] == "assistant"
    assert await bot.error("dialog:get", {"dialog_id": scene["other"]["dialog_id"]}) == "forbidden"
    console = await connect(server.url, "/operators", scene["bot"])
    assert (await console.ok("handoff:auto-detect", {"dialog_id": mine}))["should_handoff"] is False
    assert await console.error("handoff:queue") == "forbidden"

    billing = service_token()
    staff = await connect(server.url, "/orders", billing)
    order = scene["order"]
    assert (await staff.ok("order:get", {"order_id": order["order_id"]}))["order_id"] == order["order_id"]
    status, body = await api.request("POST", "/api/publish", token=billing, json={
        "namespace": "/orders", "event": "invoice:generated", "to": {"room": "staff"},
        "data": {"invoice_id": 1, "order_id": order["order_id"], "pdf_url": "https://shop.example/1.pdf"}})
    assert status == 200, body
