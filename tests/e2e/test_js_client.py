"""The official JavaScript socket.io-client against the embedded default."""
import json

import pytest

from tests.support.node import run_node


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_two_users_exchange_messages_with_the_js_client(server, api, node, transport):
    a, b = await api.user(), await api.user()
    out = json.loads(await run_node("chat_exchange.mjs", server.url, a["access_token"], b["access_token"],
                                    str(b["user"]["id"]), transport))
    assert out["ack"]["ok"] is True and out["ack"]["data"]["message"] == "hello from js"
    assert out["event"]["message_id"] == out["ack"]["data"]["id"]
    assert out["event"]["sender_id"] == a["user"]["id"]
    assert out["ack2"]["ok"] and out["back"]["content"] == "hi back"
    assert out["refused"] == {"message": "invalid token", "data": {"code": "unauthorized", "message": "invalid token"}}
    assert out["transport"] == transport


async def test_js_client_upgrades_from_polling_to_websocket(server, api, node):
    a, b = await api.user(), await api.user()
    out = json.loads(await run_node("chat_exchange.mjs", server.url, a["access_token"], b["access_token"],
                                    str(b["user"]["id"])))
    assert out["transport"] == "websocket" and out["back"]["content"] == "hi back"
