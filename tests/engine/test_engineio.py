"""Engine.IO v4 as Node's reference server keeps it (issue 6, items 1-5), checked
with raw HTTP requests and websockets against the hub's own transport stack:
`hub conformance-server`'s app (built by hub.app.build_hub, with the suites'
timings: pingInterval 300 ms, pingTimeout 200 ms) and the hub's real app."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.support.protocol import (closed, open_polling, receive, start_conformance, text)


@pytest.fixture
async def conf(settings):
    server = await start_conformance(settings)
    yield server
    await server.runner.cleanup()


def eio(base: str, sid: str | None = None, transport: str = "polling", path: str = "/engine.io/") -> str:
    url = f"{base}{path}?EIO=4&transport={transport}"
    return url + (f"&sid={sid}" if sid else "")


async def upgraded_ws(http, conf, sid):
    """A websocket that completed the upgrade of polling session `sid`."""
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    await ws.send_str("2probe")
    assert await receive(ws) == "3probe"
    await ws.send_str("5")
    await ws.send_str("4upgraded")
    assert await receive(ws) == "4upgraded"  # the echo proves "5" was handled
    return ws


# --- item 1: the announced intervals ------------------------------------------------

async def test_handshake_announces_exact_milliseconds(conf, http):
    sid, handshake = await open_polling(http, conf.url)
    assert handshake == {"sid": sid, "upgrades": ["websocket"], "pingInterval": 300,
                         "pingTimeout": 200, "maxPayload": 1_000_000}
    ws = await http.ws_connect(eio(conf.ws_url, transport="websocket"))
    data = json.loads((await receive(ws))[1:])
    assert (data["upgrades"], data["pingInterval"], data["pingTimeout"]) == ([], 300, 200)
    await ws.close()


async def test_hub_handshake_announces_its_intervals(server, http):
    _, handshake = await open_polling(http, server.url, "/socket.io/")
    eio_server = server.hub.sio.eio
    assert handshake["pingInterval"] == round(eio_server.ping_interval * 1000)
    assert handshake["pingTimeout"] == round(eio_server.ping_timeout * 1000)


# --- item 2: bad requests -----------------------------------------------------------

@pytest.mark.parametrize("query", ["EIO=4", "EIO=4&transport=abc", "transport=polling", "EIO=abc&transport=polling"])
async def test_handshake_needs_valid_eio_and_transport(conf, http, query):
    status, _ = await text(http, "GET", f"{conf.url}/engine.io/?{query}")
    assert status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_unsupported_method_or_post_without_session_is_400(conf, http, method):
    status, _ = await text(http, method, eio(conf.url))
    assert status == 400


async def test_hub_refuses_bad_handshakes_with_400(server, http):
    for method, query in (("GET", "EIO=4"), ("PUT", "EIO=4&transport=polling")):
        status, _ = await text(http, method, f"{server.url}/socket.io/?{query}")
        assert status == 400, (method, query)


async def test_messages_round_trip_over_polling(conf, http):
    sid, _ = await open_polling(http, conf.url)
    assert await text(http, "POST", eio(conf.url, sid), data="4hello\x1ebAQIDBA==") == (200, "ok")
    assert await text(http, "GET", eio(conf.url, sid)) == (200, "4hello\x1ebAQIDBA==")


@pytest.mark.parametrize("body", ["abc", "9", "4ok\x1e"])
async def test_malformed_post_closes_the_session(conf, http, body):
    sid, _ = await open_polling(http, conf.url)
    status, _ = await text(http, "POST", eio(conf.url, sid), data=body)
    assert status == 400
    status, _ = await text(http, "GET", eio(conf.url, sid))
    assert status == 400


async def test_duplicate_poll_closes_the_session(conf, http):
    sid, _ = await open_polling(http, conf.url)
    first = asyncio.ensure_future(text(http, "GET", eio(conf.url, sid)))
    await asyncio.sleep(0.05)  # let the first poll reach the server and wait there
    status, _ = await text(http, "GET", eio(conf.url, sid) + "&t=burst")
    assert status == 400
    assert await first == (200, "1")  # the waiting poll is answered with CLOSE
    status, _ = await text(http, "GET", eio(conf.url, sid))
    assert status == 400


# --- item 3: heartbeat, close, upgrade ------------------------------------------------

async def test_polling_heartbeat(conf, http):
    sid, _ = await open_polling(http, conf.url)
    for _ in range(3):
        assert await text(http, "GET", eio(conf.url, sid)) == (200, "2")
        assert await text(http, "POST", eio(conf.url, sid), data="3") == (200, "ok")


async def test_polling_ping_timeout_answers_the_waiting_poll_and_closes(conf, http):
    sid, _ = await open_polling(http, conf.url)
    assert await text(http, "GET", eio(conf.url, sid)) == (200, "2")
    # No PONG: the poll now waiting is answered with CLOSE when pingTimeout expires.
    assert await text(http, "GET", eio(conf.url, sid)) == (200, "1")
    status, _ = await text(http, "GET", eio(conf.url, sid))
    assert status == 400
    assert sid not in conf.eio.sockets or conf.eio.sockets[sid].closed


async def test_websocket_heartbeat_and_ping_timeout(conf, http):
    ws = await http.ws_connect(eio(conf.ws_url, transport="websocket"))
    assert (await receive(ws)).startswith("0")
    for _ in range(3):
        assert await receive(ws) == "2"
        await ws.send_str("3")
    assert await receive(ws) == "2"
    await closed(ws)  # no PONG: the server closes the websocket


async def test_forced_close_answers_the_waiting_poll_with_noop(conf, http):
    sid, _ = await open_polling(http, conf.url)
    poll = asyncio.ensure_future(text(http, "GET", eio(conf.url, sid)))
    await asyncio.sleep(0.05)
    assert await text(http, "POST", eio(conf.url, sid), data="1") == (200, "ok")
    assert await poll == (200, "6")
    status, _ = await text(http, "GET", eio(conf.url, sid))
    assert status == 400


async def test_forced_close_over_websocket_closes_it(conf, http):
    ws = await http.ws_connect(eio(conf.ws_url, transport="websocket"))
    await receive(ws)
    await ws.send_str("1")
    assert await closed(ws, timeout=2) == []


async def test_upgrade_sends_no_extra_noop_on_the_websocket(conf, http):
    sid, _ = await open_polling(http, conf.url)
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    await ws.send_str("2probe")
    assert await receive(ws) == "3probe"
    assert await text(http, "GET", eio(conf.url, sid)) == (200, "6")  # ends polling cleanly
    await ws.send_str("5")
    await ws.send_str("4hello")
    assert await receive(ws) == "4hello"  # python-engineio sent a stale "6" first
    await ws.close()


async def test_upgrade_ends_a_waiting_poll(conf, http):
    sid, _ = await open_polling(http, conf.url)
    poll = asyncio.ensure_future(text(http, "GET", eio(conf.url, sid)))
    await asyncio.sleep(0.05)
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    await ws.send_str("2probe")
    assert await receive(ws) == "3probe"
    assert await poll == (200, "6")
    await ws.send_str("5")
    await ws.send_str("4hello")
    assert await receive(ws) == "4hello"
    await ws.close()


async def test_poll_racing_the_upgrade_completion_is_refused(conf, http):
    """Probe and UPGRADE sent back to back, then a poll: refused, as in Node."""
    sid, _ = await open_polling(http, conf.url)
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    await ws.send_str("2probe")
    await ws.send_str("5")
    status, _ = await text(http, "GET", eio(conf.url, sid))
    assert status == 400
    assert await receive(ws) == "3probe"
    await ws.send_str("4hello")
    assert await receive(ws) == "4hello"
    await ws.close()


async def test_http_requests_of_an_upgraded_session_are_refused(conf, http):
    sid, _ = await open_polling(http, conf.url)
    ws = await upgraded_ws(http, conf, sid)
    for method, body in (("GET", None), ("POST", "4x")):
        status, _ = await text(http, method, eio(conf.url, sid), data=body)
        assert status == 400, method
    await ws.send_str("4still")
    assert await receive(ws) == "4still"
    await ws.close()


async def test_websocket_messages_and_invalid_packet(conf, http):
    ws = await http.ws_connect(eio(conf.ws_url, transport="websocket"))
    await receive(ws)
    await ws.send_bytes(bytes([1, 2, 3, 4]))
    assert await receive(ws) == bytes([1, 2, 3, 4])
    await ws.send_str("abc")
    await closed(ws, timeout=2)


# --- item 4: one websocket per session -------------------------------------------------

async def test_second_websocket_after_upgrade_is_refused(conf, http):
    sid, _ = await open_polling(http, conf.url)
    ws = await upgraded_ws(http, conf, sid)
    second = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    assert await closed(second, timeout=2) == []  # closed at once, like Node
    await ws.send_str("4first")
    assert await receive(ws) == "4first"
    await ws.close()


async def test_second_websocket_during_upgrade_is_refused(conf, http):
    sid, _ = await open_polling(http, conf.url)
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    await ws.send_str("2probe")
    assert await receive(ws) == "3probe"
    second = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    assert await closed(second, timeout=2) == []
    await ws.send_str("5")
    await ws.send_str("4done")
    assert await receive(ws) == "4done"
    await ws.close()


async def test_silent_upgrade_websocket_is_closed_and_polling_goes_on(conf, http):
    sid, _ = await open_polling(http, conf.url)
    conf.eio.sockets[sid].upgrade_timeout = 0.2  # Node's upgradeTimeout, shortened
    ws = await http.ws_connect(eio(conf.ws_url, sid, "websocket"))
    assert await closed(ws) == []  # never probed: closed, not held open
    assert await text(http, "GET", eio(conf.url, sid)) == (200, "2")
    assert await text(http, "POST", eio(conf.url, sid), data="3") == (200, "ok")


async def test_conformance_server_command(http, tmp_path):
    """`hub conformance-server --port N` serves both endpoints with the suites' settings."""
    import os
    import subprocess
    import sys

    from tests.support.paths import ROOT
    from tests.support.services import free_port

    port = free_port()
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "conformance-server", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                _, handshake = await open_polling(http, base, "/socket.io/")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("conformance server did not start")
        assert (handshake["pingInterval"], handshake["pingTimeout"], handshake["maxPayload"]) == (300, 200, 1_000_000)
        sid, _ = await open_polling(http, base, "/engine.io/")
        assert await text(http, "POST", eio(base, sid), data="4echo") == (200, "ok")
        assert await text(http, "GET", eio(base, sid)) == (200, "4echo")
    finally:
        proc.terminate()
        proc.wait(10)
