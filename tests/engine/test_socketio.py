"""Socket.IO v5 as Node's reference server keeps it (issue 6, items 6 and 7, and
malformed packets), checked with raw websockets / polling and with the official
JavaScript client, against `hub conformance-server`'s app and the hub's real app."""
from __future__ import annotations

import asyncio
import json

import pytest

from handlers.context import Outgoing
from tests.support.node import run_node
from tests.support.protocol import closed, open_polling, receive, receive_skipping_pings, start_conformance, text


@pytest.fixture
async def conf(settings):
    server = await start_conformance(settings)
    yield server
    await server.runner.cleanup()


async def sio_ws(http, base_ws: str, path: str = "/socket.io/"):
    ws = await http.ws_connect(f"{base_ws}{path}?EIO=4&transport=websocket")
    assert (await receive(ws)).startswith("0")
    return ws


# --- item 6: the CONNECT comes first --------------------------------------------------

@pytest.mark.parametrize("connect, prefix, auth", [
    ("40", "40", {}),
    ('40{"token":"123"}', "40", {"token": "123"}),
    ("40/custom,", "40/custom,", {}),
    ('40/custom,{"token":"abc"}', "40/custom,", {"token": "abc"}),
])
async def test_connect_packet_precedes_connect_handler_events(conf, http, connect, prefix, auth):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str(connect)
    first = await receive(ws)
    assert first.startswith(prefix), first
    assert list(json.loads(first[len(prefix):])) == ["sid"]
    nsp = prefix[2:]
    assert await receive(ws) == f"42{nsp}" + json.dumps(["auth", auth], separators=(",", ":"))
    await ws.close()


@pytest.fixture
async def probe_namespace(server):
    """A namespace on the hub's real servers (both parsers) whose connect handler
    emits to the new socket directly and through the hub's fan-out (a room it is in)."""
    hub = server.hub

    for sio in hub.fanout.servers:
        async def connect(sid, environ, auth, sio=sio):
            await sio.enter_room(sid, "probe-room", namespace="/probe")
            await sio.emit("direct", {"n": 1}, to=sid, namespace="/probe")
            await hub.fanout.deliver([Outgoing("/probe", "fanned", {"n": 2}, ["probe-room"])])
            await sio.emit("direct", {"n": 3}, to=sid, namespace="/probe")

        sio.on("connect", connect, namespace="/probe")
    return server


async def test_hub_sends_connect_before_handler_events_over_websocket(probe_namespace, http):
    server = probe_namespace
    ws = await sio_ws(http, server.url.replace("http", "ws"))
    await ws.send_str("40/probe,")
    packets = [await receive_skipping_pings(ws) for _ in range(4)]
    assert packets[0].startswith("40/probe,{"), packets
    assert packets[1:] == ['42/probe,["direct",{"n":1}]', '42/probe,["fanned",{"n":2}]',
                           '42/probe,["direct",{"n":3}]']
    await ws.close()


async def test_hub_sends_connect_before_handler_events_over_polling(probe_namespace, http):
    server = probe_namespace
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    assert await text(http, "POST", f"{base}&sid={sid}", data="40/probe,") == (200, "ok")
    packets: list[str] = []
    while len(packets) < 4:
        status, body = await text(http, "GET", f"{base}&sid={sid}")
        assert status == 200, body
        packets += [p for p in body.split("\x1e") if p != "2"]
    assert packets[0].startswith("40/probe,{"), packets
    assert [p.split(",", 1)[1] for p in packets[1:]] == [
        '["direct",{"n":1}]', '["fanned",{"n":2}]', '["direct",{"n":3}]']


async def test_refused_connect_sends_no_handler_events(server, http):
    """Events emitted before a refusal are dropped with it, not sent."""
    sio = server.hub.sio

    async def connect(sid, environ, auth):
        await sio.emit("leak", {"secret": True}, to=sid, namespace="/refuse")
        raise ConnectionRefusedError("no")

    sio.on("connect", connect, namespace="/refuse")
    ws = await sio_ws(http, server.url.replace("http", "ws"))
    await ws.send_str("40/refuse,")
    assert await receive(ws) == '44/refuse,{"message":"Connection refused by server"}'
    await ws.send_str("40/nope,")
    assert (await receive(ws)).startswith("44/nope,")  # nothing from /refuse in between
    await ws.close()


def test_connect_reply_is_overridable(conf):
    from hub.adapters.socketio_server import HubServer

    assert HubServer.connect_reply(conf.sio, "abc", "/") == {"sid": "abc"}


# --- item 7: unknown namespace ------------------------------------------------------

async def test_unknown_namespace_is_invalid_namespace(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40/random")
    assert await receive(ws) == '44/random,{"message":"Invalid namespace"}'
    await ws.close()


async def test_hub_unknown_namespace_reaches_the_js_client_as_a_message(server, node):
    out = await run_node("connect_error.mjs", server.url + "/no-such-namespace")
    assert json.loads(out) == {"message": "Invalid namespace"}


# --- the reference behaviour through the official client ----------------------------

@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_official_client_against_reference_server(conf, node, transport):
    result = json.loads(await run_node("protocol_reference.mjs", conf.url, transport, "default"))
    assert result["transport"] == transport
    assert result["main"] == {"auth": {"token": "123"}, "order": ["connect", "auth"], "idAtAuth": True}
    assert result["custom"] == {"auth": {}, "order": ["connect", "auth"]}
    assert result["echoed"] == [1, "2", {"3": [True]}, {"bytes": [1, 2, 3]}]
    assert result["acked"] == ["x", {"y": [1, 2]}, {"bytes": [4, 5]}]
    assert result["refused"] == {"message": "Invalid namespace", "data": None}


# --- messages, malformed packets, disconnect, connect timeout --------------------------

async def test_raw_messages_binary_and_acks(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)  # CONNECT, auth
    await ws.send_str('42["message",1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '42["message-back",1,"2",{"3":[true]}]'
    await ws.send_str('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert await receive_skipping_pings(ws) == '43456[1,"2",{"3":[false]}]'
    await ws.send_str('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    await ws.send_bytes(bytes([1, 2, 3]))
    await ws.send_bytes(bytes([4, 5, 6]))
    assert await receive_skipping_pings(ws) == \
        '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert await receive_skipping_pings(ws) == bytes([1, 2, 3])
    assert await receive_skipping_pings(ws) == bytes([4, 5, 6])
    await ws.close()


@pytest.mark.parametrize("bad", ["4abc", "42{}", '42abc["message-with-ack",1]', "42[]", "43[1]", "44{}"])
async def test_malformed_packet_closes_the_connection(conf, http, bad):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str(bad)
    await closed(ws, timeout=2)


async def test_disconnect_from_namespace(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str("40/custom,")
    assert (await receive_skipping_pings(ws)).startswith("40/custom,")
    await receive_skipping_pings(ws)  # auth
    await ws.send_str("41/custom,")
    await ws.send_str('42["message","to main"]')
    assert await receive_skipping_pings(ws) == '42["message-back","to main"]'
    await ws.close()


async def test_session_without_namespace_is_closed_after_connect_timeout(conf, http):
    ws = await sio_ws(http, conf.ws_url)  # connect_timeout is 1 s here, pingInterval 0.3 s
    pings = 0
    while (data := await receive(ws, timeout=5)) == "2":
        pings += 1
        await ws.send_str("3")  # alive: only the connect timeout may close it
    assert data in ("1", None)  # a CLOSE packet, or the websocket closed
    assert pings >= 2  # it lived through pings: not closed by a ping timeout
    assert await closed(ws) == []


async def test_server_side_ack_round_trip(conf, http):
    """The reference `emit-with-ack`: the server asks for an ack (id 1) and emits its arguments."""
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str('42["emit-with-ack",1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '421["emit-with-ack",1,"2",{"3":[true]}]'
    await ws.send_str('431[1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '42["emit-with-ack",1,"2",{"3":[true]}]'
    await ws.close()
