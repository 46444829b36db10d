"""The metrics read from the shared stores (the outbox, the handoff queue, presence,
readiness), sampled every few seconds by each instance, and those counted at scrape
time (connections by transport, the database pool)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from engine import cancel_and_wait
from storage.base import aware, utcnow
from storage.dialogs import Dialog
from storage.outbox import OutboxEvent

log = logging.getLogger("hub.metrics")

SAMPLE_EVERY = 5.0
STATUSES = ("online", "away", "offline")


async def sample(hub) -> None:
    from hub.adapters.http.system import _checks as checks

    metrics = hub.metrics
    now = utcnow()
    async with hub.db.transaction() as tx:
        backlog, oldest = (await tx.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(OutboxEvent.published_at.is_(None)))).one()
        waiting, longest = (await tx.execute(
            select(func.count(), func.min(Dialog.requested_at)).where(Dialog.handoff_status == "requested"))).one()
    metrics.outbox_backlog.set(backlog)
    metrics.relay_lag.set((now - aware(oldest)).total_seconds() if oldest else 0)
    metrics.handoff_queue.set(waiting)
    metrics.handoff_oldest.set((now - aware(longest)).total_seconds() if longest else 0)
    counts = dict.fromkeys(STATUSES, 0)
    for record in await hub.presence.all(time.time()):
        counts[record.status] = counts.get(record.status, 0) + 1
    for status, count in counts.items():
        metrics.operators.labels(status).set(count)
    metrics.ready.set(int(all(c["status"] == "ok" for c in (await checks(hub)).values())))


async def run(hub):
    """cleanup_ctx: sample for the app's lifetime; a failed sample reads as not ready."""

    async def loop():
        while True:
            try:
                await sample(hub)
            except Exception as exc:
                hub.metrics.ready.set(0)
                log.warning("metrics not sampled: %s", exc)
            await asyncio.sleep(SAMPLE_EVERY)

    task = asyncio.create_task(loop(), name="metrics-sampler")
    yield
    await cancel_and_wait(task)


def at_scrape(hub) -> Iterable:
    """Connections by namespace and transport, what the bus read from Redis, and the
    database pool's use."""
    connections = GaugeMetricFamily("hub_connections_by_transport", "Connected sockets",
                                    labels=["namespace", "transport"])
    totals: dict[tuple[str, str], int] = {}
    for server in hub.fanout.servers:
        for key, count in server.transports().items():
            totals[key] = totals.get(key, 0) + count
    for (namespace, transport), count in sorted(totals.items()):
        connections.add_metric([namespace, transport], count)
    yield connections
    if hub.broker.received_bytes is not None:  # on Redis
        yield CounterMetricFamily("hub_bus_received_bytes", "Bytes this instance read from the Redis bus",
                                  value=hub.broker.received_bytes)
        yield GaugeMetricFamily("hub_bus_channels", "Room channels of the Redis bus this instance reads",
                                value=len(hub.broker.channels.wanted))
    pool = hub.db.engine.sync_engine.pool
    if hasattr(pool, "checkedout"):
        in_use = GaugeMetricFamily("hub_db_pool_connections", "Database pool connections", labels=["state"])
        in_use.add_metric(["in_use"], pool.checkedout())
        in_use.add_metric(["idle"], pool.checkedin())
        yield in_use
        yield GaugeMetricFamily("hub_db_pool_size", "Database pool size (without overflow)", value=pool.size())
