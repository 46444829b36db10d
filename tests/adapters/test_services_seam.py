"""The typed seam between the adapters and the app factory (hub/adapters/services.py):
every annotation of `Services` names a class that exists, and the instance the app
hands its adapters has each service, of that class."""
from __future__ import annotations

from handlers.registry import REGISTRY
from hub.adapters.http.common import HUB
from hub.adapters.services import Services, SocketServices, resolved
from hub.adapters.socketio import OperationNamespace


async def test_the_app_hands_adapters_a_services_object_of_the_annotated_classes(server):
    hub = server.app[HUB]
    assert isinstance(hub, Services)
    hints = resolved(Services)
    assert set(resolved(SocketServices)) < set(hints)
    for name, kind in hints.items():
        assert isinstance(getattr(hub, name), kind), name


async def test_every_namespace_of_the_registry_is_served_by_the_adapter_with_that_object(server):
    hub = server.app[HUB]
    for sio in hub.fanout.servers:  # the JSON and the msgpack endpoint
        for name in REGISTRY.namespaces:
            namespace = sio.namespace_handlers[name]
            assert isinstance(namespace, OperationNamespace) and namespace.hub is hub
            assert namespace.server is sio
