"""Delivery: how server events reach sockets (fan-out, the outbox relay, coalescing,
recovery, revocation, the streams service). Backends (hub/backends/) store; this
layer decides what goes where and when."""
