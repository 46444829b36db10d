"""Prometheus metrics of one instance (a registry per app, so tests can run several)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
