"""Liveness, readiness and metrics."""
from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from handlers.errors import Unauthorized
from hub.adapters.http.common import HUB, bearer


async def _checks(hub) -> dict[str, dict]:
    async def check(probe) -> dict:
        try:
            await asyncio.wait_for(probe(), timeout=2)
            return {"status": "ok"}
        except Exception as exc:  # any failure means "down", with the reason
            return {"status": "down", "error": type(exc).__name__}

    checks = {"database": await check(hub.db.ping)}
    if hub.settings.redis_url:
        checks["redis"] = await check(hub.backends.ping)
        checks["broker"] = {"status": "ok" if hub.broker.healthy else "down"}
    return checks


async def health(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    checks = await _checks(hub)
    down = [name for name, c in checks.items() if c["status"] != "ok"]
    status = "healthy" if not down else ("unhealthy" if "database" in down else "degraded")
    return web.json_response({"status": status, "instance": hub.settings.instance_id, "checks": checks})


async def ready(request: web.Request) -> web.Response:
    checks = await _checks(request.app[HUB])
    ok = all(c["status"] == "ok" for c in checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text; with HUB_METRICS_TOKEN set, only for `Authorization: Bearer <it>`."""
    hub = request.app[HUB]
    token = hub.settings.metrics_token
    if token and not hmac.compare_digest((bearer(request) or "").encode(), token.encode()):
        raise Unauthorized("the metrics need their bearer token (HUB_METRICS_TOKEN)")
    body = hub.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def routes() -> list[web.RouteDef]:
    return [web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics)]
