"""What /metrics tells an operator, read from a running hub after real traffic:
process and runtime, HTTP by route and status with latency, events and their ack
latency, connections by transport, refusals by reason, bus lag, outbox, database
pool, handoff queue and wait, presence, readiness. And the dashboard and alert rules
shipped in deploy/ read only metrics that exist; promtool accepts the rules."""
import json
import re
import shutil
import subprocess

import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from hub.sampler import sample
from tests.support.dialogs import ORIGIN
from tests.support.paths import ROOT
from tests.support.services import unavailable

DEPLOY = ROOT / "deploy"


async def scrape(http, url: str) -> dict[tuple, float]:
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_metrics_after_traffic(server, api, connect, http):
    ann, bob = await api.user(), await api.user()
    ws = await connect(server.url, "/chat", ann["access_token"], transports=["websocket"])
    await connect(server.url, "/chat", bob["access_token"], transports=["polling"])
    await ws.ok("message:send", {"recipient_id": bob["user"]["id"], "message": "hi"})
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(server.url, namespaces=["/chat"], auth={"token": "nope"}, wait_timeout=5)

    # a dialog waits for an operator, then the owner takes it
    _, assistant = await api.request("POST", "/api/assistants", token=ann["access_token"],
                                     json={"name": "Helper", "allowed_origins": [ORIGIN]})
    _, session = await api.request("POST", "/api/widget/sessions", json={"assistant_id": assistant["id"]},
                                   headers={"Origin": ORIGIN})
    await api.request("POST", "/api/handoff/request", token=session["visitor_token"],
                      json={"dialog_id": session["dialog_id"]})
    await sample(server.hub)
    waiting = await scrape(http, server.url)
    await api.request("POST", f"/api/dialogs/{session['dialog_id']}/takeover", token=ann["access_token"], json={})
    await sample(server.hub)
    m = await scrape(http, server.url)

    assert value(m, "process_cpu_seconds_total") is not None
    assert any(name == "python_info" for name, _ in m)
    assert any(name == "python_gc_objects_collected_total" for name, _ in m)
    assert value(m, "hub_http_requests_total", method="POST", route="/auth/register", status="201") == 2
    assert value(m, "hub_http_request_seconds_count", method="POST", route="/auth/login") == 2
    assert value(m, "hub_http_requests_total", method="POST", route="/api/dialogs/{dialog_id}/takeover",
                 status="201") == 1
    assert value(m, "hub_events_total", namespace="/chat", event="message:send", outcome="ok") == 1
    assert value(m, "hub_operation_seconds_count", namespace="/chat", event="message:send") == 1
    assert value(m, "hub_connections_by_transport", namespace="/chat", transport="websocket") == 1
    assert value(m, "hub_connections_by_transport", namespace="/chat", transport="polling") == 1
    assert value(m, "hub_connect_refusals_total", namespace="/chat", reason="unauthorized") == 1
    assert value(m, "hub_bus_lag_seconds_count") >= 1
    assert value(m, "hub_outbox_backlog") is not None and value(m, "hub_outbox_oldest_seconds") is not None
    assert value(m, "hub_db_pool_size") >= 1 and value(m, "hub_db_pool_connections", state="in_use") is not None
    assert value(waiting, "hub_handoff_queue_size") == 1 and value(waiting, "hub_handoff_oldest_wait_seconds") >= 0
    assert value(m, "hub_handoff_queue_size") == 0
    assert value(m, "hub_handoff_wait_seconds_count") == 1
    assert value(m, "hub_operators", status="online") == 0
    assert value(m, "hub_ready") == 1


def expressions(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


async def test_dashboard_and_alerts_read_metrics_that_exist(server, http, api):
    await api.user()
    async with http.get(server.url + "/metrics") as resp:
        exposed = {family.name for family in text_string_to_metric_families(await resp.text())}
    # the names a query may use: each family's samples (_total, _bucket, _count, _sum)
    names = exposed | {f"{n}{suffix}" for n in exposed for suffix in ("_total", "_bucket", "_count", "_sum", "_created")}
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    rules = (DEPLOY / "prometheus-alerts.yml").read_text()
    used = set()
    for expr in expressions(dashboard) + re.findall(r"expr: (.+)", rules):
        used |= set(re.findall(r"\b((?:hub|process|python)_[a-z_]+)\b", expr))
    assert used, "no hub metric in the dashboard or the rules"
    assert used <= names, f"not exposed: {sorted(used - names)}"


def test_alert_rules_pass_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool (apt-get install prometheus)", FileNotFoundError("promtool"))
    done = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus-alerts.yml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([promtool, "test", "rules", str(DEPLOY / "prometheus-alerts.test.yml")],
                          capture_output=True, text=True, cwd=DEPLOY)
    assert done.returncode == 0, done.stdout + done.stderr
