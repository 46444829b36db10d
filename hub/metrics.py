"""Prometheus metrics of one instance (a registry per app, so tests can run several).

docs/operations.md lists them; deploy/grafana-dashboard.json and
deploy/prometheus-alerts.yml read them."""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, generate_latest)
from prometheus_client.metrics_core import Metric

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
WAIT_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class _Collected:
    """A collector whose metrics are read at scrape time (what is cheap to count then)."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.collect = read


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("hub_connections", "Connected sockets", ["namespace"], registry=self.registry)
        self.events = Counter("hub_events_total", "Client events handled", ["namespace", "event", "outcome"],
                              registry=self.registry)
        self.latency = Histogram("hub_operation_seconds", "Operation latency", ["namespace", "event"],
                                 registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.deliveries = Counter("hub_fanout_deliveries_total", "Server events written to local sockets",
                                  ["namespace"], registry=self.registry)
        self.bus = Counter("hub_bus_messages_total", "Messages on the inter-instance bus",
                           ["direction", "outcome"], registry=self.registry)
        # What the process and the runtime use (prometheus_client's default collectors).
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.http_requests = Counter("hub_http_requests_total", "HTTP requests (Socket.IO endpoints excluded)",
                                     ["method", "route", "status"], registry=self.registry)
        self.http_latency = Histogram("hub_http_request_seconds", "HTTP request latency", ["method", "route"],
                                      registry=self.registry, buckets=SECONDS)
        self.bus_lag = Histogram("hub_bus_lag_seconds",
                                 "From a durable event's log append to its arrival here on the bus",
                                 registry=self.registry, buckets=SECONDS)
        # Sampled every few seconds from the shared stores (hub/sampler.py): the same
        # values on every instance; dashboards take max().
        self.outbox_backlog = Gauge("hub_outbox_backlog", "Durable events not yet on the bus",
                                    registry=self.registry)
        self.relay_lag = Gauge("hub_outbox_oldest_seconds",
                               "Age of the oldest durable event not yet on the bus (0: none)",
                               registry=self.registry)
        self.handoff_queue = Gauge("hub_handoff_queue_size", "Dialogs waiting for an operator",
                                   registry=self.registry)
        self.handoff_oldest = Gauge("hub_handoff_oldest_wait_seconds",
                                    "How long the longest-waiting dialog has waited (0: none)",
                                    registry=self.registry)
        self.operators = Gauge("hub_operators", "Operators by presence status", ["status"],
                               registry=self.registry)
        self.ready = Gauge("hub_ready", "1 while /ready answers 200, else 0", registry=self.registry)
        self.handoff_wait = Histogram("hub_handoff_wait_seconds",
                                      "From a handoff request to an operator taking the dialog",
                                      registry=self.registry, buckets=WAIT_SECONDS)
        self.refusals = Counter("hub_connect_refusals_total", "Refused Socket.IO connections",
                                ["namespace", "reason"], registry=self.registry)
        self.set_aside = Counter("hub_outbox_set_aside_total",
                                 "Outbox events the bus refused, set aside instead of relayed", registry=self.registry)
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels):
        """`metric.labels(*labels)`, looked up once: prometheus_client takes a lock and
        builds its key on every labels() call, and the hot paths count per event."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def collect_at_scrape(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.registry.register(_Collected(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
