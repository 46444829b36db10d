"""The shipped nginx config (deploy/nginx.conf) for real: Debian's nginx in front of
two `hub serve` processes sharing PostgreSQL and Redis, with the config changed only
in its upstream addresses and listening port. The operator console logs in and
connects in Chromium, and long-polling official clients, all from one address (as
behind one NAT), are spread over both instances and keep their sessions.

Needs nginx (Debian: `apt-get install nginx-light`; `make test` installs it) and
what tests/e2e/test_handoff_ui.py needs; skipped with a reason when missing, except
under CI, where that is a failure."""
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.clients import Api
from tests.support.node import run_node
from tests.support.paths import ROOT
from tests.support.services import free_port, unavailable

SHIPPED = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def proxy_config(upstreams: list[int], port: int) -> str:
    """deploy/nginx.conf with its upstream servers and listening port replaced,
    everything else as shipped."""
    text = SHIPPED.read_text()
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    text, n = re.subn(r"(?m)(^[ \t]*server [\w.-]+:8000(?: resolve)?;\n)+", lambda m: servers, text)
    assert n == 1, "deploy/nginx.conf: expected one block of upstream servers"
    text, n = re.subn(r"(?m)^([ \t]*)listen 80;", rf"\1listen 127.0.0.1:{port};", text)
    assert n == 1, "deploy/nginx.conf: expected one `listen 80;`"
    return text


MAIN = """daemon off;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    include {dir}/hub.conf;
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """Factory: run nginx with the shipped config in front of the given ports; stopped afterwards."""
    binary = nginx_binary()
    if binary is None:
        unavailable("nginx (apt-get install nginx-light)", FileNotFoundError("nginx"))
    procs = []

    def start(upstreams: list[int]) -> str:
        folder = tmp_path / "nginx"
        folder.mkdir()
        port = free_port()
        (folder / "hub.conf").write_text(proxy_config(upstreams, port))
        user = "user root;" if os.geteuid() == 0 else ""  # workers may read the temp folder
        (folder / "nginx.conf").write_text(MAIN.format(dir=folder, user=user))
        proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                                 "-e", str(folder / "error.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {proc.stderr.read().decode()}")
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2):
                    return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nginx did not listen")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def create_operator(env: dict, email: str, password: str) -> None:
    subprocess.run([sys.executable, "-m", "hub.cli", "users", "create", email, "--password", password,
                    "--role", "operator"], env=env, cwd=ROOT, check=True, capture_output=True)


def events_of(metrics: str, event: str) -> float:
    return sum(float(value) for value in re.findall(
        rf'^hub_events_total{{[^}}]*event="{re.escape(event)}"[^}}]*outcome="ok"[^}}]*}} (\S+)$', metrics, re.M))


async def test_console_and_polling_clients_through_the_shipped_nginx(
        browser_deps, nginx, spawn_hubs, pg_url, redis_url, redis_prefix, http):
    hubs = await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                "HUB_REDIS_PREFIX": redis_prefix, "HUB_TRUST_PROXY": "true"})
    proxy = nginx([hub.port for hub in hubs])
    api = Api(proxy, http)

    create_operator(hubs[0].env, "anna@example.com", "operator-password")
    out = await run_node("console_proxy.mjs", proxy, "anna@example.com", "operator-password", browser_deps,
                         timeout=90)
    console = json.loads(out.strip().splitlines()[-1])
    assert console["connection"].startswith("online · "), console
    assert console["errors"] == [], console

    # Sixteen polling clients from one address: both instances get some of them,
    # and every call reaches the instance holding its client's session.
    token = (await api.user())["access_token"]
    out = await run_node("proxy_clients.mjs", f"{proxy}/chat", token, "16", "4", timeout=90)
    clients = json.loads(out.strip().splitlines()[-1])
    assert clients == {"acks": 64, "errors": []}
    served = []
    for hub in hubs:
        async with http.get(hub.url + "/metrics") as resp:
            served.append(events_of(await resp.text(), "unread:count"))
    assert sum(served) == 64 and all(served), served
