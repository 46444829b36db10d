"""/health, /ready and /metrics on the embedded default."""


async def test_health_and_ready_on_the_embedded_default(server, api):
    status, body = await api.request("GET", "/health")
    assert status == 200 and body["status"] == "healthy" and body["checks"] == {"database": {"status": "ok"}}
    status, body = await api.request("GET", "/ready")
    assert status == 200 and body["ready"] is True


async def test_ready_is_503_when_the_database_is_unreachable(server, api):
    from storage.db import Database

    working = server.hub.db
    server.hub.db = Database("sqlite+aiosqlite:////nonexistent/dir/hub.db")  # cannot be opened
    try:
        status, body = await api.request("GET", "/ready")
        assert status == 503 and body["checks"]["database"]["status"] == "down"
        status, body = await api.request("GET", "/health")
        assert status == 200 and body["status"] == "unhealthy"
    finally:
        await server.hub.db.close()
        server.hub.db = working


async def test_metrics_count_connections_events_latency_and_deliveries(server, api, connect, http):
    a, b = await api.user(), await api.user()
    ca = await connect(server.url, "/chat", a["access_token"])
    cb = await connect(server.url, "/chat", b["access_token"])
    await ca.ok("message:send", {"recipient_id": b["user"]["id"], "message": "counted"})
    await cb.next("message:new")
    await ca.error("message:send", {"recipient_id": "x"})
    await ca.call("no:such:event")
    async with http.get(server.url + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'hub_connections{namespace="/chat"} 2.0' in text
    assert 'hub_events_total{event="message:send",namespace="/chat",outcome="ok"} 1.0' in text
    assert 'hub_events_total{event="message:send",namespace="/chat",outcome="validation_error"} 1.0' in text
    assert 'hub_events_total{event="unknown",namespace="/chat",outcome="validation_error"} 1.0' in text
    assert 'hub_operation_seconds_count{event="message:send",namespace="/chat"} 2.0' in text
    # message:new, thread:created and thread:updated to Bob; thread:created and thread:updated to Ann.
    # Not message:sent: it is for Ann's other sockets, and she has none.
    delivered = next(float(line.split()[-1]) for line in text.splitlines()
                     if line.startswith('hub_fanout_deliveries_total{namespace="/chat"}'))
    assert delivered == 5
