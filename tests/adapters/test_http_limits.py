"""What every HTTP request meets (issue 18, items 12, 13 and 14): the body timeout,
connections per address, the Authorization header's size, the pages' security
headers and the metrics token. Real hub app on a loopback port; aiohttp and raw
TCP clients."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp

from tests.support.clients import Api
from tests.support.protocol import open_polling, text


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return response


# --- item 12: a body dribbled slowly, connections per address ------------------------

async def test_a_body_that_does_not_arrive_in_time_closes_the_connection(start_server, settings, caplog):
    server = await start_server(replace(settings, body_timeout=0.5))
    body = json.dumps({"email": "slow@example.com", "password": "x" * 100}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    answer = asyncio.ensure_future(reader.read())
    sent = 0
    try:
        while sent < len(body) and not answer.done():  # one byte every 50 ms: 6 s in all
            writer.write(body[sent:sent + 1])
            await writer.drain()
            sent += 1
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    assert await asyncio.wait_for(answer, 10) == b""  # closed, without an answer
    assert sent < len(body)  # ... before the body was complete
    writer.close()
    assert "the request body did not arrive within 0.5s, closing the connection" in caplog.text
    assert "Traceback" not in caplog.text
    # A body that arrives in time is served as before.
    async with aiohttp.ClientSession() as http:
        status, _ = await Api(server.url, http).request("POST", "/auth/login", json={"email": "a@b.cd", "password": "y"})
        assert status == 401


async def test_a_polling_body_that_does_not_arrive_in_time_ends_its_session(start_server, settings, http, caplog):
    server = await start_server(replace(settings, body_timeout=0.5))
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n40/chat,".encode())
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed without an answer
    writer.close()
    status, _ = await text(http, "GET", f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
    assert status == 400  # the session is gone
    assert "the request body did not arrive within 0.5s" in caplog.text
    assert "Traceback" not in caplog.text


async def test_connections_per_address_are_capped(start_server, settings, http):
    server = await start_server(replace(settings, max_connections_per_address=3))
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    sockets = [await http.ws_connect(url) for _ in range(3)]
    status, body = await Api(server.url, http).request("GET", "/health")
    assert status == 429 and body["error"]["code"] == "rate_limited", body
    try:  # a 4th websocket is refused too
        await http.ws_connect(url)
        refused = None
    except aiohttp.WSServerHandshakeError as exc:
        refused = exc.status
    assert refused == 429
    # A slot comes back when its connection ends.
    await sockets.pop().close()
    for _ in range(100):
        status, _ = await Api(server.url, http).request("GET", "/health")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    for ws in sockets:
        await ws.close()


async def test_connections_are_counted_per_forwarded_address_behind_a_trusted_proxy(start_server, settings, http):
    server = await start_server(replace(settings, max_connections_per_address=2, trust_proxy=True))
    api = Api(server.url, http)
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    one = {"X-Forwarded-For": "203.0.113.1"}
    sockets = [await http.ws_connect(url, headers=one) for _ in range(2)]
    assert (await api.request("GET", "/health", headers=dict(one)))[0] == 429
    assert (await api.request("GET", "/health", headers={"X-Forwarded-For": "203.0.113.2"}))[0] == 200
    for ws in sockets:
        await ws.close()


async def test_slow_bodies_hold_their_slots(start_server, settings, http, caplog):
    """Dribbling bodies count as connections: two of them use up a cap of two."""
    server = await start_server(replace(settings, max_connections_per_address=2, body_timeout=30))
    writers = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")
        writers.append(writer)
    api = Api(server.url, http)
    for _ in range(100):  # until the server has read both requests' headers
        status, body = await api.request("GET", "/health")
        if status == 429:
            break
        await asyncio.sleep(0.05)
    assert status == 429 and body["error"]["code"] == "rate_limited"
    for writer in writers:
        writer.close()
    # Their clients gave up mid-body: their slots come back, and nothing is logged as an error.
    for _ in range(100):
        status, _ = await api.request("GET", "/health")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    assert "Traceback" not in caplog.text


# --- item 14: an oversized Authorization header ----------------------------------------

async def test_an_oversized_authorization_header_gets_the_contract_error(server, http):
    for size in (9 * 1024, 15 * 1024):
        async with http.get(server.url + "/auth/me", headers={"Authorization": "Bearer " + "a" * size}) as resp:
            assert resp.status == 413
            assert resp.content_type == "application/json"
            body = await resp.json()
        assert body["error"]["code"] == "payload_too_large", body
    async with http.get(server.url + "/auth/me", headers={"Authorization": "Bearer " + "a" * 8000}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


# --- item 13: security headers, the metrics token --------------------------------------

async def test_pages_carry_a_content_security_policy_and_refuse_framing(server, http):
    for path in ("/console", "/widget/demo"):
        async with http.get(server.url + path) as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, csp
            assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(server.url + "/console") as resp:
        assert "style-src 'self'" in resp.headers["Content-Security-Policy"]
    # The widget's script loads on any site (a script is not framed), never sniffed.
    async with http.get(server.url + "/widget.js") as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Content-Type"].startswith("application/javascript")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # Data is never a document that could run anything.
    for path in ("/health", "/no-such-route"):
        async with http.get(server.url + path) as resp:
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_metrics_token(start_server, settings, http):
    open_server = await start_server(settings)
    async with http.get(open_server.url + "/metrics") as resp:
        assert resp.status == 200  # off by default, as before
    token = "m" * 40
    server = await start_server(replace(settings, metrics_token=token))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        async with http.get(server.url + "/metrics", headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
    async with http.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200 and "hub_" in await resp.text()
