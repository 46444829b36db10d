"""Primitives below every layer (hub, handlers, storage): batching concurrent
writes, caching facts that never change, telling an outage from a bug. Imports
nothing of the hub, handlers or storage."""
