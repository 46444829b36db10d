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
        self._children: dict[tuple, tuple] = {}

    def count_event(self, namespace: str, event: str, outcome: str, seconds: float | None) -> None:
        """One client event handled (with its operation's latency, if it had one)."""
        key = (namespace, event, outcome)
        children = self._children.get(key)
        if children is None:
            # labels() takes a lock and builds its key on every call: once per kind.
            children = self._children[key] = (self.events.labels(*key), self.latency.labels(namespace, event))
        children[0].inc()
        if seconds is not None:
            children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
